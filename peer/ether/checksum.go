package ether

import (
	"encoding/binary"
	"net/netip"
)

// Checksum adds the bytes of b, as big-endian 16-bit words (an odd last byte
// padded with zero), to the ones' complement sum initial and returns the
// folded sum (RFC 1071). It does not complement: the value for a checksum
// field is ^Checksum(...), and a region that includes a correct checksum
// field sums to 0xffff.
func Checksum(b []byte, initial uint16) uint16 {
	return fold(sum(b, uint64(initial)))
}

// sum accumulates b into acc. Adding 32-bit words and folding at the end
// gives the same ones' complement sum as adding 16-bit words, with half the
// loop iterations; a 64-bit accumulator cannot overflow for any frame.
func sum(b []byte, acc uint64) uint64 {
	for len(b) >= 8 {
		acc += uint64(binary.BigEndian.Uint32(b)) + uint64(binary.BigEndian.Uint32(b[4:]))
		b = b[8:]
	}
	if len(b) >= 4 {
		acc += uint64(binary.BigEndian.Uint32(b))
		b = b[4:]
	}
	if len(b) >= 2 {
		acc += uint64(binary.BigEndian.Uint16(b))
		b = b[2:]
	}
	if len(b) == 1 {
		acc += uint64(b[0]) << 8
	}
	return acc
}

func fold(acc uint64) uint16 {
	for acc > 0xffff {
		acc = acc>>16 + acc&0xffff
	}
	return uint16(acc)
}

// addr4 returns the four bytes of an IPv4 (or IPv4-mapped IPv6) address.
// Any other address, including the zero Addr, reads as 0.0.0.0: the views
// only carry IPv4, and a zero field is what DHCP means by "no address".
func addr4(a netip.Addr) [4]byte {
	if a.Is4() || a.Is4In6() {
		return a.As4()
	}
	return [4]byte{}
}

// putAddr4 writes a (see addr4) into b[0:4].
func putAddr4(b []byte, a netip.Addr) {
	v := addr4(a)
	copy(b[:4], v[:])
}

// readAddr4 returns b[0:4] as an IPv4 address.
func readAddr4(b []byte) netip.Addr {
	return netip.AddrFrom4([4]byte(b[:4]))
}
