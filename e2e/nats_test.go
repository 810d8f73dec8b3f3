//go:build linux

package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/peerlan/peerlan/signal/natshub/natsnode"
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
		"-nats-cluster-listen", c.nats[i], "-nats-routes", strings.Join(c.nats, ","))
	c.sigs[i] = s
}

// TestNATSCluster is issue 14's end-to-end check: three bin/signal
// processes share a room over their embedded NATS nodes; three bin/peer
// processes, each joined through another instance, get unique addresses
// from the one room, link directly and ping each other. The instance whose
// node leads the room directory is then killed, which holds every
// directory write for a JetStream leader election: the links keep carrying
// pings (DESIGN.md invariant 5), its peer, which knows two instances' URLs,
// fails over and resumes with its id and address, and nobody is announced
// as left, although the election outlasts the live instances' presence
// TTL.
func TestNATSCluster(t *testing.T) {
	RequireCommands(t, "ping", "udhcpc")
	RequireNetAdmin(t)
	c := startNATSCluster(t)
	k := c.directoryLeader()
	f, o := (k+1)%3, (k+2)%3 // k's peer fails over to f; o's peer stays
	t.Logf("instance %d leads the directory: killing it, its peer fails over to instance %d", k, f)
	room := "cluster-" + randomSuffix(4)
	var peers []*NativePeer
	for i := range 3 {
		ns := NewNamespace(t, fmt.Sprintf("nats-%d", i))
		extra := []string{"-state-dir", t.TempDir()}
		if i == k {
			// This peer knows two instances and fails over to the second
			// (StartPeer's -signal is the first's; the later flag wins).
			extra = append(extra, "-signal", c.sigs[k].WS+","+c.sigs[f].WS)
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

	// Instance k dies; its peer's links carry on, and it fails over to
	// instance f, where it takes over its own member: same id and address,
	// and past the dead instance's presence TTL nobody has seen it leave.
	stK := peers[k].Status(t)
	if stK.SignalURL != c.sigs[k].WS {
		t.Fatalf("peer %d joined through %q, want %s", k, stK.SignalURL, c.sigs[k].WS)
	}
	if now := c.directoryLeader(); now != k {
		t.Logf("the directory's leader moved to instance %d: this run kills a follower", now)
	}
	c.sigs[k].Kill()
	killed := time.Now()
	Ping(t, peers[o].NS, leases[k].Addr.Addr(), 3)
	Ping(t, peers[k].NS, leases[f].Addr.Addr(), 3)
	deadline := time.Now().Add(60 * time.Second)
	for {
		st := peers[k].Status(t)
		if st.Signal == "connected" && st.SignalURL == c.sigs[f].WS {
			if st.ID != stK.ID || st.IP != stK.IP {
				t.Fatalf("resumed as %s/%v, was %s/%v", st.ID, st.IP, stK.ID, stK.IP)
			}
			t.Logf("peer %d resumed on instance %d %v after instance %d died", k, f, time.Since(killed).Round(time.Millisecond), k)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("peer did not fail over: %+v", st)
		}
		time.Sleep(200 * time.Millisecond)
	}
	// The election holds the live instances' presence heartbeats too, on a
	// loaded host for longer than the default -presence-ttl of 6 s at times,
	// so their presence may lapse. They still hear each other's pulse,
	// so nobody reaps a live instance's peers. Wait out the TTL and the
	// default -resume-grace of 10 s after the election, then check that
	// every link is still up.
	time.Sleep(time.Until(killed.Add(32 * time.Second)))
	for i, p := range peers {
		st := p.WaitLinks(t, 2, 10*time.Second)
		for _, l := range st.Peers {
			if l.State != "open" {
				t.Fatalf("peer %d: link %+v", i, l)
			}
		}
	}
	if got := c.sigs[f].Metrics(t)[`peerlan_signal_joins_total{kind="reattach",role="guest"}`]; got != 1 {
		t.Fatalf("instance %d counted %v takeovers, want 1", f, got)
	}
	// Nobody was told a peer left, and no peer had to resume afresh.
	for _, i := range []int{f, o} {
		m := c.sigs[i].Metrics(t)
		if got := m[`peerlan_signal_sent_messages_total{type="peer-left"}`]; got != 0 {
			t.Errorf("instance %d sent %v peer-left messages, want none", i, got)
		}
		if got := m[`peerlan_signal_joins_total{kind="resume",role="guest"}`]; got != 0 {
			t.Errorf("instance %d counted %v fresh resumes, want none", i, got)
		}
	}
	Ping(t, peers[o].NS, leases[k].Addr.Addr(), 3)
	Ping(t, peers[f].NS, leases[k].Addr.Addr(), 3)
}

// directoryLeader returns the index of the instance whose NATS node leads
// the room directory's stream, asked of the first live node with the
// password every instance derives from the shared secret.
func (c *natsCluster) directoryLeader() int {
	c.t.Helper()
	secret, err := os.ReadFile(c.secret)
	if err != nil {
		c.t.Fatal(err)
	}
	pw := natsnode.PasswordFrom([]byte(strings.TrimSpace(string(secret))))
	var urls []string
	for _, u := range c.urls {
		urls = append(urls, "nats://"+u)
	}
	nc, err := nats.Connect(strings.Join(urls, ","), nats.UserInfo(natsnode.User, pw), nats.Timeout(5*time.Second))
	if err != nil {
		c.t.Fatalf("connect to the cluster's NATS: %v", err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		c.t.Fatal(err)
	}
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		st, err := js.Stream(ctx, "KV_peerlan")
		cancel()
		if err == nil && st.CachedInfo().Cluster != nil {
			if l := st.CachedInfo().Cluster.Leader; strings.HasPrefix(l, "sig") {
				if i, err := strconv.Atoi(strings.TrimPrefix(l, "sig")); err == nil && i >= 0 && i < 3 {
					return i
				}
			}
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("the directory has no leader: %v", err)
		}
	}
}
