//go:build linux

package e2e

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/peerlan/peerlan/internal/testpki"
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
	pki := testpki.New(t)
	port := FreePort(t)
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	bin := Binary(t, "signal")
	p := StartProcess(t, "signal", bin, "-addr", addr, "-tls-cert", pki.CertFile, "-tls-key", pki.KeyFile)
	p.WaitOutput(t, regexp.MustCompile(`page=https://127\.0\.0\.1:\d+/ signal=wss://127\.0\.0\.1:\d+/signal`), 20*time.Second)
	base := "https://" + addr
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pki.Pool}}}
	defer hc.CloseIdleConnections()
	waitHTTPVia(t, p, hc, base+"/healthz", 20*time.Second)

	// Chromium does not know the test CA; it is told to accept this
	// certificate alone by its key's hash.
	br := StartBrowser(t, chromedp.Flag("ignore-certificate-errors-spki-list", spkiHash(pki.Cert.Leaf)))
	tab := br.OpenTab(t, "tls", base+"/?room="+uniqueRoom("tls"), true)
	waitNet(t, tab, "connected", lanJoinTimeout)
	if proto := Eval[string](tab, `location.protocol`); proto != "https:" {
		t.Errorf("page protocol %q", proto)
	}
}

// spkiHash is the base64 SHA-256 of the certificate's public key, as
// Chromium's --ignore-certificate-errors-spki-list takes it.
func spkiHash(c *x509.Certificate) string {
	sum := sha256.Sum256(c.RawSubjectPublicKeyInfo)
	return base64.StdEncoding.EncodeToString(sum[:])
}
