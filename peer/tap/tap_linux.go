//go:build linux

package tap

import (
	"errors"
	"fmt"
	"net"
	"os"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/peerlan/peerlan/internal/rtnl"
	"github.com/peerlan/peerlan/peer/ether"
)

// Device is a TAP device: one Ethernet frame per Read and Write. It
// satisfies peer.Port; Close removes the device (it is not persistent).
//
// With Config.Offload it also carries offloaded frames (ReadOffload,
// WriteOffload): the kernel hands over TCP super-frames of up to 64 KiB with
// checksums left to do, and takes them back the same way, so that a stream
// costs one read and one write per 64 KiB instead of per 1514 bytes. Its
// plain Read then completes that work itself, cutting super-frames into
// segments it returns one per call.
type Device struct {
	f       *os.File
	raw     syscall.RawConn
	name    string
	offload bool

	// Read side (one reader at a time, as Port promises): a super-frame
	// being returned segment by segment by Read.
	rhdr    [ether.VirtioNetHdrLen]byte
	super   []byte
	seg     ether.Segmenter
	segging bool

	// Write side (one writer at a time).
	whdr [ether.VirtioNetHdrLen]byte
}

// TUN/TAP ioctl flags and offloads (linux/if_tun.h).
const (
	tunFCSUM   = 0x01
	tunFTSO4   = 0x02
	tunFTSO6   = 0x04
	tunFTSOECN = 0x08
)

// Open creates the TAP device, brings it up and places it as cfg says.
func Open(cfg Config) (*Device, error) {
	if cfg.Name == "" {
		cfg.Name = "peerlan0"
	}
	if cfg.MTU == 0 {
		cfg.MTU = 1500
	}
	for _, n := range []string{cfg.Name, cfg.Bridge} {
		if n != "" && !ValidName(n) {
			return nil, fmt.Errorf("%w: %q", ErrBadName, n)
		}
	}
	if cfg.MTU < 576 || cfg.MTU > 1500 {
		return nil, fmt.Errorf("tap: MTU %d: want 576 to 1500", cfg.MTU)
	}
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		return nil, ErrNoTUN
	}
	var d *Device
	open := func() error {
		var err error
		if d, err = create(cfg.Name, cfg.Offload); err != nil {
			return err
		}
		if err := d.place(cfg); err != nil {
			d.Close()
			return err
		}
		return nil
	}
	var err error
	if cfg.Netns == "" {
		err = open()
	} else {
		// Created inside the namespace, the device never moves: a move
		// costs the kernel an RCU grace period (15 ms here), most of the
		// time from start to a TAP that takes frames.
		err = rtnl.InNamespace(cfg.Netns, open)
		if errors.Is(err, os.ErrNotExist) {
			err = fmt.Errorf("tap: namespace %s does not exist: %w", cfg.Netns, err)
		}
	}
	if err != nil {
		return nil, err
	}
	return d, nil
}

// create opens /dev/net/tun and attaches it to a new TAP named name.
func create(name string, offload bool) (*Device, error) {
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if err != nil {
		if errors.Is(err, unix.EPERM) || errors.Is(err, unix.EACCES) {
			return nil, ErrNotPermitted
		}
		return nil, fmt.Errorf("tap: open /dev/net/tun: %w", err)
	}
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("%w: %q", ErrBadName, name)
	}
	flags := uint16(unix.IFF_TAP | unix.IFF_NO_PI)
	if offload {
		flags |= unix.IFF_VNET_HDR
	}
	ifr.SetUint16(flags)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		unix.Close(fd)
		switch {
		case errors.Is(err, unix.EPERM), errors.Is(err, unix.EACCES):
			return nil, ErrNotPermitted
		case errors.Is(err, unix.EBUSY):
			return nil, fmt.Errorf("%w: %s", ErrBusy, name)
		case errors.Is(err, unix.EINVAL):
			return nil, fmt.Errorf("tap: %s exists and is not a TAP device: %w", name, err)
		}
		return nil, fmt.Errorf("tap: create %s: %w", name, err)
	}
	if offload {
		// The header's fields are little-endian (legacy virtio on x86 and
		// arm64); TUNSETOFFLOAD turns on the device's checksum and TCP
		// segmentation offloads, so the kernel sends super-frames.
		err := unix.IoctlSetInt(fd, unix.TUNSETOFFLOAD, tunFCSUM|tunFTSO4|tunFTSO6|tunFTSOECN)
		if err != nil {
			unix.Close(fd)
			return nil, fmt.Errorf("tap: enable offloads on %s: %w", name, err)
		}
	}
	// A non-blocking descriptor joins Go's poller: Read and Write park the
	// goroutine, not the thread, and Close unblocks them.
	f := os.NewFile(uintptr(fd), "/dev/net/tun")
	raw, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("tap: %w", err)
	}
	d := &Device{f: f, raw: raw, name: ifr.Name(), offload: offload}
	if offload {
		d.super = make([]byte, ether.MaxOffloadFrameSize)
	}
	return d, nil
}

// place sets the device's MTU and bridge and brings it up, in the
// namespace it was created in, over rtnetlink (package rtnl) rather than by
// running ip.
func (d *Device) place(cfg Config) error {
	if err := d.setLink(0, unix.IFLA_MTU, uint32(cfg.MTU)); err != nil {
		return fmt.Errorf("tap: set the MTU of %s to %d: %w", d.name, cfg.MTU, err)
	}
	if cfg.Bridge != "" {
		br, err := net.InterfaceByName(cfg.Bridge)
		if err == nil {
			err = d.setLink(0, unix.IFLA_MASTER, uint32(br.Index))
		}
		if err != nil {
			return fmt.Errorf("tap: add %s to bridge %s: %w", d.name, cfg.Bridge, err)
		}
	}
	if err := d.setLink(unix.IFF_UP, 0, 0); err != nil {
		return fmt.Errorf("tap: bring %s up: %w", d.name, err)
	}
	return nil
}

// setLink changes the device, named by its name: it sets the flags in
// setFlags and, when attr is not zero, a 4-byte attribute.
func (d *Device) setLink(setFlags uint32, attr uint16, value uint32) error {
	msg := rtnl.Attr(rtnl.LinkMsg(0, setFlags, setFlags), unix.IFLA_IFNAME, append([]byte(d.name), 0))
	if attr != 0 {
		msg = rtnl.Attr(msg, attr, rtnl.Uint32(value))
	}
	return rtnl.Request(unix.RTM_NEWLINK, 0, msg)
}

// Name returns the device's name.
func (d *Device) Name() string { return d.name }

// Offloads reports whether the device carries offloaded frames.
func (d *Device) Offloads() bool { return d.offload }

// Read reads one complete frame. On an offload device it finishes the
// checksum a frame still needs and returns a super-frame's segments one per
// call; a super-frame it cannot cut (it should not happen) is dropped.
func (d *Device) Read(b []byte) (int, error) {
	if !d.offload {
		n, err := d.f.Read(b)
		return n, d.mapErr(err)
	}
	for {
		if d.segging {
			if n := d.seg.Next(b); n > 0 {
				return n, nil
			}
			d.segging = false
		}
		n, o, err := d.ReadOffload(d.super)
		if err != nil {
			return 0, err
		}
		frame := d.super[:n]
		switch {
		case o.GSO != ether.GSONone:
			if d.seg.Reset(frame, o) == nil && len(b) >= ether.MaxFrameLen {
				d.segging = true
			}
		case o.NeedsCsum:
			if o.Check(frame) == nil {
				ether.FinishChecksum(frame, o)
				return copy(b, frame), nil
			}
		default:
			return copy(b, frame), nil
		}
	}
}

// ReadOffload reads one frame, which may be a super-frame, and the work it
// still needs. On a device without offloads the work is always none.
func (d *Device) ReadOffload(b []byte) (int, ether.Offload, error) {
	if !d.offload {
		n, err := d.f.Read(b)
		return n, ether.Offload{}, d.mapErr(err)
	}
	iov := [][]byte{d.rhdr[:], b}
	var n int
	var rerr error
	err := d.raw.Read(func(fd uintptr) bool {
		n, rerr = unix.Readv(int(fd), iov)
		return rerr != unix.EAGAIN
	})
	if err == nil {
		err = rerr
	}
	if err != nil {
		return 0, ether.Offload{}, d.mapErr(err)
	}
	if n < ether.VirtioNetHdrLen {
		return 0, ether.Offload{}, errShortRead
	}
	o, err := ether.ParseOffload(d.rhdr[:])
	if err != nil {
		return 0, ether.Offload{}, fmt.Errorf("tap: %s: %w", d.name, err)
	}
	return n - ether.VirtioNetHdrLen, o, nil
}

// Write writes one frame. The kernel queues or drops; it does not block.
func (d *Device) Write(b []byte) (int, error) {
	if !d.offload {
		n, err := d.f.Write(b)
		return n, d.mapErr(err)
	}
	return d.WriteOffload(b, ether.Offload{})
}

// WriteOffload writes one frame, possibly a super-frame, with the work it
// still needs, which the kernel does (or skips, for a frame it delivers
// locally). On a device without offloads only complete frames are taken.
func (d *Device) WriteOffload(b []byte, o ether.Offload) (int, error) {
	if !d.offload {
		if !o.IsZero() {
			return 0, errNoOffload
		}
		n, err := d.f.Write(b)
		return n, d.mapErr(err)
	}
	o.Put(d.whdr[:])
	iov := [][]byte{d.whdr[:], b}
	var n int
	var werr error
	err := d.raw.Write(func(fd uintptr) bool {
		n, werr = unix.Writev(int(fd), iov)
		return werr != unix.EAGAIN
	})
	if err == nil {
		err = werr
	}
	if err != nil {
		return 0, d.mapErr(err)
	}
	return max(n-ether.VirtioNetHdrLen, 0), nil
}

// mapErr reports a closed device as net.ErrClosed, as peer.Port asks.
func (d *Device) mapErr(err error) error {
	if err != nil && errors.Is(err, os.ErrClosed) {
		return net.ErrClosed
	}
	return err
}

var (
	errShortRead = errors.New("tap: read shorter than the offload header")
	errNoOffload = errors.New("tap: offloaded frame for a device without offloads")
)

// Close closes the device, which removes it.
func (d *Device) Close() error { return d.f.Close() }
