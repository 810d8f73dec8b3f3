package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"
	"golang.org/x/net/netutil"
)

// DNS forwarder defaults and bounds.
const (
	DefaultDNSTimeout     = 2 * time.Second
	DefaultDNSMaxInFlight = 256
	DefaultDNSMaxTCPConns = 64
	// DefaultDNSMaxInFlightPerClient keeps one guest from taking every slot:
	// a flooding VM gets SERVFAIL while the rest of the room resolves.
	DefaultDNSMaxInFlightPerClient = 32
	// maxUDPSize caps DNS over UDP at the DNS Flag Day 2020 size, both the
	// answers to guests (larger ones would be IP-fragmented on the way
	// through the mesh, whose MTU is small) and the buffer advertised
	// upstream (fragmented answers are unreliable and spoofable). Bigger
	// answers come over TCP: the TC bit tells the guest to retry.
	maxUDPSize = 1232
	// dnsAttempts bounds the upstreams tried for one query, so that a guest
	// gets SERVFAIL before its own resolver (5 s in glibc) gives up.
	dnsAttempts       = 2
	dnsServerTimeout  = 2 * time.Second // read/write deadline on client sockets
	dnsTCPIdle        = 8 * time.Second // RFC 7766 suggests seconds, not minutes
	dnsMaxTCPQueries  = 128             // per client connection
	dnsShutdownBudget = 5 * time.Second
)

// DNS failure reasons, as counted in DNSStats.Failures.
const (
	DNSFailMalformed = "malformed" // not a standard query
	DNSFailOverload  = "overload"  // MaxInFlight queries already being forwarded
	DNSFailTimeout   = "timeout"   // no upstream answered in time
	DNSFailUpstream  = "upstream"  // upstreams failed otherwise (refused connection, bad answer)
)

// DNSFailReasons lists the failure reasons.
var DNSFailReasons = []string{DNSFailMalformed, DNSFailOverload, DNSFailTimeout, DNSFailUpstream}

// DNSConfig configures a DNSForwarder.
type DNSConfig struct {
	// Listen is the address to serve on, normally the gateway's .1 port 53.
	// Required. Port 0 picks a port free for both UDP and TCP (tests).
	Listen netip.AddrPort
	// Interface, when set, binds the sockets to this interface
	// (SO_BINDTODEVICE): queries that reach Listen through any other
	// interface go unanswered, so the forwarder is no open resolver even if
	// another network routes to .1. Set it to the LAN interface.
	Interface string
	// Upstreams are the resolvers to forward to, tried in order; at most 8.
	// Default: the nameservers of ResolvConf, where a loopback stub (such as
	// systemd-resolved's 127.0.0.53) is kept only if it answers, and an
	// unreachable 127.0.0.53 is replaced by the resolvers listed in
	// /run/systemd/resolve/resolv.conf.
	Upstreams []netip.AddrPort
	// ResolvConf is read when Upstreams is empty; default DefaultResolvConf.
	ResolvConf string
	// Timeout bounds one upstream attempt; default DefaultDNSTimeout. A
	// query gets at most two attempts.
	Timeout time.Duration
	// MaxInFlight bounds concurrently forwarded queries; beyond it queries
	// are answered SERVFAIL at once (DNSFailOverload). Default
	// DefaultDNSMaxInFlight.
	MaxInFlight int
	// MaxInFlightPerClient bounds the queries of one client address within
	// MaxInFlight; default DefaultDNSMaxInFlightPerClient.
	MaxInFlightPerClient int
	// MaxTCPConns bounds open client TCP connections; default DefaultDNSMaxTCPConns.
	MaxTCPConns int
	// Logger default slog.Default().
	Logger *slog.Logger
	// PacketConn and Listener, when both are set, are served instead of
	// sockets bound on Listen (which then only names the address served):
	// a userspace network stack's own UDP socket and TCP listener on .1:53.
	// Interface must then be empty. The forwarder closes them on Close.
	PacketConn net.PacketConn
	Listener   net.Listener
}

// DNSStats counts the forwarder's work since it started.
type DNSStats struct {
	QueriesUDP uint64
	QueriesTCP uint64
	// Failures counts queries answered SERVFAIL/FORMERR/NOTIMP by reason (DNSFailReasons).
	Failures map[string]uint64
	// Truncated counts UDP answers cut to the client's size, with TC set.
	Truncated uint64
	// UpstreamTCPRetries counts truncated upstream answers retried over TCP.
	UpstreamTCPRetries uint64
}

// DNSForwarder answers the room's DNS queries on .1 by forwarding them to the
// host's resolvers. It keeps no cache. It is safe for concurrent use.
type DNSForwarder struct {
	log       *slog.Logger
	upstreams []netip.AddrPort
	timeout   time.Duration
	addr      netip.AddrPort
	// preferred is the index of the upstream that answered last: queries
	// start there, so a dead first resolver costs one timeout, not one per query.
	preferred atomic.Uint32

	slotsMu   sync.Mutex // guards inFlight and perClient
	inFlight  int
	perClient map[netip.Addr]int // only clients with queries in flight
	maxTotal  int
	maxClient int

	ctx    context.Context // cancelled by Close: aborts upstream exchanges
	cancel context.CancelFunc
	udp    *dns.Server
	tcp    *dns.Server
	wg     sync.WaitGroup

	queriesUDP, queriesTCP atomic.Uint64
	failures               [4]atomic.Uint64 // indexed like DNSFailReasons
	truncated              atomic.Uint64
	tcpRetries             atomic.Uint64

	closeOnce sync.Once
	closeErr  error
}

// NewDNSForwarder binds UDP and TCP sockets on cfg.Listen and serves until
// Close. ctx bounds the setup only (reading and probing resolvers).
func NewDNSForwarder(ctx context.Context, cfg DNSConfig) (*DNSForwarder, error) {
	if !cfg.Listen.Addr().IsValid() {
		return nil, fmt.Errorf("%w: Listen address is required", errDNSConfig)
	}
	if cfg.Interface != "" {
		if err := validIfName(cfg.Interface); err != nil {
			return nil, fmt.Errorf("%w: Interface: %w", errDNSConfig, err)
		}
	}
	if (cfg.PacketConn == nil) != (cfg.Listener == nil) {
		return nil, fmt.Errorf("%w: PacketConn and Listener go together", errDNSConfig)
	}
	if cfg.PacketConn != nil && cfg.Interface != "" {
		return nil, fmt.Errorf("%w: Interface binds sockets of our own; not with PacketConn", errDNSConfig)
	}
	if len(cfg.Upstreams) > maxUpstreams {
		return nil, fmt.Errorf("%w: %d upstreams, at most %d", errDNSConfig, len(cfg.Upstreams), maxUpstreams)
	}
	for _, u := range cfg.Upstreams {
		if !u.IsValid() || u.Port() == 0 {
			return nil, fmt.Errorf("%w: upstream %v needs an address and a port", errDNSConfig, u)
		}
		if u == cfg.Listen {
			return nil, fmt.Errorf("%w: upstream %v is the forwarder itself", errDNSConfig, u)
		}
	}
	if cfg.Timeout < 0 || cfg.MaxInFlight < 0 || cfg.MaxInFlightPerClient < 0 || cfg.MaxTCPConns < 0 {
		return nil, fmt.Errorf("%w: negative Timeout, MaxInFlight, MaxInFlightPerClient or MaxTCPConns", errDNSConfig)
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = DefaultDNSTimeout
	}
	if cfg.MaxInFlight == 0 {
		cfg.MaxInFlight = DefaultDNSMaxInFlight
	}
	if cfg.MaxInFlightPerClient == 0 {
		cfg.MaxInFlightPerClient = DefaultDNSMaxInFlightPerClient
	}
	if cfg.MaxTCPConns == 0 {
		cfg.MaxTCPConns = DefaultDNSMaxTCPConns
	}
	if cfg.ResolvConf == "" {
		cfg.ResolvConf = DefaultResolvConf
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	log := cfg.Logger.With("component", "dns")
	upstreams := cfg.Upstreams
	if len(upstreams) == 0 {
		var err error
		if upstreams, err = upstreamsFromResolvConf(ctx, cfg.ResolvConf, systemdResolvedUpstreams, 53, log); err != nil {
			return nil, err
		}
	}

	pc, ln := cfg.PacketConn, cfg.Listener
	if pc == nil {
		var err error
		if pc, ln, err = listenDNS(ctx, cfg.Listen, cfg.Interface); err != nil {
			return nil, err
		}
	}
	port := cfg.Listen.Port() // port 0 was resolved by the bind
	if a, ok := ln.Addr().(*net.TCPAddr); ok {
		port = uint16(a.Port)
	}
	d := &DNSForwarder{
		log:       log,
		upstreams: upstreams,
		timeout:   cfg.Timeout,
		perClient: make(map[netip.Addr]int),
		maxTotal:  cfg.MaxInFlight,
		maxClient: cfg.MaxInFlightPerClient,
		addr:      netip.AddrPortFrom(cfg.Listen.Addr(), port),
	}
	d.ctx, d.cancel = context.WithCancel(context.Background())
	handler := dns.HandlerFunc(d.serveDNS)
	d.udp = &dns.Server{PacketConn: pc, Handler: handler, ReadTimeout: dnsServerTimeout, WriteTimeout: dnsServerTimeout}
	d.tcp = &dns.Server{
		Listener:      netutil.LimitListener(ln, cfg.MaxTCPConns),
		Handler:       handler,
		ReadTimeout:   dnsServerTimeout,
		WriteTimeout:  dnsServerTimeout,
		IdleTimeout:   func() time.Duration { return dnsTCPIdle },
		MaxTCPQueries: dnsMaxTCPQueries,
	}
	if err := d.start(); err != nil {
		d.Close()
		return nil, err
	}
	log.Info("DNS forwarder listening", "addr", d.addr, "interface", cfg.Interface, "upstreams", upstreams)
	return d, nil
}

// listenDNS binds the UDP and TCP sockets on one port.
func listenDNS(ctx context.Context, addr netip.AddrPort, iface string) (net.PacketConn, net.Listener, error) {
	lc := net.ListenConfig{Control: bindToDevice(iface)}
	var lastErr error
	for range 10 { // port 0: the UDP port may be taken for TCP; try another
		pc, err := lc.ListenPacket(ctx, "udp", addr.String())
		if err != nil {
			return nil, nil, fmt.Errorf("gateway: DNS forwarder: %w", err)
		}
		port := pc.LocalAddr().(*net.UDPAddr).Port
		ln, err := lc.Listen(ctx, "tcp", netip.AddrPortFrom(addr.Addr(), uint16(port)).String())
		if err == nil {
			return pc, ln, nil
		}
		pc.Close()
		lastErr = err
		if addr.Port() != 0 {
			break
		}
	}
	return nil, nil, fmt.Errorf("gateway: DNS forwarder: %w", lastErr)
}

// start runs both servers and returns once both are accepting.
func (d *DNSForwarder) start() error {
	started := make(chan struct{}, 2)
	failed := make(chan error, 2)
	for _, srv := range []*dns.Server{d.udp, d.tcp} {
		srv.NotifyStartedFunc = func() { started <- struct{}{} }
		d.wg.Add(1)
		go func() {
			defer d.wg.Done()
			if err := srv.ActivateAndServe(); err != nil {
				failed <- err
			}
		}()
	}
	for range 2 {
		select {
		case <-started:
		case err := <-failed:
			return fmt.Errorf("gateway: DNS forwarder: %w", err)
		}
	}
	return nil
}

// Addr is the address the forwarder serves on.
func (d *DNSForwarder) Addr() netip.AddrPort { return d.addr }

// Upstreams are the resolvers queries go to, in order.
func (d *DNSForwarder) Upstreams() []netip.AddrPort {
	return append([]netip.AddrPort(nil), d.upstreams...)
}

// Stats returns the counters.
func (d *DNSForwarder) Stats() DNSStats {
	s := DNSStats{
		QueriesUDP:         d.queriesUDP.Load(),
		QueriesTCP:         d.queriesTCP.Load(),
		Failures:           make(map[string]uint64, len(DNSFailReasons)),
		Truncated:          d.truncated.Load(),
		UpstreamTCPRetries: d.tcpRetries.Load(),
	}
	for i, r := range DNSFailReasons {
		s.Failures[r] = d.failures[i].Load()
	}
	return s
}

// Close stops serving, aborts queries being forwarded and waits for every
// goroutine the forwarder started. Calling it again returns the first result.
func (d *DNSForwarder) Close() error {
	d.closeOnce.Do(func() {
		d.cancel()
		ctx, cancel := context.WithTimeout(context.Background(), dnsShutdownBudget)
		defer cancel()
		var errs []error
		for _, srv := range []*dns.Server{d.udp, d.tcp} {
			if err := srv.ShutdownContext(ctx); err != nil && !strings.Contains(err.Error(), "server not started") {
				errs = append(errs, err)
			}
		}
		d.wg.Wait()
		d.closeErr = errors.Join(errs...)
	})
	return d.closeErr
}

func (d *DNSForwarder) fail(reason string) {
	for i, r := range DNSFailReasons {
		if r == reason {
			d.failures[i].Add(1)
		}
	}
}

// serveDNS handles one client query.
func (d *DNSForwarder) serveDNS(w dns.ResponseWriter, req *dns.Msg) {
	_, isTCP := w.LocalAddr().(*net.TCPAddr)
	if isTCP {
		d.queriesTCP.Add(1)
	} else {
		d.queriesUDP.Add(1)
	}
	// miekg's default accept function already refused responses, updates and
	// multi-question messages; NOTIFY is what remains.
	if req.Opcode != dns.OpcodeQuery || len(req.Question) != 1 {
		d.fail(DNSFailMalformed)
		w.WriteMsg(new(dns.Msg).SetRcode(req, dns.RcodeNotImplemented))
		return
	}
	client := clientAddr(w.RemoteAddr())
	if !d.acquire(client) {
		d.fail(DNSFailOverload)
		w.WriteMsg(new(dns.Msg).SetRcode(req, dns.RcodeServerFailure))
		return
	}
	defer d.release(client)
	resp, err := d.forward(req)
	if err != nil {
		reason := DNSFailUpstream
		var ne net.Error
		if errors.Is(err, context.DeadlineExceeded) || errors.As(err, &ne) && ne.Timeout() {
			reason = DNSFailTimeout
		}
		d.fail(reason)
		d.log.Debug("forwarding failed", "name", req.Question[0].Name, "reason", reason, "err", err)
		w.WriteMsg(new(dns.Msg).SetRcode(req, dns.RcodeServerFailure))
		return
	}
	resp.Id = req.Id
	if !isTCP {
		size := dns.MinMsgSize
		if opt := req.IsEdns0(); opt != nil {
			size = max(size, min(int(opt.UDPSize()), maxUDPSize))
		}
		wasTruncated := resp.Truncated
		resp.Truncate(size)
		if resp.Truncated && !wasTruncated {
			d.truncated.Add(1)
		}
	}
	w.WriteMsg(resp)
}

// acquire takes a forwarding slot for client, unless the forwarder or the
// client is at its limit.
func (d *DNSForwarder) acquire(client netip.Addr) bool {
	d.slotsMu.Lock()
	defer d.slotsMu.Unlock()
	if d.inFlight >= d.maxTotal || d.perClient[client] >= d.maxClient {
		return false
	}
	d.inFlight++
	d.perClient[client]++
	return true
}

func (d *DNSForwarder) release(client netip.Addr) {
	d.slotsMu.Lock()
	defer d.slotsMu.Unlock()
	d.inFlight--
	if d.perClient[client]--; d.perClient[client] <= 0 {
		delete(d.perClient, client)
	}
}

func clientAddr(a net.Addr) netip.Addr {
	switch a := a.(type) {
	case *net.UDPAddr:
		return a.AddrPort().Addr().Unmap()
	case *net.TCPAddr:
		return a.AddrPort().Addr().Unmap()
	}
	return netip.Addr{}
}

// forward sends the query upstream with a fresh random ID, retrying a
// truncated UDP answer over TCP and a failed upstream on the next one,
// which then stays preferred.
func (d *DNSForwarder) forward(req *dns.Msg) (*dns.Msg, error) {
	q := req.Copy()
	q.Id = dns.Id()
	if opt := q.IsEdns0(); opt != nil && opt.UDPSize() > maxUDPSize {
		opt.SetUDPSize(maxUDPSize)
	}
	var lastErr error
	n := len(d.upstreams)
	start := int(d.preferred.Load())
	for i := range min(dnsAttempts, n) {
		idx := (start + i) % n
		up := d.upstreams[idx]
		resp, err := d.exchange("udp", q, up)
		if err == nil && resp.Truncated {
			d.tcpRetries.Add(1)
			resp, err = d.exchange("tcp", q, up)
		}
		if err == nil && !sameQuestion(q, resp) {
			err = errQuestionMismatch
		}
		if err == nil {
			if i > 0 {
				d.preferred.Store(uint32(idx))
			}
			return resp, nil
		}
		lastErr = fmt.Errorf("upstream %v: %w", up, err)
		if d.ctx.Err() != nil {
			break
		}
	}
	return nil, lastErr
}

// exchange does one query/answer with one upstream within d.timeout. Closing
// the forwarder closes the socket, so Close does not wait out the timeout.
func (d *DNSForwarder) exchange(network string, q *dns.Msg, up netip.AddrPort) (*dns.Msg, error) {
	ctx, cancel := context.WithTimeout(d.ctx, d.timeout)
	defer cancel()
	c := dns.Client{Net: network, Timeout: d.timeout}
	conn, err := c.DialContext(ctx, up.String())
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	resp, _, err := c.ExchangeWithConnContext(ctx, q, conn)
	if err != nil && ctx.Err() != nil {
		return nil, fmt.Errorf("%w: %w", ctx.Err(), err)
	}
	return resp, err
}

func sameQuestion(q, resp *dns.Msg) bool {
	if len(resp.Question) != 1 {
		return false
	}
	a, b := q.Question[0], resp.Question[0]
	return a.Qtype == b.Qtype && a.Qclass == b.Qclass && strings.EqualFold(a.Name, b.Name)
}
