package ether

import (
	"math/rand/v2"
	"testing"
)

func TestChecksumRFC1071Example(t *testing.T) {
	// RFC 1071 section 3: the sum of these bytes is ddf2.
	b := []byte{0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7}
	if got := Checksum(b, 0); got != 0xddf2 {
		t.Fatalf("Checksum = %#04x, want 0xddf2", got)
	}
}

func TestChecksumMatchesReference(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for n := range 200 {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(r.Uint32())
		}
		if got, want := Checksum(b, 0), naiveChecksum(b); got != want {
			t.Fatalf("len %d: Checksum = %#04x, reference %#04x", n, got, want)
		}
	}
	// All ones must not overflow or fold wrongly.
	ff := make([]byte, 1500)
	for i := range ff {
		ff[i] = 0xff
	}
	if got := Checksum(ff, 0xffff); got != 0xffff {
		t.Fatalf("all-ones sum = %#04x", got)
	}
}

func FuzzChecksum(f *testing.F) {
	f.Add([]byte{0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7}, uint16(0))
	f.Add([]byte{0xff}, uint16(0xffff))
	f.Fuzz(func(t *testing.T, b []byte, initial uint16) {
		want := naiveChecksum(append([]byte{byte(initial >> 8), byte(initial)}, b...))
		if got := Checksum(b, initial); got != want {
			t.Fatalf("Checksum = %#04x, reference %#04x", got, want)
		}
	})
}
