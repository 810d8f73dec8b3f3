package peer_test

import (
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/peerlan/peerlan/peer/ether"
	"github.com/peerlan/peerlan/signal"
)

// cutProxy forwards TCP connections to a signaling server and can cut them:
// the peer behind it vanishes from the server's view (as a laptop that went
// to sleep) while its process, and its WebRTC links, keep running.
type cutProxy struct {
	ln     net.Listener
	target string

	mu          sync.Mutex
	conns       []net.Conn
	refuseUntil time.Time
}

func startCutProxy(t *testing.T, target string) *cutProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &cutProxy{ln: ln, target: target}
	go p.serve()
	t.Cleanup(func() {
		ln.Close()
		p.cut(0)
	})
	return p
}

func (p *cutProxy) url() string { return "ws://" + p.ln.Addr().String() + "/signal" }

func (p *cutProxy) serve() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		refuse := time.Now().Before(p.refuseUntil)
		p.mu.Unlock()
		if refuse {
			c.Close()
			continue
		}
		up, err := net.Dial("tcp", p.target)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		p.conns = append(p.conns, c, up)
		p.mu.Unlock()
		go func() { _, _ = io.Copy(up, c); up.Close() }()
		go func() { _, _ = io.Copy(c, up); c.Close() }()
	}
}

// cut closes every forwarded connection and refuses new ones for d.
func (p *cutProxy) cut(d time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.refuseUntil = time.Now().Add(d)
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}

// TestMeshHealsAfterResumeGraceExpired is issue 13's first report: a peer
// vanishes from the signaling server past its resume grace, so the server
// announces it left and the others drop their links, then it resumes. The
// link must come back whichever side of it the vanished peer offered on;
// before restart requests, a vanished answerer's link stayed down for good
// (it waited for an offer, and so did the other side).
func TestMeshHealsAfterResumeGraceExpired(t *testing.T) {
	for _, vanished := range []string{"answerer", "offerer"} {
		t.Run("vanished "+vanished, func(t *testing.T) {
			srv := startSignalConfig(t, "", signal.Config{
				ResumeGrace: 200 * time.Millisecond, KeepaliveInterval: 200 * time.Millisecond, KeepaliveTimeout: 600 * time.Millisecond,
			})
			px := startCutProxy(t, srv.addr)
			var s, o *meshPeer // s vanishes, o stays
			if vanished == "answerer" {
				s = startPeer(t, px.url(), "lab", mac(0x5))
				waitFor(t, "s to join", func() bool { return s.Status().Signal == "connected" })
				o = startPeer(t, srv.url(), "lab", mac(0x0))
			} else {
				o = startPeer(t, srv.url(), "lab", mac(0x0))
				waitFor(t, "o to join", func() bool { return o.Status().Signal == "connected" })
				s = startPeer(t, px.url(), "lab", mac(0x5))
			}
			waitOpen(t, 1, s, o)
			id := s.Status().ID

			px.cut(1500 * time.Millisecond)
			waitFor(t, "the server to announce s gone", func() bool { return len(o.Status().Peers) == 0 })
			waitFor(t, "s to resume", func() bool { st := s.Status(); return st.Signal == "connected" && st.ID == id })
			back := time.Now()
			waitOpen(t, 1, s, o)
			t.Logf("link open again %v after s resumed", time.Since(back).Round(time.Millisecond))

			s.send(t, ether.Broadcast, "after resuming")
			o.expectFrame(t, "after resuming")
			o.send(t, s.mac, "reply")
			s.expectFrame(t, "reply")
		})
	}
}
