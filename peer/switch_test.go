package peer_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/peerlan/peerlan/peer"
	"github.com/peerlan/peerlan/peer/ether"
	"github.com/peerlan/peerlan/peer/porttest"
)

// waitTimeout bounds every wait in these tests. It is a hang detector, not a
// speed target: frames normally arrive within microseconds.
const waitTimeout = 10 * time.Second

// testEtherType is the IEEE "local experimental" EtherType.
const testEtherType = 0x88b5

// mac returns a locally administered unicast MAC ending in n.
func mac(n byte) ether.MAC { return ether.MAC{0x02, 0, 0, 0, 0, n} }

// frame builds an Ethernet frame carrying payload.
func frame(dst, src ether.MAC, payload string) []byte {
	b := make([]byte, ether.HeaderLen+len(payload))
	e := ether.Ethernet(b)
	e.SetDst(dst)
	e.SetSrc(src)
	e.SetType(testEtherType)
	copy(e.Payload(), payload)
	return b
}

func payload(f []byte) string { return string(f[ether.HeaderLen:]) }

// fakeClock is an injectable clock that moves only when told.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// newSwitch returns a switch that logs to the test at debug level, is closed
// at cleanup, and must leave no goroutine behind.
func newSwitch(t *testing.T, cfg peer.SwitchConfig) *peer.Switch {
	t.Helper()
	return newSwitches(t, 1, cfg)[0]
}

// newSwitches returns n switches like newSwitch, with one leak check after
// all of them are closed.
func newSwitches(t *testing.T, n int, cfg peer.SwitchConfig) []*peer.Switch {
	t.Helper()
	ignore := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, ignore) })
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	sws := make([]*peer.Switch, n)
	for i := range sws {
		sw, err := peer.NewSwitch(cfg)
		if err != nil {
			t.Fatalf("NewSwitch: %v", err)
		}
		t.Cleanup(func() {
			if err := sw.Close(); err != nil {
				t.Errorf("Close: %v", err)
			}
		})
		sws[i] = sw
	}
	return sws
}

// addPort attaches a fresh ChannelPort.
func addPort(t *testing.T, sw *peer.Switch, name string, kind peer.PortKind) *porttest.ChannelPort {
	t.Helper()
	p := porttest.NewChannelPort(1024)
	if err := sw.AddPort(name, kind, p); err != nil {
		t.Fatalf("AddPort(%q): %v", name, err)
	}
	return p
}

// recv returns the next frame p was given by the switch.
func recv(t *testing.T, p *porttest.ChannelPort, what string) []byte {
	t.Helper()
	select {
	case f := <-p.Outbound:
		return f
	case <-time.After(waitTimeout):
		t.Fatalf("%s: no frame within %v", what, waitTimeout)
		return nil
	}
}

// expect asserts that the next frame p receives is want.
func expect(t *testing.T, p *porttest.ChannelPort, what string, want []byte) {
	t.Helper()
	if got := recv(t, p, what); !bytes.Equal(got, want) {
		t.Fatalf("%s: got frame %q, want %q", what, payload(got), payload(want))
	}
}

// expectOnly reads p up to a frame carrying marker and fails if anything
// else came first. Frames from one ingress port reach a given port in the
// order they were read, so a marker sent after a frame proves that frame was
// not delivered to p.
func expectOnly(t *testing.T, p *porttest.ChannelPort, what, marker string) {
	t.Helper()
	for {
		f := recv(t, p, what)
		if payload(f) == marker {
			return
		}
		t.Fatalf("%s: unexpected frame %q before marker %q", what, payload(f), marker)
	}
}

// expectEmpty fails if p has a frame queued now.
func expectEmpty(t *testing.T, p *porttest.ChannelPort, what string) {
	t.Helper()
	select {
	case f := <-p.Outbound:
		t.Fatalf("%s: unexpected frame %q", what, payload(f))
	default:
	}
}

func portStats(t *testing.T, sw *peer.Switch, name string) peer.SwitchPortStats {
	t.Helper()
	for _, ps := range sw.Stats().Ports {
		if ps.Name == name {
			return ps
		}
	}
	t.Fatalf("port %q not in stats", name)
	return peer.SwitchPortStats{}
}

func macTable(sw *peer.Switch) map[ether.MAC]string {
	m := map[ether.MAC]string{}
	for _, e := range sw.MACTable() {
		m[e.MAC] = e.Port
	}
	return m
}

func TestSwitchConfigValidate(t *testing.T) {
	bad := []struct {
		field string
		cfg   peer.SwitchConfig
	}{
		{"MACAgingTime", peer.SwitchConfig{MACAgingTime: -time.Second}},
		{"MACAgingTime", peer.SwitchConfig{MACAgingTime: time.Millisecond}},
		{"MACAgingTime", peer.SwitchConfig{MACAgingTime: 48 * time.Hour}},
		{"QueueLen", peer.SwitchConfig{QueueLen: -1}},
		{"QueueLen", peer.SwitchConfig{QueueLen: 1 << 20}},
		{"MaxMACsPerPort", peer.SwitchConfig{MaxMACsPerPort: -5}},
		{"MaxPorts", peer.SwitchConfig{MaxPorts: 1 << 20}},
		{"BroadcastRate", peer.SwitchConfig{BroadcastRate: -1}},
		{"BroadcastBurst", peer.SwitchConfig{BroadcastBurst: 1 << 30}},
	}
	for _, tc := range bad {
		sw, err := peer.NewSwitch(tc.cfg)
		if err == nil {
			sw.Close()
			t.Errorf("NewSwitch(%+v) accepted a bad %s", tc.cfg, tc.field)
			continue
		}
		if !strings.Contains(err.Error(), tc.field) {
			t.Errorf("NewSwitch(%+v): error %q does not name %s", tc.cfg, err, tc.field)
		}
	}
	sw := newSwitch(t, peer.SwitchConfig{})
	_ = sw
}

func TestSwitchAddPortErrors(t *testing.T) {
	sw := newSwitch(t, peer.SwitchConfig{MaxPorts: 2})
	addPort(t, sw, "a", peer.PortKindLocal)
	cases := []struct {
		name string
		kind peer.PortKind
		p    peer.Port
	}{
		{"", peer.PortKindLink, porttest.NewSink()},
		{"bad\nname", peer.PortKindLink, porttest.NewSink()},
		{strings.Repeat("x", 129), peer.PortKindLink, porttest.NewSink()},
		{"b", peer.PortKind(0), porttest.NewSink()},
		{"b", peer.PortKind(9), porttest.NewSink()},
		{"b", peer.PortKindLink, nil},
		{"a", peer.PortKindLink, porttest.NewSink()}, // duplicate
	}
	for _, tc := range cases {
		if err := sw.AddPort(tc.name, tc.kind, tc.p); err == nil {
			t.Errorf("AddPort(%q, %v, %v) succeeded, want error", tc.name, tc.kind, tc.p)
		}
	}
	addPort(t, sw, "b", peer.PortKindLink)
	if err := sw.AddPort("c", peer.PortKindLink, porttest.NewSink()); err == nil {
		t.Error("AddPort beyond MaxPorts succeeded")
	}
	if err := sw.RemovePort("nope"); err == nil {
		t.Error("RemovePort of an unknown port succeeded")
	}
	if err := sw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := sw.AddPort("d", peer.PortKindLink, porttest.NewSink()); err == nil {
		t.Error("AddPort after Close succeeded")
	}
}

func TestSwitchLearningAndFlooding(t *testing.T) {
	sw := newSwitch(t, peer.SwitchConfig{})
	l1 := addPort(t, sw, "guest1", peer.PortKindLocal)
	l2 := addPort(t, sw, "guest2", peer.PortKindLocal)
	a := addPort(t, sw, "linkA", peer.PortKindLink)
	b := addPort(t, sw, "linkB", peer.PortKindLink)
	mL1, mL2, mA, mB, mX := mac(1), mac(2), mac(0xa), mac(0xb), mac(0x99)

	// A broadcast from a local guest floods to every other port, not back.
	bc := frame(ether.Broadcast, mL1, "who-has")
	l1.Inbound <- bc
	expect(t, l2, "guest2", bc)
	expect(t, a, "linkA", bc)
	expect(t, b, "linkB", bc)

	// Unknown unicast floods too; multicast as well.
	unk := frame(mX, mL1, "to-unknown")
	l1.Inbound <- unk
	mc := frame(ether.MAC{0x01, 0x00, 0x5e, 0, 0, 0xfb}, mL1, "mdns")
	l1.Inbound <- mc
	for _, p := range []*porttest.ChannelPort{l2, a, b} {
		expect(t, p, "unknown unicast", unk)
		expect(t, p, "multicast", mc)
	}

	// Each link answers; the switch learns where mA and mB live.
	ra := frame(mL1, mA, "reply-a")
	a.Inbound <- ra
	expect(t, l1, "guest1 gets A's reply", ra)
	rb := frame(mL1, mB, "reply-b")
	b.Inbound <- rb
	expect(t, l1, "guest1 gets B's reply", rb)
	// guest1 is learned, so the replies went to it alone.
	l2.Inbound <- frame(ether.Broadcast, mL2, "m1")
	expectOnly(t, l1, "guest1", "m1")
	expectOnly(t, a, "linkA", "m1")
	expectOnly(t, b, "linkB", "m1")

	// Learned unicast goes to exactly its port.
	toA := frame(mA, mL1, "to-a")
	l1.Inbound <- toA
	l1.Inbound <- frame(ether.Broadcast, mL1, "m2")
	expect(t, a, "linkA", toA)
	expectOnly(t, a, "linkA", "m2")
	expectOnly(t, b, "linkB", "m2")
	expectOnly(t, l2, "guest2", "m2")

	// Unicast between two local ports.
	toL2 := frame(mL2, mL1, "to-l2")
	l1.Inbound <- toL2
	expect(t, l2, "guest2", toL2)

	want := map[ether.MAC]string{mL1: "guest1", mL2: "guest2", mA: "linkA", mB: "linkB"}
	if got := macTable(sw); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("MAC table = %v, want %v", got, want)
	}

	// A frame to a MAC learned on its own ingress port is filtered.
	l1.Inbound <- frame(mL1, mL1, "hairpin")
	l1.Inbound <- frame(ether.Broadcast, mL1, "m3")
	expectOnly(t, l2, "guest2", "m3")
	if got := portStats(t, sw, "guest1").Drops[peer.DropFiltered]; got != 1 {
		t.Errorf("guest1 filtered drops = %d, want 1", got)
	}
	expectEmpty(t, l1, "guest1")
}

func TestSwitchSplitHorizon(t *testing.T) {
	sw := newSwitch(t, peer.SwitchConfig{})
	l := addPort(t, sw, "guest", peer.PortKindLocal)
	a := addPort(t, sw, "linkA", peer.PortKindLink)
	b := addPort(t, sw, "linkB", peer.PortKindLink)
	mL, mA, mB := mac(1), mac(0xa), mac(0xb)

	// Teach the switch where mB lives.
	b.Inbound <- frame(mL, mB, "hello-from-b")
	recv(t, l, "guest")

	// From a link: broadcast, unknown unicast and unicast to another link's
	// MAC must never reach another link.
	bc := frame(ether.Broadcast, mA, "bc-from-a")
	unk := frame(mac(0x77), mA, "unknown-from-a")
	toB := frame(mB, mA, "a-to-b")
	a.Inbound <- bc
	a.Inbound <- unk
	a.Inbound <- toB
	a.Inbound <- frame(ether.Broadcast, mA, "a-done")
	expect(t, l, "guest", bc)
	expect(t, l, "guest", unk)
	expectOnly(t, l, "guest", "a-done") // a-to-b is not for the guest either
	// A's reader is done with all of them; a marker from the guest now
	// queues behind anything wrongly sent to B.
	l.Inbound <- frame(ether.Broadcast, mL, "l-done")
	expectOnly(t, b, "linkB", "l-done")
	expectOnly(t, a, "linkA", "l-done")

	if got := portStats(t, sw, "linkA").Drops[peer.DropFiltered]; got != 1 {
		t.Errorf("linkA filtered drops = %d, want 1 (a-to-b)", got)
	}
	// Tx is counted once Write returns, just after the frame was handed over.
	waitFor(t, "linkB to count exactly one tx frame (l-done)", func() bool {
		return portStats(t, sw, "linkB").TxFrames == 1
	})
}

func TestSwitchAntiSpoofing(t *testing.T) {
	sw := newSwitch(t, peer.SwitchConfig{})
	l := addPort(t, sw, "guest", peer.PortKindLocal)
	a := addPort(t, sw, "linkA", peer.PortKindLink)
	b := addPort(t, sw, "linkB", peer.PortKindLink)
	mL, mA, mB := mac(1), mac(0xa), mac(0xb)

	l.Inbound <- frame(ether.Broadcast, mL, "guest-hello")
	recv(t, a, "linkA")
	recv(t, b, "linkB")
	a.Inbound <- frame(ether.Broadcast, mA, "a-hello")
	recv(t, l, "guest")
	b.Inbound <- frame(ether.Broadcast, mB, "b-hello")
	recv(t, l, "guest")

	// A claims the guest's MAC, B's MAC, a group MAC and the zero MAC.
	a.Inbound <- frame(ether.Broadcast, mL, "spoof-guest")
	a.Inbound <- frame(mL, mB, "spoof-b")
	a.Inbound <- frame(mL, ether.MAC{0x01, 0, 0x5e, 1, 2, 3}, "group-src")
	a.Inbound <- frame(mL, ether.Broadcast, "bcast-src")
	a.Inbound <- frame(mL, ether.MAC{}, "zero-src")
	a.Inbound <- frame(ether.Broadcast, mA, "a-done")
	expectOnly(t, l, "guest", "a-done")

	st := portStats(t, sw, "linkA")
	if st.Drops[peer.DropSpoofedSource] != 2 || st.Drops[peer.DropGroupSource] != 2 || st.Drops[peer.DropZeroSource] != 1 {
		t.Errorf("linkA drops = %+v, want 2 spoofed, 2 group, 1 zero", st.Drops)
	}
	want := map[ether.MAC]string{mL: "guest", mA: "linkA", mB: "linkB"}
	if got := macTable(sw); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("MAC table = %v, want %v (spoofing must not move entries)", got, want)
	}

	// A local guest is trusted: it takes a MAC over from a link...
	l.Inbound <- frame(ether.Broadcast, mB, "guest-takes-mB")
	recv(t, a, "linkA")
	if got := recv(t, b, "linkB"); payload(got) != "guest-takes-mB" {
		t.Fatalf("linkB got %q", payload(got))
	}
	if got := macTable(sw)[mB]; got != "guest" {
		t.Fatalf("mB learned on %q after the guest used it, want guest", got)
	}
	// ...and the link can no longer use it.
	b.Inbound <- frame(ether.Broadcast, mB, "b-again")
	b.Inbound <- frame(ether.Broadcast, mac(0xbb), "b-done")
	expectOnly(t, l, "guest", "b-done")
	if got := portStats(t, sw, "linkB").Drops[peer.DropSpoofedSource]; got != 1 {
		t.Errorf("linkB spoofed drops = %d, want 1", got)
	}
	// Even a guest may not use a group source.
	l.Inbound <- frame(ether.Broadcast, ether.Broadcast, "guest-bad")
	l.Inbound <- frame(ether.Broadcast, mL, "l-done")
	expectOnly(t, a, "linkA", "l-done")
	if got := portStats(t, sw, "guest").Drops[peer.DropGroupSource]; got != 1 {
		t.Errorf("guest group-source drops = %d, want 1", got)
	}
}

func TestSwitchAging(t *testing.T) {
	clock := newFakeClock()
	const aging = time.Minute
	sw := newSwitch(t, peer.SwitchConfig{MACAgingTime: aging, Now: clock.Now})
	l := addPort(t, sw, "guest", peer.PortKindLocal)
	a := addPort(t, sw, "linkA", peer.PortKindLink)
	b := addPort(t, sw, "linkB", peer.PortKindLink)
	mL, mA := mac(1), mac(0xa)
	advance := func(d time.Duration) {
		clock.Advance(d)
		sw.SampleClockForTest() // rather than wait for the janitor's tick
	}

	a.Inbound <- frame(mL, mA, "a-hello")
	recv(t, l, "guest") // unknown mL: flooded to the only local port

	// Just inside the aging time, unicast to mA goes to A only.
	advance(aging - time.Second)
	toA := frame(mA, mL, "to-a-1")
	l.Inbound <- toA
	l.Inbound <- frame(ether.Broadcast, mL, "m1")
	expect(t, a, "linkA", toA)
	expectOnly(t, a, "linkA", "m1")
	expectOnly(t, b, "linkB", "m1")

	// Past it, mA is forgotten and unicast to it floods again.
	advance(2 * time.Second)
	if _, ok := macTable(sw)[mA]; ok {
		t.Fatalf("mA still in the MAC table after %v", aging+time.Second)
	}
	toA2 := frame(mA, mL, "to-a-2")
	l.Inbound <- toA2
	expect(t, a, "linkA", toA2)
	expect(t, b, "linkB (flooded)", toA2)

	// An expired entry does not count as spoofing: B may now use mA.
	b.Inbound <- frame(mL, mA, "b-as-mA")
	expect(t, l, "guest", frame(mL, mA, "b-as-mA"))
	if got := macTable(sw)[mA]; got != "linkB" {
		t.Errorf("mA on %q, want linkB", got)
	}

	// Traffic keeps an entry alive: mL has been sending all along.
	advance(aging / 2)
	l.Inbound <- frame(mA, mL, "to-a-3")
	expect(t, b, "linkB", frame(mA, mL, "to-a-3"))
	advance(aging/2 + time.Second)
	if _, ok := macTable(sw)[mL]; !ok {
		t.Error("mL aged out although it sent a frame within the aging time")
	}
	if _, ok := macTable(sw)[mA]; ok {
		t.Error("mA did not age out")
	}

	// The sweep reclaims expired entries.
	before := sw.Stats().MACs
	sw.SweepForTest()
	if after := sw.Stats().MACs; after != before-1 || after != 1 {
		t.Errorf("sweep: %d entries before, %d after; want 2 then 1", before, after)
	}
}

func TestSwitchMACLimit(t *testing.T) {
	clock := newFakeClock()
	sw := newSwitch(t, peer.SwitchConfig{MaxMACsPerPort: 2, MACAgingTime: time.Minute, Now: clock.Now})
	l := addPort(t, sw, "guest", peer.PortKindLocal)
	a := addPort(t, sw, "linkA", peer.PortKindLink)

	for i := range byte(3) {
		a.Inbound <- frame(mac(1), mac(0x10+i), fmt.Sprint("src", i))
	}
	expect(t, l, "guest", frame(mac(1), mac(0x10), "src0"))
	expect(t, l, "guest", frame(mac(1), mac(0x11), "src1"))
	a.Inbound <- frame(mac(1), mac(0x11), "a-done")
	expectOnly(t, l, "guest", "a-done")
	st := portStats(t, sw, "linkA")
	if st.Drops[peer.DropMACLimit] != 1 || st.MACs != 2 {
		t.Fatalf("linkA: %d mac-limit drops, %d MACs; want 1 and 2", st.Drops[peer.DropMACLimit], st.MACs)
	}

	// Once its MACs age out and are swept, the port may learn new ones.
	clock.Advance(2 * time.Minute)
	sw.SweepForTest() // samples the clock too
	a.Inbound <- frame(mac(1), mac(0x12), "src2-again")
	expect(t, l, "guest", frame(mac(1), mac(0x12), "src2-again"))
}

func TestSwitchBroadcastBudget(t *testing.T) {
	clock := newFakeClock()
	sw := newSwitch(t, peer.SwitchConfig{BroadcastRate: 10, BroadcastBurst: 5, Now: clock.Now})
	l := addPort(t, sw, "guest", peer.PortKindLocal)
	a := addPort(t, sw, "linkA", peer.PortKindLink)
	b := addPort(t, sw, "linkB", peer.PortKindLink)
	mL, mA := mac(1), mac(0xa)

	// Teach mL so that unicast to it is not flooded (and not budgeted).
	l.Inbound <- frame(ether.Broadcast, mL, "hello")
	recv(t, a, "linkA")
	recv(t, b, "linkB")

	// With the clock standing still, A may send a burst of 5 group frames.
	burst := func(n int, tag string) (got int) {
		for i := range n {
			dst := ether.Broadcast
			if i%2 == 1 {
				dst = ether.MAC{0x33, 0x33, 0, 0, 0, 1} // IPv6 all-nodes multicast
			}
			a.Inbound <- frame(dst, mA, fmt.Sprint(tag, i))
		}
		a.Inbound <- frame(mL, mA, tag+"-done") // unicast: never budgeted
		for {
			f := recv(t, l, "guest")
			if payload(f) == tag+"-done" {
				return got
			}
			got++
		}
	}
	if got := burst(8, "first"); got != 5 {
		t.Errorf("first burst: %d group frames passed, want 5", got)
	}
	if got := portStats(t, sw, "linkA").Drops[peer.DropBroadcastBudget]; got != 3 {
		t.Errorf("budget drops = %d, want 3", got)
	}
	// 200 ms earn 2 frames.
	clock.Advance(200 * time.Millisecond)
	if got := burst(4, "second"); got != 2 {
		t.Errorf("after 200ms: %d passed, want 2", got)
	}
	// A long pause refills up to the burst, not beyond.
	clock.Advance(time.Hour)
	if got := burst(9, "third"); got != 5 {
		t.Errorf("after a long pause: %d passed, want 5", got)
	}
	// Budgets are per link and only on links: B and the guest are unaffected.
	b.Inbound <- frame(ether.Broadcast, mac(0xb), "b-bc")
	expect(t, l, "guest", frame(ether.Broadcast, mac(0xb), "b-bc"))
	for i := range 20 {
		l.Inbound <- frame(ether.Broadcast, mL, fmt.Sprint("guest-bc", i))
	}
	for i := range 20 {
		expect(t, a, "linkA", frame(ether.Broadcast, mL, fmt.Sprint("guest-bc", i)))
	}
}

func TestSwitchFrameSizes(t *testing.T) {
	sw := newSwitch(t, peer.SwitchConfig{})
	l := addPort(t, sw, "guest", peer.PortKindLocal)
	a := addPort(t, sw, "linkA", peer.PortKindLink)
	mL, mA := mac(1), mac(0xa)

	hdr := frame(mL, mA, "")
	maxFrame := frame(mL, mA, strings.Repeat("x", peer.MaxFrameSize-ether.HeaderLen))
	a.Inbound <- hdr[:ether.HeaderLen-1]                                                 // runt
	a.Inbound <- nil                                                                     // empty: runt
	a.Inbound <- frame(mL, mA, strings.Repeat("y", peer.MaxFrameSize-ether.HeaderLen+1)) // oversize
	a.Inbound <- frame(mL, mA, strings.Repeat("z", 9000))                                // jumbo: oversize
	a.Inbound <- hdr                                                                     // header only: fine
	a.Inbound <- maxFrame                                                                // exactly MaxFrameSize: fine
	a.Inbound <- frame(ether.Broadcast, mA, "a-done")
	expect(t, l, "guest", hdr)
	expect(t, l, "guest", maxFrame)
	expectOnly(t, l, "guest", "a-done")
	st := portStats(t, sw, "linkA")
	if st.Drops[peer.DropRunt] != 2 || st.Drops[peer.DropOversize] != 2 {
		t.Errorf("drops = %+v, want 2 runt and 2 oversize", st.Drops)
	}
	if st.RxFrames != 7 {
		t.Errorf("rx frames = %d, want 7 (drops included)", st.RxFrames)
	}
}

// TestSwitchFrozenPortStallsNobody is the switch's TestSendFreeze: one link's
// Write is stuck, yet the guest keeps talking to two other links at full
// pace, the stuck link loses only its own oldest frames, and its reader keeps
// delivering to the guest.
func TestSwitchFrozenPortStallsNobody(t *testing.T) {
	const queueLen = 8
	const n = 200
	sw := newSwitch(t, peer.SwitchConfig{QueueLen: queueLen})
	l := addPort(t, sw, "guest", peer.PortKindLocal)
	aInner := porttest.NewChannelPort(1024)
	a := porttest.NewFreezable(aInner)
	if err := sw.AddPort("frozen", peer.PortKindLink, a); err != nil {
		t.Fatal(err)
	}
	b := addPort(t, sw, "linkB", peer.PortKindLink)
	c := addPort(t, sw, "linkC", peer.PortKindLink)
	mL := mac(1)

	a.Freeze()
	msg := func(i int) []byte { return frame(ether.Broadcast, mL, fmt.Sprint("bc", i)) }
	l.Inbound <- msg(0)
	select {
	case <-a.Blocked():
	case <-time.After(waitTimeout):
		t.Fatal("the frozen port's writer never reached Write")
	}
	expect(t, b, "linkB", msg(0))
	expect(t, c, "linkC", msg(0))
	for i := 1; i < n; i++ {
		l.Inbound <- msg(i)
		expect(t, b, "linkB", msg(i))
		expect(t, c, "linkC", msg(i))
	}

	// The stuck port's reader is unaffected.
	aInner.Inbound <- frame(mL, mac(0xa), "from-frozen")
	expect(t, l, "guest", frame(mL, mac(0xa), "from-frozen"))

	// It kept the frame its writer holds plus the newest queueLen.
	st := portStats(t, sw, "frozen")
	if want := uint64(n - 1 - queueLen); st.Drops[peer.DropQueueFull] != want {
		t.Errorf("frozen port queue-full drops = %d, want %d", st.Drops[peer.DropQueueFull], want)
	}
	if st.Queued != queueLen {
		t.Errorf("frozen port queued = %d, want %d", st.Queued, queueLen)
	}
	for _, name := range []string{"linkB", "linkC", "guest"} {
		if d := portStats(t, sw, name).Drops; d.Total() != 0 {
			t.Errorf("%s dropped frames: %+v", name, d)
		}
	}
	if a.Stuck() != 1 {
		t.Errorf("%d writes stuck on the frozen port, want 1", a.Stuck())
	}

	a.Unfreeze()
	expect(t, aInner, "unfrozen", msg(0))
	for i := n - queueLen; i < n; i++ {
		expect(t, aInner, "unfrozen", msg(i))
	}
	l.Inbound <- msg(n)
	expect(t, aInner, "unfrozen", msg(n))
}

// TestSwitchFrozenPortClose proves a switch can be closed while a port is
// frozen (Close unblocks the stuck Write).
func TestSwitchFrozenPortClose(t *testing.T) {
	sw := newSwitch(t, peer.SwitchConfig{})
	l := addPort(t, sw, "guest", peer.PortKindLocal)
	a := porttest.NewFreezable(porttest.NewChannelPort(16))
	if err := sw.AddPort("frozen", peer.PortKindLink, a); err != nil {
		t.Fatal(err)
	}
	a.Freeze()
	l.Inbound <- frame(ether.Broadcast, mac(1), "x")
	<-a.Blocked()
	if err := sw.RemovePort("frozen"); err != nil {
		t.Fatal(err)
	}
	if a.Stuck() != 0 {
		t.Error("Write still stuck after RemovePort")
	}
}

func TestSwitchRemovePortForgetsMACs(t *testing.T) {
	sw := newSwitch(t, peer.SwitchConfig{})
	l := addPort(t, sw, "guest", peer.PortKindLocal)
	a := addPort(t, sw, "linkA", peer.PortKindLink)
	b := addPort(t, sw, "linkB", peer.PortKindLink)
	mL, mA := mac(1), mac(0xa)

	a.Inbound <- frame(mL, mA, "a-hello")
	recv(t, l, "guest")
	if got := macTable(sw)[mA]; got != "linkA" {
		t.Fatalf("mA on %q, want linkA", got)
	}
	if err := sw.RemovePort("linkA"); err != nil {
		t.Fatal(err)
	}
	select {
	case <-a.Closed():
	default:
		t.Fatal("RemovePort did not close the port")
	}
	if _, ok := macTable(sw)[mA]; ok {
		t.Fatal("mA still learned after its port was removed")
	}
	for _, ps := range sw.Stats().Ports {
		if ps.Name == "linkA" {
			t.Fatal("removed port still in Stats")
		}
	}
	// Unicast to mA now floods; and B may take mA over at once (a peer
	// that reconnected), which would be spoofing had mA stayed learned.
	l.Inbound <- frame(mA, mL, "to-mA")
	expect(t, b, "linkB", frame(mA, mL, "to-mA"))
	b.Inbound <- frame(mL, mA, "b-as-mA")
	expect(t, l, "guest", frame(mL, mA, "b-as-mA"))
	if got := macTable(sw)[mA]; got != "linkB" {
		t.Errorf("mA on %q, want linkB", got)
	}
	// The name can be reused.
	addPort(t, sw, "linkA", peer.PortKindLink)
}

// TestSwitchReadErrorRemovesPort: a remote end going away (Read returns
// io.EOF) removes the port and forgets its MACs.
func TestSwitchReadErrorRemovesPort(t *testing.T) {
	var logs syncBuffer
	sw := newSwitch(t, peer.SwitchConfig{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	l := addPort(t, sw, "guest", peer.PortKindLocal)
	near, far := porttest.NewPipe()
	if err := sw.AddPort("linkA", peer.PortKindLink, near); err != nil {
		t.Fatal(err)
	}
	mL, mA := mac(1), mac(0xa)
	if _, err := far.Write(frame(mL, mA, "hello")); err != nil {
		t.Fatal(err)
	}
	recv(t, l, "guest")
	far.Close()
	select {
	case <-near.Closed():
	case <-time.After(waitTimeout):
		t.Fatal("switch did not close a port whose Read failed")
	}
	if _, ok := macTable(sw)[mA]; ok {
		t.Error("mA still learned after its port failed")
	}
	if ps := sw.Stats().Ports; len(ps) != 1 || ps[0].Name != "guest" {
		t.Errorf("ports after failure: %+v", ps)
	}
	if got := logs.String(); !strings.Contains(got, `msg="switch: port closed, removing it" port=linkA kind=link err=EOF`) {
		t.Errorf("the removal was not logged; logs:\n%s", got)
	}
}

// syncBuffer is a bytes.Buffer safe for a logger's concurrent writes.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// flakyPort loses a frame on its first Read (ErrDropped), which must not end it.
type flakyPort struct {
	*porttest.ChannelPort
	once atomic.Bool
}

func (p *flakyPort) Read(b []byte) (int, error) {
	if p.once.CompareAndSwap(false, true) {
		return 0, peer.ErrDropped
	}
	return p.ChannelPort.Read(b)
}

// brokenWriter fails every Write.
type brokenWriter struct{ *porttest.ChannelPort }

var errBroken = errors.New("broken")

func (brokenWriter) Write([]byte) (int, error) { return 0, errBroken }

func TestSwitchPortErrors(t *testing.T) {
	sw := newSwitch(t, peer.SwitchConfig{})
	flaky := &flakyPort{ChannelPort: porttest.NewChannelPort(16)}
	if err := sw.AddPort("flaky", peer.PortKindLocal, flaky); err != nil {
		t.Fatal(err)
	}
	broken := brokenWriter{porttest.NewChannelPort(16)}
	if err := sw.AddPort("broken", peer.PortKindLink, broken); err != nil {
		t.Fatal(err)
	}
	busy := porttest.NewChannelPort(0) // nobody reads Outbound: every Write drops
	if err := sw.AddPort("busy", peer.PortKindLink, busy); err != nil {
		t.Fatal(err)
	}
	ok := addPort(t, sw, "ok", peer.PortKindLink)

	for i := range 3 {
		flaky.Inbound <- frame(ether.Broadcast, mac(1), fmt.Sprint("f", i))
	}
	for i := range 3 {
		expect(t, ok, "ok", frame(ether.Broadcast, mac(1), fmt.Sprint("f", i)))
	}
	// Writers count what they could not deliver; a broken Write does not
	// remove the port (only a failed Read does).
	waitFor(t, "3 write-error and 3 port-busy drops", func() bool {
		return portStats(t, sw, "broken").Drops[peer.DropWriteError] == 3 &&
			portStats(t, sw, "busy").Drops[peer.DropPortBusy] == 3
	})
	if n := len(sw.Stats().Ports); n != 4 {
		t.Errorf("%d ports, want 4: write errors must not remove a port", n)
	}
}

func TestSwitchStatsTotalsSurviveRemoval(t *testing.T) {
	sw := newSwitch(t, peer.SwitchConfig{})
	l := addPort(t, sw, "guest", peer.PortKindLocal)
	a := addPort(t, sw, "linkA", peer.PortKindLink)
	a.Inbound <- []byte{1, 2, 3}
	a.Inbound <- frame(mac(1), mac(0xa), "done")
	recv(t, l, "guest")
	if err := sw.RemovePort("linkA"); err != nil {
		t.Fatal(err)
	}
	st := sw.Stats()
	if st.Drops[peer.DropRunt] != 1 {
		t.Errorf("total runt drops after removal = %d, want 1", st.Drops[peer.DropRunt])
	}
	js, err := json.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"runt":1`, `"queue-full":0`, `"Kind":"local"`} {
		if !bytes.Contains(js, []byte(want)) {
			t.Errorf("stats JSON lacks %s: %s", want, js)
		}
	}
}

// TestSwitchMesh wires three switches into a full mesh of pipes, as three
// peers would be, and checks that a broadcast reaches every other guest
// exactly once and unicast finds its way: split horizon keeps the triangle
// loop-free.
func TestSwitchMesh(t *testing.T) {
	const peers = 3
	sws := newSwitches(t, peers, peer.SwitchConfig{})
	var guests [peers]*porttest.ChannelPort
	for i := range peers {
		guests[i] = addPort(t, sws[i], "guest", peer.PortKindLocal)
	}
	for i := range peers {
		for j := i + 1; j < peers; j++ {
			pi, pj := porttest.NewPipe()
			if err := sws[i].AddPort(fmt.Sprint("peer", j), peer.PortKindLink, pi); err != nil {
				t.Fatal(err)
			}
			if err := sws[j].AddPort(fmt.Sprint("peer", i), peer.PortKindLink, pj); err != nil {
				t.Fatal(err)
			}
		}
	}
	m := func(i int) ether.MAC { return mac(byte(0x10 + i)) }

	guests[0].Inbound <- frame(ether.Broadcast, m(0), "who-has")
	for i := 1; i < peers; i++ {
		expect(t, guests[i], fmt.Sprint("guest", i), frame(ether.Broadcast, m(0), "who-has"))
	}
	guests[1].Inbound <- frame(m(0), m(1), "is-at")
	expect(t, guests[0], "guest0", frame(m(0), m(1), "is-at"))
	guests[0].Inbound <- frame(m(1), m(0), "ping")
	expect(t, guests[1], "guest1", frame(m(1), m(0), "ping"))

	settle(t, sws...)
	for i, g := range guests {
		expectEmpty(t, g, fmt.Sprint("guest", i, " after settling"))
	}
	// Peer 2 saw the broadcast and nothing else; it forwarded nothing.
	for _, ps := range sws[2].Stats().Ports {
		if ps.Kind == peer.PortKindLink && ps.TxFrames != 0 {
			t.Errorf("peer2 sent %d frames to %s; a link frame must not go to another link", ps.TxFrames, ps.Name)
		}
	}
	if got := portStats(t, sws[1], "peer2").TxFrames; got != 0 {
		t.Errorf("peer1 sent %d frames to peer2, want 0 (it learned m0 on peer0)", got)
	}
}

// settle waits until the switches are idle: no frame queued and no counter
// moving over a few milliseconds.
func settle(t *testing.T, sws ...*peer.Switch) {
	t.Helper()
	snapshot := func() (string, bool) {
		var b strings.Builder
		idle := true
		for _, sw := range sws {
			st := sw.Stats()
			for _, ps := range st.Ports {
				idle = idle && ps.Queued == 0
			}
			fmt.Fprintf(&b, "%+v\n", st)
		}
		return b.String(), idle
	}
	deadline := time.Now().Add(waitTimeout)
	prev, _ := snapshot()
	for time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
		cur, idle := snapshot()
		if cur == prev && idle {
			return
		}
		prev = cur
	}
	t.Fatalf("switches did not settle within %v", waitTimeout)
}

// waitFor polls cond until it holds, for effects with no event to wait on
// (counters updated right after a frame was handed over).
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestSwitchConcurrentAddRemove churns ports while frames flow and stats are
// read, for the race detector; then checks the switch is consistent.
func TestSwitchConcurrentAddRemove(t *testing.T) {
	sw := newSwitch(t, peer.SwitchConfig{QueueLen: 4})
	l := addPort(t, sw, "guest", peer.PortKindLocal)
	mL := mac(1)

	stop := make(chan struct{})
	var bg sync.WaitGroup
	bg.Go(func() { // the guest broadcasts continuously
		for {
			select {
			case <-stop:
				return
			case l.Inbound <- frame(ether.Broadcast, mL, "tick"):
			}
		}
	})
	bg.Go(func() { // drain the guest
		for {
			select {
			case <-stop:
				return
			case <-l.Outbound:
			}
		}
	})
	bg.Go(func() { // read stats and the table like the page does
		for {
			select {
			case <-stop:
				return
			default:
				sw.Stats()
				sw.MACTable()
				time.Sleep(100 * time.Microsecond)
			}
		}
	})

	const workers, rounds = 4, 40
	var churn sync.WaitGroup
	for w := range workers {
		churn.Go(func() {
			for r := range rounds {
				name := fmt.Sprintf("w%d-%d", w, r)
				kind := peer.PortKindLink
				if r%3 == 0 {
					kind = peer.PortKindLocal
				}
				near, far := porttest.NewPipe()
				if err := sw.AddPort(name, kind, near); err != nil {
					t.Errorf("AddPort(%s): %v", name, err)
					return
				}
				src := ether.MAC{0x02, 0, 0, byte(w), byte(r), 1}
				for range 5 {
					far.Write(frame(ether.Broadcast, src, name))
				}
				if r%2 == 0 {
					if err := sw.RemovePort(name); err != nil {
						t.Errorf("RemovePort(%s): %v", name, err)
					}
				} else {
					far.Close() // the remote goes away; the switch notices
					<-near.Closed()
				}
			}
		})
	}
	churn.Wait()
	close(stop)
	bg.Wait()

	st := sw.Stats()
	if len(st.Ports) != 1 || st.Ports[0].Name != "guest" {
		t.Errorf("ports left: %+v", st.Ports)
	}
	for _, e := range sw.MACTable() {
		if e.Port != "guest" {
			t.Errorf("MAC %v still learned on removed port %s", e.MAC, e.Port)
		}
	}
}

func TestSwitchDropsJSONRoundTrip(t *testing.T) {
	var d peer.SwitchDrops
	for r := range d {
		d[r] = uint64(r*7 + 1)
	}
	b, err := json.Marshal(d)
	if err != nil {
		t.Fatal(err)
	}
	var got peer.SwitchDrops
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	if got != d {
		t.Fatalf("round trip of %s = %v, want %v", b, got, d)
	}
	if err := json.Unmarshal([]byte(`[1,2]`), &got); err == nil {
		t.Error("an array decoded as SwitchDrops")
	}
}
