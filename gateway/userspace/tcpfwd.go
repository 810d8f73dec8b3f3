package userspace

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/waiter"
)

// Defaults of the TCP forwarder's bounds.
const (
	// DefaultConnectTimeout bounds the host's connect for one guest
	// connection; the guest's handshake waits for it.
	DefaultConnectTimeout = 10 * time.Second
	// DefaultMaxPendingPerGuest bounds one guest's connections waiting for
	// the host's connect.
	DefaultMaxPendingPerGuest = 32
	// DefaultMaxPending bounds all guests' connections waiting for the
	// host's connect together.
	DefaultMaxPending = 512
)

// tcpForwarder relays guest TCP connections to the host. For each new
// connection (a SYN no endpoint of the stack took) it dials the destination
// from the host first and only then completes the guest's handshake, so a
// guest sees a refused or unanswered destination as a reset, as it would
// through NAT. Connects waiting for the host are bounded per guest and in
// all, so a guest dialling unanswering addresses holds at most its own
// share of them, each for at most the connect timeout, and other guests'
// connections go on. Every refusal sends a reset and is counted.
//
// The egress policy is not here: it is applied to frames before they enter
// the stack (inspect), so a SYN the policy refuses never reaches this.
type tcpForwarder struct {
	g         *Gateway
	timeout   time.Duration
	perGuest  int
	maxAll    int
	translate map[netip.Addr]netip.Addr // tests only; read-only after New

	ctx context.Context // cancelled by Close: ends dials and relays
	wg  sync.WaitGroup  // handlers and relays; Add only under mu while !closed

	mu      sync.Mutex // guards closed, pending, total and flows
	closed  bool
	pending map[netip.Addr]int
	total   int // sum of pending
	flows   int // connections relayed (handshake done) plus pending
}

// newTCPForwarder returns the stack's TCP handler. The gVisor forwarder's
// own in-flight bound (requests it has started a handler for and that have
// not completed) is set above ours, so that our handler decides and
// answers with a reset; beyond it the SYN is ignored, the guest retries.
func newTCPForwarder(ctx context.Context, g *Gateway, cfg Config) (*tcpForwarder, *tcp.Forwarder) {
	f := &tcpForwarder{
		g: g, timeout: cfg.ConnectTimeout, perGuest: cfg.MaxPendingPerGuest, maxAll: cfg.MaxPending,
		translate: cfg.translate, ctx: ctx, pending: make(map[netip.Addr]int),
	}
	return f, tcp.NewForwarder(g.stack, 0, 2*cfg.MaxPending, f.handle)
}

// full reports whether a new connection would exceed MaxFlows.
func (f *tcpForwarder) full() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.flows >= f.g.maxFlows
}

// pendingConnects is the number of connects waiting for the host.
func (f *tcpForwarder) pendingConnects() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.total
}

// reserve takes a pending slot for guest, or names why not.
func (f *tcpForwarder) reserve(guest netip.Addr) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	switch {
	case f.flows >= f.g.maxFlows:
		return DropFlows
	case f.total >= f.maxAll:
		return DropPending
	case f.pending[guest] >= f.perGuest:
		return DropPendingGuest
	}
	f.pending[guest]++
	f.total++
	f.flows++
	return ""
}

// connected moves guest's slot from pending to relayed, or releases it
// (ok false) when the connection ended before relaying.
func (f *tcpForwarder) connected(guest netip.Addr, ok bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.pending[guest]--; f.pending[guest] <= 0 {
		delete(f.pending, guest)
	}
	f.total--
	if !ok {
		f.flows--
	}
}

func (f *tcpForwarder) relayDone() {
	f.mu.Lock()
	f.flows--
	f.mu.Unlock()
}

// handle runs in its own goroutine for each new connection request (the
// gVisor forwarder starts it); r.Complete must be called exactly once.
func (f *tcpForwarder) handle(r *tcp.ForwarderRequest) {
	if !f.enter() {
		r.Complete(true)
		return
	}
	defer f.wg.Done()
	id := r.ID()
	guest := netip.AddrFrom4(id.RemoteAddress.As4())
	if reason := f.reserve(guest); reason != "" {
		f.g.drop(reason)
		r.Complete(true)
		return
	}
	dst := netip.AddrFrom4(id.LocalAddress.As4())
	if to, ok := f.translate[dst]; ok {
		dst = to
	}
	ctx, cancel := context.WithTimeout(f.ctx, f.timeout)
	d := net.Dialer{}
	c, err := d.DialContext(ctx, "tcp4", net.JoinHostPort(dst.String(), strconv.Itoa(int(id.LocalPort))))
	cancel()
	// The dial reports the context's deadline as an i/o timeout (it may
	// fire just before the context's own timer); Close cancels instead.
	var ne net.Error
	timedOut := errors.As(err, &ne) && ne.Timeout()
	if err != nil {
		f.connected(guest, false)
		f.g.log.Debug("guest TCP connect failed", "guest", guest, "dst", dst, "port", id.LocalPort, "err", err)
		if timedOut {
			f.g.drop(DropConnectTimeout)
		} else {
			f.g.drop(DropConnectFailed)
		}
		r.Complete(true)
		return
	}
	host := c.(*net.TCPConn)
	var wq waiter.Queue
	ep, terr := r.CreateEndpoint(&wq)
	r.Complete(false)
	if terr != nil { // the guest gave up or reset meanwhile
		f.connected(guest, false)
		host.Close()
		return
	}
	f.connected(guest, true)
	if !f.enter() {
		f.relayDone()
		ep.Close()
		host.Close()
		return
	}
	go func() {
		defer f.wg.Done()
		defer f.relayDone()
		f.relay(gonet.NewTCPConn(&wq, ep), host)
	}()
}

// relay copies both ways until both have ended, passing each side's end of
// stream on as a half close; Close of the gateway ends it at once.
func (f *tcpForwarder) relay(guest *gonet.TCPConn, host *net.TCPConn) {
	stop := context.AfterFunc(f.ctx, func() { guest.Close(); host.Close() })
	defer stop()
	done := make(chan struct{})
	go func() {
		defer close(done)
		if _, err := io.Copy(host, guest); err != nil {
			host.SetLinger(0) // the guest's side broke: reset the host's
			host.Close()
			guest.Close()
			return
		}
		host.CloseWrite()
	}()
	// Toward the guest through a larger buffer than io.Copy's 32 KiB: each
	// write to the stack leaves as (at most) one super-frame, and fewer,
	// larger frames cost the mesh less.
	buf := make([]byte, downBuffer)
	if _, err := io.CopyBuffer(guest, readerOnly{host}, buf); err != nil {
		guest.Close()
		host.Close()
	} else {
		guest.CloseWrite()
	}
	<-done
	guest.Close()
	host.Close()
}

// enter counts a handler or relay in, false once wait has begun.
func (f *tcpForwarder) enter() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return false
	}
	f.wg.Add(1)
	return true
}

// downBuffer is the relay's buffer toward the guest.
const downBuffer = 128 << 10

// readerOnly hides the host connection's WriteTo, which would copy through
// its own 32 KiB buffer.
type readerOnly struct{ io.Reader }

// wait waits for handlers and relays to end; call after the context is
// cancelled and the stack closed.
func (f *tcpForwarder) wait() {
	f.mu.Lock()
	f.closed = true
	f.mu.Unlock()
	f.wg.Wait()
}
