package ether

import (
	"errors"
	"net/netip"
	"testing"
)

func TestParseUDPCapture(t *testing.T) {
	ip, err := ParseIPv4(discoverIPv4(t))
	if err != nil {
		t.Fatal(err)
	}
	u, err := ParseUDP(ip.Payload())
	if err != nil {
		t.Fatal(err)
	}
	if u.SrcPort() != DHCPClientPort || u.DstPort() != DHCPServerPort || u.Length() != 308 || len(u.Payload()) != 300 {
		t.Fatalf("ports %d->%d length %d payload %d", u.SrcPort(), u.DstPort(), u.Length(), len(u.Payload()))
	}
	if !u.ValidChecksum(ip.Src(), ip.Dst()) || u.ComputeChecksum(ip.Src(), ip.Dst()) != u.Checksum() {
		t.Fatalf("checksum %#04x computed %#04x", u.Checksum(), u.ComputeChecksum(ip.Src(), ip.Dst()))
	}
	// The pseudo-header matters: the same bytes from another source fail.
	if u.ValidChecksum(netip.MustParseAddr("192.0.2.1"), ip.Dst()) {
		t.Fatal("checksum ignores the pseudo-header")
	}
	u.Payload()[10] ^= 0x80
	if u.ValidChecksum(ip.Src(), ip.Dst()) {
		t.Fatal("corrupted payload passes")
	}
	u.SetChecksum(0)
	if !u.ValidChecksum(ip.Src(), ip.Dst()) {
		t.Fatal("zero checksum means none and must be valid")
	}
}

func TestUDPChecksumZeroIsSentAsAllOnes(t *testing.T) {
	src, dst := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2")
	b := []byte{0, 53, 0, 53, 0, 12, 0, 0, 0, 0, 0, 0}
	u, _ := ParseUDP(b)
	// Choose the last payload word so that the data sums to 0xffff.
	s := ^u.ComputeChecksum(src, dst)
	w := ^s
	b[10], b[11] = byte(w>>8), byte(w)
	if c := u.ComputeChecksum(src, dst); c != 0xffff {
		t.Fatalf("computed %#04x, want 0xffff for a zero sum", c)
	}
	u.SetChecksum(0xffff)
	if !u.ValidChecksum(src, dst) {
		t.Fatal("0xffff checksum does not verify")
	}
}

func TestParseUDPErrors(t *testing.T) {
	tests := []struct {
		name string
		b    []byte
		want error
	}{
		{"short", []byte{0, 68, 0, 67, 0, 8, 0}, ErrShort},
		{"length 7", []byte{0, 68, 0, 67, 0, 7, 0, 0}, ErrMalformed},
		{"length past buffer", []byte{0, 68, 0, 67, 0, 10, 0, 0, 1}, ErrTruncated},
	}
	for _, tt := range tests {
		if _, err := ParseUDP(tt.b); !errors.Is(err, tt.want) {
			t.Errorf("%s: %v, want %v", tt.name, err, tt.want)
		}
	}
	u, err := ParseUDP([]byte{0, 68, 0, 67, 0, 9, 0, 0, 'x', 'p', 'a', 'd'})
	if err != nil || len(u) != 9 || string(u.Payload()) != "x" {
		t.Fatalf("trailing bytes: %v %q", err, u)
	}
}
