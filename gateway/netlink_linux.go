//go:build linux

package gateway

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// A minimal rtnetlink client: the few address, link and route operations the
// gateway needs, so that it depends on no CLI besides nft.

const netlinkTimeout = 5 * time.Second

// nlRequest sends one rtnetlink request and waits for its acknowledgement.
func nlRequest(msgType uint16, flags uint16, payload []byte) error {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_ROUTE)
	if err != nil {
		return fmt.Errorf("%w: socket: %w", errNetlink, err)
	}
	defer unix.Close(fd)
	tv := unix.NsecToTimeval(netlinkTimeout.Nanoseconds())
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		return fmt.Errorf("%w: SO_RCVTIMEO: %w", errNetlink, err)
	}
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return fmt.Errorf("%w: bind: %w", errNetlink, err)
	}
	const seq = 1
	msg := make([]byte, unix.SizeofNlMsghdr, unix.SizeofNlMsghdr+len(payload))
	binary.NativeEndian.PutUint32(msg[0:4], uint32(unix.SizeofNlMsghdr+len(payload)))
	binary.NativeEndian.PutUint16(msg[4:6], msgType)
	binary.NativeEndian.PutUint16(msg[6:8], flags|unix.NLM_F_REQUEST|unix.NLM_F_ACK)
	binary.NativeEndian.PutUint32(msg[8:12], seq)
	msg = append(msg, payload...)
	if err := unix.Sendto(fd, msg, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return fmt.Errorf("%w: send: %w", errNetlink, err)
	}
	buf := make([]byte, 64<<10)
	for {
		n, _, err := unix.Recvfrom(fd, buf, 0)
		if err != nil {
			return fmt.Errorf("%w: receive: %w", errNetlink, err)
		}
		msgs, err := syscall.ParseNetlinkMessage(buf[:n])
		if err != nil {
			return fmt.Errorf("%w: parse: %w", errNetlink, err)
		}
		for _, m := range msgs {
			if m.Header.Seq != seq || m.Header.Type != unix.NLMSG_ERROR {
				continue
			}
			if len(m.Data) < 4 {
				return fmt.Errorf("%w: short error message", errNetlink)
			}
			if code := int32(binary.NativeEndian.Uint32(m.Data[:4])); code != 0 {
				return syscall.Errno(-code)
			}
			return nil
		}
	}
}

// rtattr appends one route attribute (4-byte aligned).
func rtattr(b []byte, typ uint16, data []byte) []byte {
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

// addrMsg builds an ifaddrmsg for an IPv4 address with its subnet broadcast.
func addrMsg(ifindex int, p netip.Prefix) []byte {
	b := make([]byte, unix.SizeofIfAddrmsg)
	b[0] = unix.AF_INET
	b[1] = byte(p.Bits())
	b[3] = unix.RT_SCOPE_UNIVERSE
	binary.NativeEndian.PutUint32(b[4:8], uint32(ifindex))
	a := p.Addr().As4()
	b = rtattr(b, unix.IFA_LOCAL, a[:])
	b = rtattr(b, unix.IFA_ADDRESS, a[:])
	brd := broadcastAddr(p).As4()
	return rtattr(b, unix.IFA_BROADCAST, brd[:])
}

// addrAdd assigns p (address/prefix length) to the interface.
func addrAdd(ifindex int, p netip.Prefix) error {
	return nlRequest(unix.RTM_NEWADDR, unix.NLM_F_CREATE|unix.NLM_F_EXCL, addrMsg(ifindex, p))
}

// addrDel removes p from the interface; a missing address or interface is not an error.
func addrDel(ifindex int, p netip.Prefix) error {
	err := nlRequest(unix.RTM_DELADDR, 0, addrMsg(ifindex, p))
	if errors.Is(err, unix.EADDRNOTAVAIL) || errors.Is(err, unix.ENODEV) {
		return nil
	}
	return err
}

// linkSetUp sets or clears IFF_UP.
func linkSetUp(ifindex int, up bool) error {
	b := make([]byte, unix.SizeofIfInfomsg)
	b[0] = unix.AF_UNSPEC
	binary.NativeEndian.PutUint32(b[4:8], uint32(ifindex))
	var flags uint32
	if up {
		flags = unix.IFF_UP
	}
	binary.NativeEndian.PutUint32(b[8:12], flags)
	binary.NativeEndian.PutUint32(b[12:16], unix.IFF_UP) // change mask
	err := nlRequest(unix.RTM_NEWLINK, 0, b)
	if !up && errors.Is(err, unix.ENODEV) {
		return nil
	}
	return err
}

// route is one IPv4 route from any routing table.
type route struct {
	Dst      netip.Prefix
	OIF      int // 0 for multipath or interface-less routes (blackhole, ...)
	Table    uint32
	Type     uint8
	Priority uint32
}

// listRoutes dumps the IPv4 routes of every routing table.
func listRoutes() ([]route, error) {
	rib, err := syscall.NetlinkRIB(syscall.RTM_GETROUTE, syscall.AF_INET)
	if err != nil {
		return nil, fmt.Errorf("%w: route dump: %w", errNetlink, err)
	}
	msgs, err := syscall.ParseNetlinkMessage(rib)
	if err != nil {
		return nil, fmt.Errorf("%w: route dump: %w", errNetlink, err)
	}
	var routes []route
	for i := range msgs {
		m := &msgs[i]
		if m.Header.Type != syscall.RTM_NEWROUTE || len(m.Data) < syscall.SizeofRtMsg {
			continue
		}
		r, ok := parseRoute(m)
		if ok {
			routes = append(routes, r)
		}
	}
	return routes, nil
}

func parseRoute(m *syscall.NetlinkMessage) (route, bool) {
	rtm := m.Data[:syscall.SizeofRtMsg]
	family, dstLen, table, typ := rtm[0], int(rtm[1]), uint32(rtm[4]), rtm[7]
	if family != syscall.AF_INET || dstLen > 32 {
		return route{}, false
	}
	attrs, err := syscall.ParseNetlinkRouteAttr(m)
	if err != nil {
		return route{}, false
	}
	r := route{Dst: netip.PrefixFrom(netip.IPv4Unspecified(), dstLen), Table: table, Type: typ}
	for _, a := range attrs {
		switch a.Attr.Type {
		case syscall.RTA_DST:
			if addr, ok := netip.AddrFromSlice(a.Value); ok && addr.Is4() {
				r.Dst = netip.PrefixFrom(addr, dstLen)
			}
		case syscall.RTA_OIF:
			if len(a.Value) >= 4 {
				r.OIF = int(binary.NativeEndian.Uint32(a.Value))
			}
		case syscall.RTA_PRIORITY:
			if len(a.Value) >= 4 {
				r.Priority = binary.NativeEndian.Uint32(a.Value)
			}
		case unix.RTA_TABLE:
			if len(a.Value) >= 4 {
				r.Table = binary.NativeEndian.Uint32(a.Value)
			}
		}
	}
	return r, true
}
