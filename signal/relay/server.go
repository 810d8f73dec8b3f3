package relay

import (
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/peerlan/peerlan/internal/sockbuf"
	"github.com/pion/turn/v4"
)

// pendingTTL is how long a quota slot granted to an Allocate stays reserved
// while pion creates the allocation (which it does right after asking).
const pendingTTL = 5 * time.Second

// Server is a TURN relay: pion/turn with REST-secret authentication,
// per-user allocation quotas, no relaying into private address space, and
// metrics. It serves until Close.
type Server struct {
	cfg     Config
	log     *slog.Logger
	metrics *metrics
	ports   *relayPorts
	allow   []netip.Prefix
	turn    *turn.Server

	udp            []net.PacketConn
	tcp, tlsListen []*connListener

	closing   atomic.Bool
	closeOnce sync.Once
	closeErr  error

	mu      sync.Mutex
	users   map[string]*userState   // by credential user; guarded by mu
	clients map[string][]*relayConn // by client transport address; guarded by mu
	live    int                     // allocations reported created and not yet deleted; guarded by mu
	drained chan struct{}           // closed when live reaches 0 during Close; guarded by mu
}

// closeDrainTimeout bounds how long Close waits for pion to report every
// allocation deleted after their sockets were closed.
const closeDrainTimeout = 2 * time.Second

// userState counts a user's allocations. pending holds quota slots granted
// to Allocates in flight, by client address, so that concurrent Allocates
// (one per TCP connection) cannot overshoot the quota.
type userState struct {
	allocs  int
	pending map[string]time.Time
}

// New starts a relay on the configured listeners. On error nothing is left
// open, including listeners passed in Config.
func New(c Config) (*Server, error) {
	cfg := c.withDefaults()
	if err := cfg.validate(); err != nil {
		closeAll(c)
		return nil, err
	}
	tlsConfig, err := loadTLS(&cfg)
	if err != nil {
		closeAll(c)
		return nil, err
	}
	m, err := newMetrics(cfg.Registerer)
	if err != nil {
		closeAll(c)
		return nil, err
	}
	s := &Server{
		cfg:     cfg,
		log:     cfg.Logger,
		metrics: m,
		users:   make(map[string]*userState),
		clients: make(map[string][]*relayConn),
	}
	s.ports = &relayPorts{s: s, inUse: make(map[uint16]*relayConn)}
	for _, p := range cfg.AllowPeers {
		if p.Addr().Is4In6() && p.Bits() >= 96 {
			p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
		}
		s.allow = append(s.allow, p.Masked())
	}
	if err := s.open(tlsConfig); err != nil {
		s.closeSockets()
		m.unregister()
		return nil, err
	}

	sc := turn.ServerConfig{
		Realm:         cfg.Realm,
		LoggerFactory: pionLoggerFactory{log: cfg.Logger},
		AuthHandler:   s.authenticate,
		QuotaHandler:  s.quota,
		EventHandler: turn.EventHandler{
			OnAuth:              s.onAuth,
			OnAllocationCreated: s.onAllocationCreated,
			OnAllocationDeleted: s.onAllocationDeleted,
			OnPermissionCreated: func(src, _ net.Addr, _, _, _ string, relay net.Addr, peer net.IP) {
				s.onPermission(relay, peer, true)
			},
			OnPermissionDeleted: func(src, _ net.Addr, _, _, _ string, relay net.Addr, peer net.IP) {
				s.onPermission(relay, peer, false)
			},
			OnChannelCreated: func(_, _ net.Addr, _, _, _ string, relay, peer net.Addr, number uint16) {
				s.onChannel(relay, peer, number, true)
			},
			OnChannelDeleted: func(_, _ net.Addr, _, _, _ string, relay, peer net.Addr, number uint16) {
				s.onChannel(relay, peer, number, false)
			},
		},
	}
	for _, pc := range s.udp {
		sc.PacketConnConfigs = append(sc.PacketConnConfigs, turn.PacketConnConfig{
			PacketConn: pc, RelayAddressGenerator: s.ports, PermissionHandler: s.permit,
		})
	}
	for _, l := range append(append([]*connListener{}, s.tcp...), s.tlsListen...) {
		sc.ListenerConfigs = append(sc.ListenerConfigs, turn.ListenerConfig{
			Listener: l, RelayAddressGenerator: s.ports, PermissionHandler: s.permit,
		})
	}
	t, err := turn.NewServer(sc)
	if err != nil {
		s.closeSockets()
		m.unregister()
		return nil, fmt.Errorf("relay: starting TURN server: %w", err)
	}
	s.turn = t
	a := s.Addrs()
	s.log.Info("relay: serving TURN", "udp", a.UDP, "tcp", a.TCP, "tls", a.TLS,
		"relay_ip", cfg.RelayIP, "ports", fmt.Sprintf("%d-%d", cfg.MinPort, cfg.MaxPort), "realm", cfg.Realm)
	return s, nil
}

func loadTLS(cfg *Config) (*tls.Config, error) {
	if len(cfg.TLSAddrs)+len(cfg.TLSListeners) == 0 {
		return nil, nil
	}
	if cfg.TLSConfig != nil {
		return cfg.TLSConfig, nil
	}
	cert, err := tls.LoadX509KeyPair(cfg.TLSCertFile, cfg.TLSKeyFile)
	if err != nil {
		return nil, fmt.Errorf("relay: loading TLS key pair: %w", err)
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}, nil
}

// open opens configured addresses and wraps the stream listeners.
func (s *Server) open(tlsConfig *tls.Config) error {
	cfg := &s.cfg
	for _, pc := range cfg.PacketConns {
		s.udp = append(s.udp, s.batched(pc))
	}
	for _, l := range cfg.Listeners {
		s.tcp = append(s.tcp, newConnListener(l, nil, cfg))
	}
	for _, l := range cfg.TLSListeners {
		s.tlsListen = append(s.tlsListen, newConnListener(l, tlsConfig, cfg))
	}
	for _, a := range cfg.UDPAddrs {
		pc, err := net.ListenPacket("udp", a)
		if err != nil {
			return fmt.Errorf("relay: listening on UDP %s: %w", a, err)
		}
		sockbuf.Enlarge(pc)
		s.udp = append(s.udp, s.batched(pc))
	}
	for _, group := range []struct {
		addrs []string
		tls   *tls.Config
		dst   *[]*connListener
	}{{cfg.TCPAddrs, nil, &s.tcp}, {cfg.TLSAddrs, tlsConfig, &s.tlsListen}} {
		for _, a := range group.addrs {
			l, err := net.Listen("tcp", a)
			if err != nil {
				return fmt.Errorf("relay: listening on TCP %s: %w", a, err)
			}
			*group.dst = append(*group.dst, newConnListener(l, group.tls, cfg))
		}
	}
	return nil
}

// batched wraps a kernel UDP socket for batched reads and sends; pion
// serves any other PacketConn (a vnet one in tests) as it is.
func (s *Server) batched(pc net.PacketConn) net.PacketConn {
	if uc, ok := pc.(*net.UDPConn); ok {
		return newBatchConn(uc, func(n int) { s.metrics.dropSend.Add(float64(n)) })
	}
	return pc
}

// closeAll closes what the caller handed over when New fails early.
func closeAll(c Config) {
	for _, pc := range c.PacketConns {
		_ = pc.Close()
	}
	for _, l := range append(append([]net.Listener{}, c.Listeners...), c.TLSListeners...) {
		_ = l.Close()
	}
}

func (s *Server) closeSockets() {
	for _, pc := range s.udp {
		_ = pc.Close()
	}
	for _, l := range append(append([]*connListener{}, s.tcp...), s.tlsListen...) {
		_ = l.Close()
	}
}

// ListenAddrs are the addresses a Server listens on.
type ListenAddrs struct {
	UDP, TCP, TLS []net.Addr
}

// Addrs returns the listening addresses, with ports resolved.
func (s *Server) Addrs() ListenAddrs {
	var a ListenAddrs
	for _, pc := range s.udp {
		a.UDP = append(a.UDP, pc.LocalAddr())
	}
	for _, l := range s.tcp {
		a.TCP = append(a.TCP, l.Addr())
	}
	for _, l := range s.tlsListen {
		a.TLS = append(a.TLS, l.Addr())
	}
	return a
}

// RelayIP returns the advertised relay address.
func (s *Server) RelayIP() netip.Addr { return s.cfg.RelayIP }

// ICEURLs returns the RFC 7065 URLs under which clients reach this server
// by host (a name for TLS to verify, or an address), one per listener.
func (s *Server) ICEURLs(host string) []string {
	var urls []string
	add := func(scheme string, a net.Addr, transport string) {
		if ap, err := netip.ParseAddrPort(a.String()); err == nil {
			urls = append(urls, scheme+":"+net.JoinHostPort(host, strconv.Itoa(int(ap.Port())))+"?transport="+transport)
		}
	}
	a := s.Addrs()
	for _, x := range a.UDP {
		add("turn", x, "udp")
	}
	for _, x := range a.TCP {
		add("turn", x, "tcp")
	}
	for _, x := range a.TLS {
		add("turns", x, "tcp")
	}
	return urls
}

// Allocations returns how many allocations exist now.
func (s *Server) Allocations() int { return s.turn.AllocationCount() }

// Close stops serving: it closes the listeners, every TCP connection and
// every relay socket, and unregisters the metrics. pion/turn's goroutines
// finish on their own as their sockets report closed.
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		s.closing.Store(true)
		err := s.turn.Close()
		for _, l := range append(append([]*connListener{}, s.tcp...), s.tlsListen...) {
			_ = l.Close() // pion closed the listener; this also closes accepted conns
		}
		for _, rc := range s.ports.all() {
			_ = rc.Close()
		}
		// pion deletes each allocation from its own goroutine once the
		// relay socket reports closed; wait so that Close is synchronous.
		s.mu.Lock()
		drained := make(chan struct{})
		if s.live == 0 {
			close(drained)
		}
		s.drained = drained
		s.mu.Unlock()
		select {
		case <-drained:
		case <-time.After(closeDrainTimeout):
			s.log.Warn("relay: allocations still open after close", "timeout", closeDrainTimeout)
		}
		s.metrics.unregister()
		if err != nil {
			s.closeErr = fmt.Errorf("relay: closing: %w", err)
		}
		s.log.Info("relay: closed")
	})
	return s.closeErr
}

// peerAllowed reports whether a (normalised) may be relayed to.
func (s *Server) peerAllowed(a netip.Addr) bool {
	return a == s.cfg.RelayIP || s.allowListed(a) || ClassifyAddr(a) == ClassGlobal
}

func (s *Server) allowListed(a netip.Addr) bool {
	for _, p := range s.allow {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// permit is the pion PermissionHandler for CreatePermission and ChannelBind.
func (s *Server) permit(client net.Addr, peer net.IP) bool {
	a := addrFromIP(peer)
	if !s.peerAllowed(a) {
		class := ClassifyAddr(a)
		s.metrics.refusals.WithLabelValues("permission-" + string(class)).Inc()
		s.log.Debug("relay: permission refused", "client", client, "peer", a, "class", class)
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	distinct := make(map[netip.Addr]struct{})
	for _, rc := range s.clients[client.String()] {
		if rc.permitted(a) {
			return true // a refresh
		}
		for p := range *rc.perms.Load() {
			distinct[p] = struct{}{}
		}
	}
	if len(distinct) >= s.cfg.MaxPermissionsPerAllocation {
		s.metrics.refusals.WithLabelValues(ReasonPermissionQuota).Inc()
		s.log.Debug("relay: permission quota reached", "client", client, "peer", a)
		return false
	}
	return true
}

// authenticate is the pion AuthHandler. It returns the long-term key for a
// valid credential; pion checks the request's MESSAGE-INTEGRITY with it.
func (s *Server) authenticate(username, realm string, src net.Addr) ([]byte, bool) {
	var (
		key []byte
		err error
	)
	if realm != s.cfg.Realm {
		err = fmt.Errorf("relay: realm %q is not %q", realm, s.cfg.Realm)
	} else {
		_, key, err = longTermKey(s.cfg.Secret, username, realm, time.Now())
	}
	if err != nil {
		s.metrics.refusals.WithLabelValues(ReasonAuth).Inc()
		s.log.Debug("relay: credential refused", "client", src, "username", username, "err", err)
		return nil, false
	}
	return key, true
}

// onAuth counts requests whose credential was well formed and unexpired
// but whose MESSAGE-INTEGRITY did not match (a wrong password or secret).
func (s *Server) onAuth(src, _ net.Addr, _, username, _ string, method string, verdict bool) {
	if verdict {
		return
	}
	s.metrics.refusals.WithLabelValues(ReasonAuth).Inc()
	s.log.Debug("relay: message integrity refused", "client", src, "username", username, "method", method)
}

// userOf is the quota key: the credential's user part. Usernames reaching
// here passed authenticate.
func userOf(username string) string {
	_, user, err := ParseCredentialUsername(username)
	if err != nil {
		return username
	}
	return user
}

// quota is the pion QuotaHandler, asked before each new allocation.
func (s *Server) quota(username, _ string, src net.Addr) bool {
	user := userOf(username)
	now := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	u := s.users[user]
	if u == nil {
		u = &userState{pending: make(map[string]time.Time)}
		s.users[user] = u
	}
	for k, t := range u.pending {
		if now.Sub(t) > pendingTTL {
			delete(u.pending, k)
		}
	}
	delete(u.pending, src.String()) // a retry from the same address
	if u.allocs+len(u.pending) >= s.cfg.MaxAllocationsPerUser {
		s.metrics.refusals.WithLabelValues(ReasonQuota).Inc()
		s.log.Info("relay: allocation quota reached", "user", user, "client", src, "allocations", u.allocs)
		if u.allocs == 0 && len(u.pending) == 0 {
			delete(s.users, user)
		}
		return false
	}
	u.pending[src.String()] = now
	return true
}

func (s *Server) onAllocationCreated(src, dst net.Addr, _, username, _ string, relay net.Addr, _ int) {
	user := userOf(username)
	rc := s.relayConnAt(relay)
	if path := s.udpPath(src, dst); rc != nil && path != nil {
		rc.toClient.Store(path)
	}
	s.mu.Lock()
	u := s.users[user]
	if u == nil {
		u = &userState{pending: make(map[string]time.Time)}
		s.users[user] = u
	}
	delete(u.pending, src.String())
	u.allocs++
	s.live++
	if rc != nil {
		rc.user, rc.client = user, src.String()
		s.clients[rc.client] = append(s.clients[rc.client], rc)
	}
	s.mu.Unlock()
	s.metrics.allocations.Inc()
	s.metrics.allocationsTotal.Inc()
	s.log.Debug("relay: allocation created", "user", user, "client", src, "relay", relay)
}

// onAllocationDeleted runs after pion closed the allocation's relay socket,
// so the client's closed relayConns are the ones to forget.
func (s *Server) onAllocationDeleted(src, _ net.Addr, _, username, _ string) {
	user := userOf(username)
	s.mu.Lock()
	if u := s.users[user]; u != nil {
		u.allocs--
		if u.allocs <= 0 && len(u.pending) == 0 {
			delete(s.users, user)
		}
	}
	s.live--
	if s.live == 0 && s.drained != nil {
		close(s.drained)
		s.drained = nil
	}
	key := src.String()
	kept := s.clients[key][:0]
	for _, rc := range s.clients[key] {
		if !rc.closed.Load() {
			kept = append(kept, rc)
		}
	}
	if len(kept) == 0 {
		delete(s.clients, key)
	} else {
		s.clients[key] = kept
	}
	s.mu.Unlock()
	s.metrics.allocations.Dec()
	s.log.Debug("relay: allocation deleted", "user", user, "client", src)
}

// udpPath returns how to reach a client at src that talks to the listener
// at dst, or nil unless that is one of the UDP listeners. (pion reports
// every allocation's protocol as UDP; a TCP client's addresses are TCP
// addresses.)
func (s *Server) udpPath(src, dst net.Addr) *clientPath {
	client, ok := src.(*net.UDPAddr)
	if _, isUDP := dst.(*net.UDPAddr); !ok || !isUDP {
		return nil
	}
	for _, pc := range s.udp {
		if pc.LocalAddr().String() == dst.String() {
			return &clientPath{conn: pc, addr: client}
		}
	}
	return nil
}

// relayConnAt returns the relay socket of the relayed address pion
// reports, or nil.
func (s *Server) relayConnAt(relay net.Addr) *relayConn {
	if ua, ok := relay.(*net.UDPAddr); ok {
		return s.ports.lookup(ua.Port)
	}
	return nil
}

func (s *Server) onChannel(relay, peer net.Addr, number uint16, on bool) {
	rc := s.relayConnAt(relay)
	pa, ok := peer.(*net.UDPAddr)
	if rc == nil || !ok {
		return
	}
	s.mu.Lock()
	rc.setChannel(netip.AddrPortFrom(addrFromIP(pa.IP), uint16(pa.Port)), number, on) //nolint:gosec // a UDP port
	s.mu.Unlock()
}

func (s *Server) onPermission(relay net.Addr, peer net.IP, on bool) {
	rc := s.relayConnAt(relay)
	if rc == nil {
		return
	}
	s.mu.Lock()
	rc.setPermission(addrFromIP(peer), on)
	s.mu.Unlock()
}
