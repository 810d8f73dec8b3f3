// Package ether provides typed views of the frames peerlan inspects:
// Ethernet, ARP, IPv4, UDP and DHCP. A view is a []byte with accessors; it
// never copies and never allocates, so it can sit on the forwarding path.
// The Parse functions validate lengths once; accessors then index without
// checks, so a view must come from its Parse function (or a builder), not
// from a bare conversion of unchecked bytes. Builders (BuildARPReply,
// DHCPBuilder) write whole frames into the caller's buffer.
//
// Addresses are netip.Addr and MAC ([6]byte) values. The views carry IPv4
// only: a setter given any other address writes 0.0.0.0.
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

// IsLocal reports whether m is locally administered (U/L bit set), as the
// addresses peerlan invents for guests and its own services are.
func (m MAC) IsLocal() bool { return m[0]&2 == 2 }

// IsZero reports whether m is 00:00:00:00:00:00.
func (m MAC) IsZero() bool { return m == MAC{} }

func (m MAC) String() string {
	b, _ := m.MarshalText()
	return string(b)
}

// MarshalText formats m as six colon-separated lower-case hex pairs, so
// that logs and JSON show "52:54:00:12:34:56" rather than a byte array.
func (m MAC) MarshalText() ([]byte, error) {
	const digits = "0123456789abcdef"
	b := make([]byte, 0, 17)
	for i, x := range m {
		if i > 0 {
			b = append(b, ':')
		}
		b = append(b, digits[x>>4], digits[x&0xf])
	}
	return b, nil
}

// UnmarshalText parses the form ParseMAC accepts.
func (m *MAC) UnmarshalText(b []byte) error {
	v, err := ParseMAC(string(b))
	if err != nil {
		return err
	}
	*m = v
	return nil
}

// ParseMAC parses a MAC-48 written as six hex pairs separated by colons or
// hyphens ("02:00:5e:10:00:01"), as in configuration files and flags.
func ParseMAC(s string) (MAC, error) {
	var m MAC
	if len(s) != 17 {
		return m, fmt.Errorf("%w: %q", errBadMAC, s)
	}
	sep := s[2]
	if sep != ':' && sep != '-' {
		return m, fmt.Errorf("%w: %q", errBadMAC, s)
	}
	for i := range m {
		if i > 0 && s[3*i-1] != sep {
			return m, fmt.Errorf("%w: %q", errBadMAC, s)
		}
		hi, ok1 := unhex(s[3*i])
		lo, ok2 := unhex(s[3*i+1])
		if !ok1 || !ok2 {
			return m, fmt.Errorf("%w: %q", errBadMAC, s)
		}
		m[i] = hi<<4 | lo
	}
	return m, nil
}

var errBadMAC = errors.New("ether: bad MAC address, want six hex pairs like 02:00:5e:10:00:01")

func unhex(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
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

// Errors returned by the parsers and builders. They are sentinels, never
// wrapped, so that rejecting a frame on the forwarding path allocates nothing.
var (
	// ErrShort: the buffer is too short for the header it should hold (or,
	// for a builder, for the frame it should write).
	ErrShort = errors.New("ether: frame too short")
	// ErrTruncated: a length field promises more bytes than the buffer holds.
	ErrTruncated = errors.New("ether: length field exceeds frame")
	// ErrMalformed: a header field has a value the format does not allow.
	ErrMalformed = errors.New("ether: malformed header")
)

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
