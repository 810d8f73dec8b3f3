package peer

import (
	"encoding/binary"
	"net/netip"
	"testing"

	"github.com/peerlan/peerlan/peer/ether"
)

var (
	guardMAC   = ether.MAC{0x02, 0, 0, 0, 0, 0x77}
	guardAddr  = netip.MustParseAddr("10.86.0.7")
	otherAddr  = netip.MustParseAddr("10.86.0.9")
	routerAddr = netip.MustParseAddr("10.86.0.1")
)

func ethFrame(src ether.MAC, typ uint16, payload []byte) []byte {
	b := make([]byte, ether.HeaderLen+len(payload))
	e := ether.Ethernet(b)
	e.SetDst(ether.Broadcast)
	e.SetSrc(src)
	e.SetType(typ)
	copy(b[ether.HeaderLen:], payload)
	return b
}

// ipv4UDP is an IPv4 header (no options) from src and a UDP header.
func ipv4UDP(src netip.Addr, sport, dport uint16) []byte {
	b := make([]byte, 28)
	b[0], b[9] = 0x45, ipProtoUDP
	binary.BigEndian.PutUint16(b[2:4], 28)
	a := src.As4()
	copy(b[12:16], a[:])
	copy(b[16:20], []byte{255, 255, 255, 255})
	binary.BigEndian.PutUint16(b[20:22], sport)
	binary.BigEndian.PutUint16(b[22:24], dport)
	return b
}

func arp(sha ether.MAC, spa netip.Addr) []byte {
	b := make([]byte, ether.ARPLen)
	binary.BigEndian.PutUint16(b[0:2], 1)
	binary.BigEndian.PutUint16(b[2:4], ether.TypeIPv4)
	b[4], b[5] = 6, 4
	binary.BigEndian.PutUint16(b[6:8], 2)
	copy(b[8:14], sha[:])
	a := spa.As4()
	copy(b[14:18], a[:])
	return b
}

// ipv6 is an IPv6 header whose chain is the given (next header, bytes)
// pieces, the first piece's next header in the fixed header.
func ipv6(next byte, rest []byte) []byte {
	b := make([]byte, 40, 40+len(rest))
	b[0], b[6] = 0x60, next
	binary.BigEndian.PutUint16(b[4:6], uint16(len(rest)))
	return append(b, rest...)
}

func TestL3Guard(t *testing.T) {
	guest := &L3Guard{Addr: guardAddr}
	gateway := &L3Guard{Addr: routerAddr, Gateway: true}
	icmp6 := func(typ byte) []byte { return []byte{typ, 0, 0, 0, 0, 0, 0, 0} }
	hopByHop := func(next byte) []byte { return []byte{next, 0, 0, 0, 0, 0, 0, 0} }
	fragment := func(next byte, offset uint16) []byte {
		b := []byte{next, 0, 0, 0, 0, 0, 0, 1}
		binary.BigEndian.PutUint16(b[2:4], offset<<3)
		return b
	}
	tagged := ethFrame(guardMAC, ether.TypeVLAN, append([]byte{0, 5, 0x08, 0x06}, arp(guardMAC, otherAddr)...))
	cases := []struct {
		name  string
		g     *L3Guard
		frame []byte
		want  DropReason
	}{
		{"own IPv4", guest, ethFrame(guardMAC, ether.TypeIPv4, ipv4UDP(guardAddr, 5000, 53)), dropNone},
		{"spoofed IPv4 source", guest, ethFrame(guardMAC, ether.TypeIPv4, ipv4UDP(otherAddr, 5000, 53)), DropIPSource},
		{"unspecified IPv4 source", guest, ethFrame(guardMAC, ether.TypeIPv4, ipv4UDP(netip.IPv4Unspecified(), 68, 67)), DropIPSource},
		{"truncated IPv4", guest, ethFrame(guardMAC, ether.TypeIPv4, ipv4UDP(guardAddr, 1, 2)[:19]), DropIPSource},
		{"IPv6 in an IPv4 frame", guest, ethFrame(guardMAC, ether.TypeIPv4, ipv6(ipProtoUDP, make([]byte, 8))), DropIPSource},
		{"gateway routes any source", gateway, ethFrame(guardMAC, ether.TypeIPv4, ipv4UDP(netip.MustParseAddr("192.0.2.80"), 80, 5000)), dropNone},
		{"DHCP server from a guest", guest, ethFrame(guardMAC, ether.TypeIPv4, ipv4UDP(guardAddr, 67, 68)), DropRogueDHCP},
		{"DHCP server from the gateway", gateway, ethFrame(guardMAC, ether.TypeIPv4, ipv4UDP(routerAddr, 67, 68)), dropNone},
		{"own ARP", guest, ethFrame(guardMAC, ether.TypeARP, arp(guardMAC, guardAddr)), dropNone},
		{"ARP probe", guest, ethFrame(guardMAC, ether.TypeARP, arp(guardMAC, netip.IPv4Unspecified())), dropNone},
		{"ARP for another's address", guest, ethFrame(guardMAC, ether.TypeARP, arp(guardMAC, otherAddr)), DropARPSpoof},
		{"guest claims the router", guest, ethFrame(guardMAC, ether.TypeARP, arp(guardMAC, routerAddr)), DropARPSpoof},
		{"gateway claims the router", gateway, ethFrame(guardMAC, ether.TypeARP, arp(guardMAC, routerAddr)), dropNone},
		{"gateway claims a guest", gateway, ethFrame(guardMAC, ether.TypeARP, arp(guardMAC, guardAddr)), DropARPSpoof},
		{"ARP sender MAC not the frame's", guest, ethFrame(guardMAC, ether.TypeARP, arp(ether.MAC{2, 0, 0, 0, 0, 1}, guardAddr)), DropARPSpoof},
		{"truncated ARP", guest, ethFrame(guardMAC, ether.TypeARP, arp(guardMAC, guardAddr)[:20]), DropARPSpoof},
		{"neighbour solicitation", guest, ethFrame(guardMAC, ether.TypeIPv6, ipv6(ipProtoICMPv6, icmp6(135))), dropNone},
		{"router advertisement", guest, ethFrame(guardMAC, ether.TypeIPv6, ipv6(ipProtoICMPv6, icmp6(134))), DropRogueRouter},
		{"redirect", guest, ethFrame(guardMAC, ether.TypeIPv6, ipv6(ipProtoICMPv6, icmp6(137))), DropRogueRouter},
		{"RA behind hop-by-hop", guest, ethFrame(guardMAC, ether.TypeIPv6, ipv6(0, append(hopByHop(ipProtoICMPv6), icmp6(134)...))), DropRogueRouter},
		{"fragmented ICMPv6", guest, ethFrame(guardMAC, ether.TypeIPv6, ipv6(44, append(fragment(ipProtoICMPv6, 0), icmp6(134)...))), DropRogueRouter},
		{"later fragment", guest, ethFrame(guardMAC, ether.TypeIPv6, ipv6(44, append(fragment(ipProtoICMPv6, 3), 0, 0, 0, 0))), dropNone},
		{"first fragment of UDP", guest, ethFrame(guardMAC, ether.TypeIPv6, ipv6(44, append(fragment(ipProtoUDP, 0), 0x13, 0x88, 0, 53))), dropNone},
		{"DHCPv6 server", guest, ethFrame(guardMAC, ether.TypeIPv6, ipv6(ipProtoUDP, []byte{0x02, 0x23, 0x02, 0x22, 0, 8, 0, 0})), DropRogueDHCP},
		{"endless extension headers", guest, ethFrame(guardMAC, ether.TypeIPv6, ipv6(0, append(append(append(append(hopByHop(0), hopByHop(0)...), hopByHop(0)...), hopByHop(0)...), hopByHop(ipProtoICMPv6)...))), DropRogueRouter},
		{"truncated IPv6", guest, ethFrame(guardMAC, ether.TypeIPv6, ipv6(ipProtoICMPv6, nil)[:30]), DropRogueRouter},
		{"RA from the gateway", gateway, ethFrame(guardMAC, ether.TypeIPv6, ipv6(ipProtoICMPv6, icmp6(134))), dropNone},
		{"VLAN tag", guest, tagged, DropTagged},
		{"other EtherType", guest, ethFrame(guardMAC, 0x88b5, []byte("hello")), dropNone},
	}
	for _, c := range cases {
		if got := c.g.check(c.frame); got != c.want {
			t.Errorf("%s: check = %v, want %v", c.name, got, c.want)
		}
	}
}

// FuzzL3Guard: no frame makes the guard read out of bounds.
func FuzzL3Guard(f *testing.F) {
	f.Add(ethFrame(guardMAC, ether.TypeIPv6, ipv6(0, []byte{44, 0})))
	f.Add(ethFrame(guardMAC, ether.TypeARP, arp(guardMAC, guardAddr)))
	f.Add(ethFrame(guardMAC, ether.TypeIPv4, ipv4UDP(guardAddr, 67, 68)))
	g := &L3Guard{Addr: guardAddr}
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) < ether.HeaderLen {
			return
		}
		g.check(b)
	})
}
