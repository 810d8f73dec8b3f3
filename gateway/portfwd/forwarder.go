package portfwd

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Defaults and bounds of Config.
const (
	DefaultMaxConns    = 256
	DefaultMaxSessions = 256
	DefaultUDPIdle     = 60 * time.Second
	DefaultDialTimeout = 10 * time.Second
	// MaxSpecs bounds the forwards of one Forwarder.
	MaxSpecs = 64
	// bufSize is the copy buffer of a TCP direction and the datagram buffer
	// of UDP: the largest IPv4 datagram fits.
	bufSize = 64 << 10
	// refusalLogEvery is the least time between two log lines about refused
	// connections or failed dials of one forward; the lines in between are
	// counted into the next one.
	refusalLogEvery = 10 * time.Second
)

// DialFunc opens a connection to a guest: network is "tcp" or "udp" and
// address a guest's IPv4:PORT. It must honour ctx's deadline and
// cancellation. The returned conn must unblock Read and Write with an error
// once closed, and for TCP should offer CloseWrite() error (as *net.TCPConn
// and gVisor's gonet.TCPConn do) so that half-closes reach the guest;
// without it the first EOF closes both directions. A UDP conn is
// "connected": Write sends one datagram to the guest and Read returns one
// datagram from it, and SetReadDeadline must work (idle sessions end by it).
// UDP dials happen on the listener's read loop, so they should not wait on
// the network (a kernel or gVisor UDP dial only binds a socket).
type DialFunc func(ctx context.Context, network, address string) (net.Conn, error)

// Config tunes a Forwarder; the zero value takes the defaults.
type Config struct {
	// Logger gets one line per forward started and stopped, rate-limited
	// lines about refusals and dial failures, and per-connection lines at
	// debug level. Default: discard.
	Logger *slog.Logger
	// MaxConns bounds the open TCP connections of each forward; one more
	// is closed at once and counted as refused. Default DefaultMaxConns.
	MaxConns int
	// MaxSessions bounds the UDP sessions (client addresses) of each
	// forward; datagrams of one more client are dropped and counted as
	// refused. Default DefaultMaxSessions.
	MaxSessions int
	// UDPIdle ends a UDP session that carried no datagram either way for
	// this long. Default DefaultUDPIdle.
	UDPIdle time.Duration
	// DialTimeout bounds one dial to a guest. Default DefaultDialTimeout.
	DialTimeout time.Duration
	// Registerer, when set, gets the forwards' counters as
	// peerlan_gateway_forward_* metrics (see the package doc).
	Registerer prometheus.Registerer
}

func (c *Config) setDefaults() error {
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	for _, v := range []struct {
		name string
		p    *int
		def  int
	}{{"MaxConns", &c.MaxConns, DefaultMaxConns}, {"MaxSessions", &c.MaxSessions, DefaultMaxSessions}} {
		if *v.p < 0 {
			return fmt.Errorf("portfwd: %s %d is negative", v.name, *v.p)
		}
		if *v.p == 0 {
			*v.p = v.def
		}
	}
	for _, v := range []struct {
		name string
		p    *time.Duration
		def  time.Duration
	}{{"UDPIdle", &c.UDPIdle, DefaultUDPIdle}, {"DialTimeout", &c.DialTimeout, DefaultDialTimeout}} {
		if *v.p < 0 {
			return fmt.Errorf("portfwd: %s %v is negative", v.name, *v.p)
		}
		if *v.p == 0 {
			*v.p = v.def
		}
	}
	return nil
}

// Errors of a Forwarder's life cycle.
var (
	ErrStarted = errors.New("portfwd: forwarder already started")
	ErrClosed  = errors.New("portfwd: forwarder closed")
)

// Forwarder runs a set of forwards. Its life: New, Start once, Close once
// (Close without Start is fine; Start after Close fails with ErrClosed).
type Forwarder struct {
	cfg   Config
	dial  DialFunc
	fwds  []*forward
	ctx   context.Context // cancelled by Close: aborts dials
	stop  context.CancelFunc
	wg    sync.WaitGroup // every goroutine of every forward
	descs metricDescs

	mu      sync.Mutex // guards the state below
	started bool
	closed  bool
}

// forward is one Spec's listener and counters.
type forward struct {
	spec Spec
	f    *Forwarder
	log  *slog.Logger

	ln net.Listener // TCP, after Start
	pc *net.UDPConn // UDP, after Start
	mu sync.Mutex   // guards conns and sessions
	// conns holds every open TCP connection (both ends) so that Close can
	// end them; sessions the UDP sessions by client address.
	conns    map[net.Conn]struct{}
	sessions map[netip.AddrPort]*udpSession
	closing  bool // set by Close under mu: nothing new is tracked

	active                          atomic.Int64
	accepted, refused, dialFailures atomic.Uint64
	bytesToGuest, bytesFromGuest    atomic.Uint64
	refusalLog, dialLog             limitedLog
}

// New checks specs and cfg and returns a Forwarder that dials guests with
// dial. It opens nothing until Start.
func New(specs []Spec, dial DialFunc, cfg Config) (*Forwarder, error) {
	if dial == nil {
		return nil, errors.New("portfwd: no DialFunc")
	}
	if len(specs) > MaxSpecs {
		return nil, fmt.Errorf("portfwd: %d forwards, at most %d", len(specs), MaxSpecs)
	}
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	f := &Forwarder{cfg: cfg, dial: dial, descs: newMetricDescs()}
	f.ctx, f.stop = context.WithCancel(context.Background())
	seen := map[string]bool{}
	for _, s := range specs {
		if err := s.validate(); err != nil {
			return nil, err
		}
		key := s.Network + " " + s.listenString()
		if s.Listen.Port() != 0 && seen[key] {
			return nil, fmt.Errorf("%w %v: %s %s is forwarded twice", ErrBadSpec, s, s.Network, s.listenString())
		}
		seen[key] = true
		f.fwds = append(f.fwds, &forward{
			spec: s, f: f, log: cfg.Logger.With("forward", s.String()),
			conns: map[net.Conn]struct{}{}, sessions: map[netip.AddrPort]*udpSession{},
		})
	}
	if cfg.Registerer != nil {
		if err := cfg.Registerer.Register(f); err != nil {
			return nil, fmt.Errorf("portfwd: registering metrics: %w", err)
		}
	}
	return f, nil
}

// Start binds every forward's listener and starts serving. It binds all or
// none: when one bind fails the others are closed again and the error names
// the forward.
func (f *Forwarder) Start() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	switch {
	case f.closed:
		return ErrClosed
	case f.started:
		return ErrStarted
	}
	for i, fw := range f.fwds {
		if err := fw.listen(); err != nil {
			for _, done := range f.fwds[:i] {
				done.closeListener()
			}
			return fmt.Errorf("portfwd: forward %v: %w", fw.spec, err)
		}
	}
	f.started = true
	for _, fw := range f.fwds {
		f.wg.Add(1)
		if fw.spec.Network == TCP {
			go fw.serveTCP()
		} else {
			go fw.serveUDP()
		}
		fw.log.Info(fmt.Sprintf("forwarding %s %v -> %v", fw.spec.Network, fw.addr(), fw.spec.Guest))
	}
	return nil
}

// listen binds the forward's socket.
func (fw *forward) listen() error {
	var err error
	if fw.spec.Network == TCP {
		fw.ln, err = net.Listen("tcp", fw.spec.listenString())
		return err
	}
	pc, err := net.ListenPacket("udp", fw.spec.listenString())
	if err != nil {
		return err
	}
	fw.pc = pc.(*net.UDPConn)
	return nil
}

// addr is the bound address; nil before Start.
func (fw *forward) addr() net.Addr {
	switch {
	case fw.ln != nil:
		return fw.ln.Addr()
	case fw.pc != nil:
		return fw.pc.LocalAddr()
	}
	return nil
}

func (fw *forward) closeListener() {
	if fw.ln != nil {
		fw.ln.Close()
	}
	if fw.pc != nil {
		fw.pc.Close()
	}
}

// Addrs returns the bound address of each forward, in the order of the
// specs (nil entries before Start): the port a Spec with port 0 got.
func (f *Forwarder) Addrs() []net.Addr {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]net.Addr, len(f.fwds))
	if f.started {
		for i, fw := range f.fwds {
			out[i] = fw.addr()
		}
	}
	return out
}

// Close stops every listener, ends every open connection and session, and
// waits for the forwards' goroutines. It is safe to call more than once.
func (f *Forwarder) Close() error {
	f.mu.Lock()
	if f.closed {
		f.mu.Unlock()
		return nil
	}
	f.closed = true
	started := f.started
	f.mu.Unlock()
	f.stop()
	if started {
		for _, fw := range f.fwds {
			fw.closeListener()
			fw.closeAll()
		}
	}
	f.wg.Wait()
	if f.cfg.Registerer != nil {
		f.cfg.Registerer.Unregister(f)
	}
	if started {
		for _, fw := range f.fwds {
			s := fw.stats()
			fw.log.Info("forward stopped", "accepted", s.Accepted, "refused", s.Refused,
				"dial_failures", s.DialFailures, "bytes_to_guest", s.BytesToGuest, "bytes_from_guest", s.BytesFromGuest)
		}
	}
	return nil
}

// closeAll ends every tracked connection and session.
func (fw *forward) closeAll() {
	fw.mu.Lock()
	fw.closing = true
	conns := fw.conns
	fw.conns = nil
	sessions := fw.sessions
	fw.sessions = nil
	fw.mu.Unlock()
	for c := range conns {
		c.Close()
	}
	for _, s := range sessions {
		s.guest.Close()
	}
}

// track adds c to the conns Close ends; false when Close has begun (the
// caller closes c itself).
func (fw *forward) track(c net.Conn) bool {
	fw.mu.Lock()
	defer fw.mu.Unlock()
	if fw.closing {
		return false
	}
	fw.conns[c] = struct{}{}
	return true
}

func (fw *forward) untrack(c net.Conn) {
	fw.mu.Lock()
	defer fw.mu.Unlock()
	delete(fw.conns, c) // a nil map after closeAll: a no-op
}

// Stats are one forward's counters.
type Stats struct {
	Spec Spec
	// Addr is the bound address (nil before Start).
	Addr net.Addr
	// Active is the number of open TCP connections or UDP sessions.
	Active int
	// Accepted counts TCP connections accepted or UDP sessions opened,
	// Refused those turned away at the limit (for UDP: datagrams from a
	// client without a session), DialFailures the dials to the guest that
	// failed.
	Accepted, Refused, DialFailures uint64
	// BytesToGuest and BytesFromGuest count payload bytes each way.
	BytesToGuest, BytesFromGuest uint64
}

// Stats returns each forward's counters, in the order of the specs.
func (f *Forwarder) Stats() []Stats {
	out := make([]Stats, len(f.fwds))
	for i, fw := range f.fwds {
		out[i] = fw.stats()
	}
	return out
}

func (fw *forward) stats() Stats {
	return Stats{
		Spec: fw.spec, Addr: fw.f.addrOf(fw), Active: int(fw.active.Load()),
		Accepted: fw.accepted.Load(), Refused: fw.refused.Load(), DialFailures: fw.dialFailures.Load(),
		BytesToGuest: fw.bytesToGuest.Load(), BytesFromGuest: fw.bytesFromGuest.Load(),
	}
}

func (f *Forwarder) addrOf(fw *forward) net.Addr {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.started {
		return nil
	}
	return fw.addr()
}

// dialGuest dials the forward's guest within the dial timeout, counting
// and logging (rate-limited) a failure.
func (fw *forward) dialGuest(client string) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(fw.f.ctx, fw.f.cfg.DialTimeout)
	defer cancel()
	c, err := fw.f.dial(ctx, fw.spec.Network, fw.spec.Guest.String())
	if err != nil {
		if fw.f.ctx.Err() != nil {
			return nil, err // closing: not the guest's fault
		}
		fw.dialFailures.Add(1)
		fw.dialLog.log(fw.log, "cannot reach the guest", "client", client, "err", err)
		return nil, err
	}
	return c, nil
}

// refuse counts and logs (rate-limited) a client turned away at the limit.
func (fw *forward) refuse(client string, limit int) {
	fw.refused.Add(1)
	fw.refusalLog.log(fw.log, "refused a client: the forward is at its limit", "client", client, "limit", limit)
}

// limitedLog writes at most one warning per refusalLogEvery and counts the
// ones it held back into the next.
type limitedLog struct {
	mu         sync.Mutex
	last       time.Time
	suppressed uint64
}

func (l *limitedLog) log(log *slog.Logger, msg string, args ...any) {
	l.mu.Lock()
	now := time.Now()
	if !l.last.IsZero() && now.Sub(l.last) < refusalLogEvery {
		l.suppressed++
		l.mu.Unlock()
		return
	}
	l.last = now
	n := l.suppressed
	l.suppressed = 0
	l.mu.Unlock()
	log.Warn(msg, append(args, "more_since_last_line", n)...)
}
