package relay

import (
	"net/netip"
	"testing"
	"time"

	"github.com/peerlan/peerlan/signal/relay/relaytest"
)

// BenchmarkRelayUDP measures echoed UDP payload through this relay and
// through coturn's turnserver, both on loopback with the same secret, each
// with a pion/turn client and 64 datagrams of 1200 bytes in flight, and
// logs the ratio. Run: go test -run '^$' -bench RelayUDP ./signal/relay/
func BenchmarkRelayUDP(b *testing.B) {
	const size, window = 1200, 64
	peer := relaytest.UDPEcho(b, "127.0.0.1:0")

	cfg := loopbackConfig(b)
	cfg.AllowPeers = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")} // like --allow-loopback-peers
	cfg.Logger = testLogger(b)
	s := startServer(b, cfg)
	coturn := relaytest.StartCoturn(b, testSecret, DefaultRealm, 43000, 43999)

	rates := map[string]float64{}
	for _, relay := range []struct{ name, addr string }{
		{"peerlan", s.Addrs().UDP[0].String()},
		{"coturn", coturn.Addr},
	} {
		b.Run(relay.name, func(b *testing.B) {
			u, p := MintCredential(testSecret, "bench", time.Hour, time.Now())
			conn := relaytest.Allocate(b, relay.addr, u, p)
			b.SetBytes(size)
			b.ResetTimer()
			r, err := relaytest.Pump(conn, peer, b.N, size, window)
			b.StopTimer()
			if err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(r.MBps(), "echoMB/s")
			b.ReportMetric(100*r.Loss(), "loss%")
			rates[relay.name] = r.MBps()
		})
	}
	if rates["coturn"] > 0 {
		ratio := rates["peerlan"] / rates["coturn"]
		b.Logf("echoed throughput peerlan %.1f MB/s, coturn %.1f MB/s, ratio peerlan/coturn %.2f",
			rates["peerlan"], rates["coturn"], ratio)
		// A result line of its own, so the ratio shows without -v.
		b.Run("ratio", func(b *testing.B) {
			b.ReportMetric(0, "ns/op")
			b.ReportMetric(ratio, "peerlan/coturn")
		})
	}
}

// BenchmarkClassifyAddr is the per-datagram cost of the defence-in-depth
// check on every relayed write.
func BenchmarkClassifyAddr(b *testing.B) {
	addrs := []netip.Addr{
		netip.MustParseAddr("203.0.113.7"), netip.MustParseAddr("10.0.0.1"),
		netip.MustParseAddr("::ffff:198.51.100.1"), netip.MustParseAddr("2606:4700::1111"),
	}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		_ = ClassifyAddr(addrs[i%len(addrs)])
	}
}
