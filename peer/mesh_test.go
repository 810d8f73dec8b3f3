package peer_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/peerlan/peerlan/internal/promtext"
	"github.com/peerlan/peerlan/peer"
	"github.com/peerlan/peerlan/peer/ether"
	"github.com/peerlan/peerlan/peer/porttest"
	"github.com/peerlan/peerlan/signal"
	"github.com/peerlan/peerlan/signal/proto"
)

var meshSecret = []byte("mesh test secret, 32 bytes long!")

// signalServer is a real signaling server on a fixed loopback address, so
// that a test can stop it and start another in its place.
type signalServer struct {
	t    testing.TB
	addr string
	srv  *signal.Server
	hs   *http.Server
}

func startSignal(t testing.TB, addr string) *signalServer {
	t.Helper()
	return startSignalConfig(t, addr, signal.Config{})
}

// startSignalConfig is startSignal with cfg's settings; it sets the secret
// and the logger.
func startSignalConfig(t testing.TB, addr string, cfg signal.Config) *signalServer {
	t.Helper()
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Secret, cfg.Logger = meshSecret, testLogger(t, "signal")
	srv, err := signal.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	s := &signalServer{t: t, addr: ln.Addr().String(), srv: srv, hs: &http.Server{Handler: srv}}
	go s.hs.Serve(ln)
	t.Cleanup(s.stop)
	return s
}

func (s *signalServer) url() string { return "ws://" + s.addr + "/signal" }

func (s *signalServer) stop() {
	s.hs.Close()
	s.srv.Close()
}

func (s *signalServer) metrics() promtext.Samples {
	s.t.Helper()
	m, err := promtext.Scrape("http://" + s.addr + "/metrics")
	if err != nil {
		s.t.Fatal(err)
	}
	return m
}

func testLogger(t testing.TB, who string) *slog.Logger {
	if !testing.Verbose() {
		return slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug})).With("who", who)
}

// meshPeer is a Mesh whose guest is a ChannelPort the test drives.
type meshPeer struct {
	*peer.Mesh
	guest *porttest.ChannelPort
	mac   ether.MAC
	stop  func()
}

func startPeer(t testing.TB, url, room string, guestMAC ether.MAC) *meshPeer {
	t.Helper()
	return runMeshPeer(t, peer.MeshConfig{
		Signal:    url,
		Room:      room,
		Transport: &peer.TransportConfig{Interfaces: []string{"lo"}},
	}, guestMAC)
}

// runMeshPeer runs a Mesh configured by cfg whose local port is a fresh
// ChannelPort, until the test ends or stop is called. It sets Local, Logger
// and StatusEvery.
func runMeshPeer(t testing.TB, cfg peer.MeshConfig, guestMAC ether.MAC) *meshPeer {
	t.Helper()
	guest := porttest.NewChannelPort(256)
	cfg.Local = guest
	cfg.Logger = testLogger(t, guestMAC.String())
	cfg.StatusEvery = -1
	m, err := peer.NewMesh(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	p := &meshPeer{Mesh: m, guest: guest, mac: guestMAC}
	var stopped bool
	p.stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}
	t.Cleanup(p.stop)
	return p
}

// openLinks counts the peer's open links.
func (p *meshPeer) openLinks() int {
	n := 0
	for _, l := range p.Status().Peers {
		if l.State == "open" {
			n++
		}
	}
	return n
}

// send injects a frame as if the guest had sent it.
func (p *meshPeer) send(t *testing.T, dst ether.MAC, payload string) {
	t.Helper()
	select {
	case p.guest.Inbound <- frame(dst, p.mac, payload):
	case <-time.After(waitTimeout):
		t.Fatal("guest port not reading")
	}
}

// expectFrame waits for a frame with payload at p's guest, skipping others.
func (p *meshPeer) expectFrame(t *testing.T, want string) {
	t.Helper()
	deadline := time.After(waitTimeout)
	for {
		select {
		case f := <-p.guest.Outbound:
			if payload(f) == want {
				return
			}
		case <-deadline:
			t.Fatalf("guest %v never got %q", p.mac, want)
		}
	}
}

// expectNoFrame asserts that no frame with payload reaches p's guest.
func (p *meshPeer) expectNoFrame(t *testing.T, unwanted string, within time.Duration) {
	t.Helper()
	deadline := time.After(within)
	for {
		select {
		case f := <-p.guest.Outbound:
			if payload(f) == unwanted {
				t.Fatalf("guest %v got %q, which was not for it", p.mac, unwanted)
			}
		case <-deadline:
			return
		}
	}
}

func waitOpen(t *testing.T, n int, peers ...*meshPeer) {
	t.Helper()
	waitFor(t, "links to open", func() bool {
		for _, p := range peers {
			if p.openLinks() != n {
				return false
			}
		}
		return true
	})
}

func TestMeshThreePeers(t *testing.T) {
	ignore := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, ignore) }) // runs after the peers' cleanups
	srv := startSignal(t, "")
	a := startPeer(t, srv.url(), "lab", mac(0xa))
	b := startPeer(t, srv.url(), "lab", mac(0xb))
	c := startPeer(t, srv.url(), "lab", mac(0xc))
	waitOpen(t, 2, a, b, c)

	for _, p := range []*meshPeer{a, b, c} {
		st := p.Status()
		if !st.Prefix.Contains(st.IP) || st.Signal != "connected" || st.SignalURL != srv.url() {
			t.Fatalf("status %+v (want connected via %s)", st, srv.url())
		}
		for _, l := range st.Peers {
			if l.Path == "relay" || l.RTTMillis < 0 {
				t.Fatalf("loopback link path %q rtt %v", l.Path, l.RTTMillis)
			}
		}
	}

	// A broadcast from A's guest reaches both other guests.
	a.send(t, ether.Broadcast, "hello all")
	b.expectFrame(t, "hello all")
	c.expectFrame(t, "hello all")

	// B and C learned A's MAC on their link to A: unicast goes only there.
	b.send(t, a.mac, "for a only")
	a.expectFrame(t, "for a only")
	c.expectNoFrame(t, "for a only", 300*time.Millisecond)

	// Unknown unicast floods.
	c.send(t, mac(0x77), "to nobody known")
	a.expectFrame(t, "to nobody known")
	b.expectFrame(t, "to nobody known")

	// A frame never comes back to the guest that sent it, and B does not
	// forward what it got from A to C (split horizon): C gets A's broadcast
	// exactly once.
	a.send(t, ether.Broadcast, "once")
	c.expectFrame(t, "once")
	c.expectNoFrame(t, "once", 300*time.Millisecond)
	a.expectNoFrame(t, "once", 10*time.Millisecond)

	// No frame passed through the signaling server: it relayed only the
	// negotiation, and nothing since the links opened.
	before := srv.metrics()
	a.send(t, ether.Broadcast, "quiet server")
	b.expectFrame(t, "quiet server")
	after := srv.metrics()
	for _, k := range []string{`peerlan_signal_relayed_bytes_total{type="signal"}`, `peerlan_signal_received_bytes_total{type="signal"}`} {
		if before[k] != after[k] {
			t.Fatalf("%s moved from %v to %v while frames flowed", k, before[k], after[k])
		}
	}

	// A leaves: everyone else drops its link promptly.
	a.stop()
	waitFor(t, "A's link to go", func() bool { return len(b.Status().Peers) == 1 && len(c.Status().Peers) == 1 })
	b.send(t, ether.Broadcast, "after a left")
	c.expectFrame(t, "after a left")
}

func TestMeshSurvivesSignalRestart(t *testing.T) {
	srv := startSignal(t, "")
	addr := srv.addr
	a := startPeer(t, srv.url(), "lab", mac(0xa))
	b := startPeer(t, srv.url(), "lab", mac(0xb))
	waitOpen(t, 1, a, b)
	idA, idB := a.Status().ID, b.Status().ID

	// The server goes away: the links keep carrying frames.
	srv.stop()
	waitFor(t, "peers to notice", func() bool { return a.Status().Signal == "reconnecting" })
	a.send(t, ether.Broadcast, "while the server is down")
	b.expectFrame(t, "while the server is down")
	b.send(t, a.mac, "reply while down")
	a.expectFrame(t, "reply while down")

	// A new server (same secret) comes up in its place: the peers rejoin
	// with their old identities and keep their links.
	srv2 := startSignal(t, addr)
	waitFor(t, "peers to rejoin", func() bool {
		return a.Status().Signal == "connected" && b.Status().Signal == "connected"
	})
	if a.Status().ID != idA || b.Status().ID != idB {
		t.Fatal("identities changed across the restart")
	}
	waitOpen(t, 1, a, b)
	a.send(t, ether.Broadcast, "after the restart")
	b.expectFrame(t, "after the restart")

	// And a newcomer links up with both.
	c := startPeer(t, srv2.url(), "lab", mac(0xc))
	waitOpen(t, 2, a, b, c)
	c.send(t, ether.Broadcast, "newcomer")
	a.expectFrame(t, "newcomer")
	b.expectFrame(t, "newcomer")
}

func TestMeshRefusedJoin(t *testing.T) {
	srv := startSignal(t, "")
	guest := porttest.NewChannelPort(1)
	m, err := peer.NewMesh(peer.MeshConfig{Signal: srv.url(), Room: "lab", Role: proto.RoleGateway, Local: guest,
		Logger: testLogger(t, "gw"), StatusEvery: -1})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	err = m.Run(ctx)
	var se *proto.Error
	if !errorsAs(err, &se) || se.Code != proto.CodeTokenRequired {
		t.Fatalf("Run = %v, want token-required", err)
	}
	if st := m.Status(); st.Error == "" || st.Signal != "closed" {
		t.Fatalf("status after refusal: %+v", st)
	}
	select {
	case <-guest.Closed():
	default:
		t.Fatal("local port left open")
	}
}

func errorsAs(err error, target any) bool { return errors.As(err, target) }
