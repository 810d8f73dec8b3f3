package ether

import (
	"encoding/binary"
	"net/netip"
)

// ARPLen is the length of an ARP packet for IPv4 over Ethernet.
const ARPLen = 28

// ARP operations.
const (
	ARPRequest uint16 = 1
	ARPReply   uint16 = 2
)

// ARPFrameLen is the length of an Ethernet frame carrying ARP, without the
// padding to 60 bytes that a NIC adds; TAP devices and emulators accept it.
const ARPFrameLen = HeaderLen + ARPLen

// ARP is a view of an ARP packet for IPv4 over Ethernet (RFC 826):
//
//	htype(2)=1 ptype(2)=0x0800 hlen(1)=6 plen(1)=4 op(2)
//	sender MAC(6) sender IP(4) target MAC(6) target IP(4)
type ARP []byte

// ParseARP validates an Ethernet payload as ARP for IPv4 over Ethernet. It
// reports ErrShort when b cannot hold one and ErrMalformed for any other
// hardware or protocol type or address length.
func ParseARP(b []byte) (ARP, error) {
	if len(b) < ARPLen {
		return nil, ErrShort
	}
	if binary.BigEndian.Uint16(b[0:2]) != 1 || binary.BigEndian.Uint16(b[2:4]) != TypeIPv4 ||
		b[4] != 6 || b[5] != 4 {
		return nil, ErrMalformed
	}
	return ARP(b[:ARPLen]), nil
}

// Op returns the operation (ARPRequest, ARPReply).
func (a ARP) Op() uint16 { return binary.BigEndian.Uint16(a[6:8]) }

// SenderMAC returns the sender hardware address.
func (a ARP) SenderMAC() MAC { return MAC(a[8:14]) }

// SenderIP returns the sender protocol address.
func (a ARP) SenderIP() netip.Addr { return readAddr4(a[14:18]) }

// TargetMAC returns the target hardware address (zero in a request).
func (a ARP) TargetMAC() MAC { return MAC(a[18:24]) }

// TargetIP returns the target protocol address.
func (a ARP) TargetIP() netip.Addr { return readAddr4(a[24:28]) }

// BuildARPReply writes into b the Ethernet frame answering the request req
// on behalf of hw: "req's target IP is at hw", sent to the requester. It
// returns the frame length (ARPFrameLen), or ErrShort when b is too small
// and ErrMalformed when req is not a request. It allocates nothing.
func BuildARPReply(b []byte, req ARP, hw MAC) (int, error) {
	if len(b) < ARPFrameLen {
		return 0, ErrShort
	}
	if req.Op() != ARPRequest {
		return 0, ErrMalformed
	}
	// Read everything from req before writing: b may alias req's frame.
	sha, spa, tpa := req.SenderMAC(), req.SenderIP(), req.TargetIP()
	putARPFrame(b, sha, ARPReply, hw, tpa, sha, spa)
	return ARPFrameLen, nil
}

// putARPFrame writes an Ethernet frame to dst from sha carrying an IPv4 ARP
// packet into b, which holds at least ARPFrameLen bytes.
func putARPFrame(b []byte, dst MAC, op uint16, sha MAC, spa netip.Addr, tha MAC, tpa netip.Addr) {
	e := Ethernet(b[:ARPFrameLen])
	e.SetDst(dst)
	e.SetSrc(sha)
	e.SetType(TypeARP)
	a := e.Payload()
	binary.BigEndian.PutUint16(a[0:2], 1) // hardware type Ethernet
	binary.BigEndian.PutUint16(a[2:4], TypeIPv4)
	a[4], a[5] = 6, 4
	binary.BigEndian.PutUint16(a[6:8], op)
	copy(a[8:14], sha[:])
	putAddr4(a[14:18], spa)
	copy(a[18:24], tha[:])
	putAddr4(a[24:28], tpa)
}

// BuildGratuitousARP writes into b a gratuitous ARP: a broadcast request
// from hw for its own address ip, "ip is at hw". Hosts that hold another
// MAC address for ip update their neighbour entry at once instead of when
// it goes stale, which on Linux can take most of a minute; hosts without
// an entry create none. It returns the frame length (ARPFrameLen), or
// ErrShort when b is too small and ErrMalformed when ip is not IPv4. It
// allocates nothing.
func BuildGratuitousARP(b []byte, hw MAC, ip netip.Addr) (int, error) {
	if len(b) < ARPFrameLen {
		return 0, ErrShort
	}
	if !ip.Is4() {
		return 0, ErrMalformed
	}
	putARPFrame(b, Broadcast, ARPRequest, hw, ip, MAC{}, ip)
	return ARPFrameLen, nil
}
