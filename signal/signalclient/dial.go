//go:build !js

package signalclient

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/gorilla/websocket"

	"github.com/peerlan/peerlan/signal/proto"
)

// clientKind is what the join says this peer runs: a native program.
const clientKind = proto.KindNative

// gorillaConn adapts a gorilla WebSocket to wsConn.
type gorillaConn struct {
	ws          *websocket.Conn
	readTimeout time.Duration
	wmu         sync.Mutex // gorilla allows one writer at a time
	closeOnce   sync.Once
}

var dialer = websocket.Dialer{
	HandshakeTimeout: 10 * time.Second,
	ReadBufferSize:   4096,
	WriteBufferSize:  4096,
}

// nativeDial holds what only a native client can choose about its dial.
type nativeDial struct {
	tls *tls.Config
}

// SetTLSConfig sets what the client trusts for wss:// (a server whose
// certificate comes from a private CA); nil, the default, means the system's
// roots, which SSL_CERT_FILE can point elsewhere. Call it before Run. Native
// clients only: it is not in the browser's build (not a Config field, so
// that the wasm peer does not link crypto/tls.Config: 19 kB).
func (c *Client) SetTLSConfig(conf *tls.Config) { c.native.tls = conf }

func dial(ctx context.Context, url string, readTimeout time.Duration, nd nativeDial) (wsConn, error) {
	d := &dialer
	if nd.tls != nil {
		withTLS := dialer
		withTLS.TLSClientConfig = nd.tls
		d = &withTLS
	}
	ws, resp, err := d.DialContext(ctx, url, nil)
	if err != nil {
		if resp != nil {
			resp.Body.Close()
			return nil, &HandshakeError{URL: url, StatusCode: resp.StatusCode, Status: resp.Status, Location: resp.Header.Get("Location")}
		}
		return nil, fmt.Errorf("signal: dial %s: %w", url, err)
	}
	c := &gorillaConn{ws: ws, readTimeout: readTimeout}
	ws.SetReadLimit(maxServerMessage)
	_ = ws.SetReadDeadline(time.Now().Add(readTimeout))
	// The server pings; each ping proves it alive.
	ws.SetPingHandler(func(data string) error {
		_ = ws.SetReadDeadline(time.Now().Add(c.readTimeout))
		err := ws.WriteControl(websocket.PongMessage, []byte(data), time.Now().Add(5*time.Second))
		if errors.Is(err, websocket.ErrCloseSent) {
			return nil
		}
		return err
	})
	return c, nil
}

// maxServerMessage bounds what a (possibly hostile) server can make us buffer.
const maxServerMessage = 1 << 20

func (c *gorillaConn) Read() ([]byte, error) {
	mt, b, err := c.ws.ReadMessage()
	if err != nil {
		return nil, err
	}
	_ = c.ws.SetReadDeadline(time.Now().Add(c.readTimeout))
	if mt != websocket.TextMessage {
		return nil, errBinaryFromServer
	}
	return b, nil
}

// setReadTimeout changes the silence after which the server is presumed
// gone. Reader goroutine only (the ping handler runs in Read).
func (c *gorillaConn) setReadTimeout(d time.Duration) {
	c.readTimeout = d
	_ = c.ws.SetReadDeadline(time.Now().Add(d))
}

func (c *gorillaConn) Write(b []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	_ = c.ws.SetWriteDeadline(time.Now().Add(10 * time.Second))
	return c.ws.WriteMessage(websocket.TextMessage, b)
}

func (c *gorillaConn) Close() {
	c.closeOnce.Do(func() {
		_ = c.ws.WriteControl(websocket.CloseMessage,
			websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second))
		_ = c.ws.Close()
	})
}
