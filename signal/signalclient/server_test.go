package signalclient_test

import (
	"io"
	"log/slog"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"go.uber.org/goleak"

	"github.com/peerlan/peerlan/signal"
	"github.com/peerlan/peerlan/signal/proto"
)

// The client is tested against the real server; these helpers are the part
// of signal's own test helpers that the client's tests need.

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

var testSecret = []byte("0123456789abcdef0123456789abcdef")

// testServer is a real signal.Server on a real HTTP listener.
type testServer struct {
	*signal.Server
	url string // ws URL of the signaling endpoint
}

func startServer(t testing.TB, mod func(*signal.Config)) *testServer {
	t.Helper()
	cfg := signal.Config{Secret: testSecret, Logger: discardOrTest(t)}
	if mod != nil {
		mod(&cfg)
	}
	s, err := signal.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(s)
	t.Cleanup(func() { s.Close(); hs.Close() })
	return &testServer{Server: s, url: "ws" + strings.TrimPrefix(hs.URL, "http") + "/signal"}
}

// discardOrTest logs into the test log with -v, and nowhere otherwise.
func discardOrTest(t testing.TB) *slog.Logger {
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

// rawPeer is a bare WebSocket client that speaks the protocol by hand: a
// connection the server holds while the client under test joins.
type rawPeer struct {
	t  testing.TB
	ws *websocket.Conn
}

func dialRaw(t testing.TB, url string) *rawPeer {
	t.Helper()
	ws, _, err := websocket.DefaultDialer.Dial(url, nil)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { ws.Close() })
	return &rawPeer{t: t, ws: ws}
}

func (p *rawPeer) send(m any) {
	p.t.Helper()
	b, err := proto.Encode(m)
	if err != nil {
		p.t.Fatal(err)
	}
	if err := p.ws.WriteMessage(websocket.TextMessage, b); err != nil {
		p.t.Fatalf("write: %v", err)
	}
}

// next reads the next message, failing after timeout.
func (p *rawPeer) next(timeout time.Duration) (any, error) {
	_ = p.ws.SetReadDeadline(time.Now().Add(timeout))
	_, b, err := p.ws.ReadMessage()
	if err != nil {
		return nil, err
	}
	return proto.Decode(b)
}

func expect[T any](p *rawPeer) T {
	p.t.Helper()
	m, err := p.next(5 * time.Second)
	if err != nil {
		p.t.Fatalf("expected %T, got error %v", *new(T), err)
	}
	v, ok := m.(T)
	if !ok {
		p.t.Fatalf("expected %T, got %#v", *new(T), m)
	}
	return v
}

func expectError(p *rawPeer, code proto.ErrorCode) *proto.Error {
	p.t.Helper()
	e := expect[*proto.Error](p)
	if e.Code != code {
		p.t.Fatalf("expected error %q, got %q (%s)", code, e.Code, e.Message)
	}
	return e
}

// expectClosed asserts that the server closes the connection with code.
func (p *rawPeer) expectClosed(code int) {
	p.t.Helper()
	for {
		_, err := p.next(5 * time.Second)
		if err == nil {
			continue
		}
		if !websocket.IsCloseError(err, code) {
			p.t.Fatalf("expected close %d, got %v", code, err)
		}
		return
	}
}

func joinRaw(t testing.TB, ts *testServer, room string, mod func(*proto.Join)) (*rawPeer, *proto.Welcome) {
	t.Helper()
	p := dialRaw(t, ts.url)
	j := &proto.Join{V: proto.ProtocolVersion, Room: room}
	if mod != nil {
		mod(j)
	}
	p.send(j)
	return p, expect[*proto.Welcome](p)
}
