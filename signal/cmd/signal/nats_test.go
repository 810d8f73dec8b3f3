package main

import (
	"context"
	"flag"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/peerlan/peerlan/signal/proto"
	"github.com/peerlan/peerlan/signal/signaltest"
)

func parseAllFlags(t *testing.T, args ...string) serveFlags {
	t.Helper()
	fs := flag.NewFlagSet("signal", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	var f serveFlags
	f.turn.register(fs)
	f.tls.register(fs)
	f.nats.register(fs)
	if err := fs.Parse(args); err != nil {
		t.Fatal(err)
	}
	return f
}

func TestNATSFlagErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"-nats", "nats://127.0.0.1:1", "-nats-embed", "-nats-store", "x"}, "choose one"},
		{[]string{"-nats", "nats://127.0.0.1:1", "-nats-routes", "127.0.0.1:6222"}, "need -nats-embed"},
		{[]string{"-nats-embed"}, "needs -nats-store"},
		{[]string{"-nats-embed", "-nats-store", "x", "-nats-replicas", "7"}, "-nats-replicas"},
		{[]string{"-nats-embed", "-nats-store", "x", "-nats-listen", "nonsense"}, "listen address"},
		{[]string{"-nats", "nats://127.0.0.1:1"}, "-nats nats://127.0.0.1:1"},
		{[]string{"-nats-embed", "-nats-store", "x", "-nats-routes", "127.0.0.1:6222"}, "needs -secret-file"},
	} {
		f := parseAllFlags(t, tc.args...)
		f.nats.instance = cmpOr(f.nats.instance, "test")
		var secret []byte
		if !strings.Contains(tc.want, "secret") {
			secret = []byte("0123456789abcdef")
		}
		s, err := f.nats.setup(quiet, nil, secret)
		if err == nil {
			s.close()
			t.Errorf("%v accepted", tc.args)
			continue
		}
		if !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: %v, want it to mention %q", tc.args, err, tc.want)
		}
	}
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// TestServeEmbeddedCluster: two bin/signal instances, each with an embedded
// NATS node routed to the other, share a room: a peer joining through each
// meets the other, and each welcome lists its own instance's TURN relay
// first and the other instance's second.
func TestServeEmbeddedCluster(t *testing.T) {
	secret := filepath.Join(t.TempDir(), "secret")
	turnSecret := filepath.Join(t.TempDir(), "turn-secret")
	routes := []string{freePort(t), freePort(t)}
	addrs := make([]net.Addr, 2)
	errcs := make([]chan error, 2)
	addrcs := make([]chan net.Addr, 2)
	for i := range 2 {
		f := parseAllFlags(t, "-nats-embed", "-nats-store", t.TempDir(), "-nats-listen", "127.0.0.1:0",
			"-nats-cluster-listen", routes[i], "-nats-routes", strings.Join(routes, ","),
			"-instance", []string{"one", "two"}[i], "-presence-ttl", "2s",
			"-turn-udp", "127.0.0.1:0", "-turn-secret-file", turnSecret, "-turn-ports", []string{"50100-50110", "50120-50130"}[i])
		f.secretFile = secret
		f.addr, f.path, f.subnet = "127.0.0.1:0", "/signal", "10.86.0.0/24"
		f.cfg.MaxMessageBytes, f.cfg.MaxPeersPerRoom, f.cfg.MaxRooms, f.cfg.MaxConnections = 64<<10, 64, 10, 10
		f.cfg.MessagesPerSecond, f.cfg.Burst, f.cfg.SendQueue = 50, 100, 64
		f.cfg.KeepaliveInterval, f.cfg.KeepaliveTimeout, f.cfg.ResumeGrace = 5*time.Second, 15*time.Second, time.Second
		log := slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo})).With("instance", f.nats.instance)
		ctx, cancel := context.WithCancel(context.Background())
		errcs[i], addrcs[i] = make(chan error, 1), make(chan net.Addr, 1)
		go func() { errcs[i] <- serve(ctx, f, log, func(a net.Addr) { addrcs[i] <- a }) }()
		t.Cleanup(func() {
			cancel()
			if err := <-errcs[i]; err != nil {
				t.Errorf("serve %d: %v", i, err)
			}
		})
	}
	for i := range 2 {
		select {
		case addrs[i] = <-addrcs[i]:
		case err := <-errcs[i]:
			errcs[i] <- nil // for the cleanup
			t.Fatalf("serve %d: %v", i, err)
		case <-time.After(60 * time.Second):
			t.Fatalf("instance %d did not listen", i)
		}
	}
	url := func(i int) *signaltest.Server {
		return &signaltest.Server{URL: "ws://" + addrs[i].String() + "/signal"}
	}
	// Each instance learns of the other's presence (and relay) from the
	// directory's watch, a moment after both listen.
	for try := 0; ; try++ {
		_, w0 := signaltest.Join(t, url(0), "probe", nil)
		_, w1 := signaltest.Join(t, url(1), "probe", nil)
		if len(w0.ICEServers) == 2 && len(w1.ICEServers) == 2 {
			break
		}
		if try == 50 {
			t.Fatalf("instances never listed each other's relay: %+v / %+v", w0.ICEServers, w1.ICEServers)
		}
		time.Sleep(100 * time.Millisecond)
	}
	a, wa := signaltest.Join(t, url(0), "lab", nil)
	_, wb := signaltest.Join(t, url(1), "lab", nil)
	if len(wb.Peers) != 1 || wb.Peers[0].ID != wa.ID || wb.IP == wa.IP {
		t.Fatalf("second instance's welcome %+v (first %v)", wb, wa.IP)
	}
	if pj := signaltest.Expect[*proto.PeerJoined](a); pj.Peer.ID != wb.ID {
		t.Fatalf("peer-joined %+v", pj)
	}
	if len(wa.ICEServers) != 2 || len(wb.ICEServers) != 2 {
		t.Fatalf("ice servers: a %+v b %+v", wa.ICEServers, wb.ICEServers)
	}
	// Each welcome: its own instance's relay first, then the other's.
	if !slices.Equal(wb.ICEServers[1].URLs, wa.ICEServers[0].URLs) || !slices.Equal(wa.ICEServers[1].URLs, wb.ICEServers[0].URLs) ||
		slices.Equal(wb.ICEServers[0].URLs, wa.ICEServers[0].URLs) {
		t.Fatalf("relay order: a %v, b %v", wa.ICEServers, wb.ICEServers)
	}
	if wb.ICEServers[1].Username != wb.ICEServers[0].Username || wb.ICEServers[1].Username == "" {
		t.Fatalf("the other relay's credentials: %+v", wb.ICEServers)
	}
}
