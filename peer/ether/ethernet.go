// Package ether provides typed views of the frames peerlan inspects:
// Ethernet, ARP, IPv4, UDP and DHCP. A view is a []byte with accessors; it
// never copies and never allocates, so it can sit on the forwarding path.
// Constructors validate lengths once; accessors then index without checks.
package ether

import (
	"errors"
	"fmt"
)

// MAC is an IEEE 802 MAC-48 address.
type MAC [6]byte

// Broadcast is ff:ff:ff:ff:ff:ff.
var Broadcast = MAC{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}

// IsGroup reports whether m is a multicast or broadcast address (I/G bit set).
func (m MAC) IsGroup() bool { return m[0]&1 == 1 }

// IsBroadcast reports whether m is ff:ff:ff:ff:ff:ff.
func (m MAC) IsBroadcast() bool { return m == Broadcast }

// IsZero reports whether m is 00:00:00:00:00:00.
func (m MAC) IsZero() bool { return m == MAC{} }

func (m MAC) String() string {
	return fmt.Sprintf("%02x:%02x:%02x:%02x:%02x:%02x", m[0], m[1], m[2], m[3], m[4], m[5])
}

// EtherType values peerlan looks at.
const (
	TypeIPv4 uint16 = 0x0800
	TypeARP  uint16 = 0x0806
	TypeVLAN uint16 = 0x8100
	TypeIPv6 uint16 = 0x86dd
)

// HeaderLen is the length of an untagged Ethernet header.
const HeaderLen = 14

// ErrShort is returned when a buffer is too short for the header it should hold.
var ErrShort = errors.New("ether: frame too short")

// Ethernet is a view of an Ethernet II frame.
type Ethernet []byte

// ParseEthernet returns b as an Ethernet view, or ErrShort.
func ParseEthernet(b []byte) (Ethernet, error) {
	if len(b) < HeaderLen {
		return nil, ErrShort
	}
	return Ethernet(b), nil
}

// Dst returns the destination MAC.
func (e Ethernet) Dst() MAC { return MAC(e[0:6]) }

// Src returns the source MAC.
func (e Ethernet) Src() MAC { return MAC(e[6:12]) }

// Type returns the EtherType of the untagged header.
func (e Ethernet) Type() uint16 { return uint16(e[12])<<8 | uint16(e[13]) }

// Payload returns the bytes after the untagged header.
func (e Ethernet) Payload() []byte { return e[HeaderLen:] }

// SetDst sets the destination MAC.
func (e Ethernet) SetDst(m MAC) { copy(e[0:6], m[:]) }

// SetSrc sets the source MAC.
func (e Ethernet) SetSrc(m MAC) { copy(e[6:12], m[:]) }

// SetType sets the EtherType.
func (e Ethernet) SetType(t uint16) { e[12], e[13] = byte(t>>8), byte(t) }
