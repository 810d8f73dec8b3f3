// Package rtnl is a minimal rtnetlink client: one request, one
// acknowledgement, in the calling thread's network namespace. It is what
// peerlan's TAP set-up and gateway use instead of running the ip command, so
// that they need no CLI and pay no fork and exec per change (a TAP is up
// tens of milliseconds sooner).
package rtnl

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"runtime"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// ErrNetlink wraps failures of the netlink transport itself (socket, send,
// receive, parse); the kernel's answer to a request is returned as the
// syscall.Errno it carries.
var ErrNetlink = errors.New("rtnl: netlink request failed")

const timeout = 5 * time.Second

// Request sends one rtnetlink message of msgType with flags (NLM_F_REQUEST
// and NLM_F_ACK are added) and payload, and waits for the kernel's
// acknowledgement.
func Request(msgType, flags uint16, payload []byte) error {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_ROUTE)
	if err != nil {
		return fmt.Errorf("%w: socket: %w", ErrNetlink, err)
	}
	defer unix.Close(fd)
	tv := unix.NsecToTimeval(timeout.Nanoseconds())
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		return fmt.Errorf("%w: SO_RCVTIMEO: %w", ErrNetlink, err)
	}
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return fmt.Errorf("%w: bind: %w", ErrNetlink, err)
	}
	const seq = 1
	msg := make([]byte, unix.SizeofNlMsghdr, unix.SizeofNlMsghdr+len(payload))
	binary.NativeEndian.PutUint32(msg[0:4], uint32(unix.SizeofNlMsghdr+len(payload)))
	binary.NativeEndian.PutUint16(msg[4:6], msgType)
	binary.NativeEndian.PutUint16(msg[6:8], flags|unix.NLM_F_REQUEST|unix.NLM_F_ACK)
	binary.NativeEndian.PutUint32(msg[8:12], seq)
	msg = append(msg, payload...)
	if err := unix.Sendto(fd, msg, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return fmt.Errorf("%w: send: %w", ErrNetlink, err)
	}
	buf := make([]byte, 64<<10)
	for {
		n, _, err := unix.Recvfrom(fd, buf, 0)
		if err != nil {
			return fmt.Errorf("%w: receive: %w", ErrNetlink, err)
		}
		msgs, err := syscall.ParseNetlinkMessage(buf[:n])
		if err != nil {
			return fmt.Errorf("%w: parse: %w", ErrNetlink, err)
		}
		for _, m := range msgs {
			if m.Header.Seq != seq || m.Header.Type != unix.NLMSG_ERROR {
				continue
			}
			if len(m.Data) < 4 {
				return fmt.Errorf("%w: short error message", ErrNetlink)
			}
			if code := int32(binary.NativeEndian.Uint32(m.Data[:4])); code != 0 {
				return syscall.Errno(-code)
			}
			return nil
		}
	}
}

// Attr appends one route attribute (4-byte aligned) to b.
func Attr(b []byte, typ uint16, data []byte) []byte {
	l := unix.SizeofRtAttr + len(data)
	var hdr [unix.SizeofRtAttr]byte
	binary.NativeEndian.PutUint16(hdr[0:2], uint16(l))
	binary.NativeEndian.PutUint16(hdr[2:4], typ)
	b = append(b, hdr[:]...)
	b = append(b, data...)
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	return b
}

// Uint32 is a 4-byte attribute value.
func Uint32(v uint32) []byte { return binary.NativeEndian.AppendUint32(nil, v) }

// LinkMsg starts an RTM_NEWLINK payload: an ifinfomsg for ifindex (0 to
// name the link by an IFLA_IFNAME attribute instead) setting the flags in
// change to the values in flags.
func LinkMsg(ifindex int, flags, change uint32) []byte {
	b := make([]byte, unix.SizeofIfInfomsg)
	b[0] = unix.AF_UNSPEC
	binary.NativeEndian.PutUint32(b[4:8], uint32(ifindex))
	binary.NativeEndian.PutUint32(b[8:12], flags)
	binary.NativeEndian.PutUint32(b[12:16], change)
	return b
}

// InNamespace runs fn on an OS thread that has entered the named network
// namespace (as in `ip netns`), so that the netlink requests, devices and
// sockets fn makes belong to that namespace. The thread then returns to its
// own namespace and to Go's pool. It must return: left in the namespace,
// a thread would be terminated, except the process's main thread, which Go
// keeps instead, and the whole process would then count as being inside the
// namespace (`ip netns pids` lists it, and tests kill what it lists).
func InNamespace(netns string, fn func() error) error {
	var err error
	done := make(chan struct{})
	go func() {
		defer close(done)
		runtime.LockOSThread()
		home, herr := os.Open("/proc/thread-self/ns/net")
		if herr != nil {
			err = herr
			runtime.UnlockOSThread()
			return
		}
		defer home.Close()
		var target *os.File
		if target, err = os.Open("/run/netns/" + netns); err != nil {
			runtime.UnlockOSThread()
			return
		}
		defer target.Close()
		if err = unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			err = fmt.Errorf("setns %s: %w", netns, err)
			runtime.UnlockOSThread()
			return
		}
		err = fn()
		if unix.Setns(int(home.Fd()), unix.CLONE_NEWNET) == nil {
			runtime.UnlockOSThread()
		} // else the thread stays locked and Go retires it
	}()
	<-done
	return err
}
