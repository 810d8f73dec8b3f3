package peer_test

import (
	"slices"
	"testing"
	"time"

	"github.com/peerlan/peerlan/peer/ether"
)

// BenchmarkMeshJoinToOpen measures, between native peers over real pion on
// loopback, the time from a newcomer starting its mesh (signaling join
// included) until both sides have an open data channel. Goal: median at most
// 100 ms. It reports the median and the 99th percentile over b.N joins.
func BenchmarkMeshJoinToOpen(b *testing.B) {
	sig := startSignal(b, "")
	room := "bench-join"
	startPeer(b, sig.url(), room, ether.MAC{0x02, 0, 0, 0, 0, 1})
	var took []time.Duration
	for i := 0; b.Loop(); i++ {
		start := time.Now()
		p := startPeer(b, sig.url(), room, ether.MAC{0x02, 0, 0, 0, 1, byte(i)})
		for p.openLinks() < 1 {
			if time.Since(start) > 30*time.Second {
				b.Fatal("link did not open within 30 s")
			}
			time.Sleep(200 * time.Microsecond)
		}
		took = append(took, time.Since(start))
		p.stop()
	}
	slices.Sort(took)
	b.Logf("join to open: %v", took)
	ms := func(q float64) float64 {
		return float64(took[int(q*float64(len(took)-1))]) / float64(time.Millisecond)
	}
	b.ReportMetric(ms(0.5), "p50-ms")
	b.ReportMetric(ms(0.99), "p99-ms")
	b.ReportMetric(ms(0.5)/100, "x-goal")
}
