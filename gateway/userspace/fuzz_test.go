package userspace

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/peerlan/peerlan/gateway"
)

// FuzzInspect feeds arbitrary frames to the policy (not to the stack, whose
// forwarders would dial whatever a passing frame names): it must neither
// panic nor pass a frame toward a refused destination.
func FuzzInspect(f *testing.F) {
	g, err := New(context.Background(), Config{Subnet: testSubnet, RateLimit: 1 << 20,
		DNS: gateway.DNSConfig{Upstreams: []netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:1")}}})
	if err != nil {
		f.Fatal(err)
	}
	defer g.Close()
	f.Add(discoverFrame())
	f.Add(udpFrame(g.MAC(), guestMAC, netip.AddrPortFrom(testGuest, 1), netip.MustParseAddrPort("203.0.113.9:53"), []byte("q")))
	f.Add(udpFrame(g.MAC(), guestMAC, netip.AddrPortFrom(testGuest, 1), netip.MustParseAddrPort("127.0.0.1:53"), nil))
	f.Add([]byte{1, 2, 3})
	now := time.Unix(0, 0)
	f.Fuzz(func(t *testing.T, b []byte) {
		typ, reason := g.inspect(b, now)
		if reason != "" || typ != 0x0800 {
			return
		}
		// Passed as IPv4: then it parses, and its destination is .1 or allowed.
		dst := netip.AddrFrom4([4]byte(b[30:34]))
		src := netip.AddrFrom4([4]byte(b[26:30]))
		if r := gateway.GuestDropReason(g.subnet, nil, src, dst); r != "" {
			t.Fatalf("frame to %v from %v passed although the policy says %s", dst, src, r)
		}
	})
}
