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
//     spread over the instances) held by three instances in one process
//     with an embedded NATS, against the goal of 1 GiB RSS in all (fewer,
//     and projected, where the open-file limit is lower).

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
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
	clusterChildEnv  = "PEERLAN_BENCH_CLUSTER_CHILD"
)

// BenchmarkClusterHeldPeers is BenchmarkHeldPeers for a cluster: 30,000
// peers joined round-robin to three instances that run, with an embedded
// NATS server, in one child process (this test binary, re-run as
// TestClusterChild), whose RSS is the figure.
//
// Both this process (the clients) and the child (the servers) hold one
// socket per peer. Where the open-file limit cannot be raised to 30,000
// (containers without CAP_SYS_RESOURCE), as many peers as it allows are
// held, in 300 rooms still, and the 30,000-peer RSS is projected from the
// measured per-peer cost ("projected-RSS-MiB-30k").
func BenchmarkClusterHeldPeers(b *testing.B) {
	peers := clusterHeldPeers
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err == nil && lim.Max < clusterHeldPeers+1024 {
		peers = int(lim.Max-1024) / clusterHeldRooms * clusterHeldRooms
		b.Logf("RLIMIT_NOFILE allows %d open files: holding %d peers and projecting to %d", lim.Max, peers, clusterHeldPeers)
	}
	if peers < 10*clusterHeldRooms {
		b.Skipf("RLIMIT_NOFILE %d is too low for a meaningful measurement", lim.Max)
	}
	benchRaiseNofile(b, uint64(peers+1024))
	for range b.N {
		child := benchStartClusterChild(b, peers)
		r := benchHoldOn(b, child, heldShape{peers: peers, rooms: clusterHeldRooms,
			roomGauge: clusterHeldRooms * clusterInstances, deadline: 10 * time.Minute})
		projected := float64(r.idle) + float64(r.rss-r.idle)/float64(r.peers)*clusterHeldPeers
		b.ReportMetric(projected/(1<<20), "projected-RSS-MiB-30k")
		b.ReportMetric(projected/heldGoalRSS, "x-1GiB-goal-30k")
		b.ReportMetric(0, "ns/op")
		b.ReportMetric(float64(r.peers), "peers")
		b.ReportMetric(float64(r.rss)/(1<<20), "RSS-MiB")
		b.ReportMetric(float64(r.hwm)/(1<<20), "peak-RSS-MiB")
		b.ReportMetric(float64(r.idle)/(1<<20), "idle-RSS-MiB")
		b.ReportMetric(float64(r.rss)/1024/float64(r.peers), "KiB/peer")
		b.ReportMetric(float64(r.rss-r.idle)/1024/float64(r.peers), "added-KiB/peer")
		b.ReportMetric(float64(r.peers)/r.ramp.Seconds(), "ramp-joins/s")
		b.ReportMetric(float64(r.cpu.Microseconds())/float64(r.peers), "server-cpu-us/join")
		b.ReportMetric(r.shutdown.Seconds(), "shutdown-s")
	}
}

// clusterChild is the child process of BenchmarkClusterHeldPeers.
type clusterChild struct {
	cmd          *exec.Cmd
	stdin        io.Closer
	wsURLs, http []string
	done         chan error
	tail         strings.Builder
}

func benchStartClusterChild(b *testing.B, peers int) *clusterChild {
	b.Helper()
	cmd := exec.Command(os.Args[0], "-test.run", "^TestClusterChild$", "-test.bench", "^$", "-test.count", "1")
	cmd.Env = append(os.Environ(), clusterChildEnv+"="+strconv.Itoa(peers))
	in, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	c := &clusterChild{cmd: cmd, stdin: in, done: make(chan error, 1)}
	ready := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			line := sc.Text()
			if f := strings.Fields(line); len(f) == 1+2*clusterInstances && f[0] == "CLUSTER" {
				c.wsURLs, c.http = f[1:1+clusterInstances], f[1+clusterInstances:]
				close(ready)
				continue
			}
			if c.tail.Len() < 4096 {
				c.tail.WriteString(line + "\n")
			}
		}
		c.done <- cmd.Wait()
	}()
	b.Cleanup(func() { _ = c.stop(30 * time.Second) })
	select {
	case <-ready:
	case err := <-c.done:
		c.done <- err
		b.Fatalf("cluster child exited: %v: %s", err, c.tail.String())
	case <-time.After(60 * time.Second):
		b.Fatal("cluster child did not start")
	}
	return c
}

func (c *clusterChild) pid() int         { return c.cmd.Process.Pid }
func (c *clusterChild) urls() []string   { return c.wsURLs }
func (c *clusterChild) bases() []string  { return c.http }
func (c *clusterChild) warnings() string { return c.tail.String() }
func (c *clusterChild) stop(d time.Duration) error {
	select {
	case err := <-c.done:
		c.done <- err
		return nil
	default:
	}
	c.stdin.Close() // the child stops its servers gracefully when stdin closes
	select {
	case err := <-c.done:
		c.done <- nil
		return err
	case <-time.After(d):
		_ = c.cmd.Process.Kill()
		<-c.done
		c.done <- nil
		return fmt.Errorf("cluster child did not stop within %v", d)
	}
}

// TestClusterChild is BenchmarkClusterHeldPeers's server process: three
// instances with default settings (limits raised) sharing rooms through an
// embedded NATS server. It prints their URLs and runs until stdin closes.
func TestClusterChild(t *testing.T) {
	peers, _ := strconv.Atoi(os.Getenv(clusterChildEnv))
	if peers <= 0 {
		t.Skip("the server process of BenchmarkClusterHeldPeers")
	}
	in := natshubtest.Cluster(t, clusterInstances, func(c *signal.Config) {
		c.Logger = benchQuiet
		c.MaxConnections = peers
		c.MaxRooms = clusterHeldRooms + 100
		c.MaxPeersPerRoom = peers/clusterHeldRooms + 1 // + the gateway's slot
	})
	line := "CLUSTER"
	for _, i := range in {
		line += " " + i.URL
	}
	for _, i := range in {
		line += " " + i.HTTP.URL
	}
	fmt.Println(line)
	_, _ = io.Copy(io.Discard, os.Stdin)
	for _, i := range in {
		i.Stop() // "going away" to every peer, as bin/signal on SIGTERM
	}
}
