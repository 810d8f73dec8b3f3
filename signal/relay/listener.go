package relay

import (
	"crypto/tls"
	"errors"
	"net"
	"sync"
	"syscall"
	"time"
)

// connListener wraps a TCP listener (and optionally TLS) for pion/turn,
// whose accept loop gives up on the first Accept error and which never
// closes or times out the connections it accepted. It
//   - blocks Accept while MaxConns connections are open,
//   - retries transient Accept errors (EMFILE, ECONNABORTED, timeouts),
//   - gives each connection HandshakeTimeout to finish TLS and send its
//     first bytes, then closes it after ConnIdleTimeout without input,
//   - bounds every write by connWriteTimeout,
//   - closes all its connections on Close.
type connListener struct {
	net.Listener
	tls       *tls.Config
	handshake time.Duration
	idle      time.Duration
	slots     chan struct{} // one token per open connection

	done      chan struct{}
	closeOnce sync.Once

	mu    sync.Mutex
	conns map[*limitedConn]struct{} // guarded by mu
}

func newConnListener(l net.Listener, tlsConfig *tls.Config, cfg *Config) *connListener {
	return &connListener{
		Listener:  l,
		tls:       tlsConfig,
		handshake: cfg.HandshakeTimeout,
		idle:      cfg.ConnIdleTimeout,
		slots:     make(chan struct{}, cfg.MaxConns),
		done:      make(chan struct{}),
		conns:     make(map[*limitedConn]struct{}),
	}
}

const maxAcceptBackoff = time.Second

// Accept implements net.Listener.
func (l *connListener) Accept() (net.Conn, error) {
	select {
	case l.slots <- struct{}{}:
	case <-l.done:
		return nil, net.ErrClosed
	}
	backoff := 5 * time.Millisecond
	for {
		c, err := l.Listener.Accept()
		if err == nil {
			return l.track(c), nil
		}
		select {
		case <-l.done:
			<-l.slots
			return nil, net.ErrClosed
		default:
		}
		if !transientAcceptError(err) {
			<-l.slots
			return nil, err
		}
		select {
		case <-time.After(backoff):
		case <-l.done:
			<-l.slots
			return nil, net.ErrClosed
		}
		backoff = min(2*backoff, maxAcceptBackoff)
	}
}

func transientAcceptError(err error) bool {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return true
	}
	return errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) ||
		errors.Is(err, syscall.ECONNABORTED) || errors.Is(err, syscall.ENOBUFS) ||
		errors.Is(err, syscall.ENOMEM)
}

func (l *connListener) track(c net.Conn) net.Conn {
	if l.tls != nil {
		c = tls.Server(c, l.tls)
	}
	lc := &limitedConn{Conn: c, l: l}
	_ = c.SetReadDeadline(time.Now().Add(l.handshake))
	l.mu.Lock()
	l.conns[lc] = struct{}{}
	l.mu.Unlock()
	return lc
}

// Close implements net.Listener and closes every accepted connection.
func (l *connListener) Close() error {
	var err error
	l.closeOnce.Do(func() {
		close(l.done)
		err = l.Listener.Close()
		l.mu.Lock()
		conns := make([]*limitedConn, 0, len(l.conns))
		for c := range l.conns {
			conns = append(conns, c)
		}
		l.mu.Unlock()
		for _, c := range conns {
			_ = c.Close()
		}
	})
	return err
}

type limitedConn struct {
	net.Conn
	l         *connListener
	closeOnce sync.Once
}

func (c *limitedConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 {
		_ = c.Conn.SetReadDeadline(time.Now().Add(c.l.idle))
	}
	return n, err
}

func (c *limitedConn) Write(p []byte) (int, error) {
	_ = c.Conn.SetWriteDeadline(time.Now().Add(connWriteTimeout))
	return c.Conn.Write(p)
}

// Close closes the connection. The first Close reports success even when
// TLS could not send its close_notify to a vanished client: the socket is
// closed either way, and pion/turn logs any other result as an error.
func (c *limitedConn) Close() error {
	err := net.ErrClosed
	c.closeOnce.Do(func() {
		err = nil
		_ = c.Conn.Close()
		c.l.mu.Lock()
		delete(c.l.conns, c)
		c.l.mu.Unlock()
		<-c.l.slots
	})
	return err
}
