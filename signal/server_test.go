package signal_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"go.uber.org/goleak"

	"github.com/peerlan/peerlan/internal/promtext"
	"github.com/peerlan/peerlan/signal"
	"github.com/peerlan/peerlan/signal/proto"
	"github.com/peerlan/peerlan/signal/signaltest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func metrics(t testing.TB, ts *signaltest.Server) promtext.Samples {
	t.Helper()
	s, err := promtext.Scrape(ts.HTTP.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestJoinAndPeerLists(t *testing.T) {
	ts := signaltest.Start(t, nil)
	a, wa := signaltest.Join(t, ts, "lab", nil)
	if len(wa.Peers) != 0 || wa.Role != proto.RoleGuest || wa.Room != "lab" {
		t.Fatalf("first welcome: %+v", wa)
	}
	if len(wa.ID) != 22 {
		t.Fatalf("id %q: want 22 base64url characters (128 bits)", wa.ID)
	}
	if wa.Prefix != signal.DefaultSubnet || wa.Gateway != netip.MustParseAddr("10.86.0.1") || wa.IP != netip.MustParseAddr("10.86.0.2") {
		t.Fatalf("addresses: ip %v prefix %v gateway %v", wa.IP, wa.Prefix, wa.Gateway)
	}
	if wa.Limits.MaxMessageBytes != 64<<10 || wa.Resume == "" {
		t.Fatalf("limits/resume missing: %+v", wa)
	}
	b, wb := signaltest.Join(t, ts, "lab", nil)
	if len(wb.Peers) != 1 || wb.Peers[0].ID != wa.ID || wb.Peers[0].IP != wa.IP {
		t.Fatalf("second welcome peers: %+v", wb.Peers)
	}
	if wb.ID == wa.ID {
		t.Fatal("two peers got the same id")
	}
	pj := signaltest.Expect[*proto.PeerJoined](a)
	if pj.Peer.ID != wb.ID || pj.Peer.IP != wb.IP || pj.Peer.Role != proto.RoleGuest {
		t.Fatalf("peer-joined: %+v", pj)
	}
	// A peer in another room is invisible.
	_, wc := signaltest.Join(t, ts, "other", nil)
	if len(wc.Peers) != 0 || wc.IP != wa.IP {
		t.Fatalf("other room: %+v", wc)
	}
	b.Send(&proto.Leave{})
	if pl := signaltest.Expect[*proto.PeerLeft](a); pl.ID != wb.ID {
		t.Fatalf("peer-left: %+v", pl)
	}
	m := metrics(t, ts)
	if m["peerlan_signal_rooms"] != 2 || m["peerlan_signal_peers"] != 2 {
		t.Fatalf("rooms/peers gauges: %v %v", m["peerlan_signal_rooms"], m["peerlan_signal_peers"])
	}
	if got := m[`peerlan_signal_joins_total{kind="new",role="guest"}`]; got != 3 {
		t.Fatalf("joins: %v", got)
	}
}

// TestICEServersRefreshed: with ICERefresh set, a joined peer gets fresh ICE
// servers (minted per peer, each time anew) in ice-servers messages; without
// it, none.
func TestICEServersRefreshed(t *testing.T) {
	var minted atomic.Int32
	ice := func(room string, id proto.PeerID) []proto.ICEServer {
		n := minted.Add(1)
		return []proto.ICEServer{{URLs: []string{"turn:relay.example:3478"}, Username: fmt.Sprintf("%d:%s:%s", n, room, id), Credential: "c"}}
	}
	ts := signaltest.Start(t, func(c *signal.Config) { c.ICEServers, c.ICERefresh = ice, 100*time.Millisecond })
	a, wa := signaltest.Join(t, ts, "lab", nil)
	if len(wa.ICEServers) != 1 || wa.ICEServers[0].Username != fmt.Sprintf("1:lab:%s", wa.ID) {
		t.Fatalf("welcome ICE servers: %+v", wa.ICEServers)
	}
	seen := map[string]bool{wa.ICEServers[0].Username: true}
	for range 2 {
		u := signaltest.Expect[*proto.ICEServers](a)
		if len(u.ICEServers) != 1 || !strings.HasSuffix(u.ICEServers[0].Username, ":lab:"+string(wa.ID)) || seen[u.ICEServers[0].Username] {
			t.Fatalf("refresh: %+v (seen %v)", u.ICEServers, seen)
		}
		seen[u.ICEServers[0].Username] = true
	}
	// A peer that left gets nothing more minted for it.
	a.Send(&proto.Leave{})
	a.ExpectClosed(websocket.CloseNormalClosure)
	before := minted.Load()
	time.Sleep(300 * time.Millisecond)
	if after := minted.Load(); after != before {
		t.Fatalf("ICE servers minted %d times after the peer left", after-before)
	}

	quiet := signaltest.Start(t, func(c *signal.Config) { c.ICEServers = ice })
	q, _ := signaltest.Join(t, quiet, "lab", nil)
	q.ExpectSilence(300 * time.Millisecond)
}

func TestRelayOnlyWithinRoom(t *testing.T) {
	ts := signaltest.Start(t, nil)
	a, wa := signaltest.Join(t, ts, "lab", nil)
	b, wb := signaltest.Join(t, ts, "lab", nil)
	signaltest.Expect[*proto.PeerJoined](a)
	c, wc := signaltest.Join(t, ts, "elsewhere", nil)

	before := metrics(t, ts)
	payload := json.RawMessage(`{"kind":"offer","sdp":"v=0"}`)
	a.Send(&proto.Signal{To: wb.ID, Data: payload})
	got := signaltest.Expect[*proto.Signal](b)
	if got.From != wa.ID || got.To != "" || string(got.Data) != string(payload) {
		t.Fatalf("relayed signal: %+v", got)
	}
	// The sender may not choose its "from".
	b.Send(&proto.Signal{To: wa.ID, From: wc.ID, Data: payload})
	if got := signaltest.Expect[*proto.Signal](a); got.From != wb.ID {
		t.Fatalf("forged from passed through: %+v", got)
	}
	// An id from another room is as unknown as an id that never existed.
	a.Send(&proto.Signal{To: wc.ID, Data: payload})
	e1 := signaltest.ExpectError(a, proto.CodeUnknownPeer)
	a.Send(&proto.Signal{To: "nonexistent", Data: payload})
	signaltest.ExpectError(a, proto.CodeUnknownPeer)
	if e1.Fatal {
		t.Fatal("unknown-peer must not be fatal")
	}
	c.Send(&proto.Signal{To: wa.ID, Data: payload})
	signaltest.ExpectError(c, proto.CodeUnknownPeer)

	after := metrics(t, ts)
	enc, _ := proto.Encode(&proto.Signal{From: wa.ID, Data: payload})
	if d := after[`peerlan_signal_relayed_messages_total{type="signal"}`] - before[`peerlan_signal_relayed_messages_total{type="signal"}`]; d != 2 {
		t.Fatalf("relayed messages moved by %v, want 2", d)
	}
	if d := after[`peerlan_signal_relayed_bytes_total{type="signal"}`] - before[`peerlan_signal_relayed_bytes_total{type="signal"}`]; d != float64(2*len(enc)) {
		t.Fatalf("relayed bytes moved by %v, want %d", d, 2*len(enc))
	}
	if d := after[`peerlan_signal_rejections_total{reason="unknown-peer"}`]; d != 3 {
		t.Fatalf("unknown-peer rejections %v, want 3", d)
	}
	c.ExpectSilence(200 * time.Millisecond)
}

func TestTokens(t *testing.T) {
	now := time.Now()
	ts := signaltest.Start(t, func(c *signal.Config) { c.TokenRooms = []string{"private-*"} })
	signer := ts.Signer()
	join := signer.MintFor(signal.TokenJoin, "private-1", time.Hour, now)
	gw := signer.MintFor(signal.TokenGateway, "private-1", time.Hour, now)
	other, _ := signal.NewSigner([]byte("another secret, another server!"))

	cases := []struct {
		name  string
		room  string
		role  proto.Role
		token string
		want  proto.ErrorCode // "" = welcomed
	}{
		{"open room needs nothing", "public", proto.RoleGuest, "", ""},
		{"missing", "private-1", proto.RoleGuest, "", proto.CodeTokenRequired},
		{"garbage", "private-1", proto.RoleGuest, "pl1.xxx.yyy", proto.CodeTokenInvalid},
		{"other server's", "private-1", proto.RoleGuest, other.MintFor(signal.TokenJoin, "private-1", time.Hour, now), proto.CodeTokenInvalid},
		{"tampered", "private-1", proto.RoleGuest, join[:len(join)-2] + "AA", proto.CodeTokenInvalid},
		{"expired", "private-1", proto.RoleGuest, signer.MintFor(signal.TokenJoin, "private-1", -time.Second, now), proto.CodeTokenExpired},
		{"wrong room", "private-1", proto.RoleGuest, signer.MintFor(signal.TokenJoin, "private-2", time.Hour, now), proto.CodeTokenWrongRoom},
		{"valid", "private-1", proto.RoleGuest, join, ""},
		{"gateway without token", "public", proto.RoleGateway, "", proto.CodeTokenRequired},
		{"gateway with join token", "private-1", proto.RoleGateway, join, proto.CodeTokenWrongRoom},
		{"gateway token of another room", "public", proto.RoleGateway, gw, proto.CodeTokenWrongRoom},
		{"gateway", "private-1", proto.RoleGateway, gw, ""},
		{"second gateway", "private-1", proto.RoleGateway, gw, proto.CodeGatewayTaken},
	}
	var keep []*signaltest.Peer
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := signaltest.Dial(t, ts.URL, nil)
			p.Send(&proto.Join{V: 1, Room: tc.room, Role: tc.role, Token: tc.token})
			if tc.want == "" {
				w := signaltest.Expect[*proto.Welcome](p)
				if tc.role == proto.RoleGateway && w.IP != w.Gateway {
					t.Fatalf("gateway got %v, want %v", w.IP, w.Gateway)
				}
				keep = append(keep, p)
				return
			}
			if e := signaltest.ExpectError(p, tc.want); !e.Fatal {
				t.Fatalf("%s must be fatal", tc.want)
			}
			p.ExpectClosed(websocket.ClosePolicyViolation)
		})
	}
	_ = keep
}

func TestAddressesUniqueAndReleased(t *testing.T) {
	ts := signaltest.Start(t, func(c *signal.Config) { c.Subnet = netip.MustParsePrefix("192.0.2.0/29") })
	// A /29 holds .2 to .6 for guests (.0 network, .1 gateway, .7 broadcast).
	var peers []*signaltest.Peer
	seen := map[netip.Addr]bool{}
	for i := 0; i < 5; i++ {
		p, w := signaltest.Join(t, ts, "small", nil)
		if seen[w.IP] || w.IP == w.Gateway || !w.Prefix.Contains(w.IP) {
			t.Fatalf("bad or duplicate address %v", w.IP)
		}
		seen[w.IP] = true
		peers = append(peers, p)
	}
	full := signaltest.Dial(t, ts.URL, nil)
	full.Send(&proto.Join{V: 1, Room: "small"})
	signaltest.ExpectError(full, proto.CodeRoomFull)

	// Leaving frees the address for the next peer.
	third := netip.MustParseAddr("192.0.2.4")
	peers[2].Send(&proto.Leave{})
	signaltest.Expect[*proto.PeerLeft](peers[4]) // the newest peer has no joins queued
	_, w := signaltest.Join(t, ts, "small", nil)
	if w.IP != third {
		t.Fatalf("released address not reused: got %v want %v", w.IP, third)
	}
}

func TestResumeKeepsIdentity(t *testing.T) {
	ts := signaltest.Start(t, func(c *signal.Config) { c.ResumeGrace = 5 * time.Second })
	a, wa := signaltest.Join(t, ts, "lab", nil)
	b, wb := signaltest.Join(t, ts, "lab", nil)
	signaltest.Expect[*proto.PeerJoined](a)

	// B's connection breaks without a close frame (network failure).
	b.WS.UnderlyingConn().Close()
	b2, wb2 := signaltest.Join(t, ts, "lab", func(j *proto.Join) { j.Resume = wb.Resume })
	if wb2.ID != wb.ID || wb2.IP != wb.IP {
		t.Fatalf("resume within grace: got %v/%v want %v/%v", wb2.ID, wb2.IP, wb.ID, wb.IP)
	}
	// A never saw B leave or join again, and can still reach it.
	a.Send(&proto.Signal{To: wb.ID, Data: json.RawMessage(`1`)})
	if s := signaltest.Expect[*proto.Signal](b2); s.From != wa.ID {
		t.Fatalf("signal after resume: %+v", s)
	}
	m := metrics(t, ts)
	if m[`peerlan_signal_joins_total{kind="reattach",role="guest"}`] != 1 {
		t.Fatal("reattach not counted")
	}

	// A resume token is bound to its room and is useless elsewhere.
	_, wx := signaltest.Join(t, ts, "elsewhere", func(j *proto.Join) { j.Resume = wb.Resume })
	if wx.ID == wb.ID {
		t.Fatal("resume token honoured in another room")
	}

	// A restarted server with the same secret honours resume tokens too.
	ts.Stop()
	ts2 := signaltest.Start(t, nil)
	_, wa2 := signaltest.Join(t, ts2, "lab", func(j *proto.Join) { j.Resume = wa.Resume })
	if wa2.ID != wa.ID || wa2.IP != wa.IP {
		t.Fatalf("resume after restart: got %v/%v want %v/%v", wa2.ID, wa2.IP, wa.ID, wa.IP)
	}
	if got := metrics(t, ts2)[`peerlan_signal_joins_total{kind="resume",role="guest"}`]; got != 1 {
		t.Fatalf("resume joins %v", got)
	}
}

func TestGraceExpiryAnnouncesLeave(t *testing.T) {
	ts := signaltest.Start(t, func(c *signal.Config) { c.ResumeGrace = 100 * time.Millisecond })
	a, _ := signaltest.Join(t, ts, "lab", nil)
	b, wb := signaltest.Join(t, ts, "lab", nil)
	signaltest.Expect[*proto.PeerJoined](a)
	b.WS.UnderlyingConn().Close()
	if pl := signaltest.Expect[*proto.PeerLeft](a); pl.ID != wb.ID {
		t.Fatalf("peer-left %+v", pl)
	}
	// Its address is free again.
	_, w := signaltest.Join(t, ts, "lab", nil)
	if w.IP != wb.IP {
		t.Fatalf("address not released: %v", w.IP)
	}
}

func TestKeepaliveRemovesDeadPeer(t *testing.T) {
	ts := signaltest.Start(t, func(c *signal.Config) {
		c.KeepaliveInterval = 50 * time.Millisecond
		c.KeepaliveTimeout = 300 * time.Millisecond
		c.ResumeGrace = 100 * time.Millisecond
	})
	a, _ := signaltest.Join(t, ts, "lab", nil)
	// B's process hangs: it never reads, so it never answers pings.
	dead := signaltest.Dial(t, ts.URL, nil)
	dead.Send(&proto.Join{V: 1, Room: "lab"})
	start := time.Now()
	pj := signaltest.Expect[*proto.PeerJoined](a)
	// A keeps reading, so gorilla answers the server's pings for it.
	pl := signaltest.Expect[*proto.PeerLeft](a)
	if pl.ID != pj.Peer.ID {
		t.Fatalf("wrong peer left: %v", pl.ID)
	}
	if el := time.Since(start); el > 2*time.Second {
		t.Fatalf("dead peer announced after %v", el)
	}
}

func TestJoinTimeout(t *testing.T) {
	ts := signaltest.Start(t, func(c *signal.Config) { c.JoinTimeout = 100 * time.Millisecond })
	p := signaltest.Dial(t, ts.URL, nil)
	if _, err := p.Next(3 * time.Second); err == nil {
		t.Fatal("a connection that never joins was kept open")
	}
	if got := metrics(t, ts)[`peerlan_signal_rejections_total{reason="join-timeout"}`]; got != 1 {
		t.Fatalf("join-timeout rejections %v", got)
	}
}

func TestSlowReaderDisconnected(t *testing.T) {
	ts := signaltest.Start(t, func(c *signal.Config) {
		c.MessagesPerSecond = 1e6
		c.Burst = 1e6
		c.SendQueue = 8
		c.WriteTimeout = 30 * time.Second
	})
	a, _ := signaltest.Join(t, ts, "lab", nil)
	b, wb := signaltest.Join(t, ts, "lab", nil)
	signaltest.Expect[*proto.PeerJoined](a)
	slow, wslow := signaltest.Join(t, ts, "lab", nil)
	signaltest.Expect[*proto.PeerJoined](a)
	signaltest.Expect[*proto.PeerJoined](b)
	_ = slow // never read again from here on

	big := json.RawMessage(`"` + strings.Repeat("x", 60<<10) + `"`)
	small := json.RawMessage(`"ping"`)
	deadline := time.Now().Add(20 * time.Second)
	for i := 0; ; i++ {
		if time.Now().After(deadline) {
			t.Fatal("slow reader was never disconnected")
		}
		a.Send(&proto.Signal{To: wslow.ID, Data: big})
		// Meanwhile B is served promptly.
		if i%20 == 0 {
			a.Send(&proto.Signal{To: wb.ID, Data: small})
			start := time.Now()
			if s := signaltest.Expect[*proto.Signal](b); string(s.Data) != `"ping"` {
				t.Fatalf("b got %s", s.Data)
			}
			if el := time.Since(start); el > time.Second {
				t.Fatalf("b was held up %v by the slow reader", el)
			}
		}
		if metrics(t, ts)[`peerlan_signal_rejections_total{reason="slow-consumer"}`] == 1 {
			break
		}
	}
	// The slow reader is gone for others to see once its grace ends; A and B
	// carry on.
	a.Send(&proto.Signal{To: wb.ID, Data: small})
	signaltest.Expect[*proto.Signal](b)
}

func TestBadInput(t *testing.T) {
	ts := signaltest.Start(t, nil)
	a, wa := signaltest.Join(t, ts, "lab", nil)
	b, wb := signaltest.Join(t, ts, "lab", nil)
	signaltest.Expect[*proto.PeerJoined](a)

	tt := t
	check := func(name string, input func(p *signaltest.Peer), code proto.ErrorCode, fatal bool) {
		t.Run(name, func(t *testing.T) {
			p, _ := signaltest.Join(t, ts, "lab", nil)
			signaltest.Expect[*proto.PeerJoined](a)
			signaltest.Expect[*proto.PeerJoined](b)
			p.T, a.T, b.T = t, t, t
			defer func() { a.T, b.T = tt, tt }()
			before := metrics(t, ts)[fmt.Sprintf(`peerlan_signal_rejections_total{reason=%q}`, code)]
			input(p)
			e := signaltest.ExpectError(p, code)
			if e.Fatal != fatal || e.Message == "" {
				t.Fatalf("error %+v: want fatal=%v and a message", e, fatal)
			}
			if fatal {
				p.ExpectClosed(websocket.ClosePolicyViolation)
			} else {
				// The connection still works.
				p.Send(&proto.Signal{To: wa.ID, Data: json.RawMessage(`"still here"`)})
				signaltest.Expect[*proto.Signal](a)
				p.Send(&proto.Leave{})
			}
			signaltest.Expect[*proto.PeerLeft](a)
			signaltest.Expect[*proto.PeerLeft](b)
			if got := metrics(t, ts)[fmt.Sprintf(`peerlan_signal_rejections_total{reason=%q}`, code)]; got != before+1 {
				t.Fatalf("rejections{%s} %v -> %v", code, before, got)
			}
			// Nothing else was disturbed.
			a.Send(&proto.Signal{To: wb.ID, Data: json.RawMessage(`"ok"`)})
			signaltest.Expect[*proto.Signal](b)
		})
	}
	text := func(s string) func(*signaltest.Peer) {
		return func(p *signaltest.Peer) { p.SendRaw(websocket.TextMessage, []byte(s)) }
	}
	check("binary frame", func(p *signaltest.Peer) {
		p.SendRaw(websocket.BinaryMessage, []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 1, 2})
	}, proto.CodeBinary, true)
	check("oversize", func(p *signaltest.Peer) {
		// The server stops reading at its limit, answers and closes, which
		// may reset the connection before the client has written it all.
		_ = p.WS.WriteMessage(websocket.TextMessage, []byte(`{"type":"signal","to":"x","data":"`+strings.Repeat("a", 70<<10)+`"}`))
	}, proto.CodeTooLarge, true)
	check("malformed json", text(`{"type":"signal",`), proto.CodeBadJSON, false)
	check("not an object", text(`[1,2,3]`), proto.CodeBadJSON, false)
	check("no type", text(`{"to":"x"}`), proto.CodeBadJSON, false)
	check("unknown type", text(`{"type":"frame","data":"AAAA"}`), proto.CodeUnknownType, false)
	check("server-only type", text(`{"type":"welcome"}`), proto.CodeUnknownType, false)
	check("server-only ice-servers", text(`{"type":"ice-servers","ice_servers":[]}`), proto.CodeUnknownType, false)
	check("second join", text(`{"type":"join","v":1,"room":"lab"}`), proto.CodeAlreadyJoined, false)
	check("signal without data", text(`{"type":"signal","to":"`+string(wa.ID)+`"}`), proto.CodeBadSignal, false)
	check("signal to unknown peer", text(`{"type":"signal","to":"AAAAAAAAAAAAAAAAAAAAAA","data":1}`), proto.CodeUnknownPeer, false)

	// Before joining.
	pre := []struct {
		name  string
		input string
		code  proto.ErrorCode
	}{
		{"signal before join", `{"type":"signal","to":"x","data":1}`, proto.CodeNotJoined},
		{"bad version", `{"type":"join","v":2,"room":"lab"}`, proto.CodeBadVersion},
		{"bad room", `{"type":"join","v":1,"room":"../etc"}`, proto.CodeBadRoom},
		{"empty room", `{"type":"join","v":1,"room":""}`, proto.CodeBadRoom},
		{"bad role", `{"type":"join","v":1,"room":"lab","role":"admin"}`, proto.CodeBadRole},
	}
	for _, tc := range pre {
		t.Run(tc.name, func(t *testing.T) {
			p := signaltest.Dial(t, ts.URL, nil)
			p.SendRaw(websocket.TextMessage, []byte(tc.input))
			signaltest.ExpectError(p, tc.code)
		})
	}
	a.Send(&proto.Signal{To: wb.ID, Data: json.RawMessage(`"ok"`)})
	signaltest.Expect[*proto.Signal](b)
}

func TestRateLimit(t *testing.T) {
	ts := signaltest.Start(t, func(c *signal.Config) { c.MessagesPerSecond = 1; c.Burst = 3 })
	a, _ := signaltest.Join(t, ts, "lab", nil) // the join spends one token
	_, wb := signaltest.Join(t, ts, "lab", nil)
	signaltest.Expect[*proto.PeerJoined](a)
	for i := 0; i < 4; i++ {
		a.Send(&proto.Signal{To: wb.ID, Data: json.RawMessage(`1`)})
	}
	e := signaltest.ExpectError(a, proto.CodeRateLimited)
	if e.Fatal {
		t.Fatal("rate limiting must not be fatal")
	}
	// The error answers the first rejection; the server may still be
	// reading the last message.
	var got float64
	for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if got = metrics(t, ts)[`peerlan_signal_rejections_total{reason="rate-limited"}`]; got >= 2 {
			break
		}
	}
	if got != 2 {
		t.Fatalf("rate-limited rejections %v, want 2", got)
	}
}

func TestOrigins(t *testing.T) {
	ts := signaltest.Start(t, func(c *signal.Config) { c.AllowedOrigins = []string{"https://lan.example"} })
	host := strings.TrimPrefix(ts.HTTP.URL, "http://")
	for _, tc := range []struct {
		origin string
		ok     bool
	}{
		{"", true},
		{"http://" + host, true},
		{"https://lan.example", true},
		{"https://evil.example", false},
		{"null", false},
	} {
		hdr := http.Header{}
		if tc.origin != "" {
			hdr.Set("Origin", tc.origin)
		}
		ws, resp, err := websocket.DefaultDialer.Dial(ts.URL, hdr)
		if tc.ok != (err == nil) {
			t.Errorf("origin %q: ok=%v err=%v", tc.origin, tc.ok, err)
		}
		if err == nil {
			ws.Close()
		} else if resp == nil || resp.StatusCode != http.StatusForbidden {
			t.Errorf("origin %q: want 403, got %v", tc.origin, resp)
		}
	}
	if got := metrics(t, ts)[`peerlan_signal_rejections_total{reason="origin"}`]; got != 2 {
		t.Fatalf("origin rejections %v", got)
	}
}

func TestShutdownClosesWithGoingAway(t *testing.T) {
	ts := signaltest.Start(t, nil)
	a, _ := signaltest.Join(t, ts, "lab", nil)
	done := make(chan struct{})
	go func() { ts.Server.Close(); close(done) }()
	a.ExpectClosed(websocket.CloseGoingAway)
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not return")
	}
	resp, err := http.Get(ts.HTTP.URL + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("healthz after close: %s", resp.Status)
	}
}

func TestHTTPEndpoints(t *testing.T) {
	ts := signaltest.Start(t, nil)
	resp, err := http.Get(ts.HTTP.URL + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("healthz: %s", resp.Status)
	}
	resp, err = http.Get(ts.HTTP.URL + "/signal")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("plain GET of the WebSocket path: %s", resp.Status)
	}
	m := metrics(t, ts)
	if _, ok := m[`peerlan_signal_relayed_bytes_total{type="signal"}`]; !ok {
		t.Fatal("relayed bytes series missing before any traffic")
	}
}

func TestConfigValidation(t *testing.T) {
	for _, cfg := range []signal.Config{
		{Subnet: netip.MustParsePrefix("10.0.0.1/24")},
		{Subnet: netip.MustParsePrefix("10.0.0.0/30")},
		{Subnet: netip.MustParsePrefix("fd00::/64")},
		{Secret: []byte("short")},
		{TokenRooms: []string{"["}},
		{AllowedOrigins: []string{"lan.example"}},
		{KeepaliveInterval: time.Second, KeepaliveTimeout: time.Second},
	} {
		if _, err := signal.New(cfg); err == nil {
			t.Errorf("config %+v accepted", cfg)
		}
	}
}
