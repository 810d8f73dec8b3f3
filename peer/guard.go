package peer

import (
	"encoding/binary"
	"net/netip"

	"github.com/peerlan/peerlan/peer/ether"
)

// L3Guard is what a link's remote peer may claim above Ethernet, checked on
// every frame the link delivers: the layer-3 guards of a managed switch (IP
// source guard, dynamic ARP inspection, DHCP snooping, RA guard) and
// WireGuard's allowed IPs, keyed to the identity the signaling server
// issued. Without it any guest could answer ARP for another's address, or
// hand out leases and routes, and take over the LAN's traffic.
//
// From a guarded link:
//   - IPv4 must come from Addr (DropIPSource), except from the gateway,
//     which routes the internet's traffic into the room.
//   - ARP must be IPv4-over-Ethernet with the frame's source MAC as sender
//     and Addr (or 0.0.0.0, an RFC 5227 probe) as sender IP (DropARPSpoof);
//     the gateway's too, so only it can claim the room's .1.
//   - DHCP server messages (UDP from port 67, and DHCPv6 from 547) and IPv6
//     router advertisements and redirects come only from the gateway
//     (DropRogueDHCP, DropRogueRouter). Every peer answers its own guest's
//     DHCP; no lease or route has any business crossing a link.
//   - VLAN-tagged frames are dropped (DropTagged): a tag would hide the
//     headers above from these checks, and the LAN has no VLANs.
//
// Other EtherTypes pass. IPv6 sources are not checked: the room assigns no
// IPv6 addresses, and guests use link-local ones derived from their MACs.
type L3Guard struct {
	// Addr is the remote peer's IPv4 address as the signaling server
	// assigned it.
	Addr netip.Addr
	// Gateway: the remote peer joined with the gateway token.
	Gateway bool
}

// check returns why frame (at least an Ethernet header) breaks the guard,
// or dropNone.
func (g *L3Guard) check(frame []byte) DropReason {
	switch ether.Ethernet(frame).Type() {
	case ether.TypeIPv4:
		return g.checkIPv4(frame[ether.HeaderLen:])
	case ether.TypeARP:
		return g.checkARP(frame)
	case ether.TypeIPv6:
		if g.Gateway {
			return dropNone
		}
		return checkIPv6FromGuest(frame[ether.HeaderLen:])
	case ether.TypeVLAN, 0x88a8, 0x9100: // 802.1Q, 802.1ad, legacy QinQ
		return DropTagged
	}
	return dropNone
}

func (g *L3Guard) checkIPv4(ip []byte) DropReason {
	if len(ip) < ether.IPv4MinHeaderLen || ip[0]>>4 != 4 {
		return DropIPSource
	}
	if g.Gateway {
		return dropNone
	}
	if !g.Addr.Is4() || [4]byte(ip[12:16]) != g.Addr.As4() {
		return DropIPSource
	}
	// A first (or only) fragment of UDP carries the ports; later fragments
	// cannot be reassembled without it.
	hl := int(ip[0]&0x0f) * 4
	if ip[9] == ipProtoUDP && binary.BigEndian.Uint16(ip[6:8])&0x1fff == 0 && len(ip) >= hl+4 && hl >= ether.IPv4MinHeaderLen {
		if binary.BigEndian.Uint16(ip[hl:hl+2]) == 67 {
			return DropRogueDHCP
		}
	}
	return dropNone
}

func (g *L3Guard) checkARP(frame []byte) DropReason {
	a := frame[ether.HeaderLen:]
	if len(a) < ether.ARPLen ||
		binary.BigEndian.Uint16(a[0:2]) != 1 || binary.BigEndian.Uint16(a[2:4]) != uint16(ether.TypeIPv4) ||
		a[4] != 6 || a[5] != 4 {
		return DropARPSpoof
	}
	if [6]byte(a[8:14]) != [6]byte(frame[6:12]) {
		return DropARPSpoof // the sender MAC is not the frame's
	}
	spa := [4]byte(a[14:18])
	if spa == [4]byte{} || (g.Addr.Is4() && spa == g.Addr.As4()) {
		return dropNone
	}
	return DropARPSpoof
}

// dropNone is check's "no reason to drop".
const dropNone DropReason = 255

const (
	ipProtoUDP    = 17
	ipProtoICMPv6 = 58
)

// checkIPv6FromGuest finds the upper-layer header of an IPv6 packet behind
// at most a few extension headers and refuses router advertisements,
// redirects and DHCPv6 server messages. A packet whose chain it cannot
// follow (too long or truncated) is refused too, and so is fragmented
// ICMPv6: fragments can hide an advertisement's type from a guard (the
// evasion RFC 7113 describes), and neighbour discovery is never fragmented.
func checkIPv6FromGuest(ip []byte) DropReason {
	const fixedLen = 40
	if len(ip) < fixedLen || ip[0]>>4 != 6 {
		return DropRogueRouter
	}
	next, off := ip[6], fixedLen
	for range 4 {
		switch next {
		case 0, 43, 60: // hop-by-hop, routing, destination options
			if len(ip) < off+8 {
				return DropRogueRouter
			}
			next, off = ip[off], off+8+int(ip[off+1])*8
			continue
		case 44: // fragment
			if len(ip) < off+8 {
				return DropRogueRouter
			}
			if binary.BigEndian.Uint16(ip[off+2:off+4])&^7 != 0 {
				return dropNone // a later fragment: the first one was checked
			}
			if ip[off] == ipProtoICMPv6 {
				return DropRogueRouter // neighbour discovery is never fragmented (RFC 6980)
			}
			next, off = ip[off], off+8
			continue
		case ipProtoICMPv6:
			if len(ip) < off+1 {
				return DropRogueRouter
			}
			if t := ip[off]; t == 134 || t == 137 { // router advertisement, redirect
				return DropRogueRouter
			}
			return dropNone
		case ipProtoUDP:
			if len(ip) >= off+2 && binary.BigEndian.Uint16(ip[off:off+2]) == 547 {
				return DropRogueDHCP
			}
			return dropNone
		default:
			return dropNone
		}
	}
	return DropRogueRouter
}
