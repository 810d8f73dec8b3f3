package peer_test

import (
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/peerlan/peerlan/peer"
	"github.com/peerlan/peerlan/peer/ether"
	"github.com/peerlan/peerlan/peer/porttest"
)

// benchFrameLen is the frame size the benchmarks forward: 1500 bytes in all,
// header included.
const benchFrameLen = 1500

// window is flow control between a benchmark's source and its sinks, like a
// TCP window: the source blocks while size frames are in flight to the
// slowest sink, so the benchmark measures lossless throughput (and, with a
// window of 1, the latency of one hop through the switch) rather than how
// fast a reader can overrun a writer.
type window struct {
	size, total int64          // frames allowed in flight; frames in all
	delivered   []atomic.Int64 // per sink
	finished    atomic.Int64   // sinks that received all frames
	waiting     atomic.Bool    // the source waits for wake
	wake        chan struct{}  // for the source only
	done        chan struct{}  // closed when every sink has every frame
}

func newWindow(size, total, sinks int) *window {
	return &window{
		size: int64(size), total: int64(total), delivered: make([]atomic.Int64, sinks),
		wake: make(chan struct{}, 1), done: make(chan struct{}),
	}
}

func (w *window) slowest() int64 {
	least := w.delivered[0].Load()
	for i := 1; i < len(w.delivered); i++ {
		least = min(least, w.delivered[i].Load())
	}
	return least
}

// wait blocks until frame number sent+1 may go.
func (w *window) wait(sent int64) {
	for sent-w.slowest() >= w.size {
		w.waiting.Store(true)
		if sent-w.slowest() < w.size {
			w.waiting.Store(false)
			return
		}
		<-w.wake
	}
}

func (w *window) deliver(sink int) {
	if w.delivered[sink].Add(1) == w.total && w.finished.Add(1) == int64(len(w.delivered)) {
		close(w.done)
	}
	if w.waiting.Load() && w.waiting.CompareAndSwap(true, false) {
		select {
		case w.wake <- struct{}{}:
		default:
		}
	}
}

// sourcePort hands the switch the same frame n times, copying it as a real
// port would, as fast as the window allows. It holds the first frame back
// until start is closed.
type sourcePort struct {
	frame   []byte
	n, sent int64 // the reader goroutine only
	win     *window
	start   chan struct{}
	closed  chan struct{}
	once    sync.Once
}

func (p *sourcePort) Read(b []byte) (int, error) {
	if p.sent == 0 {
		select {
		case <-p.start:
		case <-p.closed:
			return 0, net.ErrClosed
		}
	}
	if p.sent < p.n {
		p.win.wait(p.sent)
		p.sent++
		return copy(b, p.frame), nil
	}
	<-p.closed
	return 0, net.ErrClosed
}

func (p *sourcePort) Write(b []byte) (int, error) { return len(b), nil }

func (p *sourcePort) Close() error {
	p.once.Do(func() { close(p.closed) })
	return nil
}

// sinkPort counts deliveries into a window; Read blocks until Close.
type sinkPort struct {
	win    *window
	index  int
	closed chan struct{}
	once   sync.Once
}

func (p *sinkPort) Read([]byte) (int, error) {
	<-p.closed
	return 0, net.ErrClosed
}

func (p *sinkPort) Write(b []byte) (int, error) {
	p.win.deliver(p.index)
	return len(b), nil
}

func (p *sinkPort) Close() error {
	p.once.Do(func() { close(p.closed) })
	return nil
}

// benchSwitch sends b.N frames from a source port to the target ports
// through a switch, at most win frames in flight, and reports delivered
// frames per second; ns/op is the time per frame read, however many copies
// it fans out to. The switch must drop nothing.
func benchSwitch(b *testing.B, win int, frame []byte, from peer.PortKind, targets []peer.PortKind) {
	b.Helper()
	sw, err := peer.NewSwitch(peer.SwitchConfig{BroadcastRate: 1_000_000, BroadcastBurst: 1_000_000})
	if err != nil {
		b.Fatal(err)
	}
	defer sw.Close()
	w := newWindow(win, b.N, len(targets))
	for i, kind := range targets {
		mustAdd(b, sw, fmt.Sprint("dst", i), kind, &sinkPort{win: w, index: i, closed: make(chan struct{})})
	}
	// Teach the switch the first target's MAC, where unicast frames go.
	if eth := ether.Ethernet(frame); !eth.Dst().IsGroup() {
		sw.ForwardForTest("dst0", benchFrame(eth.Src(), eth.Dst()))
	}
	src := &sourcePort{frame: frame, n: int64(b.N), win: w,
		start: make(chan struct{}), closed: make(chan struct{})}
	mustAdd(b, sw, "src", from, src)

	b.SetBytes(int64(len(frame)))
	b.ReportAllocs()
	b.ResetTimer()
	close(src.start)
	// A dropped frame is never delivered: check for drops while waiting,
	// so that a benchmark that loses frames fails instead of hanging.
	check := time.NewTicker(100 * time.Millisecond)
	defer check.Stop()
	for done := false; !done; {
		select {
		case <-w.done:
			done = true
		case <-check.C:
			if d := sw.Stats().Drops; d.Total() != 0 {
				b.Fatalf("switch dropped frames: %+v", d)
			}
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "frames/s")
}

func mustAdd(b *testing.B, sw *peer.Switch, name string, kind peer.PortKind, p peer.Port) {
	if err := sw.AddPort(name, kind, p); err != nil {
		b.Fatal(err)
	}
}

func benchFrame(dst, src ether.MAC) []byte {
	return frame(dst, src, strings.Repeat("p", benchFrameLen-ether.HeaderLen))
}

var guardedBenchAddr = netip.MustParseAddr("10.86.0.12")

// guardedBenchFrame is benchFrame as IPv4 from guardedBenchAddr.
func guardedBenchFrame(dst, src ether.MAC) []byte {
	f := benchFrame(dst, src)
	ether.Ethernet(f).SetType(ether.TypeIPv4)
	ip := f[ether.HeaderLen:]
	ip[0], ip[9] = 0x45, 6 // TCP
	a := guardedBenchAddr.As4()
	copy(ip[12:16], a[:])
	return f
}

// Window sizes for the end-to-end benchmarks: a TCP-like stream (below the
// default queue length, so nothing is dropped) and one frame at a time.
const (
	streamWindow = 32
	pingWindow   = 1
)

var (
	benchUnicastToLink  = benchFrame(mac(0xa), mac(1))
	benchUnicastToLocal = benchFrame(mac(1), mac(0xa))
	benchBroadcast      = benchFrame(ether.Broadcast, mac(1))
	eightLinks          = []peer.PortKind{
		peer.PortKindLink, peer.PortKindLink, peer.PortKindLink, peer.PortKindLink,
		peer.PortKindLink, peer.PortKindLink, peer.PortKindLink, peer.PortKindLink,
	}
)

// BenchmarkSwitchUnicastLocalToLink: the guest streams to a learned MAC on a link.
func BenchmarkSwitchUnicastLocalToLink(b *testing.B) {
	benchSwitch(b, streamWindow, benchUnicastToLink, peer.PortKindLocal, []peer.PortKind{peer.PortKindLink})
}

// BenchmarkSwitchUnicastLinkToLocal: a link streams to the learned guest.
func BenchmarkSwitchUnicastLinkToLocal(b *testing.B) {
	benchSwitch(b, streamWindow, benchUnicastToLocal, peer.PortKindLink, []peer.PortKind{peer.PortKindLocal})
}

// BenchmarkSwitchFlood8Links: the guest broadcasts to 8 links; each frame
// is copied into 8 queues and written by 8 writers.
func BenchmarkSwitchFlood8Links(b *testing.B) {
	benchSwitch(b, streamWindow, benchBroadcast, peer.PortKindLocal, eightLinks)
}

// BenchmarkSwitchPingLocalToLink: one frame in flight; ns/op is the latency
// of a hop through the switch, both goroutine hand-offs included.
func BenchmarkSwitchPingLocalToLink(b *testing.B) {
	benchSwitch(b, pingWindow, benchUnicastToLink, peer.PortKindLocal, []peer.PortKind{peer.PortKindLink})
}

// BenchmarkSwitchForward measures the forwarding function alone (parse,
// learn, look up, copy into the destination queue), called directly.
func BenchmarkSwitchForward(b *testing.B) {
	mL, mA := mac(1), mac(0xa)
	cases := []struct {
		name  string
		from  string
		frame []byte
	}{
		{"LocalToLink", "L", benchFrame(mA, mL)},
		{"LinkToLocal", "A", benchFrame(mL, mA)},
		{"Flood", "L", benchFrame(ether.Broadcast, mL)}, // to A, B and G
		// G is a guarded link (L3Guard): the IPv4 source check's cost.
		{"GuardedLinkToLocal", "G", guardedBenchFrame(mL, mac(0xc))},
	}
	for _, tc := range cases {
		b.Run(tc.name, func(b *testing.B) {
			sw := forwardSwitch(b)
			defer sw.Close()
			b.SetBytes(int64(len(tc.frame)))
			b.ReportAllocs()
			for b.Loop() {
				sw.ForwardForTest(tc.from, tc.frame)
			}
		})
	}
}

// forwardSwitch returns a switch with a local port L and links A and B, all
// sinks, with L's and A's MACs learned and no broadcast budget in the way.
func forwardSwitch(tb testing.TB) *peer.Switch {
	sw, err := peer.NewSwitch(peer.SwitchConfig{BroadcastRate: 1_000_000, BroadcastBurst: 1_000_000})
	if err != nil {
		tb.Fatal(err)
	}
	for _, p := range []struct {
		name string
		kind peer.PortKind
	}{{"L", peer.PortKindLocal}, {"A", peer.PortKindLink}, {"B", peer.PortKindLink}} {
		if err := sw.AddPort(p.name, p.kind, porttest.NewSink()); err != nil {
			tb.Fatal(err)
		}
	}
	if err := sw.AddGuardedLink("G", porttest.NewSink(), peer.L3Guard{Addr: guardedBenchAddr}); err != nil {
		tb.Fatal(err)
	}
	sw.WarmQueuesForTest()
	sw.ForwardForTest("L", benchFrame(ether.Broadcast, mac(1)))
	sw.ForwardForTest("A", benchFrame(ether.Broadcast, mac(0xa)))
	return sw
}

// TestSwitchForwardAllocs: forwarding allocates nothing, whatever the path.
func TestSwitchForwardAllocs(t *testing.T) {
	sw := forwardSwitch(t)
	defer sw.Close()
	mL, mA := mac(1), mac(0xa)
	for _, tc := range []struct {
		name, from string
		frame      []byte
	}{
		{"unicast local to link", "L", benchFrame(mA, mL)},
		{"unicast link to local", "A", benchFrame(mL, mA)},
		{"broadcast from local", "L", benchFrame(ether.Broadcast, mL)},
		{"broadcast from link", "A", benchFrame(ether.Broadcast, mA)},
		{"unknown unicast", "L", benchFrame(mac(0x77), mL)},
		{"spoofed (dropped)", "A", benchFrame(mA, mL)},
		{"guarded link to local", "G", guardedBenchFrame(mL, mac(0xc))},
		{"guard refuses (dropped)", "G", guardedBenchFrame(mL, mac(0xd))[:ether.HeaderLen+10]},
		{"runt (dropped)", "A", []byte{1, 2, 3}},
	} {
		if n := testing.AllocsPerRun(1000, func() { sw.ForwardForTest(tc.from, tc.frame) }); n != 0 {
			t.Errorf("%s: %v allocations per frame, want 0", tc.name, n)
		}
	}
}

// TestSwitchGuardedLink: a frame the guard refuses is counted by reason and
// teaches the switch nothing; one it passes is forwarded and learned.
func TestSwitchGuardedLink(t *testing.T) {
	sw := forwardSwitch(t)
	defer sw.Close()
	spoofer, honest := mac(0xd), mac(0xc)
	spoofed := guardedBenchFrame(mac(1), spoofer)
	spoofed[ether.HeaderLen+15] ^= 1 // another source address
	sw.ForwardForTest("G", spoofed)
	sw.ForwardForTest("G", guardedBenchFrame(mac(1), honest))
	if d := sw.Stats().Drops; d[peer.DropIPSource] != 1 {
		t.Errorf("ip-source drops = %d, want 1 (all drops: %v)", d[peer.DropIPSource], d)
	}
	learned := map[ether.MAC]string{}
	for _, e := range sw.MACTable() {
		learned[e.MAC] = e.Port
	}
	if p, ok := learned[spoofer]; ok {
		t.Errorf("the refused frame's source was learned on %s", p)
	}
	if learned[honest] != "G" {
		t.Errorf("the passed frame's source is learned on %q, want G", learned[honest])
	}
}
