//go:build linux

package e2e

import (
	"net/netip"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/peerlan/peerlan/signal/proto"
)

// failoverJoinBound is how long a bin/peer started with a dead first URL
// may take from its start to a welcome from the second. The dead URL costs
// one dial refused at once on loopback, followed by the next URL without a
// backoff; the rest is the process's start (TAP set-up) on a busy host.
// A client that waited out its backoff cap (10 s) before the second URL
// would miss it.
const failoverJoinBound = 10 * time.Second

// failoverMaxLost bounds the echoes a background ping may lose across a
// failover. The data channels do not touch the signaling server, so none
// should be lost; one is allowed for the echo in flight when ping is
// interrupted, and one for a datagram lost on a loaded host (the channels
// are unreliable, maxRetransmits 0, as a wire).
const failoverMaxLost = 2

// TestNativeSignalFailover is issue 14's native half with real processes:
// two bin/signal instances A and B share one secret file, so each honours
// the other's resume tokens, and bin/peer processes in namespaces of their
// own join with -signal A,B (all on A). While every guest pings another at
// 20 echoes a second, A is killed with SIGKILL: every peer must resume on B
// with its id and address, its data links must stay the sessions they were
// (no link closed or opened, pings answered throughout), and B must relay
// no byte, neither for a renegotiation nor during the pings. A peer started
// after A died joins through B without a backoff and reaches the others.
// Then A comes back, B is killed, and all of them fail back to A the same
// way.
func TestNativeSignalFailover(t *testing.T) {
	RequireCommands(t, "ping", "udhcpc")
	a := StartSignal(t)
	b := StartSignal(t, "-secret-file", a.SecretFile()) // the last -secret-file counts
	urls := a.WS + "," + b.WS
	room := "failover-" + randomSuffix(4)
	start := func(name string) *NativePeer {
		// StartPeer's -signal is the first server's; the later flag wins.
		return StartPeer(t, a, room, NewNamespace(t, name), "-signal", urls)
	}

	peers := []*NativePeer{start("fo-x")}
	peers[0].WaitLinks(t, 0, 30*time.Second)
	peers = append(peers, start("fo-y"))
	var addrs []netip.Addr
	for _, p := range peers {
		st := p.WaitLinks(t, 1, 30*time.Second)
		if st.SignalURL != a.WS {
			t.Fatalf("%s joined through %q, want the first URL %s", p.Name, st.SignalURL, a.WS)
		}
		addrs = append(addrs, LeaseDHCP(t, p.NS, p.TAP).Addr.Addr())
	}
	Ping(t, peers[0].NS, addrs[1], 3)
	Ping(t, peers[1].NS, addrs[0], 3)

	failover(t, a, b, peers, addrs)

	// A newcomer while A is dead: the first URL is refused, the second
	// welcomes it at once.
	started := time.Now()
	d := start("fo-d")
	// The bound runs from before the start, not from StartPeer's return.
	waitCond(t, time.Until(started.Add(failoverJoinBound)), d.Name+" to join through "+b.WS+" within "+failoverJoinBound.String(), func() bool {
		st := d.Status(t)
		return st.Signal == "connected" && st.SignalURL == b.WS
	})
	joinedIn := time.Since(started)
	out := d.Output()
	skipped := strings.Index(out, `msg="signaling server unreachable; trying the next" server=`+a.WS+" ")
	joined := strings.Index(out, `msg="joined room" server=`+b.WS+" ")
	if skipped < 0 || joined < 0 || skipped > joined {
		t.Errorf("%s's log should show %s refused, then the join through %s:\n%s", d.Name, a.WS, b.WS, out)
	} else if strings.Contains(out[:joined], "reconnecting") {
		t.Errorf("%s waited a backoff before trying %s:\n%s", d.Name, b.WS, out[:joined])
	}
	peers = append(peers, d)
	for _, p := range peers {
		p.WaitLinks(t, len(peers)-1, 30*time.Second)
	}
	addrs = append(addrs, LeaseDHCP(t, d.NS, d.TAP).Addr.Addr())
	for i := range 2 {
		Ping(t, d.NS, addrs[i], 3)
		Ping(t, peers[i].NS, addrs[2], 3)
	}
	t.Logf("%s started after %s died: joined through %s %v after its start", d.Name, a.WS, b.WS, joinedIn.Round(time.Millisecond))

	// A comes back (same address, same secret); the peers stay on B, which
	// welcomed them, until B dies too.
	failover(t, b, restartSignal(t, a), peers, addrs)
}

// failover kills from while every peer (joined through it, guests at
// addrs) pings the next one in a ring, and checks that they all resume on
// to as they were, with their links untouched and no byte relayed by to.
func failover(t *testing.T, from, to *SignalServer, peers []*NativePeer, addrs []netip.Addr) {
	t.Helper()
	before := make([]linkSnapshot, len(peers))
	for i, p := range peers {
		before[i] = snapshotLinks(t, p, len(peers)-1)
		if st := p.Status(t); st.SignalURL != from.WS {
			t.Fatalf("%s is on %q before the failover, want %s", p.Name, st.SignalURL, from.WS)
		}
	}
	relayed := to.RelayedBytes(t)
	pings := make([]*pingStream, len(peers))
	for i, p := range peers {
		pings[i] = startPingStream(t, p.NS, addrs[(i+1)%len(peers)])
	}
	time.Sleep(time.Second) // the pings are under way before the kill

	killed := time.Now()
	from.Kill()
	waitCond(t, 30*time.Second, "every peer to resume on "+to.WS, func() bool {
		for _, p := range peers {
			if st := p.Status(t); st.Signal != "connected" || st.SignalURL != to.WS {
				return false
			}
		}
		return true
	})
	took := time.Since(killed)
	settled := to.RelayedBytes(t)
	time.Sleep(3 * time.Second) // pings through the failed-over mesh
	afterPings := to.RelayedBytes(t)

	lost := make([]string, len(peers))
	for i, s := range pings {
		sent, got := s.stop(t)
		lost[i] = strconv.Itoa(sent-got) + "/" + strconv.Itoa(sent)
		if sent < 20 || sent-got > failoverMaxLost {
			t.Errorf("%s -> %s across the failover: %d of %d echoes answered, want at most %d lost",
				peers[i].Name, addrs[(i+1)%len(peers)], got, sent, failoverMaxLost)
		}
	}
	for i, p := range peers {
		after := snapshotLinks(t, p, len(peers)-1)
		if after.id != before[i].id || after.ip != before[i].ip {
			t.Errorf("%s is %s at %v on %s, want %s at %v as on %s", p.Name, after.id, after.ip, to.WS,
				before[i].id, before[i].ip, from.WS)
		}
		if after.opened != before[i].opened || after.closed != before[i].closed {
			t.Errorf("%s logged %d links opened and %d closed across the failover, want none",
				p.Name, after.opened-before[i].opened, after.closed-before[i].closed)
		}
		for ip, ms := range before[i].openMillis {
			if got, ok := after.openMillis[ip]; !ok || got != ms {
				t.Errorf("%s: the link to %s opened in %v ms before the failover, now %v (open: %v): a new session",
					p.Name, ip, ms, got, ok)
			}
		}
	}
	if settled != relayed {
		t.Errorf("%s relayed %v bytes while the peers resumed on it: their links were renegotiated", to.WS, settled-relayed)
	}
	if afterPings != settled {
		t.Errorf("%s relayed %v bytes during the pings after the failover; frames must not pass through it", to.WS, afterPings-settled)
	}
	t.Logf("%s killed: %d peers connected on %s %v later; echoes lost (lost/sent): %s",
		from.WS, len(peers), to.WS, took.Round(time.Millisecond), strings.Join(lost, " "))
}

// linkSnapshot is what a failover must leave as it was: a peer's identity,
// its open links (by the time each session took to open, which a new
// session would not repeat to the microsecond), and how many link sessions
// its log reports opened and closed.
type linkSnapshot struct {
	id             proto.PeerID
	ip             netip.Addr
	openMillis     map[netip.Addr]float64
	opened, closed int
}

// snapshotLinks waits until p has n open links and records them.
func snapshotLinks(t *testing.T, p *NativePeer, n int) linkSnapshot {
	t.Helper()
	st := p.WaitLinks(t, n, 30*time.Second)
	s := linkSnapshot{id: st.ID, ip: st.IP, openMillis: make(map[netip.Addr]float64, len(st.Peers))}
	for _, l := range st.Peers {
		if l.State == "open" {
			s.openMillis[l.IP] = l.OpenMillis
		}
	}
	out := p.Output()
	s.opened, s.closed = strings.Count(out, `msg="link open"`), strings.Count(out, `msg="link closed"`)
	return s
}

// restartSignal starts bin/signal again on s's address with its secret file,
// as an operator brings a crashed instance back, and waits until it answers.
func restartSignal(t *testing.T, s *SignalServer) *SignalServer {
	t.Helper()
	addr := strings.TrimPrefix(s.Base, "http://")
	p := StartProcess(t, "signal (restarted)", Binary(t, "signal"), "-addr", addr, "-secret-file", s.SecretFile())
	waitHTTP(t, p, s.Base+"/healthz", 20*time.Second)
	return &SignalServer{Process: p, Base: s.Base, WS: s.WS}
}

// pingStream is ping sending 20 echoes a second from a namespace until
// stopped; only its summary is printed.
type pingStream struct{ p *Process }

func startPingStream(t *testing.T, ns *Namespace, dst netip.Addr) *pingStream {
	t.Helper()
	return &pingStream{p: ns.Start("ping", "-q", "-i", "0.05", dst.String())}
}

// stop interrupts ping (SIGINT: it prints its summary and exits) and
// returns the echoes sent and answered.
func (s *pingStream) stop(t *testing.T) (sent, answered int) {
	t.Helper()
	s.p.Signal(syscall.SIGINT)
	select {
	case <-s.p.done:
	case <-time.After(10 * time.Second):
		t.Fatalf("%s did not stop on SIGINT", s.p.Name)
	}
	m := pingRE.FindStringSubmatch(s.p.Output())
	if m == nil {
		t.Fatalf("%s printed no summary:\n%s", s.p.Name, s.p.Output())
	}
	sent, _ = strconv.Atoi(m[1])
	answered, _ = strconv.Atoi(m[2])
	return sent, answered
}
