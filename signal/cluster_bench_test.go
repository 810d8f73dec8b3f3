//go:build linux

package signal_test

// Benchmarks of rooms shared by several instances over NATS (issue 14,
// `make bench`), each beside its one-instance figure from the same run:
//
//   - BenchmarkClusterJoin: joins per second with the NATS hub, one
//     instance vs three (every room's members spread over the three), and
//     the in-memory hub for reference.
//   - BenchmarkClusterRelayLatency: signal latency p50/p99 between two
//     peers on two instances vs two peers on one.
//   - BenchmarkClusterHeldPeers: 30,000 peers (300 rooms of 100, each room
//     spread over the instances) held by three bin/signal processes with
//     embedded NATS nodes, against the goal of 1 GiB RSS in all.

import (
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/peerlan/peerlan/signal"
	"github.com/peerlan/peerlan/signal/natshub/natshubtest"
	"github.com/peerlan/peerlan/signal/signaltest"
)

const clusterJoinSamples = 1000

func benchQuietConfig(c *signal.Config) { c.Logger = benchQuiet }

// benchJoinRate is BenchmarkJoin's churn (16 joiners, rooms of 8), each
// join going to the next of urls in turn, so a room's members come through
// every instance.
func benchJoinRate(b *testing.B, n int, urls []string, joins func() float64) float64 {
	b.Helper()
	var k atomic.Int64
	before := joins()
	start := time.Now()
	err := benchChurn(n, joinWorkers, joinRoomSize, func(w, g int) (*websocket.Conn, error) {
		u := urls[int(k.Add(1))%len(urls)]
		ws, _, err := benchJoin(u, fmt.Sprintf("join-%02d-%04d", w, g%10000))
		return ws, err
	})
	el := time.Since(start)
	if err != nil {
		b.Fatal(err)
	}
	if got := joins() - before; got != float64(n) {
		b.Fatalf("servers counted %v joins, want %d", got, n)
	}
	return float64(n) / el.Seconds()
}

func clusterJoins(b *testing.B, in []*natshubtest.Instance) func() float64 {
	return func() float64 {
		sum := 0.0
		for _, i := range in {
			sum += metrics(b, i.Server).Sum("peerlan_signal_joins_total")
		}
		return sum
	}
}

func clusterURLs(in []*natshubtest.Instance) []string {
	out := make([]string, len(in))
	for i, x := range in {
		out[i] = x.URL
	}
	return out
}

// BenchmarkClusterJoin measures joins per second through the NATS hub on
// one instance and on three (one NATS server in-process for each cluster),
// and through the in-memory hub.
func BenchmarkClusterJoin(b *testing.B) {
	n := max(b.N, clusterJoinSamples)
	mem := signaltest.Start(b, benchQuietConfig)
	one := natshubtest.Cluster(b, 1, benchQuietConfig)
	three := natshubtest.Cluster(b, 3, benchQuietConfig)
	b.ResetTimer()
	memRate := benchJoinRate(b, n, []string{mem.URL}, func() float64 { return metrics(b, mem).Sum("peerlan_signal_joins_total") })
	oneRate := benchJoinRate(b, n, clusterURLs(one), clusterJoins(b, one))
	threeRate := benchJoinRate(b, n, clusterURLs(three), clusterJoins(b, three))
	b.StopTimer()
	b.ReportMetric(1e9/threeRate, "ns/op")
	b.ReportMetric(threeRate, "joins/s-3-instances")
	b.ReportMetric(oneRate, "joins/s-1-instance")
	b.ReportMetric(memRate, "joins/s-memory")
	b.ReportMetric(oneRate/threeRate, "x-1-instance")
	b.ReportMetric(memRate/oneRate, "x-memory")
}

// BenchmarkClusterRelayLatency measures a signal's latency (half of A→B→A)
// between peers on two instances of a three-instance cluster, and between
// two peers on one instance of a one-instance cluster.
func BenchmarkClusterRelayLatency(b *testing.B) {
	fast := func(c *signal.Config) {
		c.Logger = benchQuiet
		c.MessagesPerSecond = 1e6
		c.Burst = 1e6
	}
	one := natshubtest.Cluster(b, 1, fast)
	three := natshubtest.Cluster(b, 3, fast)
	local := benchStartRelayPair(b, one[0].URL, one[0].URL, "latency")
	across := benchStartRelayPair(b, three[0].URL, three[1].URL, "latency")
	n := max(b.N, relayMinSamples)
	l := make([]time.Duration, 0, n)
	x := make([]time.Duration, 0, n)
	b.ResetTimer()
	start := time.Now()
	for i := range n {
		d, _ := across.sample(b, i)
		x = append(x, d)
		d, _ = local.sample(b, i)
		l = append(l, d)
	}
	el := time.Since(start)
	b.StopTimer()
	us := func(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e3 }
	xp50, xp99 := benchPercentile(x, 50), benchPercentile(x, 99)
	lp50, lp99 := benchPercentile(l, 50), benchPercentile(l, 99)
	b.ReportMetric(float64(el.Nanoseconds())/float64(n), "ns/op")
	b.ReportMetric(us(xp50), "p50-us-across")
	b.ReportMetric(us(xp99), "p99-us-across")
	b.ReportMetric(us(lp50), "p50-us-1-instance")
	b.ReportMetric(us(lp99), "p99-us-1-instance")
	b.ReportMetric(us(xp50)/us(lp50), "x-1-instance")
	b.ReportMetric(us(xp99)/us(lp99), "x-1-instance-p99")
}

const (
	clusterHeldPeers = 30000
	clusterHeldRooms = 300
	clusterInstances = 3
)

// BenchmarkClusterHeldPeers is BenchmarkHeldPeers for a cluster: 30,000
// peers in 300 rooms of 100 held by three bin/signal processes, each with
// an embedded NATS node routed to the other two (the directory replicated
// three times, as -nats-embed does by default with three nodes), 10,000
// peers each, their members spread over the three. Three client processes
// hold the peers' connections. The figure is the servers' RSS in all
// against the goal of 30,000 peers within 1 GiB ("x-1GiB-goal"); each
// process stays under an open-file limit of about 11,000.
func BenchmarkClusterHeldPeers(b *testing.B) {
	const perInstance = clusterHeldPeers / clusterInstances
	bin := benchBuildSignal(b)
	benchRaiseNofile(b, perInstance+1024)
	for range b.N {
		c := benchStartCluster(b, bin, clusterInstances,
			"-max-conns", strconv.Itoa(perInstance+100),
			"-max-rooms", strconv.Itoa(clusterHeldRooms+100),
			"-max-peers", strconv.Itoa(clusterHeldPeers/clusterHeldRooms+1)) // + the gateway's address
		r := benchHoldOn(b, c, heldShape{peers: clusterHeldPeers, rooms: clusterHeldRooms,
			roomGauge: clusterHeldRooms * clusterInstances, clients: clusterInstances, deadline: 10 * time.Minute})
		r.report(b, clusterHeldPeers)
		b.ReportMetric(float64(slices.Max(r.each))/(1<<20), "max-instance-RSS-MiB")
	}
}

// benchCluster is bin/signal instances sharing rooms over their embedded
// NATS nodes.
type benchCluster []*benchSignal

// benchStartCluster starts n bin/signal instances with args, each with an
// embedded NATS node routed to the others and one shared -secret-file,
// and waits until all listen.
func benchStartCluster(b *testing.B, bin string, n int, args ...string) benchCluster {
	b.Helper()
	secret := filepath.Join(b.TempDir(), "secret")
	routes := natshubtest.FreeAddrs(b, n)
	c := make(benchCluster, n)
	// All at once: a JetStream cluster needs a quorum of its nodes before
	// any instance can open the room directory and listen.
	for i := range c {
		c[i] = benchSpawnSignal(b, bin, append([]string{"-secret-file", secret, "-instance", fmt.Sprintf("bench%d", i),
			"-nats-embed", "-nats-store", b.TempDir(), "-nats-listen", "127.0.0.1:0",
			"-nats-cluster-listen", routes[i], "-nats-routes", strings.Join(routes, ",")}, args...)...)
	}
	for _, s := range c {
		s.waitListening(b, 90*time.Second)
	}
	return c
}

func (c benchCluster) pids() []int     { return benchEach(c, (*benchSignal).pids) }
func (c benchCluster) urls() []string  { return benchEach(c, (*benchSignal).urls) }
func (c benchCluster) bases() []string { return benchEach(c, (*benchSignal).bases) }

// benchEach concatenates f of every instance.
func benchEach[T any](c benchCluster, f func(*benchSignal) []T) []T {
	var out []T
	for _, s := range c {
		out = append(out, f(s)...)
	}
	return out
}

// stop stops every instance at once, as a cluster's shutdown would.
func (c benchCluster) stop(timeout time.Duration) error {
	errs := make([]error, len(c))
	var wg sync.WaitGroup
	for i, s := range c {
		wg.Go(func() { errs[i] = s.stop(timeout) })
	}
	wg.Wait()
	return errors.Join(errs...)
}

func (c benchCluster) warnings() string {
	out := make([]string, len(c))
	for i, s := range c {
		out[i] = fmt.Sprintf("instance %d: %s", i, s.warnings())
	}
	return strings.Join(out, "; ")
}
