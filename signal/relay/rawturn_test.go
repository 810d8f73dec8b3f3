package relay

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/peerlan/peerlan/signal/relay/relaytest"
)

// A mapped address sent as IPv6 must be unmapped before classification:
// netip reports ::ffff:127.0.0.1 as neither loopback nor private.
func TestRawIPv6PeerAddressForms(t *testing.T) {
	cfg := loopbackConfig(t)
	s := startServer(t, cfg)
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	alice := mint("alice", time.Hour)
	r := relaytest.NewRawClient(t, pc, s.Addrs().UDP[0], alice.user, alice.pass)
	r.Allocate()
	for _, tc := range []struct {
		addr  string
		class AddrClass
	}{
		{"::ffff:127.0.0.2", ClassLoopback},
		{"::ffff:10.0.0.1", ClassPrivate},
		{"::ffff:169.254.169.254", ClassLinkLocal},
		{"::1", ClassLoopback},
		{"::", ClassUnspecified},
		{"fe80::1", ClassLinkLocal},
		{"64:ff9b::a00:1", ClassTranslated},
	} {
		before := refusals(s, "permission-"+string(tc.class))
		if r.CreatePermissionV6(netip.MustParseAddr(tc.addr)) {
			t.Errorf("permission to %s granted", tc.addr)
		}
		if got := refusals(s, "permission-"+string(tc.class)); got != before+1 {
			t.Errorf("%s: refusals{permission-%s} %v -> %v", tc.addr, tc.class, before, got)
		}
	}
	// The same encoding of a global address is granted, so the refusals
	// above are about the addresses, not the encoding.
	if !r.CreatePermissionV6(netip.MustParseAddr("::ffff:192.0.2.1")) {
		t.Error("permission to ::ffff:192.0.2.1 refused")
	}
}
