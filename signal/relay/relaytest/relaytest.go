// Package relaytest holds helpers for tests and benchmarks of TURN relays:
// a UDP echo peer, a pion/turn client allocation, a windowed throughput pump,
// and Debian's coturn turnserver started as a reference relay on loopback.
package relaytest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pion/stun/v3"
	"github.com/pion/turn/v4"
)

// UDPEcho starts a UDP server on addr that answers every datagram with the
// same bytes until the test ends.
func UDPEcho(tb testing.TB, addr string) *net.UDPAddr {
	tb.Helper()
	pc, err := net.ListenPacket("udp4", addr)
	if err != nil {
		tb.Fatal(err)
	}
	echo(tb, pc)
	return pc.LocalAddr().(*net.UDPAddr) //nolint:forcetypeassert // a udp4 listener
}

// RelayedEcho allocates on server and answers every datagram arriving at
// the relayed address with the same bytes until the test ends. It permits
// peer first, since nothing reaches a relayed address without a permission
// (RFC 8656), and returns the relayed address.
func RelayedEcho(tb testing.TB, server, username, password string, peer net.Addr) net.Addr {
	tb.Helper()
	pc := Allocate(tb, server, username, password)
	if _, err := pc.WriteTo([]byte("permit"), peer); err != nil {
		tb.Fatal(err)
	}
	echo(tb, pc)
	return pc.LocalAddr()
}

// echo answers pc's datagrams until pc is closed or the test ends.
func echo(tb testing.TB, pc net.PacketConn) {
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		buf := make([]byte, 65536)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			_, _ = pc.WriteTo(buf[:n], from)
		}
	}()
	tb.Cleanup(func() { _ = pc.Close(); wg.Wait() })
}

// Allocate connects a pion/turn client over UDP from 127.0.0.1 to server
// and returns its relayed conn; everything is closed when the test ends.
func Allocate(tb testing.TB, server, username, password string) net.PacketConn {
	tb.Helper()
	conn, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	client, err := turn.NewClient(&turn.ClientConfig{
		STUNServerAddr: server,
		TURNServerAddr: server,
		Conn:           conn,
		Username:       username,
		Password:       password,
	})
	if err != nil {
		_ = conn.Close()
		tb.Fatal(err)
	}
	if err := client.Listen(); err != nil {
		client.Close()
		_ = conn.Close()
		tb.Fatal(err)
	}
	relayConn, err := client.Allocate()
	if err != nil {
		client.Close()
		_ = conn.Close()
		tb.Fatalf("allocate on %s: %v", server, err)
	}
	tb.Cleanup(func() {
		_ = relayConn.Close()
		client.Close()
		_ = conn.Close()
	})
	return relayConn
}

// Result is what Pump measured.
type Result struct {
	Sent, Received int
	Size           int
	Elapsed        time.Duration // first send to last reply
}

// MBps is the echoed payload rate in megabytes (10^6) per second.
func (r Result) MBps() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.Received) * float64(r.Size) / r.Elapsed.Seconds() / 1e6
}

// Loss is the fraction of datagrams that did not come back.
func (r Result) Loss() float64 {
	if r.Sent == 0 {
		return 0
	}
	return 1 - float64(r.Received)/float64(r.Sent)
}

var errNoEcho = errors.New("relaytest: the echo peer never answered through the relay")

// Pump sends count datagrams of size bytes through relayConn to an echo
// peer, keeping at most window of them unanswered, and counts the replies.
// The window keeps the measurement about the relay's forwarding rate rather
// than about socket buffer overflow. A lost datagram costs a stall of
// 100 ms, after which the window is re-armed.
func Pump(relayConn net.PacketConn, peer net.Addr, count, size, window int) (Result, error) {
	if err := warmUp(relayConn, peer); err != nil {
		return Result{}, err
	}
	payload := make([]byte, size)
	credits := make(chan struct{}, window)
	for range window {
		credits <- struct{}{}
	}
	var (
		received atomic.Int64
		sentAll  atomic.Bool
		last     atomic.Int64 // unix nanos of the last reply
		wg       sync.WaitGroup
	)
	start := time.Now()
	wg.Add(1)
	go func() {
		defer wg.Done()
		buf := make([]byte, size+64)
		for received.Load() < int64(count) {
			_ = relayConn.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
			_, _, err := relayConn.ReadFrom(buf)
			if err != nil {
				var ne net.Error
				if !errors.As(err, &ne) || !ne.Timeout() || sentAll.Load() {
					return
				}
				for range window { // lost datagrams took credits with them
					select {
					case credits <- struct{}{}:
					default:
					}
				}
				continue
			}
			received.Add(1)
			last.Store(time.Now().UnixNano())
			select {
			case credits <- struct{}{}:
			default:
			}
		}
	}()
	var sendErr error
	for range count {
		<-credits
		if _, err := relayConn.WriteTo(payload, peer); err != nil {
			sendErr = err
			break
		}
	}
	sentAll.Store(true)
	wg.Wait()
	_ = relayConn.SetReadDeadline(time.Time{})
	r := Result{Sent: count, Received: int(received.Load()), Size: size}
	if l := last.Load(); l != 0 {
		r.Elapsed = time.Unix(0, l).Sub(start)
	}
	return r, sendErr
}

// warmUp creates the permission (and lets the channel bind) before timing.
func warmUp(relayConn net.PacketConn, peer net.Addr) error {
	buf := make([]byte, 64)
	for range 50 {
		if _, err := relayConn.WriteTo([]byte("warm-up"), peer); err != nil {
			return err
		}
		_ = relayConn.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		if n, _, err := relayConn.ReadFrom(buf); err == nil && bytes.Equal(buf[:n], []byte("warm-up")) {
			time.Sleep(50 * time.Millisecond) // the client binds a channel meanwhile
			// Drain echoes of retries.
			for {
				_ = relayConn.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
				if _, _, err := relayConn.ReadFrom(buf); err != nil {
					break
				}
			}
			_ = relayConn.SetReadDeadline(time.Time{})
			return nil
		}
	}
	return errNoEcho
}

// Coturn is a coturn turnserver running on loopback with TURN REST
// authentication (use-auth-secret), UDP and TCP listeners and loopback
// peers allowed.
type Coturn struct {
	Addr string // host:port of the UDP and TCP listeners
	cmd  *exec.Cmd
	out  *syncBuffer
}

// StartCoturn starts Debian's turnserver with secret and realm, relaying
// from ports [minPort, maxPort] on 127.0.0.1. It skips the test when
// turnserver is not installed (Debian package coturn).
func StartCoturn(tb testing.TB, secret []byte, realm string, minPort, maxPort int) *Coturn {
	tb.Helper()
	bin, err := exec.LookPath("turnserver")
	if err != nil {
		tb.Skip("needs turnserver (Debian package coturn)")
	}
	port := freePort(tb)
	dir := tb.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	c := &Coturn{Addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), out: &syncBuffer{}}
	c.cmd = exec.CommandContext(ctx, bin, "-n",
		"--listening-ip=127.0.0.1", "--relay-ip=127.0.0.1", "--listening-port="+strconv.Itoa(port),
		"--min-port="+strconv.Itoa(minPort), "--max-port="+strconv.Itoa(maxPort),
		"--use-auth-secret", "--static-auth-secret="+string(secret), "--realm="+realm,
		"--allow-loopback-peers", "--no-tls", "--no-dtls", "--no-cli", "--no-tcp-relay",
		"--userdb="+filepath.Join(dir, "turndb"), "--pidfile="+filepath.Join(dir, "turnserver.pid"),
		"--log-file=stdout", "--simple-log", "--no-software-attribute",
	)
	c.cmd.Stdout, c.cmd.Stderr = c.out, c.out
	c.cmd.Dir = dir
	if err := c.cmd.Start(); err != nil {
		cancel()
		tb.Fatalf("starting turnserver: %v", err)
	}
	tb.Cleanup(func() {
		cancel()
		_ = c.cmd.Wait()
	})
	if err := waitSTUN(c.Addr, 10*time.Second); err != nil {
		tb.Fatalf("turnserver did not answer on %s: %v\n%s", c.Addr, err, c.out.String())
	}
	return c
}

// Pid is turnserver's process id (for CPU accounting in benchmarks).
func (c *Coturn) Pid() int { return c.cmd.Process.Pid }

// Output returns what turnserver logged so far.
func (c *Coturn) Output() string { return c.out.String() }

func freePort(tb testing.TB) int {
	tb.Helper()
	for range 20 {
		l, err := net.Listen("tcp4", "127.0.0.1:0")
		if err != nil {
			tb.Fatal(err)
		}
		port := l.Addr().(*net.TCPAddr).Port //nolint:forcetypeassert // a tcp4 listener
		_ = l.Close()
		if pc, err := net.ListenPacket("udp4", net.JoinHostPort("127.0.0.1", strconv.Itoa(port))); err == nil {
			_ = pc.Close()
			return port
		}
	}
	tb.Fatal("no free port pair on 127.0.0.1")
	return 0
}

// waitSTUN polls addr with STUN Binding requests until one is answered.
func waitSTUN(addr string, within time.Duration) error {
	conn, err := net.Dial("udp4", addr)
	if err != nil {
		return err
	}
	defer conn.Close()
	buf := make([]byte, 512)
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		msg := stun.MustBuild(stun.TransactionID, stun.BindingRequest)
		if _, err := conn.Write(msg.Raw); err != nil {
			time.Sleep(50 * time.Millisecond) // ECONNREFUSED until it listens
			continue
		}
		_ = conn.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		if n, err := conn.Read(buf); err == nil {
			res := &stun.Message{Raw: buf[:n]}
			if res.Decode() == nil && res.Type == stun.BindingSuccess {
				return nil
			}
		}
	}
	return fmt.Errorf("no STUN answer within %v", within)
}

type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.buf.Len() > 1<<20 { // bound what a chatty server can pile up
		return len(p), nil
	}
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
