//go:build linux

package e2e

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// natsCluster is three bin/signal processes, each with an embedded NATS
// node routed to the other two, sharing -secret-file: one cluster of rooms.
type natsCluster struct {
	t                 testing.TB
	secret            string
	addrs, nats, urls []string
	stores            []string
	sigs              []*SignalServer
}

func startNATSCluster(t *testing.T) *natsCluster {
	c := &natsCluster{t: t, secret: filepath.Join(t.TempDir(), "secret")}
	for range 3 {
		c.addrs = append(c.addrs, fmt.Sprintf("127.0.0.1:%d", FreePort(t)))
		c.nats = append(c.nats, fmt.Sprintf("127.0.0.1:%d", FreePort(t)))
		c.urls = append(c.urls, fmt.Sprintf("127.0.0.1:%d", FreePort(t)))
		c.stores = append(c.stores, t.TempDir())
	}
	c.sigs = make([]*SignalServer, 3)
	// All at once: a JetStream cluster needs a quorum of its nodes before
	// any instance can open the room directory and listen.
	for i := range 3 {
		c.start(i)
	}
	for _, s := range c.sigs {
		waitHTTP(t, s.Process, s.Base+"/healthz", 90*time.Second)
	}
	return c
}

// start runs instance i.
func (c *natsCluster) start(i int) {
	s := &SignalServer{Base: "http://" + c.addrs[i], WS: "ws://" + c.addrs[i] + "/signal"}
	s.Process = StartProcess(c.t, fmt.Sprintf("signal-%d", i), Binary(c.t, "signal"),
		"-addr", c.addrs[i], "-secret-file", c.secret, "-instance", fmt.Sprintf("sig%d", i),
		"-nats-embed", "-nats-store", c.stores[i], "-nats-listen", c.urls[i],
		"-nats-cluster-listen", c.nats[i], "-nats-routes", strings.Join(c.nats, ","),
		"-presence-ttl", "20s", "-resume-grace", "6s")
	c.sigs[i] = s
}

// TestNATSCluster is issue 14's end-to-end check: three bin/signal
// processes share a room over their embedded NATS nodes; three bin/peer
// processes, each joined through another instance, get unique addresses
// from the one room, link directly and ping each other. One instance is
// then killed: the links keep carrying pings (DESIGN.md invariant 5), and
// its peer, which knows two instances' URLs, fails over to the other and
// resumes there with its id and address, never announced as left.
func TestNATSCluster(t *testing.T) {
	RequireCommands(t, "ping", "udhcpc")
	RequireNetAdmin(t)
	c := startNATSCluster(t)
	room := "cluster-" + randomSuffix(4)
	var peers []*NativePeer
	for i := range 3 {
		ns := NewNamespace(t, fmt.Sprintf("nats-%d", i))
		extra := []string{"-state-dir", t.TempDir()}
		if i == 1 {
			// Peer 1 knows two instances and fails over to the second
			// (StartPeer's -signal is the first's; the later flag wins).
			extra = append(extra, "-signal", c.sigs[1].WS+","+c.sigs[2].WS)
		}
		peers = append(peers, StartPeer(t, c.sigs[i], room, ns, extra...))
	}
	var leases []Lease
	seen := map[string]bool{}
	for _, p := range peers {
		st := p.WaitLinks(t, 2, 60*time.Second)
		if seen[st.IP.String()] {
			t.Fatalf("address %v handed out twice", st.IP)
		}
		seen[st.IP.String()] = true
		l := LeaseDHCP(t, p.NS, p.TAP)
		if l.Addr.Addr() != st.IP {
			t.Fatalf("lease %v, assigned %v", l.Addr, st.IP)
		}
		leases = append(leases, l)
	}
	before := 0.0
	for _, s := range c.sigs {
		before += s.RelayedBytes(t)
	}
	for i, p := range peers {
		for j, l := range leases {
			if i != j {
				Ping(t, p.NS, l.Addr.Addr(), 3)
			}
		}
	}
	after := 0.0
	for _, s := range c.sigs {
		after += s.RelayedBytes(t)
	}
	if after != before {
		t.Errorf("the instances relayed %v bytes during guest traffic; frames must not pass through them", after-before)
	}

	// Instance 1 dies; its peer's links carry on, and it fails over to
	// instance 2, where it takes over its own member: same id and address,
	// and past the dead instance's presence TTL nobody has seen it leave.
	stB := peers[1].Status(t)
	if stB.SignalURL != c.sigs[1].WS {
		t.Fatalf("peer 1 joined through %q, want %s", stB.SignalURL, c.sigs[1].WS)
	}
	c.sigs[1].Kill()
	killed := time.Now()
	Ping(t, peers[0].NS, leases[1].Addr.Addr(), 3)
	Ping(t, peers[1].NS, leases[2].Addr.Addr(), 3)
	deadline := time.Now().Add(60 * time.Second)
	for {
		st := peers[1].Status(t)
		if st.Signal == "connected" && st.SignalURL == c.sigs[2].WS {
			if st.ID != stB.ID || st.IP != stB.IP {
				t.Fatalf("resumed as %s/%v, was %s/%v", st.ID, st.IP, stB.ID, stB.IP)
			}
			t.Logf("peer 1 resumed on instance 2 %v after instance 1 died", time.Since(killed).Round(time.Millisecond))
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("peer did not fail over: %+v", st)
		}
		time.Sleep(200 * time.Millisecond)
	}
	// A JetStream election after the node died holds the takeover back,
	// and the live instances' presence heartbeats with it, for up to 10.5 s
	// on a loaded host: with a presence TTL below that the live instances
	// took each other for dead and reaped each other's peers (a known
	// weakness of natshub; see docs/architecture.md), so this test gives
	// the TTL room over the election and checks the takeover path.
	time.Sleep(time.Until(killed.Add(28 * time.Second))) // past -presence-ttl 20s and -resume-grace 6s
	for i, p := range peers {
		st := p.WaitLinks(t, 2, 10*time.Second)
		for _, l := range st.Peers {
			if l.State != "open" {
				t.Fatalf("peer %d: link %+v", i, l)
			}
		}
	}
	if got := c.sigs[2].Metrics(t)[`peerlan_signal_joins_total{kind="reattach",role="guest"}`]; got != 1 {
		t.Fatalf("instance 2 counted %v takeovers, want 1", got)
	}
	Ping(t, peers[0].NS, leases[1].Addr.Addr(), 3)
	Ping(t, peers[2].NS, leases[1].Addr.Addr(), 3)
}
