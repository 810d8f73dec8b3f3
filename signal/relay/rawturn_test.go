package relay

import (
	"bytes"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/peerlan/peerlan/signal/relay/relaytest"
	"github.com/pion/stun/v3"
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

// A datagram for a client reaches it as RFC 8656 puts it on the wire: a
// Data indication while the client holds only a permission for the sender,
// ChannelData (numbered, length, padded to 4 bytes) once it bound a
// channel. The relay sends ChannelData itself, from its own record of the
// client's channels: from the listener loop when the sender is another
// allocation of this relay, from the relay socket's pump when the sender is
// outside.
func TestChannelDataWireFormat(t *testing.T) {
	for _, sender := range []string{"allocation", "outside"} {
		t.Run(sender, func(t *testing.T) {
			cfg := loopbackConfig(t)
			cfg.AllowPeers = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
			s := startServer(t, cfg)
			var a net.PacketConn
			if sender == "allocation" {
				a = allocate(t, dialClient(t, s, "udp", mint("alice", time.Hour)))
			} else {
				a = listenUDP4(t)
			}
			testChannelDataWireFormat(t, s, a)
		})
	}
}

func testChannelDataWireFormat(t *testing.T, s *Server, a net.PacketConn) {
	aAddr := netip.MustParseAddrPort(a.LocalAddr().String())
	bob := mint("bob", time.Hour)
	b := relaytest.NewRawClient(t, listenUDP4(t), s.Addrs().UDP[0], bob.user, bob.pass)
	bRelayed := b.Allocate()
	bTo := net.UDPAddrFromAddrPort(bRelayed)

	// receive sends msg from a to b until b gets something, and returns it.
	receive := func(msg []byte) []byte {
		t.Helper()
		for range 20 {
			if _, err := a.WriteTo(msg, bTo); err != nil {
				t.Fatal(err)
			}
			if got, err := b.Receive(200 * time.Millisecond); err == nil {
				return got
			}
		}
		t.Fatal("b received nothing")
		return nil
	}

	if !b.CreatePermissionV6(netip.AddrFrom16(aAddr.Addr().As16())) {
		t.Fatal("permission refused")
	}
	ind := &stun.Message{Raw: receive([]byte("via-indication"))}
	if err := ind.Decode(); err != nil || ind.Type != stun.NewType(stun.MethodData, stun.ClassIndication) {
		t.Fatalf("want a Data indication, got %x (%v)", ind.Raw, err)
	}
	var from stun.XORMappedAddress
	data, _ := ind.Get(stun.AttrData)
	if err := from.GetFromAs(ind, stun.AttrXORPeerAddress); err != nil || from.String() != aAddr.String() {
		t.Fatalf("indication from %v (%v), want %v", from, err, aAddr)
	}
	if string(data) != "via-indication" {
		t.Fatalf("indication data %q", data)
	}

	const channel = 0x4001
	if !b.ChannelBind(aAddr, channel) {
		t.Fatal("channel bind refused")
	}
	rc := s.ports.lookup(int(bRelayed.Port()))
	if rc.toClient.Load() == nil || (*rc.channels.Load())[aAddr] != channel {
		t.Fatal("the relay did not record b's UDP path and channel, so ChannelData goes through pion's read loop")
	}
	before := metricValue(s.metrics.bytesIn)
	got := receive([]byte("hello"))
	for len(got) > 0 && got[0] < 0x40 { // a Data indication still under way
		var err error
		if got, err = b.Receive(time.Second); err != nil {
			t.Fatal(err)
		}
	}
	want := []byte{0x40, 0x01, 0, 5, 'h', 'e', 'l', 'l', 'o', 0, 0, 0}
	if !bytes.Equal(got, want) {
		t.Fatalf("ChannelData %x, want %x", got, want)
	}
	if d := metricValue(s.metrics.bytesIn) - before; d < 5 {
		t.Fatalf("relayed bytes to clients grew by %v, want at least 5", d)
	}
}
