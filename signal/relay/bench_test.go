package relay

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/peerlan/peerlan/signal/relay/relaytest"
)

// BenchmarkRelayUDP measures echoed UDP payload through this relay and
// through coturn's turnserver, both on loopback with the same secret, each
// with a pion/turn client and 64 datagrams of 1200 bytes in flight, and
// logs the ratios, in two set-ups:
//
//	outside   the echo is a plain UDP socket: client → relay → peer and back
//	relayed   the echo is a second allocation on the same relay, the path of
//	          two relay-only peers: client → relay → relay → echo client and back
//
// Run: go test -run '^$' -bench RelayUDP ./signal/relay/
func BenchmarkRelayUDP(b *testing.B) {
	const size, window = 1200, 64
	outside := relaytest.UDPEcho(b, "127.0.0.1:0")

	cfg := loopbackConfig(b)
	cfg.AllowPeers = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")} // like --allow-loopback-peers
	cfg.Logger = testLogger(b)
	s := startServer(b, cfg)
	coturn := relaytest.StartCoturn(b, testSecret, DefaultRealm, 43000, 43999)

	rates := map[string]float64{}
	for _, mode := range []string{"outside", "relayed"} {
		for _, relay := range []struct{ name, addr string }{
			{"peerlan", s.Addrs().UDP[0].String()},
			{"coturn", coturn.Addr},
		} {
			name := relay.name + "-" + mode
			b.Run(name, func(b *testing.B) {
				u, p := MintCredential(testSecret, "bench", time.Hour, time.Now())
				conn := relaytest.Allocate(b, relay.addr, u, p)
				var peer net.Addr = outside
				if mode == "relayed" {
					peer = relaytest.RelayedEcho(b, relay.addr, u, p, conn.LocalAddr())
				}
				b.SetBytes(size)
				b.ResetTimer()
				r, err := relaytest.Pump(conn, peer, b.N, size, window)
				b.StopTimer()
				if err != nil {
					b.Fatal(err)
				}
				b.ReportMetric(r.MBps(), "echoMB/s")
				b.ReportMetric(100*r.Loss(), "loss%")
				rates[name] = r.MBps()
			})
		}
		if c := rates["coturn-"+mode]; c > 0 {
			ratio := rates["peerlan-"+mode] / c
			b.Logf("%s: echoed throughput peerlan %.1f MB/s, coturn %.1f MB/s, ratio peerlan/coturn %.2f",
				mode, rates["peerlan-"+mode], c, ratio)
			// A result line of its own, so the ratio shows without -v.
			b.Run("ratio-"+mode, func(b *testing.B) {
				b.ReportMetric(0, "ns/op")
				b.ReportMetric(ratio, "peerlan/coturn")
			})
		}
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
