//go:build linux

package gateway

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/peerlan/peerlan/internal/rtnl"
)

// The gateway's few address, link and route operations, over package rtnl,
// so that it depends on no CLI besides nft.

func nlRequest(msgType, flags uint16, payload []byte) error {
	err := rtnl.Request(msgType, flags, payload)
	if errors.Is(err, rtnl.ErrNetlink) {
		return fmt.Errorf("%w: %w", errNetlink, err)
	}
	return err
}

// addrMsg builds an ifaddrmsg for an IPv4 address with its subnet broadcast.
func addrMsg(ifindex int, p netip.Prefix) []byte {
	b := make([]byte, unix.SizeofIfAddrmsg)
	b[0] = unix.AF_INET
	b[1] = byte(p.Bits())
	b[3] = unix.RT_SCOPE_UNIVERSE
	binary.NativeEndian.PutUint32(b[4:8], uint32(ifindex))
	a := p.Addr().As4()
	b = rtnl.Attr(b, unix.IFA_LOCAL, a[:])
	b = rtnl.Attr(b, unix.IFA_ADDRESS, a[:])
	brd := broadcastAddr(p).As4()
	return rtnl.Attr(b, unix.IFA_BROADCAST, brd[:])
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

// linkSetUp sets or clears IFF_UP; a missing interface is down already.
func linkSetUp(ifindex int, up bool) error {
	var flags uint32
	if up {
		flags = unix.IFF_UP
	}
	err := nlRequest(unix.RTM_NEWLINK, 0, rtnl.LinkMsg(ifindex, flags, unix.IFF_UP))
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
