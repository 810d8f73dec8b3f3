// Package signaltest runs a real signal.Server on a real HTTP listener for
// tests, and speaks the signaling protocol by hand (Peer), so that a test
// controls every byte and every read. The server's own tests and the
// client's (signal/signalclient) share it.
//
// Every helper fails the test it was given (t.Fatal) rather than returning
// an error, except Peer.Next, whose error a test may expect; everything
// started is stopped by t.Cleanup.
package signaltest

import (
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/peerlan/peerlan/signal"
	"github.com/peerlan/peerlan/signal/proto"
)

// Secret is the secret Start gives the server.
var Secret = []byte("0123456789abcdef0123456789abcdef")

// Server is a real signal.Server on a real HTTP listener.
type Server struct {
	*signal.Server
	HTTP *httptest.Server
	URL  string // ws URL of the signaling endpoint
}

// Start starts a server with Secret and a test logger; mod, if not nil,
// changes the configuration first.
func Start(t testing.TB, mod func(*signal.Config)) *Server {
	t.Helper()
	cfg := signal.Config{Secret: Secret, Logger: Logger(t)}
	if mod != nil {
		mod(&cfg)
	}
	s, err := signal.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(s)
	ts := &Server{Server: s, HTTP: hs, URL: "ws" + strings.TrimPrefix(hs.URL, "http") + "/signal"}
	t.Cleanup(ts.Stop)
	return ts
}

// Stop closes the server and its listener (also done by Start's cleanup).
func (ts *Server) Stop() {
	ts.Server.Close()
	ts.HTTP.Close()
}

// Logger logs into the test log with -v, and nowhere otherwise.
func Logger(t testing.TB) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(b)))
	return len(b), nil
}

// Peer is a bare WebSocket client of the signaling endpoint.
type Peer struct {
	T  testing.TB // whom a failure fails; a subtest may set its own
	WS *websocket.Conn
}

// Dial connects to url with the request headers hdr (nil for none).
func Dial(t testing.TB, url string, hdr http.Header) *Peer {
	t.Helper()
	ws, resp, err := websocket.DefaultDialer.Dial(url, hdr)
	if err != nil {
		if resp != nil {
			t.Fatalf("dial: %v (%s)", err, resp.Status)
		}
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { ws.Close() })
	return &Peer{T: t, WS: ws}
}

// SendRaw writes one WebSocket message of type mt.
func (p *Peer) SendRaw(mt int, b []byte) {
	p.T.Helper()
	if err := p.WS.WriteMessage(mt, b); err != nil {
		p.T.Fatalf("write: %v", err)
	}
}

// Send writes m as a protocol message.
func (p *Peer) Send(m any) {
	p.T.Helper()
	b, err := proto.Encode(m)
	if err != nil {
		p.T.Fatal(err)
	}
	p.SendRaw(websocket.TextMessage, b)
}

// Next reads the next message, or returns the error that ended the wait
// (a timeout after timeout).
func (p *Peer) Next(timeout time.Duration) (any, error) {
	_ = p.WS.SetReadDeadline(time.Now().Add(timeout))
	_, b, err := p.WS.ReadMessage()
	if err != nil {
		return nil, err
	}
	return proto.Decode(b)
}

// Expect reads the next message within 5 s and asserts that it is a T.
func Expect[T any](p *Peer) T {
	p.T.Helper()
	m, err := p.Next(5 * time.Second)
	if err != nil {
		p.T.Fatalf("expected %T, got error %v", *new(T), err)
	}
	v, ok := m.(T)
	if !ok {
		p.T.Fatalf("expected %T, got %#v", *new(T), m)
	}
	return v
}

// ExpectError asserts that the next message is an error with code.
func ExpectError(p *Peer, code proto.ErrorCode) *proto.Error {
	p.T.Helper()
	e := Expect[*proto.Error](p)
	if e.Code != code {
		p.T.Fatalf("expected error %q, got %q (%s)", code, e.Code, e.Message)
	}
	return e
}

// ExpectSilence asserts that nothing arrives within d. A read deadline
// poisons a gorilla connection, so a test calls this last on p.
func (p *Peer) ExpectSilence(d time.Duration) {
	p.T.Helper()
	m, err := p.Next(d)
	if err == nil {
		p.T.Fatalf("expected no message, got %#v", m)
	}
	if ne, ok := err.(interface{ Timeout() bool }); !ok || !ne.Timeout() {
		p.T.Fatalf("expected silence, connection failed: %v", err)
	}
}

// ExpectClosed asserts that the server closes the connection with code,
// skipping any messages before the close.
func (p *Peer) ExpectClosed(code int) {
	p.T.Helper()
	for {
		_, err := p.Next(5 * time.Second)
		if err == nil {
			continue
		}
		if !websocket.IsCloseError(err, code) {
			p.T.Fatalf("expected close %d, got %v", code, err)
		}
		return
	}
}

// Join dials ts, joins room (mod, if not nil, changes the join first) and
// returns the peer and its welcome.
func Join(t testing.TB, ts *Server, room string, mod func(*proto.Join)) (*Peer, *proto.Welcome) {
	t.Helper()
	p := Dial(t, ts.URL, nil)
	j := &proto.Join{V: proto.ProtocolVersion, Room: room}
	if mod != nil {
		mod(j)
	}
	p.Send(j)
	return p, Expect[*proto.Welcome](p)
}
