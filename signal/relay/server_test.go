package relay

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pion/stun/v3"
	"github.com/pion/turn/v4"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"go.uber.org/goleak"

	"github.com/peerlan/peerlan/internal/testpki"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func testLogger(tb testing.TB) *slog.Logger {
	tb.Helper()
	level := slog.LevelWarn
	if os.Getenv("RELAY_TEST_DEBUG") != "" {
		level = slog.LevelDebug
	}
	w := &tbWriter{tb: tb}
	tb.Cleanup(w.stop)
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: level}))
}

// tbWriter forwards log lines to the test until it ends: pion client
// goroutines may still log a moment later, and t.Log after a test has
// finished is a data race.
type tbWriter struct {
	tb      testing.TB
	mu      sync.Mutex
	stopped bool
}

func (w *tbWriter) stop() {
	w.mu.Lock()
	w.stopped = true
	w.mu.Unlock()
}

func (w *tbWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.stopped {
		w.tb.Log(strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}

// loopbackConfig listens on 127.0.0.1 UDP and TCP with ephemeral ports and a
// relay port range of its own.
func loopbackConfig(tb testing.TB) Config {
	tb.Helper()
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	return Config{
		Secret:      testSecret,
		PacketConns: []net.PacketConn{pc},
		Listeners:   []net.Listener{l},
		MinPort:     41000,
		MaxPort:     41999,
		Logger:      testLogger(tb),
	}
}

func startServer(tb testing.TB, cfg Config) *Server {
	tb.Helper()
	s, err := New(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if err := s.Close(); err != nil {
			tb.Errorf("close: %v", err)
		}
	})
	return s
}

type creds struct{ user, pass string }

func mint(user string, ttl time.Duration) creds {
	u, p := MintCredential(testSecret, user, ttl, time.Now())
	return creds{u, p}
}

// dialClient returns a pion/turn client of s over UDP or TCP.
func dialClient(tb testing.TB, s *Server, network string, c creds) *turn.Client {
	tb.Helper()
	var (
		conn   net.PacketConn
		server string
	)
	switch network {
	case "udp":
		pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
		if err != nil {
			tb.Fatal(err)
		}
		conn, server = pc, s.Addrs().UDP[0].String()
	case "tcp":
		server = s.Addrs().TCP[0].String()
		tc, err := net.Dial("tcp", server)
		if err != nil {
			tb.Fatal(err)
		}
		conn = turn.NewSTUNConn(tc)
	default:
		tb.Fatalf("network %q", network)
	}
	return newClient(tb, conn, server, c)
}

func newClient(tb testing.TB, conn net.PacketConn, server string, c creds) *turn.Client {
	tb.Helper()
	client, err := turn.NewClient(&turn.ClientConfig{
		STUNServerAddr: server,
		TURNServerAddr: server,
		Conn:           conn,
		Username:       c.user,
		Password:       c.pass,
		RTO:            50 * time.Millisecond,
		LoggerFactory:  pionLoggerFactory{log: testLogger(tb)},
	})
	if err != nil {
		tb.Fatal(err)
	}
	if err := client.Listen(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		client.Close()
		_ = conn.Close()
	})
	return client
}

func allocate(tb testing.TB, c *turn.Client) net.PacketConn {
	tb.Helper()
	relayConn, err := c.Allocate()
	if err != nil {
		tb.Fatalf("allocate: %v", err)
	}
	tb.Cleanup(func() { _ = relayConn.Close() })
	return relayConn
}

// udpEcho answers every datagram with the same bytes until the test ends.
func udpEcho(tb testing.TB, addr string) *net.UDPAddr {
	tb.Helper()
	pc, err := net.ListenPacket("udp4", addr)
	if err != nil {
		tb.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		buf := make([]byte, 2048)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			_, _ = pc.WriteTo(buf[:n], from)
		}
	}()
	tb.Cleanup(func() { _ = pc.Close(); wg.Wait() })
	return pc.LocalAddr().(*net.UDPAddr)
}

// exchange sends msg from conn to to until a reply equal to want arrives.
// Relayed UDP may lose the first datagram while the permission is created.
func exchange(tb testing.TB, conn net.PacketConn, to net.Addr, msg, want []byte) net.Addr {
	tb.Helper()
	buf := make([]byte, 2048)
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if _, err := conn.WriteTo(msg, to); err != nil {
			tb.Fatalf("write to %s: %v", to, err)
		}
		_ = conn.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		n, from, err := conn.ReadFrom(buf)
		if err == nil && bytes.Equal(buf[:n], want) {
			_ = conn.SetReadDeadline(time.Time{})
			return from
		}
	}
	tb.Fatalf("no reply %q from %s", want, to)
	return nil
}

func relayedUDP(tb testing.TB, pc net.PacketConn) *net.UDPAddr {
	tb.Helper()
	ua, ok := pc.LocalAddr().(*net.UDPAddr)
	if !ok {
		tb.Fatalf("relayed address %v", pc.LocalAddr())
	}
	return ua
}

func refusals(s *Server, reason string) float64 {
	return metricValue(s.metrics.refusals.WithLabelValues(reason))
}

// metricValue reads a counter or gauge.
func metricValue(c prometheus.Metric) float64 {
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		return -1
	}
	if m.Counter != nil {
		return m.GetCounter().GetValue()
	}
	return m.GetGauge().GetValue()
}

func eventually(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestConfigValidate(t *testing.T) {
	good := func() Config {
		return Config{Secret: testSecret, UDPAddrs: []string{"127.0.0.1:0"}}
	}
	cases := []struct {
		name string
		mod  func(*Config)
		want error
	}{
		{"no secret", func(c *Config) { c.Secret = nil }, errNoSecret},
		{"short secret", func(c *Config) { c.Secret = []byte("short") }, errNoSecret},
		{"no listeners", func(c *Config) { c.UDPAddrs = nil }, errNoListeners},
		{"unspecified without RelayIP", func(c *Config) { c.UDPAddrs = []string{":3478"} }, errRelayIPRequired},
		{"mixed listener IPs", func(c *Config) { c.TCPAddrs = []string{"127.0.0.2:0"} }, errRelayIPRequired},
		{"IPv6 RelayIP", func(c *Config) { c.RelayIP = netip.MustParseAddr("2001:db8::1") }, errRelayIPNotIPv4},
		{"unspecified RelayIP", func(c *Config) { c.RelayIP = netip.IPv4Unspecified() }, errRelayIPNotIPv4},
		{"IPv6 bind", func(c *Config) { c.RelayBindIP = netip.IPv6Unspecified() }, errRelayBindIP},
		{"only MinPort", func(c *Config) { c.MinPort = 50000 }, errPortRange},
		{"reversed range", func(c *Config) { c.MinPort, c.MaxPort = 50001, 50000 }, errPortRange},
		{"negative quota", func(c *Config) { c.MaxAllocationsPerUser = -1 }, errNegativeLimit},
		{"negative lifetime", func(c *Config) { c.MaxAllocationLifetime = -time.Second }, errNegativeLimit},
		{"TLS without cert", func(c *Config) { c.TLSAddrs = []string{"127.0.0.1:0"} }, errNoTLSConfig},
		{"bad address", func(c *Config) { c.UDPAddrs = []string{"127.0.0.1"} }, errBadAddr},
		{"bad allow prefix", func(c *Config) { c.AllowPeers = []netip.Prefix{{}} }, errAllowPrefix},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := good()
			tc.mod(&c)
			s, err := New(c)
			if err == nil {
				_ = s.Close()
			}
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
		})
	}
	t.Run("defaults", func(t *testing.T) {
		c := good().withDefaults()
		if err := c.validate(); err != nil {
			t.Fatal(err)
		}
		if c.RelayIP != netip.MustParseAddr("127.0.0.1") || c.Realm != DefaultRealm ||
			c.MinPort != DefaultMinPort || c.MaxPort != DefaultMaxPort ||
			c.MaxAllocationsPerUser != DefaultMaxAllocationsPerUser ||
			c.MaxAllocationLifetime != DefaultMaxAllocationLifetime || c.RelayBindIP != netip.IPv4Unspecified() {
			t.Fatalf("defaults not applied: %+v", c)
		}
	})
	t.Run("closes given sockets on error", func(t *testing.T) {
		pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := New(Config{PacketConns: []net.PacketConn{pc}}); !errors.Is(err, errNoSecret) {
			t.Fatalf("err = %v", err)
		}
		if _, _, err := pc.ReadFrom(make([]byte, 1)); !errors.Is(err, net.ErrClosed) {
			t.Fatalf("packet conn still open: %v", err)
		}
	})
}

// Two clients of one relay reach each other's relayed addresses: the
// relay's own address is exempt from the loopback refusal, and bytes are
// counted in both directions.
func TestRelayBetweenClientsOfOneRelay(t *testing.T) {
	for _, network := range []string{"udp", "tcp"} {
		t.Run(network, func(t *testing.T) {
			s := startServer(t, loopbackConfig(t))
			a := allocate(t, dialClient(t, s, network, mint("alice", time.Hour)))
			b := allocate(t, dialClient(t, s, "udp", mint("bob", time.Hour)))
			if got := relayedUDP(t, a).IP.String(); got != "127.0.0.1" {
				t.Fatalf("relayed IP %s", got)
			}
			if p := relayedUDP(t, a).Port; p < 41000 || p > 41999 {
				t.Fatalf("relay port %d outside range", p)
			}
			eventually(t, "two allocations", func() bool { return s.Allocations() == 2 })
			if got := metricValue(s.metrics.allocations); got != 2 {
				t.Fatalf("allocations gauge %v", got)
			}

			// b must permit a's relayed address before a's datagrams pass.
			if _, err := b.WriteTo([]byte("hello-a"), a.LocalAddr()); err != nil {
				t.Fatal(err)
			}
			from := exchangeBetween(t, a, b, []byte("ping"))
			if from.String() != a.LocalAddr().String() {
				t.Fatalf("b got it from %v, want %v", from, a.LocalAddr())
			}
			eventually(t, "relayed bytes counted both ways", func() bool {
				return metricValue(s.metrics.bytesOut) >= 4 && metricValue(s.metrics.bytesIn) >= 4
			})
			if got := metricValue(s.metrics.allocationsTotal); got != 2 {
				t.Fatalf("allocations_total %v", got)
			}

			// A third client that never permitted a gets nothing from it,
			// although the datagrams never leave the relay process.
			c := allocate(t, dialClient(t, s, "udp", mint("carol", time.Hour)))
			drops := metricValue(s.metrics.dropNoPerm)
			for range 3 {
				if _, err := a.WriteTo([]byte("unasked"), c.LocalAddr()); err != nil {
					t.Fatal(err)
				}
			}
			eventually(t, "datagrams to c dropped for want of a permission", func() bool {
				return metricValue(s.metrics.dropNoPerm) >= drops+3
			})
			_ = c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
			if n, from, err := c.ReadFrom(make([]byte, 64)); err == nil {
				t.Fatalf("c received %d bytes from %v without a permission", n, from)
			}
		})
	}
}

// exchangeBetween sends msg from a to b's relayed address until b receives
// it, then returns where b saw it from.
func exchangeBetween(tb testing.TB, a, b net.PacketConn, msg []byte) net.Addr {
	tb.Helper()
	buf := make([]byte, 2048)
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if _, err := a.WriteTo(msg, b.LocalAddr()); err != nil {
			tb.Fatal(err)
		}
		_ = b.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		n, from, err := b.ReadFrom(buf)
		if err == nil && bytes.Equal(buf[:n], msg) {
			return from
		}
	}
	tb.Fatal("relayed datagram never arrived")
	return nil
}

func TestRelayToAllowListedPeer(t *testing.T) {
	cfg := loopbackConfig(t)
	cfg.AllowPeers = []netip.Prefix{netip.MustParsePrefix("::ffff:127.0.0.0/104")} // mapped form normalises
	s := startServer(t, cfg)
	echo := udpEcho(t, "127.0.0.1:0")
	relay := allocate(t, dialClient(t, s, "udp", mint("alice", time.Hour)))
	for i := range 20 {
		msg := []byte{'m', byte(i)}
		if from := exchange(t, relay, echo, msg, msg); from.String() != echo.String() {
			t.Fatalf("reply from %v", from)
		}
	}
	// The writer counts after its write returns, which may be after the
	// echo came back.
	eventually(t, "40 bytes relayed each way", func() bool {
		return metricValue(s.metrics.bytesOut) >= 40 && metricValue(s.metrics.bytesIn) >= 40
	})
}

func TestPermissionRefusedForPrivateSpace(t *testing.T) {
	s := startServer(t, loopbackConfig(t))
	echo := udpEcho(t, "127.0.0.1:0") // listening, but the relay must not reach it
	relay := allocate(t, dialClient(t, s, "udp", mint("alice", time.Hour)))
	cases := []struct {
		ip    string
		class AddrClass
	}{
		{"127.0.0.2", ClassLoopback},
		{"::1", ClassLoopback},
		{"::ffff:127.0.0.3", ClassLoopback}, // 127.0.0.1 is this relay's own address
		{"0.0.0.0", ClassUnspecified},
		{"10.0.0.1", ClassPrivate},
		{"192.168.1.1", ClassPrivate},
		{"100.64.0.1", ClassCGNAT},
		{"169.254.169.254", ClassLinkLocal},
		{"fd00:ec2::254", ClassUniqueLocal},
		{"224.0.0.251", ClassMulticast},
		{"255.255.255.255", ClassBroadcast},
	}
	for _, tc := range cases {
		before := refusals(s, "permission-"+string(tc.class))
		to := &net.UDPAddr{IP: net.ParseIP(tc.ip), Port: echo.Port}
		if _, err := relay.WriteTo([]byte("x"), to); err == nil {
			t.Errorf("permission to %s granted", tc.ip)
			continue
		}
		if got := refusals(s, "permission-"+string(tc.class)); got != before+1 {
			t.Errorf("%s: refusals{permission-%s} %v -> %v", tc.ip, tc.class, before, got)
		}
	}
	if got := metricValue(s.metrics.bytesOut); got != 0 {
		t.Fatalf("%v bytes relayed to refused peers", got)
	}
}

// The relay's own address is allowed so clients reach each other's relayed
// addresses, but only at live allocations' ports: not the TURN listener
// (even when its port lies in the relay range) nor a free relay port.
func TestOwnAddressOnlyAtRelayPorts(t *testing.T) {
	s := startServer(t, loopbackConfig(t))
	relay := allocate(t, dialClient(t, s, "udp", mint("alice", time.Hour)))
	listener := s.Addrs().UDP[0].(*net.UDPAddr)
	// The client sends before its CreatePermission completes, so early
	// datagrams may meet no permission yet; keep sending.
	eventually(t, "own-address drops", func() bool {
		if _, err := relay.WriteTo([]byte("loop"), listener); err != nil {
			t.Fatalf("permission to own address refused: %v", err)
		}
		return metricValue(s.metrics.dropOwn) >= 1
	})
	free := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: int(s.cfg.MinPort)}
	for s.ports.lookup(free.Port) != nil {
		free.Port++
	}
	before := metricValue(s.metrics.dropOwn)
	eventually(t, "drops at a free relay port", func() bool {
		if _, err := relay.WriteTo([]byte("free"), free); err != nil {
			t.Fatal(err)
		}
		return metricValue(s.metrics.dropOwn) > before
	})
	if got := metricValue(s.metrics.bytesOut); got != 0 {
		t.Fatalf("%v bytes relayed to the listener", got)
	}
}

func TestAuthRefused(t *testing.T) {
	s := startServer(t, loopbackConfig(t))
	good := mint("alice", time.Hour)
	expUser, expPass := MintCredential(testSecret, "alice", -time.Minute, time.Now())
	otherUser, otherPass := MintCredential([]byte("some-other-secret-16"), "alice", time.Hour, time.Now())
	cases := []struct {
		name string
		c    creds
	}{
		{"expired", creds{expUser, expPass}},
		{"other secret", creds{otherUser, otherPass}},
		{"wrong password", creds{good.user, "not-the-password"}},
		{"malformed username", creds{"alice", good.pass}},
		{"tampered user", creds{strings.Replace(good.user, "alice", "admin", 1), good.pass}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := refusals(s, ReasonAuth)
			c := dialClient(t, s, "udp", tc.c)
			if relay, err := c.Allocate(); err == nil {
				_ = relay.Close()
				t.Fatal("allocation granted")
			}
			if got := refusals(s, ReasonAuth); got <= before {
				t.Fatalf("auth refusals %v -> %v", before, got)
			}
		})
	}
	if n := s.Allocations(); n != 0 {
		t.Fatalf("%d allocations after refused auth", n)
	}
}

func TestAllocationQuotaPerUser(t *testing.T) {
	cfg := loopbackConfig(t)
	cfg.MaxAllocationsPerUser = 2
	s := startServer(t, cfg)
	first := allocate(t, dialClient(t, s, "udp", mint("alice", time.Hour)))
	allocate(t, dialClient(t, s, "tcp", mint("alice", 2*time.Hour))) // fresh credential, same user
	_, err := dialClient(t, s, "udp", mint("alice", time.Hour)).Allocate()
	var te *stun.TurnError
	if !errors.As(err, &te) || te.ErrorCodeAttr.Code != stun.CodeAllocQuotaReached {
		t.Fatalf("third allocation: err = %v, want 486", err)
	}
	if got := refusals(s, ReasonQuota); got != 1 {
		t.Fatalf("quota refusals %v", got)
	}
	allocate(t, dialClient(t, s, "udp", mint("bob", time.Hour))) // other users are unaffected

	// Releasing an allocation frees a slot.
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	eventually(t, "released allocation", func() bool { return s.Allocations() == 2 })
	allocate(t, dialClient(t, s, "udp", mint("alice", time.Hour)))
}

// Concurrent Allocates of one user over many TCP connections (each served
// by its own goroutine) cannot overshoot the quota.
func TestAllocationQuotaConcurrent(t *testing.T) {
	cfg := loopbackConfig(t)
	cfg.MaxAllocationsPerUser = 3
	s := startServer(t, cfg)
	const n = 12
	clients := make([]*turn.Client, n)
	for i := range clients {
		clients[i] = dialClient(t, s, "tcp", mint("alice", time.Hour))
	}
	var (
		wg sync.WaitGroup
		mu sync.Mutex
		ok int
	)
	for _, c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if relay, err := c.Allocate(); err == nil {
				mu.Lock()
				ok++
				mu.Unlock()
				t.Cleanup(func() { _ = relay.Close() })
			}
		}()
	}
	wg.Wait()
	if ok != 3 || s.Allocations() != 3 {
		t.Fatalf("%d allocations granted (%d exist), quota 3", ok, s.Allocations())
	}
}

func TestPermissionQuota(t *testing.T) {
	cfg := loopbackConfig(t)
	cfg.MaxPermissionsPerAllocation = 2
	cfg.AllowPeers = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
	s := startServer(t, cfg)
	relay := allocate(t, dialClient(t, s, "udp", mint("alice", time.Hour)))
	for _, ip := range []string{"127.0.0.2", "127.0.0.3", "127.0.0.2"} {
		if _, err := relay.WriteTo([]byte("x"), &net.UDPAddr{IP: net.ParseIP(ip), Port: 9}); err != nil {
			t.Fatalf("permission to %s: %v", ip, err)
		}
	}
	if _, err := relay.WriteTo([]byte("x"), &net.UDPAddr{IP: net.ParseIP("127.0.0.4"), Port: 9}); err == nil {
		t.Fatal("third distinct peer permitted")
	}
	if got := refusals(s, ReasonPermissionQuota); got != 1 {
		t.Fatalf("permission-quota refusals %v", got)
	}
}

func TestMaxAllocationLifetime(t *testing.T) {
	cfg := loopbackConfig(t)
	cfg.MaxAllocationLifetime = 300 * time.Millisecond
	s := startServer(t, cfg)
	allocate(t, dialClient(t, s, "udp", mint("alice", time.Hour)))
	if s.Allocations() != 1 {
		t.Fatalf("%d allocations", s.Allocations())
	}
	eventually(t, "allocation to expire", func() bool { return s.Allocations() == 0 })
	if got := metricValue(s.metrics.lifetimeExceeded); got != 1 {
		t.Fatalf("lifetime_exceeded %v", got)
	}
	eventually(t, "gauge to drop", func() bool { return metricValue(s.metrics.allocations) == 0 })
	s.mu.Lock()
	users, clients := len(s.users), len(s.clients)
	s.mu.Unlock()
	if users != 0 || clients != 0 {
		t.Fatalf("state left: %d users, %d clients", users, clients)
	}
}

func selfSignedTLS(tb testing.TB) (*tls.Config, *x509.CertPool) {
	tb.Helper()
	p := testpki.New(tb, "relay.test", "198.51.100.1")
	return &tls.Config{Certificates: []tls.Certificate{p.Cert}, MinVersion: tls.VersionTLS12}, p.Pool
}

func TestTLS(t *testing.T) {
	cfg := loopbackConfig(t)
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg.TLSListeners = []net.Listener{l}
	var pool *x509.CertPool
	cfg.TLSConfig, pool = selfSignedTLS(t)
	s := startServer(t, cfg)
	addr := s.Addrs().TLS[0].String()
	tc, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: pool, ServerName: "relay.test", MinVersion: tls.VersionTLS12})
	if err != nil {
		t.Fatal(err)
	}
	c := newClient(t, turn.NewSTUNConn(tc), addr, mint("alice", time.Hour))
	a := allocate(t, c)
	b := allocate(t, dialClient(t, s, "udp", mint("bob", time.Hour)))
	if _, err := a.WriteTo([]byte("x"), b.LocalAddr()); err != nil {
		t.Fatal(err)
	}
	exchangeBetween(t, b, a, []byte("over tls"))
	if urls := s.ICEURLs("relay.test"); len(urls) != 3 || !strings.HasPrefix(urls[2], "turns:relay.test:") ||
		!strings.HasSuffix(urls[2], "?transport=tcp") || !strings.HasSuffix(urls[0], "?transport=udp") {
		t.Fatalf("ICE URLs %v", urls)
	}
}

// A TCP connection that sends nothing is closed after HandshakeTimeout; at
// most MaxConns connections are served at once.
func TestTCPConnectionBounds(t *testing.T) {
	cfg := loopbackConfig(t)
	cfg.MaxConns = 2
	cfg.HandshakeTimeout = 300 * time.Millisecond
	s := startServer(t, cfg)
	addr := s.Addrs().TCP[0].String()

	idle, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	start := time.Now()
	_ = idle.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := idle.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
		t.Fatalf("idle connection: read err %v, want EOF", err)
	}
	if d := time.Since(start); d < 250*time.Millisecond {
		t.Fatalf("idle connection closed after %v, before HandshakeTimeout", d)
	}

	// Two served connections fill the slots; a third gets no answer until
	// one of them closes.
	var held []net.Conn
	for range 2 {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if !bindingAnswered(t, c, 2*time.Second) {
			t.Fatal("binding request unanswered")
		}
		held = append(held, c)
	}
	third, err := net.Dial("tcp", addr) // the kernel completes the handshake
	if err != nil {
		t.Fatal(err)
	}
	defer third.Close()
	if bindingAnswered(t, third, 150*time.Millisecond) {
		t.Fatal("third connection served beyond MaxConns")
	}
	_ = held[0].Close()
	if !bindingAnswered(t, third, 2*time.Second) {
		t.Fatal("third connection not served after a slot freed")
	}
}

// bindingAnswered sends a STUN Binding request on c and reports whether a
// success response arrives within d.
func bindingAnswered(tb testing.TB, c net.Conn, d time.Duration) bool {
	tb.Helper()
	msg := stun.MustBuild(stun.TransactionID, stun.BindingRequest)
	if _, err := c.Write(msg.Raw); err != nil {
		tb.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(d))
	buf := make([]byte, 512)
	n, err := io.ReadAtLeast(c, buf, 20)
	if err != nil {
		return false
	}
	res := &stun.Message{Raw: buf[:n]}
	return res.Decode() == nil && res.Type == stun.BindingSuccess
}

func TestMetricsRegistration(t *testing.T) {
	reg := prometheus.NewRegistry()
	cfg := loopbackConfig(t)
	cfg.Registerer = reg
	s := startServer(t, cfg)
	allocate(t, dialClient(t, s, "udp", mint("alice", time.Hour)))
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := make(map[string]*dto.MetricFamily)
	for _, f := range families {
		got[f.GetName()] = f
	}
	for _, name := range []string{
		"peerlan_turn_allocations", "peerlan_turn_allocations_total",
		"peerlan_turn_refusals_total", "peerlan_turn_relayed_bytes_total",
		"peerlan_turn_relayed_packets_total", "peerlan_turn_allocation_lifetime_exceeded_total",
	} {
		if got[name] == nil || len(got[name].GetMetric()) == 0 {
			t.Errorf("%s not gathered", name)
		}
	}
	if g := got["peerlan_turn_allocations"]; g != nil && g.GetMetric()[0].GetGauge().GetValue() != 1 {
		t.Errorf("allocations gauge gathered as %v", g.GetMetric()[0].GetGauge().GetValue())
	}
	// A second server on the same registry fails cleanly; after Close the
	// names are free again.
	cfg2 := loopbackConfig(t)
	cfg2.Registerer = reg
	if _, err := New(cfg2); !errors.Is(err, errMetrics) {
		t.Fatalf("duplicate registration: err = %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	cfg3 := loopbackConfig(t)
	cfg3.Registerer = reg
	startServer(t, cfg3)
}

// Close ends every allocation and connection; goleak (TestMain) checks no
// goroutine outlives the tests.
func TestCloseWithLiveAllocations(t *testing.T) {
	s, err := New(loopbackConfig(t))
	if err != nil {
		t.Fatal(err)
	}
	udp := allocate(t, dialClient(t, s, "udp", mint("alice", time.Hour)))
	tcpClient := dialClient(t, s, "tcp", mint("bob", time.Hour))
	allocate(t, tcpClient)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	eventually(t, "allocations to close", func() bool { return s.Allocations() == 0 })
	if got := metricValue(s.metrics.allocations); got != 0 {
		t.Fatalf("allocations gauge %v after close", got)
	}
	_ = udp
	if err := s.Close(); err != nil {
		t.Fatalf("second close: %v", err)
	}
}

// Datagrams from a peer without a permission never reach the client and are
// counted as dropped.
func TestUnsolicitedPeerDropped(t *testing.T) {
	s := startServer(t, loopbackConfig(t))
	relay := allocate(t, dialClient(t, s, "udp", mint("alice", time.Hour)))
	stranger, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer stranger.Close()
	for range 5 {
		if _, err := stranger.WriteTo([]byte("unsolicited"), relay.LocalAddr()); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, "5 dropped datagrams", func() bool { return metricValue(s.metrics.dropNoPerm) == 5 })
	_ = relay.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	if n, from, err := relay.ReadFrom(make([]byte, 64)); err == nil {
		t.Fatalf("client received %d bytes from %v without a permission", n, from)
	}
	if got := metricValue(s.metrics.bytesIn); got != 0 {
		t.Fatalf("%v bytes counted as relayed", got)
	}
}
