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

// start runs instance i (again, after a kill: same address, node and store).
func (c *natsCluster) start(i int) {
	s := &SignalServer{Base: "http://" + c.addrs[i], WS: "ws://" + c.addrs[i] + "/signal"}
	s.Process = StartProcess(c.t, fmt.Sprintf("signal-%d", i), Binary(c.t, "signal"),
		"-addr", c.addrs[i], "-secret-file", c.secret, "-instance", fmt.Sprintf("sig%d", i),
		"-nats-embed", "-nats-store", c.stores[i], "-nats-listen", c.urls[i],
		"-nats-cluster-listen", c.nats[i], "-nats-routes", strings.Join(c.nats, ","),
		"-presence-ttl", "10s")
	c.sigs[i] = s
}

// TestNATSCluster is issue 14's end-to-end check: three bin/signal
// processes share a room over their embedded NATS nodes; three bin/peer
// processes, each joined through another instance, get unique addresses
// from the one room, link directly and ping each other. One instance is
// then killed: the links keep carrying pings (DESIGN.md invariant 5), and
// when the instance comes back its peer resumes with its id and address.
func TestNATSCluster(t *testing.T) {
	RequireCommands(t, "ping", "udhcpc")
	RequireNetAdmin(t)
	c := startNATSCluster(t)
	room := "cluster-" + randomSuffix(4)
	var peers []*NativePeer
	for i := range 3 {
		ns := NewNamespace(t, fmt.Sprintf("nats-%d", i))
		peers = append(peers, StartPeer(t, c.sigs[i], room, ns, "-state-dir", t.TempDir()))
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

	// Instance 1 dies; its peer's links carry on.
	stB := peers[1].Status(t)
	c.sigs[1].Kill()
	Ping(t, peers[0].NS, leases[1].Addr.Addr(), 3)
	Ping(t, peers[1].NS, leases[2].Addr.Addr(), 3)

	// It comes back; its peer resumes there as the same member.
	c.start(1)
	waitHTTP(t, c.sigs[1].Process, c.sigs[1].Base+"/healthz", 60*time.Second)
	deadline := time.Now().Add(60 * time.Second)
	for {
		st := peers[1].Status(t)
		if st.Signal == "connected" && len(st.Peers) == 2 {
			if st.ID != stB.ID || st.IP != stB.IP {
				t.Fatalf("resumed as %s/%v, was %s/%v", st.ID, st.IP, stB.ID, stB.IP)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("peer did not resume: %+v", st)
		}
		time.Sleep(200 * time.Millisecond)
	}
	peers[0].WaitLinks(t, 2, 30*time.Second)
	Ping(t, peers[0].NS, leases[1].Addr.Addr(), 3)
	Ping(t, peers[2].NS, leases[1].Addr.Addr(), 3)
}
