// Package static serves a read-only file tree (the page and its built
// assets) over HTTP so that browsers download each file once and then only
// revalidate it, compressed when they can take it.
//
// The contract of Handler:
//
//   - Only GET and HEAD; anything else is 405 with Allow: GET, HEAD.
//   - A path is cleaned as net/http does, so ".." never leaves the tree;
//     "/" and "/dir/" serve index.html, "/dir" redirects to "/dir/" when
//     dir/index.html exists; anything else that is not a regular file is
//     404. There are no directory listings.
//   - Every representation has a strong ETag, the SHA-256 of its bytes
//     (base64url, 128 bits), computed once when the file is first seen, and
//     every response says Cache-Control: no-cache, so a browser keeps the file
//     and asks again with If-None-Match, which is answered 304 without a body.
//     (Why not immutable, content-hashed URLs: see "Serving the page" in
//     docs/architecture.md.)
//   - X.br and X.gz beside a file X are X's precompressed variants, made at
//     build time (web/web.mk). A request whose Accept-Encoding takes br gets
//     X.br, else one that takes gzip gets X.gz, else X itself; q=0 refuses an
//     encoding, "*" stands for the ones not named, and identity is always
//     acceptable. A variant is used only when it is at least 5% smaller than
//     X, is not older than X (when the tree has times), and, for gzip, when
//     its trailer records X's length; a variant is not a resource of its own:
//     a request for X.gz where X exists is 404. A file of 1 KiB to 1 MiB without
//     a gzip variant is gzip'd once in memory when that saves 5%.
//   - Responses that can differ by encoding say Vary: Accept-Encoding. A
//     Range request is answered from X itself (http.ServeContent: 206,
//     If-Range), never from a variant.
//   - Content-Type comes from the name (types below, then package mime, else
//     application/octet-stream), never from sniffing; every response carries
//     X-Content-Type-Options: nosniff and Referrer-Policy: no-referrer.
//   - Every response allows any origin to read it (Access-Control-Allow-Origin:
//     *, no credentials): the files are public, and a v86 page of another
//     origin imports attach.mjs and fetches the wasm peer from here, which a
//     module import and fetch do in CORS mode.
//   - The tree may change while serving (a development -web-dir): a file
//     whose size or modification time differs from what was seen is read
//     again, so an edit is served with a new ETag. An embedded tree has no
//     times; it never changes.
package static

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"mime"
	"net/http"
	"path"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Encodings, in the order of preference.
const (
	encBrotli = "br"
	encGzip   = "gzip"
)

// variantSuffix is the file-name suffix of each encoding's variant.
var variantSuffix = map[string]string{encBrotli: ".br", encGzip: ".gz"}

const (
	// maxMemGzip bounds the files gzip'd in memory, and so the CPU the
	// server spends on them at start; larger files get variants from make.
	maxMemGzip = 1 << 20
	// minSaving is the least a variant must save, in parts per 100, to be
	// worth a Vary and a second cache entry.
	minSaving = 5
)

// contentTypes are the page's own types, fixed here so that a machine's
// /etc/mime.types cannot change them (WebAssembly.instantiateStreaming
// requires application/wasm; module scripts need a JavaScript type).
var contentTypes = map[string]string{
	".html": "text/html; charset=utf-8",
	".js":   "text/javascript; charset=utf-8",
	".mjs":  "text/javascript; charset=utf-8",
	".css":  "text/css; charset=utf-8",
	".wasm": "application/wasm",
	".json": "application/json",
	".txt":  "text/plain; charset=utf-8",
	".md":   "text/plain; charset=utf-8",
	".svg":  "image/svg+xml",
	".png":  "image/png",
	".ico":  "image/x-icon",
	".bin":  "application/octet-stream",
	".gz":   "application/gzip",
}

// Handler serves a file tree as the package documentation says. Make one
// with New.
type Handler struct {
	fsys fs.FS

	mu    sync.Mutex
	files map[string]*file // by name in fsys; guarded by mu
}

// file is what is known of one regular file of the tree.
type file struct {
	name    string
	ctype   string
	size    int64
	modTime time.Time // zero in an embedded tree
	etag    string
	// variants by encoding; a variant's name is in fsys, or its bytes are
	// in mem (the in-memory gzip).
	variants map[string]*variant
}

type variant struct {
	name    string // in fsys; empty when mem is set
	mem     []byte
	size    int64
	modTime time.Time
	etag    string
}

// New returns a Handler for fsys, having read every file once (hashes,
// variants) so that the first requests do not pay for it. It fails when
// the tree cannot be walked or a file cannot be read.
func New(fsys fs.FS) (*Handler, error) {
	h := &Handler{fsys: fsys, files: map[string]*file{}}
	err := fs.WalkDir(fsys, ".", func(name string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.Type().IsRegular() || h.isVariant(name) {
			return nil
		}
		_, err = h.lookup(name)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("static: %w", err)
	}
	return h, nil
}

// isVariant reports whether name is a variant of another file of the tree.
func (h *Handler) isVariant(name string) bool {
	for _, suf := range variantSuffix {
		if base, ok := strings.CutSuffix(name, suf); ok && base != "" {
			if fi, err := fs.Stat(h.fsys, base); err == nil && fi.Mode().IsRegular() {
				return true
			}
		}
	}
	return false
}

// lookup returns what is known of the regular file name, reading it again
// when its size or time changed. It returns fs.ErrNotExist for a name that
// is not a regular file.
func (h *Handler) lookup(name string) (*file, error) {
	fi, err := fs.Stat(h.fsys, name)
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fs.ErrNotExist
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if f := h.files[name]; f != nil && f.size == fi.Size() && f.modTime.Equal(fi.ModTime()) && h.variantsFresh(f) {
		return f, nil
	}
	f, err := h.load(name, fi)
	if err != nil {
		delete(h.files, name)
		return nil, err
	}
	h.files[name] = f
	return f, nil
}

// variantsFresh reports whether f's variants on disk are as they were seen,
// and none has appeared since (a build that runs beside a server).
func (h *Handler) variantsFresh(f *file) bool {
	for enc, suf := range variantSuffix {
		v := f.variants[enc]
		fi, err := fs.Stat(h.fsys, f.name+suf)
		switch {
		case v != nil && v.mem != nil:
			if err == nil {
				return false // a built variant appeared
			}
		case v != nil:
			if err != nil || fi.Size() != v.size || !fi.ModTime().Equal(v.modTime) {
				return false
			}
		}
	}
	return true
}

// load reads name (described by fi) and its variants.
func (h *Handler) load(name string, fi fs.FileInfo) (*file, error) {
	data, err := fs.ReadFile(h.fsys, name)
	if err != nil {
		return nil, err
	}
	f := &file{
		name:     name,
		ctype:    contentType(name),
		size:     int64(len(data)),
		modTime:  fi.ModTime(),
		etag:     etagOf(data, ""),
		variants: map[string]*variant{},
	}
	for enc, suf := range variantSuffix {
		v, err := h.loadVariant(f, enc, name+suf)
		if err != nil {
			return nil, err
		}
		if v != nil {
			f.variants[enc] = v
		}
	}
	if f.variants[encGzip] == nil && len(data) >= 1024 && len(data) <= maxMemGzip {
		var buf bytes.Buffer
		zw, _ := gzip.NewWriterLevel(&buf, gzip.BestCompression) // a valid level
		zw.Write(data)                                           // a bytes.Buffer does not fail
		zw.Close()
		if worth(int64(buf.Len()), f.size) {
			f.variants[encGzip] = &variant{mem: buf.Bytes(), size: int64(buf.Len()), etag: etagOf(buf.Bytes(), ".gz")}
		}
	}
	return f, nil
}

// loadVariant returns the variant vname of f, or nil when there is none
// that may be used.
func (h *Handler) loadVariant(f *file, enc, vname string) (*variant, error) {
	vi, err := fs.Stat(h.fsys, vname)
	if err != nil || !vi.Mode().IsRegular() {
		return nil, nil
	}
	if !worth(vi.Size(), f.size) {
		return nil, nil
	}
	if !f.modTime.IsZero() && vi.ModTime().Before(f.modTime) {
		return nil, nil // made from an older X: stale
	}
	data, err := fs.ReadFile(h.fsys, vname)
	if err != nil {
		return nil, err
	}
	if enc == encGzip {
		// RFC 1952: the last four bytes are the input's length mod 2^32.
		if len(data) < 18 || binary.LittleEndian.Uint32(data[len(data)-4:]) != uint32(f.size) {
			return nil, nil
		}
	}
	return &variant{name: vname, size: vi.Size(), modTime: vi.ModTime(), etag: etagOf(data, variantSuffix[enc])}, nil
}

// worth reports whether a variant of size n saves enough on a file of size.
func worth(n, size int64) bool { return n*100 <= size*(100-minSaving) }

// etagOf is the strong entity tag of data; the tag says which variant it is
// for, so that no two representations of a file share one.
func etagOf(data []byte, suffix string) string {
	sum := sha256.Sum256(data)
	return `"` + base64.RawURLEncoding.EncodeToString(sum[:16]) + suffix + `"`
}

func contentType(name string) string {
	ext := strings.ToLower(path.Ext(name))
	if t, ok := contentTypes[ext]; ok {
		return t
	}
	if t := mime.TypeByExtension(ext); t != "" {
		return t
	}
	return "application/octet-stream"
}

// ServeHTTP implements http.Handler.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	hdr := w.Header()
	hdr.Set("X-Content-Type-Options", "nosniff")
	hdr.Set("Referrer-Policy", "no-referrer")
	hdr.Set("Access-Control-Allow-Origin", "*")
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		hdr.Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	upath := r.URL.Path
	if !strings.HasPrefix(upath, "/") {
		upath = "/" + upath
	}
	clean := path.Clean(upath)
	name := strings.TrimPrefix(clean, "/")
	if strings.HasSuffix(upath, "/") {
		name = path.Join(name, "index.html")
	}
	if name == "" {
		name = "index.html"
	}
	if !fs.ValidPath(name) || h.isVariant(name) {
		http.NotFound(w, r)
		return
	}
	f, err := h.lookup(name)
	if err != nil {
		if !strings.HasSuffix(upath, "/") {
			if fi, err := fs.Stat(h.fsys, path.Join(name, "index.html")); err == nil && fi.Mode().IsRegular() {
				http.Redirect(w, r, path.Base(clean)+"/", http.StatusMovedPermanently)
				return
			}
		}
		if errors.Is(err, fs.ErrNotExist) {
			http.NotFound(w, r)
		} else {
			http.Error(w, "could not read "+name, http.StatusInternalServerError)
		}
		return
	}
	hdr.Set("Cache-Control", "no-cache")
	hdr.Set("Content-Type", f.ctype)
	if len(f.variants) > 0 {
		hdr.Add("Vary", "Accept-Encoding")
	}
	enc := ""
	if r.Header.Get("Range") == "" {
		enc = negotiate(r.Header.Values("Accept-Encoding"), f.variants)
	}
	if enc == "" {
		hdr.Set("ETag", f.etag)
		h.serveFile(w, r, f.name, f.etag, nil)
		return
	}
	v := f.variants[enc]
	hdr.Set("Content-Encoding", enc)
	hdr.Set("ETag", v.etag)
	// http.ServeContent leaves the length out of an encoded response.
	hdr.Set("Content-Length", strconv.FormatInt(v.size, 10))
	h.serveFile(w, r, v.name, v.etag, v.mem)
}

// serveFile sends the bytes of name in fsys, or mem, through
// http.ServeContent, which answers If-None-Match, HEAD and Range.
func (h *Handler) serveFile(w http.ResponseWriter, r *http.Request, name, etag string, mem []byte) {
	if mem != nil {
		http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(mem))
		return
	}
	fl, err := h.fsys.Open(name)
	if err != nil {
		http.Error(w, "could not read "+name, http.StatusInternalServerError)
		return
	}
	defer fl.Close()
	rs, ok := fl.(io.ReadSeeker)
	if !ok {
		data, err := io.ReadAll(fl)
		if err != nil {
			http.Error(w, "could not read "+name, http.StatusInternalServerError)
			return
		}
		rs = bytes.NewReader(data)
	}
	// No modification time: the ETag is the validator, and an embedded
	// tree has no times.
	http.ServeContent(w, r, "", time.Time{}, rs)
}

// negotiate returns the encoding to send, br before gzip, among those of
// variants that the Accept-Encoding header values accept, or "" for the
// file itself (RFC 9110 section 12.5.3).
func negotiate(accept []string, variants map[string]*variant) string {
	if len(variants) == 0 {
		return ""
	}
	q := map[string]float64{}
	star, starSet := 0.0, false
	for _, line := range accept {
		for _, part := range strings.Split(line, ",") {
			coding, params, _ := strings.Cut(strings.TrimSpace(part), ";")
			coding = strings.ToLower(strings.TrimSpace(coding))
			if coding == "" {
				continue
			}
			weight := 1.0
			for _, p := range strings.Split(params, ";") {
				k, val, ok := strings.Cut(strings.TrimSpace(p), "=")
				if ok && strings.EqualFold(strings.TrimSpace(k), "q") {
					if x, err := strconv.ParseFloat(strings.TrimSpace(val), 64); err == nil && x >= 0 && x <= 1 {
						weight = x
					} else {
						weight = 0 // a malformed weight accepts nothing
					}
				}
			}
			if coding == "*" {
				star, starSet = weight, true
			} else if coding == "x-gzip" {
				coding = encGzip
			}
			if coding != "*" {
				q[coding] = weight
			}
		}
	}
	weight := func(enc string) float64 {
		if w, ok := q[enc]; ok {
			return w
		}
		if starSet {
			return star
		}
		return 0
	}
	best, bestQ := "", 0.0
	for _, enc := range []string{encBrotli, encGzip} {
		if variants[enc] == nil {
			continue
		}
		if w := weight(enc); w > bestQ {
			best, bestQ = enc, w
		}
	}
	// identity is acceptable unless refused; it wins only when weighted
	// above the best variant.
	if w, ok := q["identity"]; ok && w > bestQ {
		return ""
	}
	return best
}
