//go:build linux

package e2e

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// TestStaticFromSignal fetches the built page from a real bin/signal as a
// browser would: the wasm peer comes as brotli, gzip or itself as asked, with
// a strong ETag that a revalidation answers 304.
func TestStaticFromSignal(t *testing.T) {
	RequirePageAssets(t)
	wasm := filepath.Join(RepoRoot, "web", "dist", "peerlan.wasm")
	if _, err := os.Stat(wasm + ".br"); err != nil {
		skipOrFail(t, "precompressed assets not built (%v); run `make build` first", err)
	}
	sig := StartSignal(t)
	c := &http.Client{Transport: &http.Transport{DisableCompression: true}}
	get := func(path string, hdr ...string) (*http.Response, []byte) {
		t.Helper()
		req, _ := http.NewRequest("GET", sig.Base+path, nil)
		for i := 0; i+1 < len(hdr); i += 2 {
			req.Header.Set(hdr[i], hdr[i+1])
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, b
	}
	for _, tc := range []struct{ accept, enc, file string }{
		{"gzip, deflate, br, zstd", "br", wasm + ".br"},
		{"gzip", "gzip", wasm + ".gz"},
		{"", "", wasm},
	} {
		resp, body := get("/dist/peerlan.wasm", "Accept-Encoding", tc.accept)
		want, _ := os.ReadFile(tc.file)
		if resp.StatusCode != 200 || resp.Header.Get("Content-Encoding") != tc.enc || len(body) != len(want) {
			// bin/signal embeds what web/dist held when it was built.
			t.Fatalf("Accept-Encoding %q: %s, Content-Encoding %q, %d bytes; want %q, %d bytes (%s; is bin/signal older than web/dist?)",
				tc.accept, resp.Status, resp.Header.Get("Content-Encoding"), len(body), tc.enc, len(want), tc.file)
		}
		if resp.Header.Get("Content-Type") != "application/wasm" || resp.Header.Get("Vary") != "Accept-Encoding" {
			t.Errorf("Accept-Encoding %q: Content-Type %q, Vary %q", tc.accept, resp.Header.Get("Content-Type"), resp.Header.Get("Vary"))
		}
		tag := resp.Header.Get("ETag")
		again, body := get("/dist/peerlan.wasm", "Accept-Encoding", tc.accept, "If-None-Match", tag)
		if again.StatusCode != http.StatusNotModified || len(body) != 0 {
			t.Errorf("Accept-Encoding %q: revalidating %s: %s with %d bytes", tc.accept, tag, again.Status, len(body))
		}
	}
	if resp, _ := get("/", "Accept-Encoding", "gzip"); resp.Header.Get("Content-Type") != "text/html; charset=utf-8" || resp.Header.Get("ETag") == "" {
		t.Errorf("GET /: %s, %v", resp.Status, resp.Header)
	}
}

// TestTLSPageConnects serves the page and the WebSocket from bin/signal
// -tls-cert/-tls-key on one port, opens it in Chromium over https and
// waits for the page's network to say "connected" (its WebSocket is wss://
// because the page is https://).
func TestTLSPageConnects(t *testing.T) {
	VerifyNoLeaks(t)
	RequireChromium(t)
	RequirePageAssets(t)
	lanRequireWasm(t)
	cert, key, pool := writeTestCert(t)
	port := FreePort(t)
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	bin := Binary(t, "signal")
	p := StartProcess(t, "signal", bin, "-addr", addr, "-tls-cert", cert, "-tls-key", key)
	p.WaitOutput(t, regexp.MustCompile(`page=https://127\.0\.0\.1:\d+/ signal=wss://127\.0\.0\.1:\d+/signal`), 20*time.Second)
	base := "https://" + addr
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	defer hc.CloseIdleConnections()
	waitHTTPVia(t, p, hc, base+"/healthz", 20*time.Second)

	// Chromium does not know the test CA; it is told to accept this
	// certificate alone by its key's hash.
	br := StartBrowser(t, chromedp.Flag("ignore-certificate-errors-spki-list", spkiHash(t, cert)))
	tab := br.OpenTab(t, "tls", base+"/?room="+uniqueRoom("tls"), true)
	waitNet(t, tab, "connected", lanJoinTimeout)
	if proto := Eval[string](tab, `location.protocol`); proto != "https:" {
		t.Errorf("page protocol %q", proto)
	}
}

// writeTestCert writes a self-signed certificate for 127.0.0.1 and
// localhost and its key, and returns their files and a pool trusting it.
func writeTestCert(t testing.TB) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "peerlan e2e"},
		DNSNames: []string{"localhost"}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IsCA: true, BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	keyDER, _ := x509.MarshalPKCS8PrivateKey(key)
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	pool = x509.NewCertPool()
	pool.AddCert(c)
	return certFile, keyFile, pool
}

// spkiHash is the base64 SHA-256 of the certificate's public key, as
// Chromium's --ignore-certificate-errors-spki-list takes it.
func spkiHash(t testing.TB, certFile string) string {
	t.Helper()
	b, err := os.ReadFile(certFile)
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(b)
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(c.RawSubjectPublicKeyInfo)
	return base64.StdEncoding.EncodeToString(sum[:])
}
