package signal

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/http"
	"net/netip"
	"net/url"
	"path"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/peerlan/peerlan/internal/static"
	"github.com/peerlan/peerlan/signal/proto"
)

// Config configures a Server. Zero fields take the documented defaults.
type Config struct {
	// Path is where the signaling WebSocket is served. Default "/signal".
	Path string
	// Static, when set, is served at "/" (the page) by package
	// internal/static: ETags, precompressed variants, no-cache.
	Static fs.FS

	// Subnet is every room's IPv4 prefix; .1 is the gateway's. Default
	// DefaultSubnet. Between /16 and /29.
	Subnet netip.Prefix
	// Secret signs join, gateway and resume tokens. At least 16 bytes. When
	// nil, a random secret is used: tokens and resumes then do not survive a
	// restart, and no one else can mint tokens.
	Secret []byte
	// TokenRooms lists path.Match patterns of rooms that require a join
	// token ("*" for every room). Default: none.
	TokenRooms []string
	// ICEServers returns the ICE servers for a peer's welcome (for example
	// with freshly minted TURN credentials). Default: none, so peers use only
	// host candidates.
	ICEServers func(room string, id proto.PeerID) []proto.ICEServer
	// ICERefresh, when positive, is how often each joined peer is sent
	// fresh ICEServers in an ice-servers message, so that credentials
	// minted into them never run out while the peer stays. Set it below the
	// credentials' lifetime. Default 0: the welcome's servers only.
	ICERefresh time.Duration

	// AllowedOrigins lists the browser origins (scheme://host[:port]) that
	// may connect, or "*" for any. Requests without an Origin header (native
	// peers) are always allowed; same-origin requests are always allowed.
	AllowedOrigins []string

	MaxMessageBytes   int     // largest accepted message; default 64 KiB
	MaxPeersPerRoom   int     // default 64 (also bounded by the subnet)
	MaxRooms          int     // default 10000
	MaxConnections    int     // open WebSockets; default 10000
	MessagesPerSecond float64 // per connection, token bucket rate; default 50
	Burst             int     // token bucket size; default 100
	SendQueue         int     // messages queued per connection before it counts as a slow reader; default 64

	KeepaliveInterval time.Duration // WebSocket ping period; default 5 s
	KeepaliveTimeout  time.Duration // silence after which a peer is dead; default 15 s
	ResumeGrace       time.Duration // how long a vanished peer keeps its id and address; default 10 s
	ResumeTTL         time.Duration // validity of resume tokens; default 24 h
	JoinTimeout       time.Duration // time allowed between connect and join; default 10 s
	WriteTimeout      time.Duration // per message write deadline; default 10 s

	// Logger receives structured logs. Default: slog.Default().
	Logger *slog.Logger
	// Registry receives the peerlan_signal_ metrics and is served at
	// /metrics. Default: a new registry of the Server's own.
	Registry *prometheus.Registry
	// Now is the clock, for tests. Default time.Now.
	Now func() time.Time

	// Hub, when set, makes the Server's rooms: signal/natshub's New shares
	// them between Servers over NATS. Default NewMemoryHub: this Server
	// holds every room.
	Hub func(HubConfig) (Hub, error)
}

func (c *Config) setDefaults() {
	def := func(p *int, v int) {
		if *p == 0 {
			*p = v
		}
	}
	defd := func(p *time.Duration, v time.Duration) {
		if *p == 0 {
			*p = v
		}
	}
	if c.Path == "" {
		c.Path = "/signal"
	}
	if !c.Subnet.IsValid() {
		c.Subnet = DefaultSubnet
	}
	def(&c.MaxMessageBytes, 64<<10)
	def(&c.MaxPeersPerRoom, 64)
	def(&c.MaxRooms, 10000)
	def(&c.MaxConnections, 10000)
	if c.MessagesPerSecond == 0 {
		c.MessagesPerSecond = 50
	}
	def(&c.Burst, 100)
	def(&c.SendQueue, 64)
	defd(&c.KeepaliveInterval, 5*time.Second)
	defd(&c.KeepaliveTimeout, 15*time.Second)
	defd(&c.ResumeGrace, 10*time.Second)
	defd(&c.ResumeTTL, 24*time.Hour)
	defd(&c.JoinTimeout, 10*time.Second)
	defd(&c.WriteTimeout, 10*time.Second)
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Registry == nil {
		c.Registry = prometheus.NewRegistry()
	}
	if c.Now == nil {
		c.Now = time.Now
	}
}

func (c *Config) validate() error {
	if err := checkSubnet(c.Subnet); err != nil {
		return err
	}
	if !strings.HasPrefix(c.Path, "/") {
		return fmt.Errorf("signal: path %q must start with /", c.Path)
	}
	for _, n := range []struct {
		name string
		v    int
	}{{"max message bytes", c.MaxMessageBytes}, {"max peers per room", c.MaxPeersPerRoom},
		{"max rooms", c.MaxRooms}, {"max connections", c.MaxConnections}, {"burst", c.Burst}, {"send queue", c.SendQueue}} {
		if n.v < 0 {
			return fmt.Errorf("signal: %s must not be negative", n.name)
		}
	}
	if c.MaxMessageBytes < 1024 {
		return errors.New("signal: max message bytes must be at least 1024")
	}
	if c.MessagesPerSecond < 0 {
		return errors.New("signal: messages per second must not be negative")
	}
	if c.KeepaliveTimeout <= c.KeepaliveInterval {
		return errors.New("signal: keepalive timeout must exceed the keepalive interval")
	}
	for _, p := range c.TokenRooms {
		if _, err := path.Match(p, "x"); err != nil {
			return fmt.Errorf("signal: bad token room pattern %q: %w", p, err)
		}
	}
	for _, o := range c.AllowedOrigins {
		if o == "*" {
			continue
		}
		u, err := url.Parse(o)
		if err != nil || u.Scheme == "" || u.Host == "" || (u.Path != "" && u.Path != "/") {
			return fmt.Errorf("signal: allowed origin %q must look like https://host[:port] or be *", o)
		}
	}
	return nil
}

// Server is the signaling service, an http.Handler. It serves the signaling
// WebSocket at Config.Path, /healthz, /metrics and, when configured, the page
// at /. It does not listen by itself.
type Server struct {
	cfg      Config
	log      *slog.Logger
	signer   *Signer
	upgrader websocket.Upgrader
	m        *metrics
	static   http.Handler
	limits   proto.Limits

	wg sync.WaitGroup // every goroutine the Server started

	hub Hub

	mu     sync.Mutex
	closed bool
	conns  map[*conn]struct{}
}

// New returns a Server for cfg.
func New(cfg Config) (*Server, error) {
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	secret := cfg.Secret
	if secret == nil {
		secret = make([]byte, 32)
		if _, err := rand.Read(secret); err != nil {
			return nil, fmt.Errorf("signal: secret: %w", err)
		}
	}
	signer, err := NewSigner(secret)
	if err != nil {
		return nil, err
	}
	m, err := newMetrics(cfg.Registry)
	if err != nil {
		return nil, fmt.Errorf("signal: metrics: %w", err)
	}
	maxPeers := min(cfg.MaxPeersPerRoom, newAddrPool(cfg.Subnet).capacity()+1) // +1: the gateway
	s := &Server{
		cfg:    cfg,
		log:    cfg.Logger,
		signer: signer,
		m:      m,
		conns:  make(map[*conn]struct{}),
		limits: proto.Limits{
			MaxMessageBytes:   cfg.MaxMessageBytes,
			MessagesPerSecond: cfg.MessagesPerSecond,
			Burst:             cfg.Burst,
			MaxPeersPerRoom:   maxPeers,
			KeepaliveMillis:   cfg.KeepaliveInterval.Milliseconds(),
		},
	}
	newHub := cfg.Hub
	if newHub == nil {
		newHub = NewMemoryHub
	}
	s.hub, err = newHub(HubConfig{
		Subnet:          cfg.Subnet,
		MaxPeersPerRoom: maxPeers,
		MaxRooms:        cfg.MaxRooms,
		ResumeGrace:     cfg.ResumeGrace,
		Logger:          cfg.Logger,
		Counts: func(rooms, members int) {
			m.rooms.Set(float64(rooms))
			m.peers.Set(float64(members))
		},
	})
	if err != nil {
		return nil, err
	}
	s.upgrader = websocket.Upgrader{
		ReadBufferSize:  1024,
		WriteBufferSize: 1024,
		// Idle connections share write buffers instead of holding one each.
		WriteBufferPool:   &sync.Pool{},
		HandshakeTimeout:  10 * time.Second,
		CheckOrigin:       s.checkOrigin,
		EnableCompression: false,
	}
	if cfg.Static != nil {
		h, err := static.New(cfg.Static)
		if err != nil {
			_ = s.hub.Close()
			return nil, err
		}
		s.static = h
	}
	return s, nil
}

// Signer returns the token signer, for minting tokens in-process.
func (s *Server) Signer() *Signer { return s.signer }

// Limits returns the limits announced to peers.
func (s *Server) Limits() proto.Limits { return s.limits }

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case s.cfg.Path:
		s.serveWebSocket(w, r)
	case "/healthz":
		s.mu.Lock()
		closed := s.closed
		s.mu.Unlock()
		if closed {
			http.Error(w, "shutting down", http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("ok\n"))
	case "/metrics":
		promhttp.HandlerFor(s.cfg.Registry, promhttp.HandlerOpts{}).ServeHTTP(w, r)
	default:
		if s.static == nil {
			http.NotFound(w, r)
			return
		}
		s.static.ServeHTTP(w, r)
	}
}

func (s *Server) checkOrigin(r *http.Request) bool {
	origin := r.Header.Get("Origin")
	if origin == "" {
		return true // not a browser: native peers carry their own authentication (tokens)
	}
	for _, o := range s.cfg.AllowedOrigins {
		if o == "*" || strings.EqualFold(strings.TrimSuffix(o, "/"), origin) {
			return true
		}
	}
	u, err := url.Parse(origin)
	return err == nil && strings.EqualFold(u.Host, r.Host)
}

func (s *Server) serveWebSocket(w http.ResponseWriter, r *http.Request) {
	if !websocket.IsWebSocketUpgrade(r) {
		http.Error(w, "this is peerlan's signaling endpoint: connect with a WebSocket", http.StatusBadRequest)
		return
	}
	if !s.checkOrigin(r) {
		s.m.rejections.WithLabelValues(reasonOrigin).Inc()
		s.log.Warn("refused connection from a foreign origin", "origin", r.Header.Get("Origin"), "remote", r.RemoteAddr)
		http.Error(w, "origin not allowed", http.StatusForbidden)
		return
	}
	s.mu.Lock()
	switch {
	case s.closed:
		s.mu.Unlock()
		s.m.rejections.WithLabelValues(reasonShuttingDown).Inc()
		http.Error(w, "shutting down", http.StatusServiceUnavailable)
		return
	case len(s.conns) >= s.cfg.MaxConnections:
		s.mu.Unlock()
		s.m.rejections.WithLabelValues(reasonTooManyConns).Inc()
		http.Error(w, "too many connections", http.StatusServiceUnavailable)
		return
	}
	// Reserve the slot (and the WaitGroup entry) before upgrading, so Close
	// cannot miss a connection that is being set up.
	c := newConn(s, r.RemoteAddr)
	s.conns[c] = struct{}{}
	s.wg.Add(2) // reader and writer (the last writer of the connection)
	s.mu.Unlock()
	s.m.connections.Inc()

	ws, err := s.upgrader.Upgrade(w, r, nil)
	if err != nil {
		// Upgrade has answered the request already.
		s.log.Debug("websocket upgrade failed", "remote", r.RemoteAddr, "err", err)
		s.dropConn(c)
		s.wg.Done()
		s.wg.Done()
		return
	}
	c.attach(ws) // from now on, a writer runs whenever something is queued
	// The reader gets a goroutine of its own and the handler returns: net/http
	// keeps its per-connection buffers, request and deep serve stack alive for
	// as long as a handler runs, about a third of an idle peer's memory
	// (BenchmarkHeldPeers).
	go func() {
		defer s.wg.Done()
		c.readLoop()
	}()
}

// dropConn forgets a finished connection and tells the Hub, which starts
// its member's grace period or removes the member when it left for good.
func (s *Server) dropConn(c *conn) {
	s.mu.Lock()
	if _, ok := s.conns[c]; !ok {
		s.mu.Unlock()
		return
	}
	delete(s.conns, c)
	closed := s.closed
	s.mu.Unlock()
	s.m.connections.Dec()
	if c.id == "" || closed {
		return
	}
	s.hub.Detach(c.room, c.id, c, c.leaving)
}

// Close disconnects every peer with "going away" and waits until every
// goroutine the Server started has finished. The in-memory Hub's rooms and
// resume grace periods are dropped; peers that resume against a restarted
// Server with the same secret keep their ids and addresses. A shared Hub
// leaves this Server's members to be resumed on the other instances. Close
// is idempotent.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		s.wg.Wait()
		return nil
	}
	s.closed = true
	conns := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	// The Hub stops first, so that closing connections hands nothing to it:
	// their members stay held for a resume (elsewhere, with a shared Hub).
	herr := s.hub.Close()
	for _, c := range conns {
		c.close(websocket.CloseGoingAway, "server shutting down")
	}
	s.wg.Wait()
	s.log.Info("signaling server stopped", "connections_closed", len(conns))
	return herr
}

// newPeerID returns 128 random bits in base64url (22 characters).
func newPeerID() proto.PeerID {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails on supported platforms
	return proto.PeerID(base64.RawURLEncoding.EncodeToString(b[:]))
}
