//go:build js

package signalclient

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"syscall/js"
	"time"

	"github.com/peerlan/peerlan/signal/proto"
)

// clientKind is what the join says this peer runs: the wasm peer in a page.
const clientKind = proto.KindBrowser

// browserConn adapts the browser's WebSocket to wsConn. The browser answers
// the server's pings and reports dead connections through onclose.
type browserConn struct {
	ws     js.Value
	in     chan []byte
	opened chan struct{}
	done   chan struct{}
	funcs  []js.Func

	mu  sync.Mutex
	err error // why done was closed
}

var errInboxFull = errors.New("signal: too many unread messages from the server")

// nativeDial has nothing in the browser, whose WebSocket decides what it
// trusts (and so the wasm peer links no crypto/tls.Config).
type nativeDial struct{}

func dial(ctx context.Context, url string, _ time.Duration, _ nativeDial) (_ wsConn, err error) {
	defer func() {
		if r := recover(); r != nil { // a JavaScript exception, such as a malformed URL
			err = fmt.Errorf("signal: dial %s: %v", url, r)
		}
	}()
	c := &browserConn{in: make(chan []byte, 1024), opened: make(chan struct{}), done: make(chan struct{})}
	c.ws = js.Global().Get("WebSocket").New(url)
	c.on("open", func(js.Value) { close(c.opened) })
	c.on("message", func(ev js.Value) {
		data := ev.Get("data")
		if data.Type() != js.TypeString {
			c.fail(errBinaryFromServer)
			return
		}
		select {
		case c.in <- []byte(data.String()):
		default:
			c.fail(errInboxFull)
		}
	})
	c.on("error", func(js.Value) { c.fail(fmt.Errorf("signal: WebSocket to %s failed", url)) })
	c.on("close", func(ev js.Value) {
		c.fail(fmt.Errorf("signal: WebSocket closed (code %d %s)", ev.Get("code").Int(), ev.Get("reason").String()))
	})
	select {
	case <-c.opened:
		return c, nil
	case <-c.done:
		c.Close()
		return nil, c.failure()
	case <-ctx.Done():
		c.Close()
		return nil, ctx.Err()
	}
}

func (c *browserConn) on(event string, f func(js.Value)) {
	fn := js.FuncOf(func(_ js.Value, args []js.Value) any {
		f(args[0])
		return nil
	})
	c.funcs = append(c.funcs, fn)
	c.ws.Set("on"+event, fn)
}

func (c *browserConn) fail(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err == nil {
		c.err = err
		close(c.done)
	}
}

func (c *browserConn) failure() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

func (c *browserConn) Read() ([]byte, error) {
	select {
	case b := <-c.in:
		return b, nil
	case <-c.done:
		// Deliver what arrived before the close first.
		select {
		case b := <-c.in:
			return b, nil
		default:
			return nil, c.failure()
		}
	}
}

func (c *browserConn) Write(b []byte) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("signal: WebSocket send: %v", r)
		}
	}()
	if c.ws.Get("readyState").Int() != 1 { // OPEN
		return ErrNotConnected
	}
	c.ws.Call("send", string(b))
	return nil
}

func (c *browserConn) Close() {
	c.fail(errors.New("signal: connection closed"))
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.funcs == nil {
		return
	}
	for _, ev := range []string{"open", "message", "error", "close"} {
		c.ws.Set("on"+ev, js.Null())
	}
	c.ws.Call("close", 1000)
	for _, f := range c.funcs {
		f.Release()
	}
	c.funcs = nil
}
