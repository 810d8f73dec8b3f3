//go:build linux

package gateway

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// The helper roles run in a child process that `ip netns exec` placed in a
// test namespace, like the real daemons would run:
//
//	internet  an HTTP server on every address, port 80, and an
//	          authoritative DNS server for example.test on dnsAddr
//	gateway   SetupHost + NewDNSForwarder + metrics, until SIGTERM
//	refuse    SetupHost expected to fail; prints which sentinel matched
//
// Each prints "READY" on stdout once serving (refuse prints its verdict).

const helperConfigEnv = "PEERLAN_GATEWAY_TEST_CONFIG"

// helperConfig is passed to the gateway and refuse roles as JSON.
type helperConfig struct {
	LAN       string
	Subnet    string
	Uplink    string
	Allow     []string
	RateLimit uint64
	StateDir  string
	NftPath   string
	// MetricsAddr serves /metrics (gateway namespace loopback).
	MetricsAddr string
	// HostService is a TCP address where the helper answers HTTP, standing
	// for a service on the gateway host that guests must not reach.
	HostService string
}

func (c helperConfig) hostConfig(log *slog.Logger) (HostConfig, error) {
	hc := HostConfig{LAN: c.LAN, Uplink: c.Uplink, GuestRateLimit: c.RateLimit, StateDir: c.StateDir, NftPath: c.NftPath, Logger: log}
	if c.Subnet != "" {
		p, err := netip.ParsePrefix(c.Subnet)
		if err != nil {
			return hc, err
		}
		hc.Subnet = p
	}
	for _, a := range c.Allow {
		p, err := netip.ParsePrefix(a)
		if err != nil {
			return hc, err
		}
		hc.Allow = append(hc.Allow, p)
	}
	return hc, nil
}

func runHelper(role string) int {
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	var err error
	switch role {
	case "internet":
		err = helperInternet()
	case "gateway":
		err = helperGateway(log)
	case "refuse":
		err = helperRefuse(log)
	default:
		err = fmt.Errorf("unknown helper role %q", role)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "helper:", err)
		return 1
	}
	return 0
}

func readHelperConfig() (helperConfig, error) {
	var c helperConfig
	err := json.Unmarshal([]byte(os.Getenv(helperConfigEnv)), &c)
	return c, err
}

// Test zone served by the internet role.
const (
	testZone     = "example.test."
	bigNameCount = 100 // A records of big.example.test: ~1.7 kB, more than one UDP answer holds
)

var testZoneA = map[string]string{
	"www.example.test.":     webAddr,
	"allowed.example.test.": allowedPrivAddr,
}

func helperInternet() error {
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		local, _ := r.Context().Value(http.LocalAddrContextKey).(net.Addr)
		fmt.Fprintf(w, "peerlan test page local=%v remote=%s\n", local, r.RemoteAddr)
	})
	mux.HandleFunc("/blob", func(w http.ResponseWriter, r *http.Request) {
		n, err := strconv.Atoi(r.URL.Query().Get("bytes"))
		if err != nil || n < 0 || n > 64<<20 {
			http.Error(w, "bytes must be 0..64MiB", http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Length", strconv.Itoa(n))
		io.CopyN(w, zeroReader{}, int64(n))
	})
	mux.HandleFunc("/upload", func(w http.ResponseWriter, r *http.Request) {
		n, _ := io.Copy(io.Discard, io.LimitReader(r.Body, 64<<20))
		fmt.Fprintf(w, "%d\n", n)
	})
	ln, err := net.Listen("tcp4", ":80")
	if err != nil {
		return err
	}
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go hs.Serve(ln)

	handler := dns.HandlerFunc(serveTestZone)
	udp := &dns.Server{Addr: dnsAddr + ":53", Net: "udp", Handler: handler}
	tcp := &dns.Server{Addr: dnsAddr + ":53", Net: "tcp", Handler: handler}
	errs := make(chan error, 2)
	started := make(chan struct{}, 2)
	for _, s := range []*dns.Server{udp, tcp} {
		s.NotifyStartedFunc = func() { started <- struct{}{} }
		go func() { errs <- s.ListenAndServe() }()
	}
	for range 2 {
		select {
		case <-started:
		case err := <-errs:
			return err
		}
	}
	fmt.Println("READY")
	<-sigs
	hs.Close()
	udp.Shutdown()
	tcp.Shutdown()
	return nil
}

// serveTestZone answers for example.test like an authoritative server,
// truncating UDP answers to the client's advertised size.
func serveTestZone(w dns.ResponseWriter, r *dns.Msg) {
	m := new(dns.Msg).SetReply(r)
	m.Authoritative = true
	q := r.Question[0]
	switch {
	case q.Qtype == dns.TypeA && testZoneA[q.Name] != "":
		m.Answer = append(m.Answer, aRecord(q.Name, testZoneA[q.Name]))
	case q.Qtype == dns.TypeA && q.Name == "big."+testZone:
		for i := range bigNameCount {
			m.Answer = append(m.Answer, aRecord(q.Name, fmt.Sprintf("198.51.100.%d", i+1)))
		}
	case dns.IsSubDomain(testZone, q.Name) && testZoneA[q.Name] == "" && q.Name != "big."+testZone:
		m.Rcode = dns.RcodeNameError
	}
	if _, udp := w.LocalAddr().(*net.UDPAddr); udp {
		size := dns.MinMsgSize
		if opt := r.IsEdns0(); opt != nil {
			size = int(opt.UDPSize())
		}
		m.Truncate(size)
	}
	w.WriteMsg(m)
}

func aRecord(name, addr string) dns.RR {
	return &dns.A{Hdr: dns.RR_Header{Name: name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60}, A: net.ParseIP(addr)}
}

type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

func helperGateway(log *slog.Logger) error {
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	cfg, err := readHelperConfig()
	if err != nil {
		return err
	}
	hc, err := cfg.hostConfig(log)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	host, err := SetupHost(ctx, hc)
	if err != nil {
		return err
	}
	fwd, err := NewDNSForwarder(ctx, DNSConfig{
		Listen:    netip.AddrPortFrom(host.GatewayAddr(), 53),
		Interface: host.LAN(),
		Logger:    log,
	})
	if err != nil {
		return errors.Join(err, host.Close())
	}
	reg := prometheus.NewRegistry()
	metrics, err := NewMetrics(reg, host, fwd)
	if err != nil {
		return errors.Join(err, fwd.Close(), host.Close())
	}
	var servers []*http.Server
	serve := func(addr string, h http.Handler) error {
		ln, err := net.Listen("tcp4", addr)
		if err != nil {
			return err
		}
		s := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
		servers = append(servers, s)
		go s.Serve(ln)
		return nil
	}
	if cfg.MetricsAddr != "" {
		if err := serve(cfg.MetricsAddr, promhttp.HandlerFor(reg, promhttp.HandlerOpts{})); err != nil {
			return errors.Join(err, fwd.Close(), host.Close())
		}
	}
	if cfg.HostService != "" {
		err := serve(cfg.HostService, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintln(w, "gateway host service")
		}))
		if err != nil {
			return errors.Join(err, fwd.Close(), host.Close())
		}
	}
	fmt.Println("READY")
	<-sigs
	for _, s := range servers {
		s.Close()
	}
	fmt.Println("STATUS", metrics.Status(context.Background()))
	return errors.Join(fwd.Close(), host.Close())
}

// refusalSentinels names the errors a refusal test may expect.
var refusalSentinels = map[string]error{
	"not_privileged":   errNotPrivileged,
	"nft_missing":      errNftMissing,
	"subnet_overlap":   errSubnetOverlap,
	"uplink_missing":   errUplinkNotFound,
	"lan_missing":      errLANNotFound,
	"already_running":  errAlreadyRunning,
	"no_default_route": errNoDefaultRoute,
}

func helperRefuse(log *slog.Logger) error {
	cfg, err := readHelperConfig()
	if err != nil {
		return err
	}
	hc, err := cfg.hostConfig(log)
	if err != nil {
		return err
	}
	host, err := SetupHost(context.Background(), hc)
	if err == nil {
		fmt.Println("ACCEPTED")
		return host.Close()
	}
	matched := "none"
	for name, sentinel := range refusalSentinels {
		if errors.Is(err, sentinel) {
			matched = name
		}
	}
	w := bufio.NewWriter(os.Stdout)
	fmt.Fprintf(w, "REFUSED %s %v\n", matched, err)
	return w.Flush()
}
