package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/acme/autocert"

	"github.com/peerlan/peerlan/internal/testpki"
	"github.com/peerlan/peerlan/signal/proto"
	"github.com/peerlan/peerlan/signal/signalclient"
)

// testPKI is testpki's CA and server certificate, and otherKey, a key
// file that matches no certificate.
type testPKI struct {
	*testpki.PKI
	otherKey string
}

func newTestPKI(t *testing.T) *testPKI {
	t.Helper()
	return &testPKI{PKI: testpki.New(t), otherKey: testpki.KeyFile(t, nil)}
}

func parseServeFlags(t *testing.T, args ...string) serveFlags {
	t.Helper()
	fs := flag.NewFlagSet("signal", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	var f serveFlags
	f.turn.register(fs)
	f.tls.register(fs)
	if err := fs.Parse(args); err != nil {
		t.Fatal(err)
	}
	return f
}

// startServe runs serve as bin/signal does, on a free loopback port, and
// returns its address; the server stops with the test.
func startServe(t *testing.T, f serveFlags) net.Addr {
	t.Helper()
	f.addr = "127.0.0.1:0"
	f.path = "/signal"
	f.subnet = "10.86.0.0/24"
	f.cfg.MaxMessageBytes, f.cfg.MaxPeersPerRoom, f.cfg.MaxRooms, f.cfg.MaxConnections = 64<<10, 64, 10, 10
	f.cfg.MessagesPerSecond, f.cfg.Burst, f.cfg.SendQueue = 50, 100, 64
	f.cfg.KeepaliveInterval, f.cfg.KeepaliveTimeout, f.cfg.ResumeGrace = 5*time.Second, 15*time.Second, time.Second
	log := slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
	ctx, cancel := context.WithCancel(context.Background())
	addrc := make(chan net.Addr, 1)
	errc := make(chan error, 1)
	go func() { errc <- serve(ctx, f, log, func(a net.Addr) { addrc <- a }) }()
	t.Cleanup(func() {
		cancel()
		if err := <-errc; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	select {
	case a := <-addrc:
		return a
	case err := <-errc:
		t.Fatalf("serve: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("serve did not listen")
	}
	return nil
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(b)))
	return len(b), nil
}

// TestTLSServe serves the page over https and the WebSocket over wss on one
// port, with a certificate from files, and joins a room through it.
func TestTLSServe(t *testing.T) {
	pki := newTestPKI(t)
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "index.html"), []byte("<!doctype html>peerlan over TLS"), 0o644)
	f := parseServeFlags(t, "-tls-cert", pki.CertFile, "-tls-key", pki.KeyFile)
	f.webDir = dir
	addr := startServe(t, f)
	base := "https://" + addr.String()

	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pki.Pool}, ForceAttemptHTTP2: true}}
	defer client.CloseIdleConnections()
	resp, err := client.Get(base + "/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(body) != "<!doctype html>peerlan over TLS" || resp.Header.Get("ETag") == "" {
		t.Fatalf("GET /: %s %q ETag %q", resp.Status, body, resp.Header.Get("ETag"))
	}
	if resp.ProtoMajor != 2 {
		t.Errorf("GET / over %s, want HTTP/2", resp.Proto)
	}
	// Plain http on the TLS port is refused, not served.
	if resp, err := http.Get("http://" + addr.String() + "/"); err == nil {
		resp.Body.Close()
		if resp.StatusCode == 200 {
			t.Error("plain http answered 200 on the TLS port")
		}
	}

	c, err := signalclient.New(signalclient.Config{URL: "wss://" + addr.String() + "/signal", Room: "tls-room"})
	if err != nil {
		t.Fatal(err)
	}
	c.SetTLSConfig(&tls.Config{RootCAs: pki.Pool})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	for ev := range c.Events() {
		if w, ok := ev.(*proto.Welcome); ok {
			if !w.IP.IsValid() {
				t.Errorf("welcome without an address: %+v", w)
			}
			break
		}
		if d, ok := ev.(*signalclient.Disconnected); ok {
			t.Fatalf("wss join: %v", d.Err)
		}
	}
	cancel()
	<-done

	// A client that does not trust the CA is refused.
	bad, _ := signalclient.New(signalclient.Config{URL: "wss://" + addr.String() + "/signal", Room: "tls-room"})
	ctx2, cancel2 := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel2()
	go bad.Run(ctx2)
	for ev := range bad.Events() {
		if d, ok := ev.(*signalclient.Disconnected); ok {
			var uerr x509.UnknownAuthorityError
			if !errors.As(d.Err, &uerr) && !strings.Contains(d.Err.Error(), "certificate") {
				t.Errorf("untrusted join failed with %v, want a certificate error", d.Err)
			}
			break
		}
		if _, ok := ev.(*proto.Welcome); ok {
			t.Fatal("a client without the CA joined")
		}
	}
}

func TestTLSFlagErrors(t *testing.T) {
	pki := newTestPKI(t)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	unreadable := filepath.Join(t.TempDir(), "missing.pem")
	garbage := filepath.Join(t.TempDir(), "garbage.pem")
	os.WriteFile(garbage, []byte("not a certificate"), 0o600)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"-tls-cert", pki.CertFile, "-tls-key", pki.KeyFile, "-acme-domain", "peerlan.example.org"}, "choose one"},
		{[]string{"-tls-cert", pki.CertFile}, "give both"},
		{[]string{"-tls-key", pki.KeyFile}, "give both"},
		{[]string{"-tls-cert", unreadable, "-tls-key", pki.KeyFile}, "-tls-cert: stat " + unreadable},
		{[]string{"-tls-cert", pki.CertFile, "-tls-key", unreadable}, "-tls-key: stat " + unreadable},
		{[]string{"-tls-cert", pki.CertFile, "-tls-key", pki.otherKey}, "private key does not match public key"},
		{[]string{"-tls-cert", garbage, "-tls-key", pki.KeyFile}, "-tls-cert " + garbage + " and -tls-key"},
		{[]string{"-acme-domain", "https://peerlan.example.org"}, "without scheme or port"},
		{[]string{"-acme-domain", "203.0.113.7"}, "without scheme or port"},
		{[]string{"-acme-email", "ops@example.org"}, "need -acme-domain"},
	} {
		f := parseServeFlags(t, tc.args...)
		_, err := f.tls.setup("", log)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: error %v, want one containing %q", tc.args, err, tc.want)
		}
		// serve itself refuses before it listens.
		if err := serve(context.Background(), f, log, nil); err == nil {
			t.Errorf("%v: serve started", tc.args)
		}
	}
	f := parseServeFlags(t, "-acme-domain", "peerlan.example.org,www.peerlan.example.org", "-acme-cache", t.TempDir())
	ts, err := f.tls.setup("", log)
	if err != nil || ts.acme == nil {
		t.Fatalf("acme: %v", err)
	}
	if !strings.Contains(strings.Join(ts.config.NextProtos, ","), "acme-tls/1") {
		t.Errorf("acme: NextProtos %v lack acme-tls/1 (TLS-ALPN-01 on the same port)", ts.config.NextProtos)
	}
	// The default cache lives beside the secret file.
	secret := filepath.Join(t.TempDir(), "state", "secret")
	f = parseServeFlags(t, "-acme-domain", "peerlan.example.org")
	if _, err := f.tls.setup(secret, log); err != nil {
		t.Fatal(err)
	}
	if st, err := os.Stat(filepath.Join(filepath.Dir(secret), "acme")); err != nil || st.Mode().Perm() != 0o700 {
		t.Errorf("default acme cache: %v %v", st, err)
	}
}

func TestPageURLs(t *testing.T) {
	pki := newTestPKI(t)
	kp, err := loadKeyPair(pki.CertFile, pki.KeyFile, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	certTLS := &tlsSetup{config: &tls.Config{GetCertificate: kp.get}, names: kp.leaf().DNSNames}
	acmeTLS := &tlsSetup{names: []string{"peerlan.example.org"}}
	acmeTLS.acme = &autocert.Manager{}
	tcp := func(s string) net.Addr { a, _ := net.ResolveTCPAddr("tcp", s); return a }
	for _, tc := range []struct {
		addr     string
		ts       *tlsSetup
		page, ws string
		all      bool
	}{
		{"127.0.0.1:8080", nil, "http://127.0.0.1:8080", "ws://127.0.0.1:8080", false},
		{"0.0.0.0:8080", nil, "http://localhost:8080", "ws://localhost:8080", true},
		{"[::]:8080", nil, "http://localhost:8080", "ws://localhost:8080", true},
		{"[::1]:8080", nil, "http://[::1]:8080", "ws://[::1]:8080", false},
		{"192.0.2.1:80", nil, "http://192.0.2.1", "ws://192.0.2.1", false},
		{"127.0.0.1:8443", certTLS, "https://127.0.0.1:8443", "wss://127.0.0.1:8443", false},
		{"0.0.0.0:8443", certTLS, "https://localhost:8443", "wss://localhost:8443", true},
		{"192.0.2.1:443", certTLS, "https://localhost", "wss://localhost", false},
		{"[::]:443", acmeTLS, "https://peerlan.example.org", "wss://peerlan.example.org", true},
	} {
		page, ws, all := pageURLs(tcp(tc.addr), tc.ts)
		if page != tc.page || ws != tc.ws || all != tc.all {
			t.Errorf("%s: %s %s %v, want %s %s %v", tc.addr, page, ws, all, tc.page, tc.ws, tc.all)
		}
	}
}

// A renewed certificate is served without a restart; files that do not load
// keep the old one in service.
func TestTLSKeyPairReload(t *testing.T) {
	pki := newTestPKI(t)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	kp, err := loadKeyPair(pki.CertFile, pki.KeyFile, log)
	if err != nil {
		t.Fatal(err)
	}
	first, _ := kp.get(nil)
	renewed := newTestPKI(t)
	later := time.Now().Add(time.Hour)
	for src, dst := range map[string]string{renewed.CertFile: pki.CertFile, renewed.KeyFile: pki.KeyFile} {
		b, _ := os.ReadFile(src)
		os.WriteFile(dst, b, 0o600)
		os.Chtimes(dst, later, later)
	}
	if c, _ := kp.get(nil); c != first {
		t.Fatal("reloaded before the recheck interval")
	}
	kp.mu.Lock()
	kp.checked = time.Now().Add(-keyPairRecheck)
	kp.mu.Unlock()
	if c, _ := kp.get(nil); c == first || c.Leaf.Equal(first.Leaf) {
		t.Fatal("the renewed certificate is not served")
	}
	second, _ := kp.get(nil)
	// A half-written renewal: the key does not match.
	b, _ := os.ReadFile(pki.otherKey)
	os.WriteFile(pki.KeyFile, b, 0o600)
	os.Chtimes(pki.KeyFile, later.Add(time.Hour), later.Add(time.Hour))
	kp.mu.Lock()
	kp.checked = time.Now().Add(-keyPairRecheck)
	kp.mu.Unlock()
	if c, err := kp.get(nil); err != nil || c != second {
		t.Fatalf("a bad renewal replaced the certificate: %v", err)
	}
}
