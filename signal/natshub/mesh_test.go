package natshub_test

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/peerlan/peerlan/internal/promtext"
	"github.com/peerlan/peerlan/peer"
	"github.com/peerlan/peerlan/peer/ether"
	"github.com/peerlan/peerlan/peer/porttest"
	"github.com/peerlan/peerlan/signal"
	"github.com/peerlan/peerlan/signal/natshub"
	"github.com/peerlan/peerlan/signal/natshub/natshubtest"
)

const meshWait = 30 * time.Second

// meshPeer is a real peer.Mesh (pion WebRTC on loopback) whose guest is a
// channel port the test drives.
type meshPeer struct {
	*peer.Mesh
	guest *porttest.ChannelPort
	mac   ether.MAC
}

func startMesh(t *testing.T, url string, n byte) *meshPeer {
	t.Helper()
	guest := porttest.NewChannelPort(256)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if testing.Verbose() {
		log = slog.New(slog.NewTextHandler(t.Output(), nil)).With("who", n)
	}
	m, err := peer.NewMesh(peer.MeshConfig{Signal: url, Room: "lab", Local: guest, Logger: log, StatusEvery: -1,
		Transport: &peer.TransportConfig{Interfaces: []string{"lo"}}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return &meshPeer{Mesh: m, guest: guest, mac: ether.MAC{2, 0, 0, 0, 0, n}}
}

func (p *meshPeer) open() int {
	n := 0
	for _, l := range p.Status().Peers {
		if l.State == "open" {
			n++
		}
	}
	return n
}

// exchange has every peer broadcast a frame and checks that every other
// peer's guest gets it.
func exchange(t *testing.T, tag string, peers ...*meshPeer) {
	t.Helper()
	for _, from := range peers {
		f := make([]byte, ether.HeaderLen+len(tag)+1)
		e := ether.Ethernet(f)
		e.SetDst(ether.Broadcast)
		e.SetSrc(from.mac)
		e.SetType(0x88b5)
		copy(e.Payload(), tag+string(rune('0'+from.mac[5])))
		from.guest.Inbound <- f
		want := string(e.Payload())
		for _, to := range peers {
			if to == from {
				continue
			}
			deadline := time.After(meshWait)
			for got := false; !got; {
				select {
				case g := <-to.guest.Outbound:
					got = string(g[ether.HeaderLen:]) == want
				case <-deadline:
					t.Fatalf("guest %d never got %q", to.mac[5], want)
				}
			}
		}
	}
}

func waitCond(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(meshWait)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestMeshAcrossInstances: three real peers, each joining through another
// instance, open direct pion links to each other and carry frames. Then one
// instance dies: its peer's balancer sends it to another instance, where it
// resumes with its id and address; nobody is announced left, no link is
// torn down, and the links carry frames throughout (DESIGN.md invariant 5).
func TestMeshAcrossInstances(t *testing.T) {
	in := natshubtest.ClusterWith(t, 3, func(c *natshub.Config) { c.PresenceTTL = 6 * time.Second },
		func(c *signal.Config) { c.ResumeGrace = time.Second })
	front := natshubtest.StartFront(t, in[1].Addr())
	a := startMesh(t, in[0].URL, 1)
	b := startMesh(t, front.URL(), 2)
	c := startMesh(t, in[2].URL, 3)
	waitCond(t, "links to open", func() bool { return a.open() == 2 && b.open() == 2 && c.open() == 2 })
	exchange(t, "before", a, b, c)
	bID, bIP := b.Status().ID, b.Status().IP

	front.Switch(in[2].Addr())
	in[1].Kill()
	start := time.Now()
	// Frames flow while B has no server and while it resumes.
	exchange(t, "during", a, b, c)
	waitCond(t, "b to resume", func() bool { return b.Status().Signal == "connected" })
	t.Logf("b resumed on another instance %v after its instance died", time.Since(start).Round(time.Millisecond))
	if st := b.Status(); st.ID != bID || st.IP != bIP {
		t.Fatalf("b resumed as %v/%v, was %v/%v", st.ID, st.IP, bID, bIP)
	}
	// Past the dead instance's presence TTL and the resume grace: B was
	// taken over, so it was never announced left and the links never closed.
	time.Sleep(6*time.Second + time.Second + 2*time.Second)
	for _, p := range []*meshPeer{a, b, c} {
		if p.open() != 2 {
			t.Fatalf("peer %d has %d open links: %+v", p.mac[5], p.open(), p.Status().Peers)
		}
	}
	exchange(t, "after", a, b, c)
	// B came back as a takeover of the member its dead instance held, not
	// as a new member (which the others would have heard join).
	m, err := promtext.Scrape(in[2].HTTP.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	if got := m[`peerlan_signal_joins_total{kind="reattach",role="guest"}`]; got != 1 {
		t.Fatalf("reattaches on the surviving instance: %v, want 1", got)
	}
	if got := m[`peerlan_signal_joins_total{kind="resume",role="guest"}`]; got != 0 {
		t.Fatalf("b rejoined as a new member (%v resumes)", got)
	}
}
