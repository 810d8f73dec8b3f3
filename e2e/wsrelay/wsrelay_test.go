package wsrelay

import (
	"context"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// frame builds a minimal Ethernet frame from src to dst with a one-byte tag.
func frame(dst, src byte, tag byte) []byte {
	f := make([]byte, 60)
	if dst == 0xff {
		copy(f[0:6], []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	} else {
		copy(f[0:6], []byte{2, 0, 0, 0, 0, dst})
	}
	copy(f[6:12], []byte{2, 0, 0, 0, 0, src})
	f[12], f[13] = 0x08, 0x00
	f[14] = tag
	return f
}

func dial(t *testing.T, url string) *websocket.Conn {
	t.Helper()
	c, _, err := websocket.DefaultDialer.Dial(url, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// recv returns the tag of the next frame c receives, or -1 after a timeout.
func recv(t *testing.T, c *websocket.Conn, timeout time.Duration) int {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(timeout))
	typ, b, err := c.ReadMessage()
	if err != nil {
		return -1
	}
	if typ != websocket.BinaryMessage || len(b) != 60 {
		t.Fatalf("got message type %d of %d bytes, want one binary 60-byte frame", typ, len(b))
	}
	return int(b[14])
}

func TestRelaySwitchesFrames(t *testing.T) {
	srv := httptest.NewServer(NewServer(nil))
	defer srv.Close()
	url := "ws" + strings.TrimPrefix(srv.URL, "http")
	a, b, c := dial(t, url), dial(t, url), dial(t, url)
	time.Sleep(50 * time.Millisecond) // let the server register all three

	// A broadcast from a reaches b and c (and teaches the relay a's MAC).
	a.WriteMessage(websocket.BinaryMessage, frame(0xff, 1, 10))
	if got := recv(t, b, time.Second); got != 10 {
		t.Fatalf("b got %d, want broadcast 10", got)
	}
	if got := recv(t, c, time.Second); got != 10 {
		t.Fatalf("c got %d, want broadcast 10", got)
	}
	// Unknown unicast from b floods to a and c; then a's MAC is known, so a
	// unicast from c to it reaches a alone.
	b.WriteMessage(websocket.BinaryMessage, frame(9, 2, 11))
	if recv(t, a, time.Second) != 11 || recv(t, c, time.Second) != 11 {
		t.Fatal("unknown unicast was not flooded")
	}
	c.WriteMessage(websocket.BinaryMessage, frame(1, 3, 12))
	if got := recv(t, a, time.Second); got != 12 {
		t.Fatalf("a got %d, want unicast 12", got)
	}
	if got := recv(t, b, 100*time.Millisecond); got != -1 {
		t.Fatalf("b got %d, a unicast for a", got)
	}
}

func TestBridgeCarriesPortFrames(t *testing.T) {
	srv := httptest.NewServer(NewServer(nil))
	defer srv.Close()
	url := "ws" + strings.TrimPrefix(srv.URL, "http")
	other := dial(t, url)
	port := &chanPort{in: make(chan []byte, 1), out: make(chan []byte, 1)}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Bridge(ctx, url, port) }()

	time.Sleep(50 * time.Millisecond) // let the bridge connect
	select {
	case err := <-done:
		t.Fatalf("Bridge: %v", err)
	default:
	}
	port.in <- frame(0xff, 1, 20)
	if got := recv(t, other, 2*time.Second); got != 20 {
		t.Fatalf("relay client got %d, want the port's frame 20", got)
	}
	other.WriteMessage(websocket.BinaryMessage, frame(1, 2, 21))
	select {
	case f := <-port.out:
		if f[14] != 21 {
			t.Fatalf("port got tag %d, want 21", f[14])
		}
	case <-time.After(2 * time.Second):
		t.Fatal("port got no frame")
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Bridge after cancel: %v", err)
	}
}

type chanPort struct{ in, out chan []byte }

func (p *chanPort) Read(b []byte) (int, error) { return copy(b, <-p.in), nil }
func (p *chanPort) Write(b []byte) (int, error) {
	p.out <- append([]byte(nil), b...)
	return len(b), nil
}
