package ether

import (
	"encoding/binary"
	"net/netip"
)

// IPv4MinHeaderLen is the length of an IPv4 header without options.
const IPv4MinHeaderLen = 20

// IP protocol numbers peerlan looks at.
const (
	ProtoICMP uint8 = 1
	ProtoTCP  uint8 = 6
	ProtoUDP  uint8 = 17
)

// IPv4 is a view of an IPv4 datagram (RFC 791): header, options and payload.
//
//	 0       4       8              16   19                         31
//	+-------+-------+---------------+----+---------------------------+
//	|Version|  IHL  |      TOS      |          Total Length          |
//	|        Identification         |Flags|     Fragment Offset      |
//	|      TTL      |   Protocol    |        Header Checksum         |
//	|                        Source Address                          |
//	|                     Destination Address                        |
//	|                 Options (IHL > 5) ...  then payload            |
type IPv4 []byte

// ParseIPv4 validates the header of the datagram at the start of b and
// returns a view of exactly Total Length bytes, so that Ethernet padding
// after the datagram is not mistaken for payload. It reports ErrShort when b
// cannot hold a minimal header, ErrMalformed for a version other than 4, an
// IHL below 5 or a total length smaller than the header, and ErrTruncated
// when the header or total length run past the end of b.
func ParseIPv4(b []byte) (IPv4, error) {
	if len(b) < IPv4MinHeaderLen {
		return nil, ErrShort
	}
	if b[0]>>4 != 4 {
		return nil, ErrMalformed
	}
	hl := int(b[0]&0x0f) * 4
	tl := int(binary.BigEndian.Uint16(b[2:4]))
	if hl < IPv4MinHeaderLen || tl < hl {
		return nil, ErrMalformed
	}
	if tl > len(b) {
		return nil, ErrTruncated
	}
	return IPv4(b[:tl]), nil
}

// Version returns the version field (4 for a parsed view).
func (ip IPv4) Version() uint8 { return ip[0] >> 4 }

// HeaderLen returns the header length in bytes (IHL × 4).
func (ip IPv4) HeaderLen() int { return int(ip[0]&0x0f) * 4 }

// TotalLen returns the Total Length field.
func (ip IPv4) TotalLen() int { return int(binary.BigEndian.Uint16(ip[2:4])) }

// ID returns the Identification field.
func (ip IPv4) ID() uint16 { return binary.BigEndian.Uint16(ip[4:6]) }

// DontFragment reports whether the DF flag is set.
func (ip IPv4) DontFragment() bool { return ip[6]&0x40 != 0 }

// MoreFragments reports whether the MF flag is set.
func (ip IPv4) MoreFragments() bool { return ip[6]&0x20 != 0 }

// FragmentOffset returns the fragment offset in bytes.
func (ip IPv4) FragmentOffset() int {
	return int(binary.BigEndian.Uint16(ip[6:8])&0x1fff) * 8
}

// IsFragment reports whether the datagram is a fragment (MF set or a
// non-zero offset): its payload is not a whole transport segment.
func (ip IPv4) IsFragment() bool { return binary.BigEndian.Uint16(ip[6:8])&0x3fff != 0 }

// TTL returns the time to live.
func (ip IPv4) TTL() uint8 { return ip[8] }

// Protocol returns the protocol of the payload (ProtoUDP, ...).
func (ip IPv4) Protocol() uint8 { return ip[9] }

// Checksum returns the header checksum field.
func (ip IPv4) Checksum() uint16 { return binary.BigEndian.Uint16(ip[10:12]) }

// Src returns the source address.
func (ip IPv4) Src() netip.Addr { return readAddr4(ip[12:16]) }

// Dst returns the destination address.
func (ip IPv4) Dst() netip.Addr { return readAddr4(ip[16:20]) }

// Options returns the header options (empty when IHL is 5).
func (ip IPv4) Options() []byte { return ip[IPv4MinHeaderLen:ip.HeaderLen()] }

// Payload returns the bytes after the header up to Total Length.
func (ip IPv4) Payload() []byte { return ip[ip.HeaderLen():ip.TotalLen()] }

// ComputeChecksum returns the value the checksum field must hold for the
// current header (the field itself is not included).
func (ip IPv4) ComputeChecksum() uint16 {
	hl := ip.HeaderLen()
	return ^fold(sum(ip[12:hl], sum(ip[0:10], 0)))
}

// ValidChecksum reports whether the header checksum field is correct.
func (ip IPv4) ValidChecksum() bool {
	return fold(sum(ip[:ip.HeaderLen()], 0)) == 0xffff
}

// SetTTL sets the time to live.
func (ip IPv4) SetTTL(ttl uint8) { ip[8] = ttl }

// SetSrc sets the source address (IPv4 only; see the package's addr rules:
// any other address is written as 0.0.0.0).
func (ip IPv4) SetSrc(a netip.Addr) { putAddr4(ip[12:16], a) }

// SetDst sets the destination address, as SetSrc.
func (ip IPv4) SetDst(a netip.Addr) { putAddr4(ip[16:20], a) }

// SetChecksum sets the header checksum field.
func (ip IPv4) SetChecksum(c uint16) { binary.BigEndian.PutUint16(ip[10:12], c) }

// putIPv4Header writes a 20-byte header without options for an unfragmented
// datagram of totalLen bytes, checksum included. b must hold 20 bytes.
func putIPv4Header(b []byte, totalLen int, proto uint8, src, dst netip.Addr) {
	ip := IPv4(b[:IPv4MinHeaderLen])
	ip[0] = 4<<4 | IPv4MinHeaderLen/4
	ip[1] = 0 // TOS
	binary.BigEndian.PutUint16(ip[2:4], uint16(totalLen))
	// An atomic datagram (DF set, never fragmented): RFC 6864 lets its ID be
	// zero, which keeps the builders stateless.
	binary.BigEndian.PutUint16(ip[4:6], 0)
	binary.BigEndian.PutUint16(ip[6:8], 0x4000)
	ip[8] = 64
	ip[9] = proto
	ip.SetSrc(src)
	ip.SetDst(dst)
	ip.SetChecksum(0)
	ip.SetChecksum(ip.ComputeChecksum())
}
