package gateway

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// These tests run the forwarder on loopback against real miekg/dns servers
// standing in for the upstream resolvers.

var testLog = slog.New(slog.NewTextHandler(io.Discard, nil))

// upstream is a DNS server on 127.0.0.1 (UDP and TCP on one port).
type upstream struct {
	addr    netip.AddrPort
	mu      sync.Mutex
	network []string // transport of each query received
}

func (u *upstream) seen() []string {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]string(nil), u.network...)
}

// startUpstream serves handler on loopback until the test ends.
func startUpstream(t *testing.T, handler func(w dns.ResponseWriter, r *dns.Msg)) *upstream {
	t.Helper()
	pc, ln, err := listenDNS(context.Background(), netip.MustParseAddrPort("127.0.0.1:0"), "")
	if err != nil {
		t.Fatal(err)
	}
	u := &upstream{addr: netip.MustParseAddrPort(pc.LocalAddr().String())}
	h := dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		u.mu.Lock()
		u.network = append(u.network, w.LocalAddr().Network())
		u.mu.Unlock()
		handler(w, r)
	})
	for _, s := range []*dns.Server{{PacketConn: pc, Handler: h}, {Listener: ln, Handler: h}} {
		started := make(chan struct{})
		s.NotifyStartedFunc = func() { close(started) }
		done := make(chan struct{})
		go func() {
			defer close(done)
			s.ActivateAndServe()
		}()
		<-started
		t.Cleanup(func() {
			s.Shutdown()
			<-done
		})
	}
	return u
}

// zoneHandler answers A queries for name with n addresses, truncating UDP
// answers to the requester's size like a real server.
func zoneHandler(n int) func(w dns.ResponseWriter, r *dns.Msg) {
	return func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg).SetReply(r)
		for i := range n {
			m.Answer = append(m.Answer, &dns.A{
				Hdr: dns.RR_Header{Name: r.Question[0].Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60},
				A:   net.IPv4(192, 0, 2, byte(i+1)),
			})
		}
		if w.LocalAddr().Network() == "udp" {
			size := dns.MinMsgSize
			if opt := r.IsEdns0(); opt != nil {
				size = int(opt.UDPSize())
			}
			m.Truncate(size)
		}
		w.WriteMsg(m)
	}
}

func startForwarder(t *testing.T, cfg DNSConfig) *DNSForwarder {
	t.Helper()
	if !cfg.Listen.IsValid() {
		cfg.Listen = netip.MustParseAddrPort("127.0.0.1:0")
	}
	cfg.Logger = testLog
	d, err := NewDNSForwarder(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := d.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return d
}

func query(t *testing.T, network string, addr netip.AddrPort, name string, edns uint16) *dns.Msg {
	t.Helper()
	q := new(dns.Msg).SetQuestion(dns.Fqdn(name), dns.TypeA)
	if edns > 0 {
		q.SetEdns0(edns, false)
	}
	c := dns.Client{Net: network, Timeout: 10 * time.Second}
	resp, _, err := c.Exchange(q, addr.String())
	if err != nil {
		t.Fatalf("%s query %s: %v", network, name, err)
	}
	if resp.Id != q.Id {
		t.Fatalf("answer ID %d, query ID %d", resp.Id, q.Id)
	}
	return resp
}

func TestDNSForwards(t *testing.T) {
	up := startUpstream(t, zoneHandler(1))
	d := startForwarder(t, DNSConfig{Upstreams: []netip.AddrPort{up.addr}})
	for _, network := range []string{"udp", "tcp"} {
		resp := query(t, network, d.Addr(), "www.example.test", 0)
		if resp.Rcode != dns.RcodeSuccess || len(resp.Answer) != 1 {
			t.Errorf("%s: rcode %s, %d answers", network, dns.RcodeToString[resp.Rcode], len(resp.Answer))
		}
	}
	s := d.Stats()
	if s.QueriesUDP != 1 || s.QueriesTCP != 1 {
		t.Errorf("stats %+v, want one query per transport", s)
	}
	// The forwarder asks upstream over UDP whatever the client used.
	if got := up.seen(); strings.Join(got, ",") != "udp,udp" {
		t.Errorf("upstream saw %v", got)
	}
}

func TestDNSTruncation(t *testing.T) {
	const answers = 100 // ~1.7 kB
	up := startUpstream(t, zoneHandler(answers))
	d := startForwarder(t, DNSConfig{Upstreams: []netip.AddrPort{up.addr}})

	// A plain UDP client (512 bytes) gets a truncated answer with TC...
	resp := query(t, "udp", d.Addr(), "big.example.test", 0)
	if !resp.Truncated || len(resp.Answer) >= answers {
		t.Errorf("UDP answer: TC=%v with %d answers, want truncated", resp.Truncated, len(resp.Answer))
	}
	resp.Compress = true // as sent: Len then measures the wire size
	if l := resp.Len(); l > dns.MinMsgSize {
		t.Errorf("UDP answer of %d bytes exceeds 512", l)
	}
	// ...even when it advertises a huge buffer: answers stay under 1232 bytes.
	resp = query(t, "udp", d.Addr(), "big.example.test", 65000)
	resp.Compress = true
	if !resp.Truncated || resp.Len() > maxUDPSize {
		t.Errorf("EDNS UDP answer: TC=%v, %d bytes", resp.Truncated, resp.Len())
	}
	// ...and the full answer over TCP.
	resp = query(t, "tcp", d.Addr(), "big.example.test", 0)
	if resp.Truncated || len(resp.Answer) != answers {
		t.Errorf("TCP answer: TC=%v with %d answers, want %d", resp.Truncated, len(resp.Answer), answers)
	}
	s := d.Stats()
	if s.UpstreamTCPRetries != 3 || s.Truncated != 2 {
		t.Errorf("stats %+v: want 3 upstream TCP retries and 2 truncated answers", s)
	}
	if got := strings.Join(up.seen(), ","); got != "udp,tcp,udp,tcp,udp,tcp" {
		t.Errorf("upstream transports %s, want a TCP retry after each UDP answer", got)
	}
}

func TestDNSFailover(t *testing.T) {
	// A closed port: the kernel answers ICMP port unreachable at once.
	pc, ln, err := listenDNS(context.Background(), netip.MustParseAddrPort("127.0.0.1:0"), "")
	if err != nil {
		t.Fatal(err)
	}
	dead := netip.MustParseAddrPort(pc.LocalAddr().String())
	pc.Close()
	ln.Close()
	up := startUpstream(t, zoneHandler(1))
	d := startForwarder(t, DNSConfig{Upstreams: []netip.AddrPort{dead, up.addr}})
	resp := query(t, "udp", d.Addr(), "www.example.test", 0)
	if resp.Rcode != dns.RcodeSuccess || len(resp.Answer) != 1 {
		t.Errorf("rcode %s with %d answers, want the second upstream's answer", dns.RcodeToString[resp.Rcode], len(resp.Answer))
	}
}

func TestDNSFailoverSticks(t *testing.T) {
	hang := make(chan struct{})
	dead := startUpstream(t, func(w dns.ResponseWriter, r *dns.Msg) { <-hang })
	t.Cleanup(func() { close(hang) })
	good := startUpstream(t, zoneHandler(1))
	d := startForwarder(t, DNSConfig{Upstreams: []netip.AddrPort{dead.addr, good.addr}, Timeout: 300 * time.Millisecond})
	for range 3 {
		if resp := query(t, "udp", d.Addr(), "www.example.test", 0); resp.Rcode != dns.RcodeSuccess {
			t.Fatalf("rcode %s", dns.RcodeToString[resp.Rcode])
		}
	}
	// Only the first query waited for the silent resolver.
	if n := len(dead.seen()); n != 1 {
		t.Errorf("the silent upstream got %d queries, want 1", n)
	}
	if n := len(good.seen()); n != 3 {
		t.Errorf("the working upstream got %d queries, want 3", n)
	}
}

func TestDNSPerClientLimit(t *testing.T) {
	hang := make(chan struct{})
	arrived := make(chan struct{}, 1)
	up := startUpstream(t, func(w dns.ResponseWriter, r *dns.Msg) {
		if strings.HasPrefix(r.Question[0].Name, "slow.") {
			arrived <- struct{}{}
			<-hang
			return
		}
		zoneHandler(1)(w, r)
	})
	t.Cleanup(func() { close(hang) })
	d := startForwarder(t, DNSConfig{
		Listen:               netip.MustParseAddrPort("127.0.0.1:0"),
		Upstreams:            []netip.AddrPort{up.addr},
		MaxInFlightPerClient: 1,
		Timeout:              30 * time.Second,
	})
	// 127.0.0.1 uses its one slot on a query the upstream sits on.
	c, err := net.Dial("udp", d.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	slow, _ := new(dns.Msg).SetQuestion("slow.example.test.", dns.TypeA).Pack()
	c.Write(slow)
	<-arrived
	if resp := query(t, "udp", d.Addr(), "www.example.test", 0); resp.Rcode != dns.RcodeServerFailure {
		t.Errorf("second query of a busy client: rcode %s, want SERVFAIL", dns.RcodeToString[resp.Rcode])
	}
	// Another client (source 127.0.0.2) is still served.
	other := dns.Client{Dialer: &net.Dialer{LocalAddr: &net.UDPAddr{IP: net.IPv4(127, 0, 0, 2)}}, Timeout: 5 * time.Second}
	resp, _, err := other.Exchange(new(dns.Msg).SetQuestion("www.example.test.", dns.TypeA), d.Addr().String())
	if err != nil || resp.Rcode != dns.RcodeSuccess {
		t.Errorf("other client: %v, %v", resp, err)
	}
	if n := d.Stats().Failures[DNSFailOverload]; n != 1 {
		t.Errorf("overload failures = %d, want 1", n)
	}
}

func TestDNSTimeout(t *testing.T) {
	hang := make(chan struct{})
	up := startUpstream(t, func(w dns.ResponseWriter, r *dns.Msg) { <-hang })
	t.Cleanup(func() { close(hang) }) // before the upstream's shutdown, which waits for handlers
	d := startForwarder(t, DNSConfig{Upstreams: []netip.AddrPort{up.addr}, Timeout: 200 * time.Millisecond})
	resp := query(t, "udp", d.Addr(), "www.example.test", 0)
	if resp.Rcode != dns.RcodeServerFailure {
		t.Errorf("rcode %s, want SERVFAIL", dns.RcodeToString[resp.Rcode])
	}
	if n := d.Stats().Failures[DNSFailTimeout]; n != 1 {
		t.Errorf("timeout failures = %d, want 1", n)
	}
}

func TestDNSOverload(t *testing.T) {
	hang := make(chan struct{})
	arrived := make(chan struct{}, 1)
	up := startUpstream(t, func(w dns.ResponseWriter, r *dns.Msg) {
		arrived <- struct{}{}
		<-hang
	})
	t.Cleanup(func() { close(hang) })
	d := startForwarder(t, DNSConfig{Upstreams: []netip.AddrPort{up.addr}, MaxInFlight: 1, Timeout: 30 * time.Second})

	// Occupy the single slot with a query the upstream never answers.
	c, err := net.Dial("udp", d.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	first, _ := new(dns.Msg).SetQuestion("slow.example.test.", dns.TypeA).Pack()
	c.Write(first)
	<-arrived

	resp := query(t, "udp", d.Addr(), "www.example.test", 0)
	if resp.Rcode != dns.RcodeServerFailure {
		t.Errorf("rcode %s, want an immediate SERVFAIL", dns.RcodeToString[resp.Rcode])
	}
	if n := d.Stats().Failures[DNSFailOverload]; n != 1 {
		t.Errorf("overload failures = %d, want 1", n)
	}
	// Close must abort the hanging exchange instead of waiting 30 s for it.
	closed := make(chan error, 1)
	go func() { closed <- d.Close() }()
	select {
	case err := <-closed:
		if err != nil {
			t.Errorf("Close: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Close waited for the upstream timeout")
	}
}

func TestDNSQuestionMismatch(t *testing.T) {
	up := startUpstream(t, func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg).SetReply(r)
		m.Question[0].Name = "other.example.test."
		w.WriteMsg(m)
	})
	d := startForwarder(t, DNSConfig{Upstreams: []netip.AddrPort{up.addr}})
	resp := query(t, "udp", d.Addr(), "www.example.test", 0)
	if resp.Rcode != dns.RcodeServerFailure {
		t.Errorf("rcode %s, want SERVFAIL for an answer to another question", dns.RcodeToString[resp.Rcode])
	}
	if n := d.Stats().Failures[DNSFailUpstream]; n != 1 {
		t.Errorf("upstream failures = %d, want 1", n)
	}
}

func TestDNSNotify(t *testing.T) {
	up := startUpstream(t, zoneHandler(1))
	d := startForwarder(t, DNSConfig{Upstreams: []netip.AddrPort{up.addr}})
	q := new(dns.Msg).SetNotify("example.test.")
	resp, _, err := (&dns.Client{Timeout: 5 * time.Second}).Exchange(q, d.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	if resp.Rcode != dns.RcodeNotImplemented {
		t.Errorf("NOTIFY answered %s, want NOTIMP", dns.RcodeToString[resp.Rcode])
	}
	if len(up.seen()) != 0 {
		t.Error("NOTIFY was forwarded")
	}
}

func TestDNSConfigErrors(t *testing.T) {
	ok := netip.MustParseAddrPort("127.0.0.1:0")
	up := netip.MustParseAddrPort("192.0.2.1:53")
	for name, cfg := range map[string]DNSConfig{
		"no listen address":     {Upstreams: []netip.AddrPort{up}},
		"upstream without port": {Listen: ok, Upstreams: []netip.AddrPort{netip.AddrPortFrom(up.Addr(), 0)}},
		"upstream is itself":    {Listen: netip.MustParseAddrPort("127.0.0.1:5353"), Upstreams: []netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:5353")}},
		"too many upstreams":    {Listen: ok, Upstreams: make([]netip.AddrPort, maxUpstreams+1)},
		"bad interface":         {Listen: ok, Upstreams: []netip.AddrPort{up}, Interface: "a b"},
		"negative timeout":      {Listen: ok, Upstreams: []netip.AddrPort{up}, Timeout: -1},
		"conn without listener": {Listen: ok, Upstreams: []netip.AddrPort{up}, PacketConn: (*net.UDPConn)(nil)},
		"conn and interface": {Listen: ok, Upstreams: []netip.AddrPort{up}, Interface: "lo",
			PacketConn: (*net.UDPConn)(nil), Listener: (*net.TCPListener)(nil)},
	} {
		t.Run(name, func(t *testing.T) {
			cfg.Logger = testLog
			d, err := NewDNSForwarder(context.Background(), cfg)
			if err == nil {
				d.Close()
				t.Fatal("accepted")
			}
			if !errors.Is(err, errDNSConfig) {
				t.Errorf("error %v is not errDNSConfig", err)
			}
		})
	}
}

func TestParseResolvConf(t *testing.T) {
	in := `# generated by systemd-resolved
nameserver 127.0.0.53
options edns0 trust-ad
search example.org
nameserver   192.0.2.1   # trailing comment
nameserver fe80::1%eth0
nameserver not-an-address
;nameserver 192.0.2.99
nameserver ::ffff:198.51.100.7
`
	got := parseResolvConf(strings.NewReader(in))
	want := []string{"127.0.0.53", "192.0.2.1", "fe80::1%eth0", "198.51.100.7"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("got %v, want %v", got, want)
	}
	many := strings.Repeat("nameserver 192.0.2.1\n", 20)
	if n := len(parseResolvConf(strings.NewReader(many))); n != maxUpstreams {
		t.Errorf("%d nameservers kept, want the bound %d", n, maxUpstreams)
	}
}

func TestUpstreamsFromResolvConf(t *testing.T) {
	stub := startUpstream(t, zoneHandler(1)) // a reachable loopback stub on 127.0.0.1
	port := stub.addr.Port()
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	ap := func(s string) netip.AddrPort { return netip.AddrPortFrom(netip.MustParseAddr(s), port) }
	ctx := context.Background()

	// 127.0.0.53 has no server (as inside a namespace without
	// systemd-resolved): skipped. 127.0.0.1 answers: kept. Public resolvers
	// are not probed.
	mixed := write("mixed", "nameserver 127.0.0.53\nnameserver 127.0.0.1\nnameserver 192.0.2.1\n")
	got, err := upstreamsFromResolvConf(ctx, mixed, filepath.Join(dir, "missing"), port, testLog)
	if err != nil {
		t.Fatal(err)
	}
	if want := []netip.AddrPort{ap("127.0.0.1"), ap("192.0.2.1")}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("got %v, want %v", got, want)
	}

	// Only the unreachable stub: fall back to systemd-resolved's own list.
	onlyStub := write("stub", "nameserver 127.0.0.53\n")
	resolved := write("resolved", "nameserver 192.0.2.53\nnameserver 127.0.0.54\n")
	got, err = upstreamsFromResolvConf(ctx, onlyStub, resolved, port, testLog)
	if err != nil {
		t.Fatal(err)
	}
	if want := []netip.AddrPort{ap("192.0.2.53")}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("fallback: got %v, want %v", got, want)
	}

	// Nothing usable: a clear error.
	if _, err := upstreamsFromResolvConf(ctx, onlyStub, filepath.Join(dir, "missing"), port, testLog); !errors.Is(err, errNoUpstream) {
		t.Errorf("err = %v, want errNoUpstream", err)
	}
	if _, err := upstreamsFromResolvConf(ctx, filepath.Join(dir, "missing"), "", port, testLog); !errors.Is(err, errNoUpstream) {
		t.Errorf("missing resolv.conf: err = %v, want errNoUpstream", err)
	}
}

func FuzzParseResolvConf(f *testing.F) {
	f.Add("nameserver 192.0.2.1\nnameserver fe80::1%eth0\n")
	f.Add("nameserver\nnameserver 1.2.3.4 # x\n;comment\n")
	f.Fuzz(func(t *testing.T, in string) {
		got := parseResolvConf(strings.NewReader(in))
		if len(got) > maxUpstreams {
			t.Fatalf("%d nameservers, bound is %d", len(got), maxUpstreams)
		}
		for _, a := range got {
			if !a.IsValid() || a.Is4In6() {
				t.Fatalf("bad address %v", a)
			}
		}
	})
}
