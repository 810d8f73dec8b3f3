package static

import (
	"bytes"
	"compress/gzip"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"testing/fstest"
	"time"
)

// Test trees: a large compressible wasm with both built variants, a page with
// none (gzip'd in memory), a file whose variants do not pay, a tiny file.
var (
	wasmData = bytes.Repeat([]byte("\x00asm peerlan frame "), 4000) // 76 kB
	htmlData = []byte("<!doctype html><title>peerlan</title>" + strings.Repeat("<p>a LAN for browser VMs</p>", 100))
	randData = func() []byte { // incompressible
		b := make([]byte, 8192)
		x := uint32(1)
		for i := range b {
			x = x*1664525 + 1013904223
			b[i] = byte(x >> 24)
		}
		return b
	}()
)

func gz(t *testing.T, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	zw.Write(b)
	zw.Close()
	return buf.Bytes()
}

// fakeBr stands for a brotli file: the handler never decodes variants, so
// any bytes shorter than the original do.
var fakeBr = []byte("brotli bytes of the wasm")

func testTree(t *testing.T) fstest.MapFS {
	return fstest.MapFS{
		"index.html":            {Data: htmlData},
		"dist/peerlan.wasm":     {Data: wasmData},
		"dist/peerlan.wasm.gz":  {Data: gz(t, wasmData)},
		"dist/peerlan.wasm.br":  {Data: fakeBr},
		"dist/v86/libv86.mjs":   {Data: []byte("export const V86 = 1;")},
		"dist/guest/bzImage":    {Data: randData},
		"dist/guest/bzImage.br": {Data: randData[:8000]}, // saves under 5%
		"dist/guest/initrd.gz":  {Data: randData},        // a file of its own: no initrd beside it
		"dist/style.css":        {Data: []byte("body{}")},
		"attach/index.html":     {Data: []byte("<!doctype html>attach")},
		"dist/stale.wasm":       {Data: wasmData},
		"dist/stale.wasm.gz":    {Data: gz(t, wasmData[:1000])}, // made from another file
	}
}

func newHandler(t *testing.T, fsys fstest.MapFS) *Handler {
	t.Helper()
	h, err := New(fsys)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func do(h http.Handler, method, target string, hdr ...string) *http.Response {
	r := httptest.NewRequest(method, target, nil)
	for i := 0; i+1 < len(hdr); i += 2 {
		r.Header.Set(hdr[i], hdr[i+1])
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w.Result()
}

func body(t *testing.T, resp *http.Response) []byte {
	t.Helper()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestStaticNegotiation(t *testing.T) {
	h := newHandler(t, testTree(t))
	for _, tc := range []struct {
		accept, want string
	}{
		{"", ""},
		{"gzip, deflate, br, zstd", "br"},
		{"gzip", "gzip"},
		{"x-gzip", "gzip"},
		{"br;q=0, gzip", "gzip"},
		{"br;q=0.5, gzip;q=0.9", "gzip"},
		{"br;q=0, gzip;q=0", ""},
		{"*", "br"},
		{"*;q=0", ""},
		{"gzip;q=0, *", "br"},
		{"br;q=0, *;q=0.1", "gzip"},
		{"identity", ""},
		{"br;q=0.2, identity;q=0.9", ""},
		{"deflate", ""},
		{"gzip;q=abc", ""},
		{"BR", "br"},
	} {
		resp := do(h, "GET", "/dist/peerlan.wasm", "Accept-Encoding", tc.accept)
		b := body(t, resp)
		if got := resp.Header.Get("Content-Encoding"); got != tc.want {
			t.Errorf("Accept-Encoding %q: Content-Encoding %q, want %q", tc.accept, got, tc.want)
			continue
		}
		want := map[string][]byte{"": wasmData, "br": fakeBr, "gzip": gz(t, wasmData)}[tc.want]
		if !bytes.Equal(b, want) {
			t.Errorf("Accept-Encoding %q: body of %d bytes, want the %q variant's %d", tc.accept, len(b), tc.want, len(want))
		}
		if resp.Header.Get("Vary") != "Accept-Encoding" {
			t.Errorf("Accept-Encoding %q: Vary %q", tc.accept, resp.Header.Get("Vary"))
		}
		if resp.Header.Get("Content-Type") != "application/wasm" {
			t.Errorf("Content-Type %q", resp.Header.Get("Content-Type"))
		}
		if cl := resp.Header.Get("Content-Length"); cl != strconv.Itoa(len(want)) {
			t.Errorf("Accept-Encoding %q: Content-Length %s, want %d", tc.accept, cl, len(want))
		}
	}
}

func TestStaticETag(t *testing.T) {
	h := newHandler(t, testTree(t))
	tags := map[string]bool{}
	for _, accept := range []string{"", "gzip", "br"} {
		resp := do(h, "GET", "/dist/peerlan.wasm", "Accept-Encoding", accept)
		tag := resp.Header.Get("ETag")
		if !strings.HasPrefix(tag, `"`) || !strings.HasSuffix(tag, `"`) || len(tag) < 20 {
			t.Fatalf("%q: ETag %q is not a strong tag", accept, tag)
		}
		if tags[tag] {
			t.Errorf("%q: ETag %s shared by two representations", accept, tag)
		}
		tags[tag] = true
		if cc := resp.Header.Get("Cache-Control"); cc != "no-cache" {
			t.Errorf("Cache-Control %q", cc)
		}
		// The tag is stable across requests and answers If-None-Match.
		again := do(h, "GET", "/dist/peerlan.wasm", "Accept-Encoding", accept, "If-None-Match", tag)
		if again.StatusCode != http.StatusNotModified || len(body(t, again)) != 0 {
			t.Errorf("%q: If-None-Match %s: %s, want 304 without a body", accept, tag, again.Status)
		}
		if again.Header.Get("ETag") != tag {
			t.Errorf("%q: 304 carries ETag %q, want %s", accept, again.Header.Get("ETag"), tag)
		}
		weak := do(h, "GET", "/dist/peerlan.wasm", "Accept-Encoding", accept, "If-None-Match", `"other", W/`+tag)
		if weak.StatusCode != http.StatusNotModified {
			t.Errorf("%q: a list with the weak form: %s, want 304", accept, weak.Status)
		}
	}
	// Another representation's tag does not match: the cache holds
	// identity bytes, a br answer must carry the body.
	id := do(h, "GET", "/dist/peerlan.wasm").Header.Get("ETag")
	if resp := do(h, "GET", "/dist/peerlan.wasm", "Accept-Encoding", "br", "If-None-Match", id); resp.StatusCode != http.StatusOK {
		t.Errorf("br with the identity tag: %s, want 200", resp.Status)
	}
	if resp := do(h, "GET", "/dist/peerlan.wasm", "If-None-Match", `"nope"`); resp.StatusCode != http.StatusOK {
		t.Errorf("a foreign tag: %s, want 200", resp.Status)
	}
}

func TestStaticHEAD(t *testing.T) {
	h := newHandler(t, testTree(t))
	resp := do(h, "HEAD", "/dist/peerlan.wasm", "Accept-Encoding", "br")
	if resp.StatusCode != 200 || len(body(t, resp)) != 0 {
		t.Fatalf("HEAD: %s with a body", resp.Status)
	}
	if resp.Header.Get("Content-Length") != strconv.Itoa(len(fakeBr)) || resp.Header.Get("Content-Encoding") != "br" || resp.Header.Get("ETag") == "" {
		t.Errorf("HEAD headers: %v", resp.Header)
	}
	if resp := do(h, "POST", "/index.html"); resp.StatusCode != http.StatusMethodNotAllowed || resp.Header.Get("Allow") != "GET, HEAD" {
		t.Errorf("POST: %s, Allow %q", resp.Status, resp.Header.Get("Allow"))
	}
}

func TestStaticRange(t *testing.T) {
	h := newHandler(t, testTree(t))
	resp := do(h, "GET", "/dist/peerlan.wasm", "Accept-Encoding", "br, gzip", "Range", "bytes=4-11")
	b := body(t, resp)
	if resp.StatusCode != http.StatusPartialContent || !bytes.Equal(b, wasmData[4:12]) {
		t.Fatalf("Range: %s %q, want 206 %q", resp.Status, b, wasmData[4:12])
	}
	if resp.Header.Get("Content-Encoding") != "" {
		t.Errorf("a range came from the %q variant", resp.Header.Get("Content-Encoding"))
	}
	if cr := resp.Header.Get("Content-Range"); cr != "bytes 4-11/"+strconv.Itoa(len(wasmData)) {
		t.Errorf("Content-Range %q", cr)
	}
	// If-Range with the identity tag gives the range; with another, all.
	tag := do(h, "GET", "/dist/peerlan.wasm").Header.Get("ETag")
	if resp := do(h, "GET", "/dist/peerlan.wasm", "Range", "bytes=0-3", "If-Range", tag); resp.StatusCode != http.StatusPartialContent {
		t.Errorf("If-Range current: %s", resp.Status)
	}
	if resp := do(h, "GET", "/dist/peerlan.wasm", "Range", "bytes=0-3", "If-Range", `"old"`); resp.StatusCode != http.StatusOK {
		t.Errorf("If-Range old: %s", resp.Status)
	}
}

func TestStaticContentTypes(t *testing.T) {
	h := newHandler(t, testTree(t))
	for p, want := range map[string]string{
		"/":                     "text/html; charset=utf-8",
		"/index.html":           "text/html; charset=utf-8",
		"/dist/v86/libv86.mjs":  "text/javascript; charset=utf-8",
		"/dist/style.css":       "text/css; charset=utf-8",
		"/dist/peerlan.wasm":    "application/wasm",
		"/dist/guest/bzImage":   "application/octet-stream",
		"/dist/guest/initrd.gz": "application/gzip",
	} {
		resp := do(h, "GET", p, "Accept-Encoding", "gzip, br")
		if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != want {
			t.Errorf("%s: %s, Content-Type %q, want %q", p, resp.Status, resp.Header.Get("Content-Type"), want)
		}
		if resp.Header.Get("X-Content-Type-Options") != "nosniff" || resp.Header.Get("Referrer-Policy") != "no-referrer" {
			t.Errorf("%s: security headers missing: %v", p, resp.Header)
		}
		if resp.Header.Get("Access-Control-Allow-Origin") != "*" || resp.Header.Get("Access-Control-Allow-Credentials") != "" {
			t.Errorf("%s: not readable from another origin without credentials: %v", p, resp.Header)
		}
	}
}

func TestStaticNoVariant(t *testing.T) {
	h := newHandler(t, testTree(t))
	// No built variant: gzip'd in memory, never brotli.
	resp := do(h, "GET", "/index.html", "Accept-Encoding", "br, gzip")
	b := body(t, resp)
	if resp.Header.Get("Content-Encoding") != "gzip" {
		t.Fatalf("index.html: Content-Encoding %q, want gzip in memory", resp.Header.Get("Content-Encoding"))
	}
	zr, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	if plain, _ := io.ReadAll(zr); !bytes.Equal(plain, htmlData) {
		t.Error("index.html: the in-memory gzip does not decode to the file")
	}
	tag := resp.Header.Get("ETag")
	if resp := do(h, "GET", "/index.html", "Accept-Encoding", "gzip", "If-None-Match", tag); resp.StatusCode != http.StatusNotModified {
		t.Errorf("index.html gzip revalidation: %s", resp.Status)
	}
	// Too small to compress, incompressible, a variant that saves under
	// 5%, a stale gzip: each served as it is, with no Vary.
	for _, p := range []string{"/dist/style.css", "/dist/guest/bzImage", "/dist/guest/initrd.gz"} {
		resp := do(h, "GET", p, "Accept-Encoding", "br, gzip")
		if resp.Header.Get("Content-Encoding") != "" || resp.Header.Get("Vary") != "" {
			t.Errorf("%s: Content-Encoding %q, Vary %q, want neither", p, resp.Header.Get("Content-Encoding"), resp.Header.Get("Vary"))
		}
	}
	resp = do(h, "GET", "/dist/stale.wasm", "Accept-Encoding", "gzip")
	if enc := resp.Header.Get("Content-Encoding"); enc != "" && bytes.Equal(body(t, resp), gz(t, wasmData[:1000])) {
		t.Error("stale.wasm: served a gzip variant made from other bytes")
	}
}

func TestStaticPaths(t *testing.T) {
	h := newHandler(t, testTree(t))
	for p, want := range map[string]int{
		"/../index.html":            200, // cleaned as net/http does: stays in the tree
		"/dist/../../../etc/passwd": 404,
		"/dist/%2e%2e/index.html":   200,
		"/dist/peerlan.wasm.gz":     404, // a variant is no resource
		"/dist/peerlan.wasm.br":     404,
		"/dist/":                    404, // no listings
		"/dist":                     404,
		"/attach":                   301,
		"/attach/":                  200,
		"/missing.js":               404,
		"/dist/guest/initrd.gz":     200,
	} {
		if resp := do(h, "GET", p); resp.StatusCode != want {
			t.Errorf("GET %s: %s, want %d", p, resp.Status, want)
		}
	}
	if loc := do(h, "GET", "/attach").Header.Get("Location"); loc != "/attach/" {
		t.Errorf("redirect to %q", loc)
	}
}

// A -web-dir tree: edits show with a new tag, a stale variant is ignored,
// traversal cannot leave the folder.
func TestStaticWebDir(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, data []byte, mod time.Time) {
		p := filepath.Join(dir, name)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
		os.Chtimes(p, mod, mod)
	}
	t0 := time.Now().Add(-time.Hour)
	write("index.html", htmlData, t0)
	write("dist/peerlan.wasm", wasmData, t0)
	write("dist/peerlan.wasm.gz", gz(t, wasmData), t0.Add(time.Second))
	os.WriteFile(filepath.Join(filepath.Dir(dir), "secret.txt"), []byte("outside"), 0o644)
	h, err := New(os.DirFS(dir))
	if err != nil {
		t.Fatal(err)
	}
	resp := do(h, "GET", "/dist/peerlan.wasm", "Accept-Encoding", "gzip")
	if resp.Header.Get("Content-Encoding") != "gzip" {
		t.Fatalf("web dir: Content-Encoding %q", resp.Header.Get("Content-Encoding"))
	}
	old := do(h, "GET", "/index.html").Header.Get("ETag")
	// The page is edited; the wasm rebuilt after its gzip was made.
	write("index.html", []byte("<!doctype html>new"), t0.Add(time.Minute))
	write("dist/peerlan.wasm", wasmData[:len(wasmData)-1], t0.Add(time.Minute))
	resp = do(h, "GET", "/index.html", "If-None-Match", old)
	if resp.StatusCode != 200 || string(body(t, resp)) != "<!doctype html>new" || resp.Header.Get("ETag") == old {
		t.Errorf("edited page: %s, ETag %s (was %s)", resp.Status, resp.Header.Get("ETag"), old)
	}
	// Its stale gzip is ignored; the file, small enough, is gzip'd in memory.
	resp = do(h, "GET", "/dist/peerlan.wasm", "Accept-Encoding", "gzip")
	if zr, err := gzip.NewReader(resp.Body); err != nil {
		t.Errorf("rebuilt wasm: %v (Content-Encoding %q)", err, resp.Header.Get("Content-Encoding"))
	} else if plain, _ := io.ReadAll(zr); !bytes.Equal(plain, wasmData[:len(wasmData)-1]) {
		t.Errorf("rebuilt wasm: the stale gzip variant was served")
	}
	for _, p := range []string{"/../secret.txt", "/..%2fsecret.txt", "/dist/../../secret.txt"} {
		if resp := do(h, "GET", p); resp.StatusCode != 404 {
			t.Errorf("GET %s: %s, want 404", p, resp.Status)
		}
	}
	// A new file appears after start.
	write("dist/new.js", []byte("1"), t0)
	if resp := do(h, "GET", "/dist/new.js"); resp.StatusCode != 200 {
		t.Errorf("a new file: %s", resp.Status)
	}
}
