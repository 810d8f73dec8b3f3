package portfwd

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// guestAddr stands for a guest of the room; the tests' dial functions send
// it to a loopback server instead.
var guestAddr = netip.MustParseAddrPort("10.86.0.2:80")

// waitTimeout bounds every wait of these tests; nothing is timed against it.
const waitTimeout = 10 * time.Second

// loopbackDial returns a DialFunc that checks it is asked for guestAddr
// over network and dials target on loopback instead.
func loopbackDial(t *testing.T, network, target string) DialFunc {
	return func(ctx context.Context, n, address string) (net.Conn, error) {
		if n != network || address != guestAddr.String() {
			t.Errorf("dial(%q, %q), want (%q, %q)", n, address, network, guestAddr)
			return nil, errors.New("unexpected dial")
		}
		var d net.Dialer
		return d.DialContext(ctx, network, target)
	}
}

// startForwarder starts a forwarder of specs and closes it when the test ends.
func startForwarder(t *testing.T, specs []Spec, dial DialFunc, cfg Config) *Forwarder {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	f, err := New(specs, dial, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimSuffix(string(b), "\n"))
	return len(b), nil
}

func loopbackSpec(network string) Spec {
	return Spec{Network: network, Listen: netip.MustParseAddrPort("127.0.0.1:0"), Guest: guestAddr}
}

// tcpGuest serves fn on a loopback listener until the test ends, and waits
// for its handlers at the end.
func tcpGuest(t *testing.T, fn func(net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Add(1)
			go func() { defer wg.Done(); defer c.Close(); fn(c) }()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return ln.Addr().String()
}

// echo copies a connection back to itself.
func echo(c net.Conn) { io.Copy(c, c) }

// waitFor polls cond until it holds or waitTimeout passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(waitTimeout); !cond(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not after %v", what, waitTimeout)
		}
	}
}

func TestTCPRoundTripAndHalfClose(t *testing.T) {
	// The guest reads the whole request up to the client's half-close and
	// only then answers with the request's size and digest: both the EOF and
	// the answer after it must cross the forward.
	guest := tcpGuest(t, func(c net.Conn) {
		h := sha256.New()
		n, err := io.Copy(h, c)
		if err != nil {
			t.Errorf("guest read: %v", err)
			return
		}
		fmt.Fprintf(c, "%d %x", n, h.Sum(nil))
	})
	reg := prometheus.NewRegistry()
	f := startForwarder(t, []Spec{loopbackSpec(TCP)}, loopbackDial(t, "tcp", guest), Config{Registerer: reg})
	req := make([]byte, 1<<20+17)
	rand.Read(req)
	sum := sha256.Sum256(req)
	want := fmt.Sprintf("%d %x", len(req), sum)

	for i := range 3 {
		c, err := net.Dial("tcp", f.Addrs()[0].String())
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(waitTimeout))
		if _, err := c.Write(req); err != nil {
			t.Fatal(err)
		}
		if err := c.(*net.TCPConn).CloseWrite(); err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(c)
		c.Close()
		if err != nil || string(got) != want {
			t.Fatalf("connection %d: answer %q, %v; want %q", i, got, err, want)
		}
	}
	waitFor(t, "connections closed", func() bool { return f.Stats()[0].Active == 0 })
	s := f.Stats()[0]
	if s.Accepted != 3 || s.Refused != 0 || s.DialFailures != 0 || s.BytesToGuest != 3*uint64(len(req)) || s.BytesFromGuest != 3*uint64(len(want)) {
		t.Errorf("stats %+v", s)
	}
	if got := gathered(t, reg, "peerlan_gateway_forward_bytes_total", "to_guest"); got != float64(3*len(req)) {
		t.Errorf("peerlan_gateway_forward_bytes_total{to_guest} = %v, want %d", got, 3*len(req))
	}
	if got := gathered(t, reg, "peerlan_gateway_forward_accepted_total", ""); got != 3 {
		t.Errorf("peerlan_gateway_forward_accepted_total = %v, want 3", got)
	}
}

// gathered returns the value of family name's series for the forward whose
// labels include the value label (any series when label is "").
func gathered(t *testing.T, reg *prometheus.Registry, name, label string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			ok := label == ""
			for _, l := range m.GetLabel() {
				ok = ok || l.GetValue() == label
			}
			if !ok {
				continue
			}
			if m.Counter != nil {
				return m.Counter.GetValue()
			}
			return m.Gauge.GetValue()
		}
	}
	t.Fatalf("no %s{%s} in %d families", name, label, len(mfs))
	return 0
}

func TestTCPLimit(t *testing.T) {
	guest := tcpGuest(t, echo)
	f := startForwarder(t, []Spec{loopbackSpec(TCP)}, loopbackDial(t, "tcp", guest), Config{MaxConns: 2})
	addr := f.Addrs()[0].String()
	roundTrip := func(c net.Conn, msg string) error {
		c.SetDeadline(time.Now().Add(waitTimeout))
		if _, err := io.WriteString(c, msg); err != nil {
			return err
		}
		buf := make([]byte, len(msg))
		if _, err := io.ReadFull(c, buf); err != nil {
			return err
		}
		if string(buf) != msg {
			return fmt.Errorf("echo %q, want %q", buf, msg)
		}
		return nil
	}
	var open []net.Conn
	for i := range 2 {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if err := roundTrip(c, fmt.Sprint("hello ", i)); err != nil {
			t.Fatalf("connection %d within the limit: %v", i, err)
		}
		open = append(open, c)
	}
	// The third is accepted by the kernel and closed by the forwarder at
	// once: its read ends without a byte.
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(waitTimeout))
	io.WriteString(c, "over the limit")
	if n, err := c.Read(make([]byte, 64)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("connection over the limit read %d bytes, err %v; want it closed", n, err)
	}
	c.Close()
	if s := f.Stats()[0]; s.Refused != 1 || s.Accepted != 2 || s.Active != 2 {
		t.Errorf("stats %+v, want 2 accepted, 2 active, 1 refused", s)
	}
	// A slot freed is a slot again.
	open[0].Close()
	waitFor(t, "one connection closed", func() bool { return f.Stats()[0].Active == 1 })
	c, err = net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := roundTrip(c, "again"); err != nil {
		t.Fatalf("connection after a slot freed: %v", err)
	}
}

func TestTCPDialFailure(t *testing.T) {
	// Nothing listens at the target: the client's connection is closed and
	// the failure counted.
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	dead := ln.Addr().String()
	ln.Close()
	f := startForwarder(t, []Spec{loopbackSpec(TCP)}, loopbackDial(t, "tcp", dead), Config{})
	c, err := net.Dial("tcp", f.Addrs()[0].String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(waitTimeout))
	if n, err := c.Read(make([]byte, 1)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read %d, %v; want the connection closed", n, err)
	}
	waitFor(t, "dial failure counted", func() bool { return f.Stats()[0].DialFailures == 1 })
}

// udpGuest answers each datagram with "FROM PAYLOAD", FROM being the
// sender's address as the guest saw it, until the test ends.
func udpGuest(t *testing.T) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 2048)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			pc.WriteTo([]byte(from.String()+" "+string(buf[:n])), from)
		}
	}()
	t.Cleanup(func() { pc.Close(); <-done })
	return pc.LocalAddr().String()
}

// udpAsk sends msg from c and returns the answer, or an error when none
// comes within wait.
func udpAsk(c net.Conn, msg string, wait time.Duration) (string, error) {
	c.SetDeadline(time.Now().Add(wait))
	if _, err := io.WriteString(c, msg); err != nil {
		return "", err
	}
	buf := make([]byte, 2048)
	n, err := c.Read(buf)
	return string(buf[:n]), err
}

func TestUDPTwoClients(t *testing.T) {
	guest := udpGuest(t)
	f := startForwarder(t, []Spec{loopbackSpec(UDP)}, loopbackDial(t, "udp", guest), Config{})
	addr := f.Addrs()[0].String()
	var clients []net.Conn
	for range 2 {
		c, err := net.Dial("udp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		clients = append(clients, c)
	}
	seen := map[string]bool{}
	for round := range 3 {
		for i, c := range clients {
			msg := fmt.Sprintf("client %d round %d", i, round)
			got, err := udpAsk(c, msg, waitTimeout)
			if err != nil {
				t.Fatalf("%s: %v", msg, err)
			}
			from, payload, _ := strings.Cut(got, " ")
			if payload != msg {
				t.Fatalf("%s: answer %q, want this client's own", msg, got)
			}
			seen[from] = true
		}
	}
	// Each client has its own session, hence its own socket to the guest.
	if len(seen) != 2 {
		t.Errorf("the guest saw senders %v, want one per client", seen)
	}
	if s := f.Stats()[0]; s.Accepted != 2 || s.Active != 2 || s.BytesToGuest == 0 || s.BytesFromGuest <= s.BytesToGuest {
		t.Errorf("stats %+v", s)
	}
}

func TestUDPIdleExpiryAndLimit(t *testing.T) {
	guest := udpGuest(t)
	f := startForwarder(t, []Spec{loopbackSpec(UDP)}, loopbackDial(t, "udp", guest),
		Config{MaxSessions: 1, UDPIdle: 200 * time.Millisecond})
	addr := f.Addrs()[0].String()
	a, _ := net.Dial("udp", addr)
	defer a.Close()
	b, _ := net.Dial("udp", addr)
	defer b.Close()
	if _, err := udpAsk(a, "a1", waitTimeout); err != nil {
		t.Fatalf("first client: %v", err)
	}
	// The only session is a's: b's datagram is dropped, not answered.
	if got, err := udpAsk(b, "b1", 300*time.Millisecond); err == nil {
		t.Fatalf("second client over the limit got %q", got)
	}
	waitFor(t, "the second client counted as refused", func() bool { return f.Stats()[0].Refused >= 1 })
	waitFor(t, "idle session expired", func() bool { return f.Stats()[0].Active == 0 })
	// Expired, the slot is b's now.
	if _, err := udpAsk(b, "b2", waitTimeout); err != nil {
		t.Fatalf("second client after the expiry: %v", err)
	}
	if s := f.Stats()[0]; s.Accepted != 2 {
		t.Errorf("stats %+v, want 2 sessions opened", s)
	}
}

func TestCloseEndsEverything(t *testing.T) {
	tcpTarget := tcpGuest(t, echo)
	udpTarget := udpGuest(t)
	dial := func(ctx context.Context, network, address string) (net.Conn, error) {
		var d net.Dialer
		if network == "tcp" {
			return d.DialContext(ctx, network, tcpTarget)
		}
		return d.DialContext(ctx, network, udpTarget)
	}
	f, err := New([]Spec{loopbackSpec(TCP), loopbackSpec(UDP)}, dial, Config{})
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Start(); err != nil {
		t.Fatal(err)
	}
	addrs := f.Addrs()
	tc, err := net.Dial("tcp", addrs[0].String())
	if err != nil {
		t.Fatal(err)
	}
	defer tc.Close()
	tc.SetDeadline(time.Now().Add(waitTimeout))
	io.WriteString(tc, "x")
	if _, err := io.ReadFull(tc, make([]byte, 1)); err != nil {
		t.Fatal(err)
	}
	uc, _ := net.Dial("udp", addrs[1].String())
	defer uc.Close()
	if _, err := udpAsk(uc, "y", waitTimeout); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	// Close ended the open connection.
	if n, err := tc.Read(make([]byte, 1)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("open TCP connection still open after Close: %d, %v", n, err)
	}
	if s := f.Stats(); s[0].Active != 0 || s[1].Active != 0 {
		t.Errorf("after Close: %+v", s)
	}
	if _, err := net.DialTimeout("tcp", addrs[0].String(), waitTimeout); err == nil {
		t.Error("the TCP listener still accepts after Close")
	}
	if err := f.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if err := f.Start(); !errors.Is(err, ErrClosed) {
		t.Errorf("Start after Close: %v, want ErrClosed", err)
	}
	// Close waited for its goroutines' last deferred call; one may still be
	// returning from its function, so the stacks are polled, not read once.
	stacks := forwarderGoroutines()
	for deadline := time.Now().Add(waitTimeout); stacks != "" && time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		stacks = forwarderGoroutines()
	}
	if stacks != "" {
		t.Errorf("goroutines of the forwarder outlived Close:\n%s", stacks)
	}
}

// forwarderGoroutines returns the stacks of goroutines running this
// package's forward methods.
func forwarderGoroutines() string {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	var out []string
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "portfwd.(*forward)") {
			out = append(out, g)
		}
	}
	return strings.Join(out, "\n\n")
}

func TestStartAllOrNone(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	// A port that was free a moment ago, for the forward that binds first.
	free, _ := net.Listen("tcp", "127.0.0.1:0")
	freeAddr := free.Addr().String()
	free.Close()
	first := Spec{Network: TCP, Listen: netip.MustParseAddrPort(freeAddr), Guest: guestAddr}
	taken := Spec{Network: TCP, Listen: netip.MustParseAddrPort(busy.Addr().String()), Guest: guestAddr}
	f, err := New([]Spec{first, loopbackSpec(UDP), taken}, loopbackDial(t, "tcp", "127.0.0.1:1"), Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	err = f.Start()
	if err == nil || !strings.Contains(err.Error(), taken.String()) {
		t.Fatalf("Start with a port in use: %v, want an error naming %v", err, taken)
	}
	// The forwards bound before the failure were closed again.
	ln, err := net.Listen("tcp", freeAddr)
	if err != nil {
		t.Fatalf("the first forward's port %s is still bound: %v", freeAddr, err)
	}
	ln.Close()
	if addrs := f.Addrs(); addrs[0] != nil {
		t.Errorf("Addrs after a failed Start: %v", addrs)
	}
}

func TestNewAndStartErrors(t *testing.T) {
	dial := loopbackDial(t, "tcp", "127.0.0.1:1")
	good := loopbackSpec(TCP)
	fixed := Spec{Network: TCP, Listen: netip.MustParseAddrPort("127.0.0.1:8080"), Guest: guestAddr}
	for name, c := range map[string]struct {
		specs []Spec
		dial  DialFunc
		cfg   Config
	}{
		"no dial":          {[]Spec{good}, nil, Config{}},
		"bad network":      {[]Spec{{Network: "sctp", Listen: good.Listen, Guest: guestAddr}}, dial, Config{}},
		"IPv6 guest":       {[]Spec{{Network: TCP, Listen: good.Listen, Guest: netip.MustParseAddrPort("[fd00::2]:80")}}, dial, Config{}},
		"guest port 0":     {[]Spec{{Network: TCP, Listen: good.Listen, Guest: netip.MustParseAddrPort("10.86.0.2:0")}}, dial, Config{}},
		"twice":            {[]Spec{fixed, fixed}, dial, Config{}},
		"negative limit":   {[]Spec{good}, dial, Config{MaxConns: -1}},
		"negative timeout": {[]Spec{good}, dial, Config{UDPIdle: -time.Second}},
		"too many":         {make([]Spec, MaxSpecs+1), dial, Config{}},
	} {
		if _, err := New(c.specs, c.dial, c.cfg); err == nil {
			t.Errorf("%s: New succeeded", name)
		}
	}
	// Same port, other network: two forwards.
	udp := fixed
	udp.Network = UDP
	if _, err := New([]Spec{fixed, udp}, dial, Config{}); err != nil {
		t.Errorf("tcp and udp on one port: %v", err)
	}
	f := startForwarder(t, []Spec{good}, dial, Config{})
	if err := f.Start(); !errors.Is(err, ErrStarted) {
		t.Errorf("second Start: %v, want ErrStarted", err)
	}
	// Registering twice on one registry is refused, not a panic.
	reg := prometheus.NewRegistry()
	if _, err := New([]Spec{good}, dial, Config{Registerer: reg}); err != nil {
		t.Fatal(err)
	}
	if _, err := New([]Spec{good}, dial, Config{Registerer: reg}); err == nil {
		t.Error("a second forwarder of the same forwards registered on one registry")
	}
}

func TestLimitedLog(t *testing.T) {
	var buf strings.Builder
	log := slog.New(slog.NewTextHandler(&buf, nil))
	var l limitedLog
	for range 100 {
		l.log(log, "refused")
	}
	if n := strings.Count(buf.String(), "msg=refused"); n != 1 {
		t.Fatalf("100 refusals in a burst wrote %d lines, want 1:\n%s", n, buf.String())
	}
	l.mu.Lock()
	l.last = l.last.Add(-refusalLogEvery) // the period has passed
	l.mu.Unlock()
	l.log(log, "refused")
	if n := strings.Count(buf.String(), "msg=refused"); n != 2 || !strings.Contains(buf.String(), "more_since_last_line=99") {
		t.Errorf("after the period: %d lines, want 2, the second counting the 99 held back:\n%s", n, buf.String())
	}
}
