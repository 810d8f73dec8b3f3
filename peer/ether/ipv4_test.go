package ether

import (
	"errors"
	"net/netip"
	"testing"
)

func discoverIPv4(t *testing.T) []byte {
	t.Helper()
	return readHex(t, "udhcpc_discover.hex")[HeaderLen:]
}

func TestParseIPv4Capture(t *testing.T) {
	ip, err := ParseIPv4(discoverIPv4(t))
	if err != nil {
		t.Fatal(err)
	}
	if ip.Version() != 4 || ip.HeaderLen() != 20 || ip.TotalLen() != 328 || len(ip) != 328 {
		t.Fatalf("version %d hl %d tl %d len %d", ip.Version(), ip.HeaderLen(), ip.TotalLen(), len(ip))
	}
	if ip.Protocol() != ProtoUDP || ip.TTL() != 64 || ip.ID() != 0 || ip.IsFragment() || ip.DontFragment() {
		t.Fatalf("proto %d ttl %d id %d frag %v df %v", ip.Protocol(), ip.TTL(), ip.ID(), ip.IsFragment(), ip.DontFragment())
	}
	if ip.Src() != netip.IPv4Unspecified() || ip.Dst() != netip.AddrFrom4([4]byte{255, 255, 255, 255}) {
		t.Fatalf("src %v dst %v", ip.Src(), ip.Dst())
	}
	if !ip.ValidChecksum() || ip.ComputeChecksum() != ip.Checksum() {
		t.Fatalf("checksum %#04x, computed %#04x", ip.Checksum(), ip.ComputeChecksum())
	}
	if len(ip.Payload()) != 308 || len(ip.Options()) != 0 {
		t.Fatalf("payload %d options %d", len(ip.Payload()), len(ip.Options()))
	}
	ip[15] ^= 1 // corrupt the source address
	if ip.ValidChecksum() {
		t.Fatal("corrupted header passes checksum")
	}
}

func TestParseIPv4Errors(t *testing.T) {
	good := discoverIPv4(t)
	mod := func(f func(b []byte) []byte) []byte {
		b := append([]byte(nil), good...)
		return f(b)
	}
	tests := []struct {
		name string
		b    []byte
		want error
	}{
		{"empty", nil, ErrShort},
		{"19 bytes", good[:19], ErrShort},
		{"version 6", mod(func(b []byte) []byte { b[0] = 0x65; return b }), ErrMalformed},
		{"IHL 4", mod(func(b []byte) []byte { b[0] = 0x44; return b }), ErrMalformed},
		{"total below IHL", mod(func(b []byte) []byte { b[0], b[2], b[3] = 0x46, 0, 20; return b }), ErrMalformed},
		{"total past buffer", good[:327], ErrTruncated},
		{"IHL past buffer", mod(func(b []byte) []byte { b[0], b[2], b[3] = 0x4f, 0, 40; return b[:40] }), ErrMalformed},
		{"IHL 15 fits", mod(func(b []byte) []byte { b[0], b[2], b[3] = 0x4f, 0, 60; return b[:60] }), nil},
	}
	for _, tt := range tests {
		_, err := ParseIPv4(tt.b)
		if !errors.Is(err, tt.want) || (tt.want == nil && err != nil) {
			t.Errorf("%s: err %v, want %v", tt.name, err, tt.want)
		}
	}
}

func TestIPv4PaddingAndOptions(t *testing.T) {
	// A 28-byte datagram with one 4-byte option (router alert) inside a
	// 60-byte Ethernet minimum frame: the padding must not become payload.
	b := make([]byte, 46)
	b[0] = 0x46
	b[3] = 28
	b[9] = ProtoUDP
	copy(b[20:24], []byte{0x94, 0x04, 0, 0})
	copy(b[24:28], []byte{1, 2, 3, 4})
	for i := 28; i < len(b); i++ {
		b[i] = 0xee
	}
	ip, err := ParseIPv4(b)
	if err != nil {
		t.Fatal(err)
	}
	if len(ip.Options()) != 4 || ip.Options()[0] != 0x94 {
		t.Fatalf("options %x", ip.Options())
	}
	if p := ip.Payload(); len(p) != 4 || p[3] != 4 {
		t.Fatalf("payload %x", p)
	}
	ip.SetChecksum(ip.ComputeChecksum())
	if !ip.ValidChecksum() {
		t.Fatal("checksum over options does not verify")
	}
}

func TestIPv4Fragments(t *testing.T) {
	b := append([]byte(nil), discoverIPv4(t)...)
	ip, _ := ParseIPv4(b)
	b[6] = 0x20 // MF
	if !ip.IsFragment() || !ip.MoreFragments() || ip.FragmentOffset() != 0 {
		t.Fatal("MF not seen")
	}
	b[6], b[7] = 0x00, 0x03
	if !ip.IsFragment() || ip.MoreFragments() || ip.FragmentOffset() != 24 {
		t.Fatalf("offset %d", ip.FragmentOffset())
	}
	b[6], b[7] = 0x40, 0
	if ip.IsFragment() || !ip.DontFragment() {
		t.Fatal("DF read as fragment")
	}
}

func TestIPv4Setters(t *testing.T) {
	ip, _ := ParseIPv4(append([]byte(nil), discoverIPv4(t)...))
	src, dst := netip.MustParseAddr("192.0.2.7"), netip.MustParseAddr("198.51.100.9")
	ip.SetSrc(src)
	ip.SetDst(dst)
	ip.SetTTL(3)
	ip.SetChecksum(ip.ComputeChecksum())
	if ip.Src() != src || ip.Dst() != dst || ip.TTL() != 3 || !ip.ValidChecksum() {
		t.Fatalf("src %v dst %v ttl %d valid %v", ip.Src(), ip.Dst(), ip.TTL(), ip.ValidChecksum())
	}
	ip.SetSrc(netip.MustParseAddr("::ffff:203.0.113.5"))
	ip.SetDst(netip.MustParseAddr("2001:db8::1"))
	if ip.Src() != netip.MustParseAddr("203.0.113.5") || ip.Dst() != netip.IPv4Unspecified() {
		t.Fatalf("mapped src %v, IPv6 dst %v", ip.Src(), ip.Dst())
	}
}
