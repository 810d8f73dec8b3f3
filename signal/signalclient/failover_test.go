package signalclient_test

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/peerlan/peerlan/signal"
	"github.com/peerlan/peerlan/signal/proto"
	"github.com/peerlan/peerlan/signal/signalclient"
	"github.com/peerlan/peerlan/signal/signaltest"
)

// deadURL returns a ws URL of a port that nothing listens on (a listener
// that was closed): dials to it are refused.
func deadURL(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return "ws://" + addr + "/signal"
}

// dials records, in order, which of several plain HTTP servers a client
// dialed.
type dials struct {
	mu    sync.Mutex
	order []int
}

func (d *dials) seen() []int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]int(nil), d.order...)
}

// httpServer starts a plain HTTP server answering every request with status,
// recorded in d as server i; it returns its ws URL.
func httpServer(t *testing.T, d *dials, i, status int) string {
	t.Helper()
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		d.mu.Lock()
		d.order = append(d.order, i)
		d.mu.Unlock()
		w.WriteHeader(status)
	}))
	t.Cleanup(hs.Close)
	return "ws" + strings.TrimPrefix(hs.URL, "http") + "/signal"
}

// TestClientSkipsDeadFirstURL: with the first server down, the client joins
// the second without waiting a backoff (it is an hour here) and without
// reporting a disconnection; URL names the second.
func TestClientSkipsDeadFirstURL(t *testing.T) {
	ts := signaltest.Start(t, nil)
	dead := deadURL(t)
	c, _, _ := runClient(t, "", "lab", func(cfg *signalclient.Config) {
		cfg.URLs = []string{dead, ts.URL}
		cfg.MinBackoff, cfg.MaxBackoff = time.Hour, time.Hour
	})
	select {
	case ev := <-c.Events():
		if _, ok := ev.(*proto.Welcome); !ok {
			t.Fatalf("first event %#v, want the second server's welcome", ev)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("no welcome: the dead first URL cost a backoff, or the second was not tried")
	}
	if got := c.URL(); got != ts.URL {
		t.Fatalf("URL() = %q, want %q", got, ts.URL)
	}
}

// TestClientFailsOverWhenSessionEnds: the client's server goes away and the
// client joins the next one, offering its resume token there. A server with
// the same token secret (an instance of the same cluster) honours it even
// without a shared room store (signal/natshub): the token carries the id and
// address, so the peer keeps both. A server with another secret refuses the
// token and the client joins it afresh, with a new id.
func TestClientFailsOverWhenSessionEnds(t *testing.T) {
	for _, c := range []struct {
		name     string
		secret   []byte
		resumeOK bool
	}{
		{"same secret", signaltest.Secret, true},
		{"other secret", []byte("another secret of 32 bytes......"), false},
	} {
		t.Run(c.name, func(t *testing.T) {
			a := signaltest.Start(t, nil)
			b := signaltest.Start(t, func(cfg *signal.Config) { cfg.Secret = c.secret })
			cl, _, _ := runClient(t, "", "lab", func(cfg *signalclient.Config) { cfg.URLs = []string{a.URL, b.URL} })
			w1 := nextEvent[*proto.Welcome](t, cl)
			if cl.URL() != a.URL {
				t.Fatalf("joined %q first, want %q", cl.URL(), a.URL)
			}
			a.Stop()
			nextEvent[*signalclient.Disconnected](t, cl)
			w2 := nextEvent[*proto.Welcome](t, cl)
			if cl.URL() != b.URL {
				t.Fatalf("after %s stopped the client is on %q, want %q", a.URL, cl.URL(), b.URL)
			}
			if resumed := w2.ID == w1.ID && w2.IP == w1.IP; resumed != c.resumeOK {
				t.Fatalf("on server B the client is %v/%v, on A it was %v/%v: resumed %v, want %v", w2.ID, w2.IP, w1.ID, w1.IP, resumed, c.resumeOK)
			}
			if cl.ID() != w2.ID || cl.ResumeToken() != w2.Resume {
				t.Fatal("ID and ResumeToken are not the latest welcome's")
			}
			_, w := signaltest.Join(t, b, "lab", nil)
			if len(w.Peers) != 1 || w.Peers[0].ID != w2.ID {
				t.Fatalf("room lab on server B has %+v, want the client %v", w.Peers, w2.ID)
			}
		})
	}
}

// TestClientRoundRobinBackoff: with every server refusing (503, which is
// retried), the client dials them in list order, one round after another,
// and waits its backoff only between rounds: the dials are bounded by the
// rounds that the backoff lets fit in the time it ran, and it reports one
// disconnection per round, not per server.
func TestClientRoundRobinBackoff(t *testing.T) {
	const servers = 3
	minB, maxB := 40*time.Millisecond, 160*time.Millisecond
	var d dials
	urls := make([]string, servers)
	for i := range urls {
		urls[i] = httpServer(t, &d, i, http.StatusServiceUnavailable)
	}
	start := time.Now()
	c, stop, _ := runClient(t, "", "lab", func(cfg *signalclient.Config) {
		cfg.URL = strings.Join(urls, ",")
		cfg.MinBackoff, cfg.MaxBackoff = minB, maxB
	})
	deadline := time.After(30 * time.Second)
	for len(d.seen()) < 4*servers {
		select {
		case <-deadline:
			t.Fatalf("only %d dials in 30 s", len(d.seen()))
		case <-time.After(10 * time.Millisecond):
		}
	}
	if err := stop(); !errors.Is(err, context.Canceled) {
		t.Fatalf("Run returned %v", err)
	}
	elapsed := time.Since(start)
	// Nothing read the events: they wait in the client's channel (256), and
	// a client that emitted more would have stopped dialing at 256.
	disconnects := 0
	for len(c.Events()) > 0 {
		if _, ok := (<-c.Events()).(*signalclient.Disconnected); ok {
			disconnects++
		}
	}
	order := d.seen()
	for k, i := range order {
		if i != k%servers {
			t.Fatalf("dial order %v: not round after round in list order", order)
		}
	}
	// Each wait lasts at least half its backoff, which doubles from minB up
	// to maxB: this many rounds at most can have started in elapsed.
	rounds, spent, b := 1, time.Duration(0), minB
	for spent+b/2 <= elapsed {
		spent += b / 2
		b = min(2*b, maxB)
		rounds++
	}
	if len(order) > rounds*servers {
		t.Fatalf("%d dials in %v; the backoff allows at most %d rounds of %d", len(order), elapsed, rounds, servers)
	}
	if got, full := disconnects, len(order)/servers; got != full && got != full-1 {
		t.Fatalf("%d Disconnected events for %d dials (%d full rounds): want one per round", got, len(order), full)
	}
	t.Logf("%d dials (%d rounds) in %v; at most %d rounds allowed", len(order), len(order)/servers, elapsed.Round(time.Millisecond), rounds)
}

// TestClientDropsWrongURL: a URL that answers plain HTTP (404: a wrong
// path) is dropped from the rotation, and the client joins the next; when
// its server restarts, the client rejoins it without trying the wrong one
// again.
func TestClientDropsWrongURL(t *testing.T) {
	var d dials
	wrongURL := httpServer(t, &d, 0, http.StatusNotFound)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	serve := func(ln net.Listener) func() {
		s, err := signal.New(signal.Config{Secret: signaltest.Secret, Logger: signaltest.Logger(t)})
		if err != nil {
			t.Fatal(err)
		}
		hs := &http.Server{Handler: s}
		go hs.Serve(ln)
		return func() { hs.Close(); s.Close() }
	}
	stop1 := serve(ln)
	good := "ws://" + addr + "/signal"
	c, _, _ := runClient(t, "", "lab", func(cfg *signalclient.Config) { cfg.URLs = []string{wrongURL, good} })
	w1 := nextEvent[*proto.Welcome](t, c)
	stop1()
	nextEvent[*signalclient.Disconnected](t, c)
	ln2, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(serve(ln2))
	w2 := nextEvent[*proto.Welcome](t, c)
	if w2.ID != w1.ID { // the same secret: the restarted server honours the resume token
		t.Fatalf("after the restart %v, want %v", w2.ID, w1.ID)
	}
	if got := d.seen(); len(got) != 1 {
		t.Fatalf("the wrong URL was dialed %d times, want once", len(got))
	}
}

// TestClientAllURLsWrong: when every URL answers plain HTTP, Run ends with an
// error that names each; a fatal refusal ends Run at once, at the first
// server, without trying the others.
func TestClientAllURLsWrong(t *testing.T) {
	var d dials
	u404, u200 := httpServer(t, &d, 0, http.StatusNotFound), httpServer(t, &d, 1, http.StatusOK)
	_, stop, done := runClient(t, "", "lab", func(cfg *signalclient.Config) { cfg.URLs = []string{u404, u200} })
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("Run still retrying URLs that are not signaling endpoints")
	}
	err := stop()
	var he *signalclient.HandshakeError
	if !errors.As(err, &he) || !strings.Contains(err.Error(), "none of the 2") ||
		!strings.Contains(err.Error(), u404) || !strings.Contains(err.Error(), u200) {
		t.Fatalf("Run returned %v, want the HandshakeErrors of both URLs", err)
	}

	refusing := signaltest.Start(t, func(c *signal.Config) { c.TokenRooms = []string{"*"} })
	var other dials
	spare := httpServer(t, &other, 0, http.StatusServiceUnavailable)
	_, stop, done = runClient(t, "", "lab", func(cfg *signalclient.Config) { cfg.URLs = []string{refusing.URL, spare} })
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("Run kept retrying after a fatal refusal")
	}
	var se *proto.Error
	if err := stop(); !errors.As(err, &se) || se.Code != proto.CodeTokenRequired {
		t.Fatalf("Run returned %v, want %s", err, proto.CodeTokenRequired)
	}
	if n := len(other.seen()); n != 0 {
		t.Fatalf("the second URL was dialed %d times after a fatal refusal", n)
	}
}
