package ether

import (
	"encoding/binary"
	"net/netip"
)

// UDPHeaderLen is the length of a UDP header.
const UDPHeaderLen = 8

// UDP is a view of a UDP datagram (RFC 768): source port, destination port,
// length (header included) and checksum, then the payload.
type UDP []byte

// ParseUDP validates the header at the start of b (normally an IPv4
// payload) and returns a view of exactly Length bytes. It reports ErrShort
// when b cannot hold a header, ErrMalformed for a length below 8 and
// ErrTruncated for a length past the end of b.
func ParseUDP(b []byte) (UDP, error) {
	if len(b) < UDPHeaderLen {
		return nil, ErrShort
	}
	l := int(binary.BigEndian.Uint16(b[4:6]))
	if l < UDPHeaderLen {
		return nil, ErrMalformed
	}
	if l > len(b) {
		return nil, ErrTruncated
	}
	return UDP(b[:l]), nil
}

// SrcPort returns the source port.
func (u UDP) SrcPort() uint16 { return binary.BigEndian.Uint16(u[0:2]) }

// DstPort returns the destination port.
func (u UDP) DstPort() uint16 { return binary.BigEndian.Uint16(u[2:4]) }

// Length returns the length field (header and payload).
func (u UDP) Length() int { return int(binary.BigEndian.Uint16(u[4:6])) }

// Checksum returns the checksum field; zero means the sender computed none.
func (u UDP) Checksum() uint16 { return binary.BigEndian.Uint16(u[6:8]) }

// Payload returns the bytes after the header up to Length.
func (u UDP) Payload() []byte { return u[UDPHeaderLen:u.Length()] }

// SetSrcPort sets the source port.
func (u UDP) SetSrcPort(p uint16) { binary.BigEndian.PutUint16(u[0:2], p) }

// SetDstPort sets the destination port.
func (u UDP) SetDstPort(p uint16) { binary.BigEndian.PutUint16(u[2:4], p) }

// SetChecksum sets the checksum field.
func (u UDP) SetChecksum(c uint16) { binary.BigEndian.PutUint16(u[6:8], c) }

// ComputeChecksum returns the value the checksum field must hold for the
// datagram sent from src to dst (IPv4 pseudo-header, RFC 768). A computed
// zero is returned as 0xffff, because zero in the field means "none".
func (u UDP) ComputeChecksum(src, dst netip.Addr) uint16 {
	l := u.Length()
	acc := pseudoHeaderSum(src, dst, ProtoUDP, l)
	// Skip the checksum field at [6:8]; 6 is even, so word alignment holds.
	acc = sum(u[8:l], sum(u[0:6], acc))
	c := ^fold(acc)
	if c == 0 {
		c = 0xffff
	}
	return c
}

// ValidChecksum reports whether the checksum field is correct for a
// datagram sent from src to dst. A zero field (no checksum) is valid.
func (u UDP) ValidChecksum(src, dst netip.Addr) bool {
	if u.Checksum() == 0 {
		return true
	}
	l := u.Length()
	return fold(sum(u[:l], pseudoHeaderSum(src, dst, ProtoUDP, l))) == 0xffff
}

// pseudoHeaderSum is the unfolded sum of the IPv4 pseudo-header.
func pseudoHeaderSum(src, dst netip.Addr, proto uint8, length int) uint64 {
	s, d := addr4(src), addr4(dst)
	return uint64(binary.BigEndian.Uint32(s[:])) + uint64(binary.BigEndian.Uint32(d[:])) +
		uint64(proto) + uint64(length)
}
