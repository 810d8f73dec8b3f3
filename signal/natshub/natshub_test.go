package natshub_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/peerlan/peerlan/signal"
	"github.com/peerlan/peerlan/signal/natshub"
	"github.com/peerlan/peerlan/signal/natshub/natshubtest"
	"github.com/peerlan/peerlan/signal/natshub/natsnode"
	"github.com/peerlan/peerlan/signal/proto"
	"github.com/peerlan/peerlan/signal/signaltest"
)

// TestRoomSpansInstances: peers of one room joining through three instances
// meet as if on one server: older members in the welcome, younger ones as
// peer-joined, signals across instances, peer-left on leave.
func TestRoomSpansInstances(t *testing.T) {
	in := natshubtest.Cluster(t, 3, nil)
	a, wa := signaltest.Join(t, in[0].Server, "lab", nil)
	b, wb := signaltest.Join(t, in[1].Server, "lab", nil)
	c, wc := signaltest.Join(t, in[2].Server, "lab", nil)
	if len(wa.Peers) != 0 || len(wb.Peers) != 1 || wb.Peers[0].ID != wa.ID || len(wc.Peers) != 2 {
		t.Fatalf("welcomes: a %+v b %+v c %+v", wa.Peers, wb.Peers, wc.Peers)
	}
	ips := map[netip.Addr]bool{wa.IP: true, wb.IP: true, wc.IP: true}
	if len(ips) != 3 || !ips[netip.MustParseAddr("10.86.0.2")] || !ips[netip.MustParseAddr("10.86.0.4")] {
		t.Fatalf("addresses not the lowest three, or not unique: %v %v %v", wa.IP, wb.IP, wc.IP)
	}
	if pj := signaltest.Expect[*proto.PeerJoined](a); pj.Peer.ID != wb.ID || pj.Peer.IP != wb.IP {
		t.Fatalf("a: %+v", pj)
	}
	if pj := signaltest.Expect[*proto.PeerJoined](a); pj.Peer.ID != wc.ID {
		t.Fatalf("a: %+v", pj)
	}
	if pj := signaltest.Expect[*proto.PeerJoined](b); pj.Peer.ID != wc.ID {
		t.Fatalf("b: %+v", pj)
	}
	// The newcomer offers; the others answer; across instances.
	c.Send(&proto.Signal{To: wa.ID, Data: json.RawMessage(`{"sdp":"offer"}`)})
	if s := signaltest.Expect[*proto.Signal](a); s.From != wc.ID || string(s.Data) != `{"sdp":"offer"}` {
		t.Fatalf("signal c->a: %+v", s)
	}
	a.Send(&proto.Signal{To: wc.ID, Data: json.RawMessage(`"answer"`)})
	if s := signaltest.Expect[*proto.Signal](c); s.From != wa.ID {
		t.Fatalf("signal a->c: %+v", s)
	}
	// A peer of another room cannot be reached, even through another instance.
	x, wx := signaltest.Join(t, in[1].Server, "other", nil)
	if len(wx.Peers) != 0 {
		t.Fatalf("other room sees %+v", wx.Peers)
	}
	a.Send(&proto.Signal{To: wx.ID, Data: json.RawMessage(`1`)})
	x.ExpectSilence(300 * time.Millisecond)

	b.Send(&proto.Leave{})
	for _, p := range []*signaltest.Peer{a, c} {
		if pl := signaltest.Expect[*proto.PeerLeft](p); pl.ID != wb.ID {
			t.Fatalf("peer-left: %+v", pl)
		}
	}
	// B's address is free again, cluster-wide.
	_, wd := signaltest.Join(t, in[2].Server, "lab", nil)
	if wd.IP != wb.IP {
		t.Fatalf("released address not reused: %v want %v", wd.IP, wb.IP)
	}
}

// TestConcurrentJoins: peers joining one room at once through all three
// instances get unique ids and addresses, and of every pair exactly one
// lists the other in its welcome (the other hears peer-joined): no glare.
// The room limit holds cluster-wide.
func TestConcurrentJoins(t *testing.T) {
	const perInstance = 8
	in := natshubtest.Cluster(t, 3, nil)
	type joined struct {
		p *signaltest.Peer
		w *proto.Welcome
	}
	var mu sync.Mutex
	var all []joined
	var wg sync.WaitGroup
	for _, inst := range in {
		for range perInstance {
			wg.Add(1)
			go func() {
				defer wg.Done()
				p := signaltest.Dial(t, inst.URL, nil)
				p.Send(&proto.Join{V: proto.ProtocolVersion, Room: "rush"})
				m, err := p.Next(20 * time.Second)
				w, ok := m.(*proto.Welcome)
				if err != nil || !ok {
					t.Errorf("join: %v %#v", err, m)
					return
				}
				mu.Lock()
				all = append(all, joined{p, w})
				mu.Unlock()
			}()
		}
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	n := len(all)
	ids := map[proto.PeerID]bool{}
	ips := map[netip.Addr]bool{}
	listed := map[[2]proto.PeerID]bool{} // {x, y}: x's welcome listed y
	for _, j := range all {
		ids[j.w.ID], ips[j.w.IP] = true, true
		for _, o := range j.w.Peers {
			listed[[2]proto.PeerID{j.w.ID, o.ID}] = true
		}
	}
	if len(ids) != n || len(ips) != n {
		t.Fatalf("%d peers got %d ids and %d addresses", n, len(ids), len(ips))
	}
	heard := map[[2]proto.PeerID]bool{} // {x, y}: x heard peer-joined y
	for _, j := range all {
		for len(j.w.Peers)+countHeard(heard, j.w.ID) < n-1 {
			m, err := j.p.Next(10 * time.Second)
			if err != nil {
				t.Fatalf("peer %s knows %d of %d: %v", j.w.ID, len(j.w.Peers)+countHeard(heard, j.w.ID), n-1, err)
			}
			pj, ok := m.(*proto.PeerJoined)
			if !ok {
				t.Fatalf("unexpected %#v", m)
			}
			k := [2]proto.PeerID{j.w.ID, pj.Peer.ID}
			if heard[k] || listed[k] {
				t.Fatalf("peer %s told of %s twice", j.w.ID, pj.Peer.ID)
			}
			heard[k] = true
		}
	}
	for _, x := range all {
		for _, y := range all {
			if x.w.ID >= y.w.ID {
				continue
			}
			xy, yx := listed[[2]proto.PeerID{x.w.ID, y.w.ID}], listed[[2]proto.PeerID{y.w.ID, x.w.ID}]
			if xy == yx {
				t.Fatalf("pair %s/%s: both or neither is the newcomer (%v %v)", x.w.ID, y.w.ID, xy, yx)
			}
		}
	}
}

func countHeard(h map[[2]proto.PeerID]bool, id proto.PeerID) int {
	n := 0
	for k := range h {
		if k[0] == id {
			n++
		}
	}
	return n
}

// TestRoomLimitClusterWide: with 5 members per room (4 guests and the
// gateway's .1), 9 guests joining at once on three instances: 4 get in.
func TestRoomLimitClusterWide(t *testing.T) {
	in := natshubtest.Cluster(t, 3, func(c *signal.Config) { c.MaxPeersPerRoom = 5 })
	var mu sync.Mutex
	codes := map[string]int{}
	var wg sync.WaitGroup
	for i := range 9 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p := signaltest.Dial(t, in[i%3].URL, nil)
			p.Send(&proto.Join{V: proto.ProtocolVersion, Room: "small"})
			m, err := p.Next(20 * time.Second)
			mu.Lock()
			defer mu.Unlock()
			switch m := m.(type) {
			case *proto.Welcome:
				codes["welcome"]++
			case *proto.Error:
				codes[string(m.Code)]++
			default:
				t.Errorf("join: %v %#v", err, m)
			}
		}()
	}
	wg.Wait()
	if codes["welcome"] != 4 || codes[string(proto.CodeRoomFull)] != 5 {
		t.Fatalf("outcomes %v, want 4 welcomes and 5 room-full", codes)
	}
}

// TestDeadInstance: an instance that dies without a word: its peers are
// announced left by the survivors after the presence TTL and the resume
// grace, exactly once; a
// peer that resumes on another instance first keeps its id and address and
// is never announced left.
func TestDeadInstance(t *testing.T) {
	in := natshubtest.Cluster(t, 3, func(c *signal.Config) { c.ResumeGrace = time.Second })
	a, wa := signaltest.Join(t, in[0].Server, "lab", nil)
	_, wb := signaltest.Join(t, in[1].Server, "lab", nil)
	_, wc := signaltest.Join(t, in[2].Server, "lab", nil)
	signaltest.Expect[*proto.PeerJoined](a)
	signaltest.Expect[*proto.PeerJoined](a)

	start := time.Now()
	in[2].Kill()
	// B's instance dies as well; B comes back through A's instance.
	in[1].Kill()
	b2, wb2 := signaltest.Join(t, in[0].Server, "lab", func(j *proto.Join) { j.Resume = wb.Resume })
	if wb2.ID != wb.ID || wb2.IP != wb.IP {
		t.Fatalf("resume elsewhere: got %v/%v want %v/%v", wb2.ID, wb2.IP, wb.ID, wb.IP)
	}
	if len(wb2.Peers) != 2 {
		t.Fatalf("resumed welcome lists %+v, want a and c", wb2.Peers)
	}
	m, err := a.Next(4 * natshubtest.PresenceTTL)
	pl, ok := m.(*proto.PeerLeft)
	if err != nil || !ok || pl.ID != wc.ID {
		t.Fatalf("want c left, got %#v %v", m, err)
	}
	el := time.Since(start)
	t.Logf("dead instance's peer announced left after %v (presence TTL %v, resume grace 1s)", el.Round(time.Millisecond), natshubtest.PresenceTTL)
	if el < natshubtest.PresenceTTL/2+time.Second {
		t.Fatalf("announced after %v, before the presence TTL of %v and the grace", el, natshubtest.PresenceTTL)
	}
	if pl := signaltest.Expect[*proto.PeerLeft](b2); pl.ID != wc.ID {
		t.Fatalf("b: %+v", pl)
	}
	// B and A still reach each other, and nobody hears anything more: not
	// c again, not b.
	a.Send(&proto.Signal{To: wb.ID, Data: json.RawMessage(`2`)})
	if s := signaltest.Expect[*proto.Signal](b2); s.From != wa.ID {
		t.Fatalf("signal after resume: %+v", s)
	}
	a.ExpectSilence(natshubtest.PresenceTTL)
}

// TestResumeAcrossLiveInstances: a peer whose connection to one instance
// broke resumes on another while the first still holds it: it keeps id and
// address, the first instance lets go (no peer-left, ever), and signals
// reach it at its new instance.
func TestResumeAcrossLiveInstances(t *testing.T) {
	in := natshubtest.Cluster(t, 2, func(c *signal.Config) { c.ResumeGrace = 500 * time.Millisecond })
	a, wa := signaltest.Join(t, in[0].Server, "lab", nil)
	b, wb := signaltest.Join(t, in[0].Server, "lab", nil)
	signaltest.Expect[*proto.PeerJoined](a)
	b.WS.UnderlyingConn().Close()
	b2, wb2 := signaltest.Join(t, in[1].Server, "lab", func(j *proto.Join) { j.Resume = wb.Resume })
	if wb2.ID != wb.ID || wb2.IP != wb.IP || len(wb2.Peers) != 1 || wb2.Peers[0].ID != wa.ID {
		t.Fatalf("resume: %+v", wb2)
	}
	a.Send(&proto.Signal{To: wb.ID, Data: json.RawMessage(`3`)})
	if s := signaltest.Expect[*proto.Signal](b2); s.From != wa.ID {
		t.Fatalf("signal: %+v", s)
	}
	// Past the first instance's grace period: still no peer-left.
	a.ExpectSilence(3 * 500 * time.Millisecond)
}

// TestClusterSettingsMustAgree: an instance with another subnet is refused.
func TestClusterSettingsMustAgree(t *testing.T) {
	node := natshubtest.StartNode(t)
	natshubtest.Start(t, node.ClientURL(), "a", nil, nil)
	nc, err := nats.Connect(node.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	h, err := natshub.New(natshub.Config{Conn: nc})
	if err != nil {
		t.Fatal(err)
	}
	_, err = signal.New(signal.Config{Hub: h.Open, Subnet: netip.MustParsePrefix("10.87.0.0/24")})
	if err == nil {
		t.Fatal("an instance with another subnet joined the cluster")
	}
	t.Log(err)
}

func TestConfigErrors(t *testing.T) {
	for _, c := range []natshub.Config{
		{},
		{Conn: &nats.Conn{}, Cluster: "a.b"},
		{Conn: &nats.Conn{}, Instance: "x y"},
		{Conn: &nats.Conn{}, PresenceTTL: 100 * time.Millisecond},
		{Conn: &nats.Conn{}, Replicas: 9},
	} {
		if _, err := natshub.New(c); err == nil {
			t.Errorf("%+v accepted", c)
		} else {
			t.Log(err)
		}
	}
}

// TestReleasedClaimsLeaveNothing: rooms that come and go leave no
// tombstones in the bucket once the purge markers expire, so the bucket
// (which refuses writes when full) does not grow with the rooms ever used.
func TestReleasedClaimsLeaveNothing(t *testing.T) {
	node := natshubtest.StartNode(t)
	in := natshubtest.Start(t, node.ClientURL(), "a", nil, nil)
	for i := range 20 {
		p, _ := signaltest.Join(t, in.Server, fmt.Sprintf("room-%d", i), nil)
		p.Send(&proto.Leave{})
		p.ExpectClosed(websocket.CloseNormalClosure)
	}
	js := jetStream(t, in)
	msgs := func() uint64 {
		st, err := js.Stream(context.Background(), "KV_peerlan")
		if err != nil {
			t.Fatal(err)
		}
		return st.CachedInfo().State.Msgs
	}
	deadline := time.Now().Add(4 * natshubtest.PresenceTTL)
	for msgs() > 2 { // the cluster settings and our presence
		if time.Now().After(deadline) {
			t.Fatalf("the bucket still holds %d messages", msgs())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestPresenceLapseWhileAlive: an instance's presence key vanished while
// the instance itself kept running and pulsing on core NATS (as when a
// JetStream leader election held its heartbeats past the TTL). Nobody reaps
// its peers: no peer-left, no eviction, the claims stay, signals flow, and
// its heartbeat announces it again.
func TestPresenceLapseWhileAlive(t *testing.T) {
	in := natshubtest.Cluster(t, 2, func(c *signal.Config) { c.ResumeGrace = time.Second })
	a, wa := signaltest.Join(t, in[0].Server, "lab", nil)
	b, wb := signaltest.Join(t, in[1].Server, "lab", nil)
	signaltest.Expect[*proto.PeerJoined](a)
	kv := bucket(t, in[1])
	if err := kv.Purge(context.Background(), "i."+in[0].Hub.Instance()); err != nil {
		t.Fatal(err)
	}
	// Past the TTL and the grace the others would wait before reaping.
	time.Sleep(2*natshubtest.PresenceTTL + time.Second)
	if _, err := kv.Get(context.Background(), "i."+in[0].Hub.Instance()); err != nil {
		t.Fatalf("presence not announced again: %v", err)
	}
	signalReaches(t, a, wa.ID, b, wb.ID)
	signalReaches(t, b, wb.ID, a, wa.ID)
	// The claims survived: a newcomer meets both.
	_, wc := signaltest.Join(t, in[1].Server, "lab", nil)
	if len(wc.Peers) != 2 {
		t.Fatalf("newcomer's welcome lists %+v, want a and b", wc.Peers)
	}
	if pj := signaltest.Expect[*proto.PeerJoined](a); pj.Peer.ID != wc.ID {
		t.Fatalf("a: %+v", pj)
	}
	a.ExpectSilence(natshubtest.PresenceTTL)
}

// TestCutOffInstance: an instance cut off from NATS (core and JetStream)
// for longer than the presence TTL and the grace is presumed dead: the
// others announce its peers left. Once it is back it finds its claims
// reaped and evicts those peers with "going away"; they resume as
// themselves and are announced again.
func TestCutOffInstance(t *testing.T) {
	node := natshubtest.StartNode(t)
	nodeAddr := strings.TrimPrefix(node.ClientURL(), "nats://")
	wire := natshubtest.StartFront(t, nodeAddr)
	grace := func(c *signal.Config) { c.ResumeGrace = time.Second }
	ina := natshubtest.Start(t, "nats://"+wire.Addr(), "a", nil, grace)
	inb := natshubtest.Start(t, node.ClientURL(), "b", nil, grace)
	a, wa := signaltest.Join(t, ina.Server, "lab", nil)
	b, _ := signaltest.Join(t, inb.Server, "lab", nil)
	signaltest.Expect[*proto.PeerJoined](a)

	wire.Switch("") // cut: connections dropped, new ones refused
	m, err := b.Next(4*natshubtest.PresenceTTL + time.Second)
	if pl, ok := m.(*proto.PeerLeft); err != nil || !ok || pl.ID != wa.ID {
		t.Fatalf("b: want a left, got %#v %v", m, err)
	}
	wire.Switch(nodeAddr)
	a.ExpectClosed(websocket.CloseGoingAway)
	_, wa2 := signaltest.Join(t, ina.Server, "lab", func(j *proto.Join) { j.Resume = wa.Resume })
	if wa2.ID != wa.ID || wa2.IP != wa.IP {
		t.Fatalf("resumed as %v/%v, was %v/%v", wa2.ID, wa2.IP, wa.ID, wa.IP)
	}
	if pj := signaltest.Expect[*proto.PeerJoined](b); pj.Peer.ID != wa.ID {
		t.Fatalf("b: %+v", pj)
	}
}

// jetStream is JetStream on in's NATS connection.
func jetStream(t *testing.T, in *natshubtest.Instance) jetstream.JetStream {
	t.Helper()
	js, err := jetstream.New(in.Conn)
	if err != nil {
		t.Fatal(err)
	}
	return js
}

// bucket is the directory's bucket, seen through in's NATS connection.
func bucket(t *testing.T, in *natshubtest.Instance) jetstream.KeyValue {
	t.Helper()
	kv, err := jetStream(t, in).KeyValue(context.Background(), "peerlan")
	if err != nil {
		t.Fatal(err)
	}
	return kv
}

// TestReapedWhileConnected: another instance reaps a claim this instance
// still holds (its reap raced our reconnection) and announces the member
// left; the holder hears it and evicts the member so that it resumes. A
// stale peer-left, about an older claim, changes nothing.
func TestReapedWhileConnected(t *testing.T) {
	in := natshubtest.Cluster(t, 2, nil)
	a, wa := signaltest.Join(t, in[0].Server, "lab", nil)
	b, wb := signaltest.Join(t, in[1].Server, "lab", nil)
	signaltest.Expect[*proto.PeerJoined](a)
	kv := bucket(t, in[1])
	var key string
	var rev uint64
	keys, err := kv.Keys(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		if e, err := kv.Get(context.Background(), k); err == nil && strings.Contains(string(e.Value()), string(wa.ID)) {
			key, rev = k, e.Revision()
		}
	}
	if key == "" {
		t.Fatalf("no claim of a among %v", keys)
	}
	left := func(seq uint64) {
		m := nats.NewMsg("peerlan.room." + strings.Split(key, ".")[1])
		m.Header.Set("Pl-Inst", "reaper")
		m.Header.Set("Pl-Ev", "left")
		m.Header.Set("Pl-Peer", string(wa.ID))
		m.Header.Set("Pl-Seq", fmt.Sprint(seq))
		m.Data, _ = proto.Encode(&proto.PeerLeft{ID: wa.ID})
		if err := in[1].Conn.PublishMsg(m); err != nil {
			t.Fatal(err)
		}
	}
	left(rev - 1)
	b.Send(&proto.Signal{To: wa.ID, Data: json.RawMessage(`1`)})
	if s := signaltest.Expect[*proto.Signal](a); s.From != wb.ID {
		t.Fatalf("a after a stale peer-left: %+v", s)
	}
	if err := kv.Purge(context.Background(), key, jetstream.LastRevision(rev)); err != nil {
		t.Fatal(err)
	}
	left(rev)
	a.ExpectClosed(websocket.CloseGoingAway)
	_, wa2 := signaltest.Join(t, in[0].Server, "lab", func(j *proto.Join) { j.Resume = wa.Resume })
	if wa2.ID != wa.ID || wa2.IP != wa.IP {
		t.Fatalf("resumed as %v/%v, was %v/%v", wa2.ID, wa2.IP, wa.ID, wa.IP)
	}
	for {
		switch m := signaltest.Expect[any](b).(type) {
		case *proto.PeerLeft: // the two crafted ones
			continue
		case *proto.PeerJoined:
			if m.Peer.ID != wa.ID {
				t.Fatalf("b: %+v", m)
			}
			return
		default:
			t.Fatalf("b: %#v", m)
		}
	}
}

// TestOtherRelay: with three instances, each names exactly one other
// instance's relay, never its own, the same one while it lives, and
// another live one once it is gone.
func TestOtherRelay(t *testing.T) {
	node := natshubtest.StartNode(t)
	var in []*natshubtest.Instance
	for _, name := range []string{"a", "b", "c"} {
		in = append(in, natshubtest.Start(t, node.ClientURL(), name, func(c *natshub.Config) {
			c.Relay = []string{"turn:" + name + ".example:3478"}
		}, nil))
	}
	other := func(i int) string {
		r := in[i].Hub.OtherRelay()
		if len(r) > 1 {
			t.Fatalf("instance %d names %v: more than one relay", i, r)
		}
		if len(r) == 0 {
			return ""
		}
		return r[0]
	}
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		for deadline := time.Now().Add(4 * natshubtest.PresenceTTL); !cond(); time.Sleep(20 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatal(what)
			}
		}
	}
	waitFor("instance a never learnt of both others", func() bool { return other(0) != "" && other(2) != "" })
	first := other(0)
	if first == "turn:a.example:3478" {
		t.Fatalf("a names its own relay")
	}
	for range 10 {
		if got := other(0); got != first {
			t.Fatalf("a named %s, then %s", first, got)
		}
	}
	dead := 1
	if first == "turn:c.example:3478" {
		dead = 2
	}
	in[dead].Kill()
	waitFor("a kept naming a dead instance's relay", func() bool { o := other(0); return o != first && o != "" })
	if got := other(0); got == "turn:a.example:3478" {
		t.Fatalf("a names its own relay after %s died", first)
	}
}

// TestDirectoryLeaderDies: three instances on three routed NATS nodes, the
// directory replicated on all. The node leading the directory dies with its
// instance: JetStream holds every directory write for a leader election,
// the live instances' heartbeats included. Of the dead instance's two
// peers, one resumes on a live instance (never announced left), the other
// is announced left, once; the live instances' peers are neither announced
// left nor evicted.
func TestDirectoryLeaderDies(t *testing.T) {
	nodes := natshubtest.StartNodes(t, 3)
	var in []*natshubtest.Instance
	for i, nd := range nodes {
		in = append(in, natshubtest.Start(t, nd.ClientURL(), fmt.Sprintf("i%d", i),
			func(c *natshub.Config) { c.Replicas = 3 },
			// A grace that covers the election, as the default does.
			func(c *signal.Config) { c.ResumeGrace = 5 * time.Second }))
	}
	k := directoryLeader(t, in[0], nodes)
	f, o := (k+1)%3, (k+2)%3
	p, wp := signaltest.Join(t, in[f].Server, "lab", nil)
	q, wq := signaltest.Join(t, in[o].Server, "lab", nil)
	signaltest.Expect[*proto.PeerJoined](p)
	_, wx := signaltest.Join(t, in[k].Server, "lab", nil)
	_, wy := signaltest.Join(t, in[k].Server, "lab", nil)
	for _, peer := range []*signaltest.Peer{p, q} {
		signaltest.Expect[*proto.PeerJoined](peer)
		signaltest.Expect[*proto.PeerJoined](peer)
	}

	in[k].Kill()
	nodes[k].Close()
	killed := time.Now()
	x2 := joinRetrying(t, in[f].Server, func(j *proto.Join) { j.Resume = wx.Resume })
	t.Logf("x resumed %v after the directory's leader died", time.Since(killed).Round(time.Millisecond))
	for i, peer := range []*signaltest.Peer{p, q} {
		m, err := peer.Next(30 * time.Second)
		if pl, ok := m.(*proto.PeerLeft); err != nil || !ok || pl.ID != wy.ID {
			t.Fatalf("peer %d: want y left, got %#v %v", i, m, err)
		}
	}
	t.Logf("y announced left %v after its instance died", time.Since(killed).Round(time.Millisecond))
	if pl := signaltest.Expect[*proto.PeerLeft](x2); pl.ID != wy.ID {
		t.Fatalf("x: %+v", pl)
	}
	signalReaches(t, q, wq.ID, x2, wx.ID)
	signalReaches(t, x2, wx.ID, p, wp.ID)
	// Well past the election, the TTL and the grace: nobody hears more.
	for _, peer := range []*signaltest.Peer{p, q} {
		peer.ExpectSilence(3 * natshubtest.PresenceTTL)
	}
}

// directoryLeader returns the index of the node leading the directory.
func directoryLeader(t *testing.T, in *natshubtest.Instance, nodes []*natsnode.Node) int {
	t.Helper()
	st, err := jetStream(t, in).Stream(context.Background(), "KV_peerlan")
	if err != nil {
		t.Fatal(err)
	}
	for i, nd := range nodes {
		if st.CachedInfo().Cluster != nil && st.CachedInfo().Cluster.Leader == nd.Server().Name() {
			return i
		}
	}
	t.Fatalf("no node leads the directory: %+v", st.CachedInfo().Cluster)
	return -1
}

// joinRetrying joins as a client would while the directory may refuse
// joins for a while (a leader election): it tries again until welcomed.
func joinRetrying(t *testing.T, ts *signaltest.Server, mod func(*proto.Join)) *signaltest.Peer {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		p := signaltest.Dial(t, ts.URL, nil)
		j := &proto.Join{V: proto.ProtocolVersion, Room: "lab"}
		mod(j)
		p.Send(j)
		m, err := p.Next(30 * time.Second)
		if _, ok := m.(*proto.Welcome); ok {
			return p
		}
		if time.Now().After(deadline) {
			t.Fatalf("not welcomed: %#v %v", m, err)
		}
		t.Logf("join refused (%#v %v); again", m, err)
		p.WS.Close()
		time.Sleep(200 * time.Millisecond)
	}
}

// signalReaches sends a signal from one peer to another and expects it there.
func signalReaches(t *testing.T, from *signaltest.Peer, fromID proto.PeerID, to *signaltest.Peer, toID proto.PeerID) {
	t.Helper()
	from.Send(&proto.Signal{To: toID, Data: json.RawMessage(`1`)})
	if s := signaltest.Expect[*proto.Signal](to); s.From != fromID {
		t.Fatalf("%s: want a signal from %s, got %+v", toID, fromID, s)
	}
}

// TestFailedJoinLeavesNoClaim: a join whose claim lands in the directory
// but whose answer does not come back in time fails; once answers flow
// again the instance releases that claim and announces it left, so no
// member that nobody holds stays listed in the room.
func TestFailedJoinLeavesNoClaim(t *testing.T) {
	node := natshubtest.StartNode(t)
	wire := natshubtest.StartFront(t, strings.TrimPrefix(node.ClientURL(), "nats://"))
	quick := func(c *signal.Config) { c.WriteTimeout = 2 * time.Second }
	ina := natshubtest.Start(t, "nats://"+wire.Addr(), "a", nil, quick)
	inb := natshubtest.Start(t, node.ClientURL(), "b", nil, quick)
	b, wb := signaltest.Join(t, inb.Server, "lab", nil)
	// A member on a first, so that a knows the room and claims the next
	// address at once, without listing the room first.
	_, wa := signaltest.Join(t, ina.Server, "lab", nil)
	signaltest.Expect[*proto.PeerJoined](b)
	kv := bucket(t, inb)
	claims := func() map[proto.PeerID]bool {
		out := map[proto.PeerID]bool{}
		keys, _ := kv.Keys(context.Background())
		for _, k := range keys {
			if e, err := kv.Get(context.Background(), k); err == nil && strings.HasPrefix(k, "r.") {
				var c struct{ ID proto.PeerID }
				_ = json.Unmarshal(e.Value(), &c)
				out[c.ID] = true
			}
		}
		return out
	}

	wire.Hold(true)
	p := signaltest.Dial(t, ina.Server.URL, nil)
	p.Send(&proto.Join{V: proto.ProtocolVersion, Room: "lab"})
	m, err := p.Next(10 * time.Second)
	if _, ok := m.(*proto.Welcome); ok {
		t.Fatalf("welcomed while the directory's answers were held: %+v", m)
	}
	t.Logf("join without answers: %#v %v", m, err)
	var ghost proto.PeerID
	for id := range claims() {
		if id != wa.ID && id != wb.ID {
			ghost = id
		}
	}
	if ghost == "" {
		t.Fatalf("the failed join's claim never landed (%v): nothing to test", claims())
	}
	wire.Hold(false)
	m, err = b.Next(10 * time.Second)
	if pl, ok := m.(*proto.PeerLeft); err != nil || !ok || pl.ID != ghost {
		t.Fatalf("b: want the failed join's %s left, got %#v %v", ghost, m, err)
	}
	if c := claims(); len(c) != 2 || !c[wa.ID] || !c[wb.ID] {
		t.Fatalf("claims after the release: %v, want a's and b's", c)
	}
}
