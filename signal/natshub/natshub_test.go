package natshub_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/peerlan/peerlan/signal"
	"github.com/peerlan/peerlan/signal/natshub"
	"github.com/peerlan/peerlan/signal/natshub/natshubtest"
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
	js, err := jetstream.New(in.Conn)
	if err != nil {
		t.Fatal(err)
	}
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

// TestPresenceLost: an instance whose presence key vanished (as after being
// cut off from NATS for longer than the TTL) is presumed dead by the others,
// which announce its peers as left; it notices at its next heartbeat,
// evicts its peers with "going away", and they resume as themselves.
func TestPresenceLost(t *testing.T) {
	in := natshubtest.Cluster(t, 2, func(c *signal.Config) { c.ResumeGrace = time.Second })
	a, wa := signaltest.Join(t, in[0].Server, "lab", nil)
	b, _ := signaltest.Join(t, in[1].Server, "lab", nil)
	signaltest.Expect[*proto.PeerJoined](a)
	js, err := jetstream.New(in[1].Conn)
	if err != nil {
		t.Fatal(err)
	}
	kv, err := js.KeyValue(context.Background(), "peerlan")
	if err != nil {
		t.Fatal(err)
	}
	if err := kv.Purge(context.Background(), "i."+in[0].Hub.Instance()); err != nil {
		t.Fatal(err)
	}
	if pl := signaltest.Expect[*proto.PeerLeft](b); pl.ID != wa.ID {
		t.Fatalf("b: %+v", pl)
	}
	a.ExpectClosed(websocket.CloseGoingAway)
	_, wa2 := signaltest.Join(t, in[0].Server, "lab", func(j *proto.Join) { j.Resume = wa.Resume })
	if wa2.ID != wa.ID || wa2.IP != wa.IP {
		t.Fatalf("resumed as %v/%v, was %v/%v", wa2.ID, wa2.IP, wa.ID, wa.IP)
	}
	if pj := signaltest.Expect[*proto.PeerJoined](b); pj.Peer.ID != wa.ID {
		t.Fatalf("b: %+v", pj)
	}
}
