package signalclient_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/peerlan/peerlan/signal"
	"github.com/peerlan/peerlan/signal/proto"
	"github.com/peerlan/peerlan/signal/signalclient"
	"github.com/peerlan/peerlan/signal/signaltest"
)

// runClient starts a Client and stops it at cleanup. stop cancels it and
// returns what Run returned; done is closed when Run has returned.
func runClient(t *testing.T, url, room string, mod func(*signalclient.Config)) (c *signalclient.Client, stop func() error, done <-chan struct{}) {
	t.Helper()
	cfg := signalclient.Config{URL: url, Room: room, MinBackoff: 20 * time.Millisecond, MaxBackoff: 100 * time.Millisecond,
		Logger: signaltest.Logger(t)}
	if mod != nil {
		mod(&cfg)
	}
	c, err := signalclient.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var runErr error
	finished := make(chan struct{})
	go func() { runErr = c.Run(ctx); close(finished) }()
	stop = func() error {
		cancel()
		<-finished
		return runErr
	}
	t.Cleanup(func() { stop() })
	return c, stop, finished
}

// nextEvent waits for the next event of type T, skipping others.
func nextEvent[T any](t *testing.T, c *signalclient.Client) T {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case ev := <-c.Events():
			if v, ok := ev.(T); ok {
				return v
			}
		case <-timeout:
			t.Fatalf("no %T event", *new(T))
		}
	}
}

func TestClientJoinSignalLeave(t *testing.T) {
	ts := signaltest.Start(t, func(c *signal.Config) { c.ResumeGrace = time.Minute })
	a, _, _ := runClient(t, ts.URL, "lab", nil)
	wa := nextEvent[*proto.Welcome](t, a)
	b, stopB, _ := runClient(t, ts.URL, "lab", nil)
	wb := nextEvent[*proto.Welcome](t, b)
	if len(wb.Peers) != 1 || wb.Peers[0].ID != wa.ID || a.ID() != wa.ID {
		t.Fatalf("welcome: %+v", wb)
	}
	if pj := nextEvent[*proto.PeerJoined](t, a); pj.Peer.ID != wb.ID {
		t.Fatalf("peer-joined %+v", pj)
	}
	if err := a.Send(wb.ID, json.RawMessage(`{"kind":"offer"}`)); err != nil {
		t.Fatal(err)
	}
	if s := nextEvent[*proto.Signal](t, b); s.From != wa.ID || string(s.Data) != `{"kind":"offer"}` {
		t.Fatalf("signal %+v", s)
	}
	// Stopping a client leaves at once, without waiting out the grace period.
	start := time.Now()
	if err := stopB(); !errors.Is(err, context.Canceled) {
		t.Fatalf("Run returned %v", err)
	}
	if pl := nextEvent[*proto.PeerLeft](t, a); pl.ID != wb.ID {
		t.Fatalf("peer-left %+v", pl)
	}
	if el := time.Since(start); el > 5*time.Second {
		t.Fatalf("leave took %v", el)
	}
}

func TestClientResumesAfterServerRestart(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	serve := func(ln net.Listener) (*signal.Server, *http.Server) {
		s, err := signal.New(signal.Config{Secret: signaltest.Secret, Logger: signaltest.Logger(t)})
		if err != nil {
			t.Fatal(err)
		}
		hs := &http.Server{Handler: s}
		go hs.Serve(ln)
		return s, hs
	}
	s1, hs1 := serve(ln)
	url := "ws://" + addr + "/signal"
	a, _, _ := runClient(t, url, "lab", nil)
	w1 := nextEvent[*proto.Welcome](t, a)

	hs1.Close()
	s1.Close()
	nextEvent[*signalclient.Disconnected](t, a)
	if err := a.Send(w1.ID, json.RawMessage(`1`)); !errors.Is(err, signalclient.ErrNotConnected) {
		t.Fatalf("Send while disconnected: %v", err)
	}
	ln2, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	s2, hs2 := serve(ln2)
	t.Cleanup(func() { hs2.Close(); s2.Close() })
	w2 := nextEvent[*proto.Welcome](t, a)
	if w2.ID != w1.ID || w2.IP != w1.IP {
		t.Fatalf("after restart: %v/%v, want %v/%v", w2.ID, w2.IP, w1.ID, w1.IP)
	}
}

func TestClientStopsOnPermanentRefusal(t *testing.T) {
	ts := signaltest.Start(t, func(c *signal.Config) { c.TokenRooms = []string{"*"} })
	_, stop, done := runClient(t, ts.URL, "lab", nil)
	select {
	case <-done:
		err := stop()
		var se *proto.Error
		if !errors.As(err, &se) || se.Code != proto.CodeTokenRequired {
			t.Fatalf("Run returned %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run kept retrying a join that cannot succeed")
	}
}

func TestClientConfigErrors(t *testing.T) {
	for _, cfg := range []signalclient.Config{
		{URL: "http://x/signal", Room: "lab"},
		{URL: "ws:///signal", Room: "lab"},
		{URL: "ws://x/signal", Room: ""},
		{URL: "ws://x/signal", Room: "lab", Role: "root"},
	} {
		if _, err := signalclient.New(cfg); err == nil {
			t.Errorf("accepted %+v", cfg)
		}
	}
	many := make([]string, signalclient.MaxURLs+1)
	for i := range many {
		many[i] = fmt.Sprintf("ws://h%d/signal", i)
	}
	// Each error names what is wrong: the bad URL, or the rule broken.
	for _, c := range []struct {
		cfg  signalclient.Config
		want string
	}{
		{signalclient.Config{URL: "ws://a/signal, http://b/signal"}, `"http://b/signal" (2 of 2)`},
		{signalclient.Config{URLs: []string{"ws://a/signal", "ws:///signal"}}, `"ws:///signal" (2 of 2)`},
		{signalclient.Config{URL: "ws://a/signal,"}, "server URL (2 of 2) is empty"},
		{signalclient.Config{URLs: []string{"ws://a/signal", "ws://a/signal"}}, `"ws://a/signal" is listed twice`},
		{signalclient.Config{URL: "ws://a/signal", URLs: []string{"ws://b/signal"}}, "not both"},
		{signalclient.Config{URLs: many}, "at most 16"},
		{signalclient.Config{URL: strings.Join(many, ",")}, "at most 16"},
		{signalclient.Config{}, "is required"},
	} {
		c.cfg.Room = "lab"
		_, err := signalclient.New(c.cfg)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("New(%q, %q): %v, want an error saying %s", c.cfg.URL, c.cfg.URLs, err, c.want)
		}
	}
	for _, cfg := range []signalclient.Config{
		{URL: "ws://a/signal, wss://b:8443/signal", Room: "lab"},
		{URLs: many[:signalclient.MaxURLs], Room: "lab"},
	} {
		if _, err := signalclient.New(cfg); err != nil {
			t.Errorf("New(%q, %q): %v", cfg.URL, cfg.URLs, err)
		}
	}
}

// TestClientResumeFromEarlierRun: a gateway restarted after a crash presents
// the resume token its earlier run saved and takes its id and .1 back at
// once, replacing the dead run's connection that the server still holds;
// without the token the role is taken.
func TestClientResumeFromEarlierRun(t *testing.T) {
	ts := signaltest.Start(t, nil)
	tok := ts.Signer().MintFor(signal.TokenGateway, "lab", time.Hour, time.Now())
	gateway := func(j *proto.Join) { j.Role, j.Token = proto.RoleGateway, tok }
	crashed, w1 := signaltest.Join(t, ts, "lab", gateway)

	fresh := signaltest.Dial(t, ts.URL, nil)
	j := &proto.Join{V: proto.ProtocolVersion, Room: "lab"}
	gateway(j)
	fresh.Send(j)
	signaltest.ExpectError(fresh, proto.CodeGatewayTaken)

	c, _, _ := runClient(t, ts.URL, "lab", func(cfg *signalclient.Config) {
		cfg.Role, cfg.Token, cfg.Resume = proto.RoleGateway, tok, w1.Resume
	})
	if got := c.ResumeToken(); got != w1.Resume {
		t.Fatalf("ResumeToken before the first welcome %q, want the configured one", got)
	}
	w2 := nextEvent[*proto.Welcome](t, c)
	if w2.ID != w1.ID || w2.IP != w1.IP {
		t.Fatalf("restarted gateway got %v/%v, want %v/%v", w2.ID, w2.IP, w1.ID, w1.IP)
	}
	if c.ResumeToken() != w2.Resume {
		t.Fatal("ResumeToken is not the latest welcome's")
	}
	crashed.ExpectClosed(websocket.ClosePolicyViolation)
}

// TestClientWrongEndpointFailsFast: a URL that answers plain HTTP before any
// welcome (a wrong path, a web page) ends Run at once with a message that
// says so; a server error is retried instead.
func TestClientWrongEndpointFailsFast(t *testing.T) {
	for _, c := range []struct {
		name   string
		status int
		want   string // in the error; "" = Run keeps retrying
	}{
		{"wrong path", http.StatusNotFound, "no signaling endpoint at this path"},
		{"web page", http.StatusOK, "without upgrading to a WebSocket"},
		{"forbidden", http.StatusForbidden, "403 Forbidden"},
		{"overloaded", http.StatusServiceUnavailable, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			hs := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
				w.WriteHeader(c.status)
			})}
			go hs.Serve(ln)
			defer hs.Close()
			cl, stop, done := runClient(t, "ws://"+ln.Addr().String()+"/signal", "lab", nil)
			quit := make(chan struct{})
			defer close(quit)
			go func() { // Run emits a Disconnected before each retry
				for {
					select {
					case <-cl.Events():
					case <-quit:
						return
					}
				}
			}()
			select {
			case <-done:
				err := stop()
				var he *signalclient.HandshakeError
				if c.want == "" || !errors.As(err, &he) || !strings.Contains(err.Error(), c.want) {
					t.Fatalf("Run returned %v, want a HandshakeError saying %q", err, c.want)
				}
			case <-time.After(time.Second):
				if c.want != "" {
					t.Fatal("Run still retrying after a second")
				}
				if err := stop(); !errors.Is(err, context.Canceled) {
					t.Fatalf("Run returned %v after cancel", err)
				}
			}
		})
	}
}
