package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/acme"
	"golang.org/x/crypto/acme/autocert"

	"github.com/peerlan/peerlan/internal/cli"
)

// tlsFlags choose how the page and the WebSocket are served over TLS on
// -addr: a certificate and key from files, or certificates that ACME
// (Let's Encrypt by default) issues for -acme-domain, or no TLS.
type tlsFlags struct {
	cert, key     string
	acmeDomains   cli.List
	acmeCache     string
	acmeEmail     string
	acmeDirectory string
}

func (t *tlsFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&t.cert, "tls-cert", "", "PEM certificate `file` (the chain, leaf first): serve https:// and wss:// on -addr; needs -tls-key.\nRe-read when it changes (checked at most once a minute), so a renewal needs no restart")
	fs.StringVar(&t.key, "tls-key", "", "PEM private key `file` for -tls-cert")
	fs.Var(&t.acmeDomains, "acme-domain", "comma-separated DNS `names` to get certificates for from ACME (Let's Encrypt): serve https:// and\nwss:// on -addr with them. The CA checks each name with TLS-ALPN-01 on port 443 of that name, which\nmust reach -addr (-addr :443, or a port forward/NAT of 443 to it). Using it accepts the CA's terms\nof service; not with -tls-cert")
	fs.StringVar(&t.acmeCache, "acme-cache", "", "`dir` keeping the ACME account key and certificates (0700) across restarts;\ndefault: acme/ beside -secret-file, or the user's cache dir (~/.cache/peerlan/acme) without it")
	fs.StringVar(&t.acmeEmail, "acme-email", "", "contact `address` given to the ACME CA (expiry notices); optional")
	fs.StringVar(&t.acmeDirectory, "acme-directory", "", "ACME directory `URL`; default Let's Encrypt's production\n(https://acme-staging-v02.api.letsencrypt.org/directory is its staging CA, for trials)")
}

func (t tlsFlags) enabled() bool { return t.cert != "" || t.key != "" || len(t.acmeDomains) > 0 }

// acmeOnly reports flags that mean something only with -acme-domain.
func (t tlsFlags) acmeOnly() bool {
	return t.acmeCache != "" || t.acmeEmail != "" || t.acmeDirectory != ""
}

var (
	errTLSBoth    = errors.New("-tls-cert/-tls-key and -acme-domain both given: choose one way to get the certificate")
	errTLSPartial = errors.New("-tls-cert and -tls-key go together: give both")
)

// tlsSetup is the TLS side of serving, when it is on.
type tlsSetup struct {
	config *tls.Config
	// names the certificate is for, to print a URL a browser accepts.
	names []string
	// acme is the manager when certificates come from ACME.
	acme *autocert.Manager
}

// setup checks the flags and returns the TLS configuration, or nil when TLS
// is off. secretFile places the default ACME cache.
func (t tlsFlags) setup(secretFile string, log *slog.Logger) (*tlsSetup, error) {
	switch {
	case (t.cert != "" || t.key != "") && len(t.acmeDomains) > 0:
		return nil, errTLSBoth
	case t.acmeOnly() && len(t.acmeDomains) == 0:
		return nil, errors.New("-acme-cache, -acme-email and -acme-directory need -acme-domain")
	case !t.enabled():
		return nil, nil
	case len(t.acmeDomains) > 0:
		return t.setupACME(secretFile)
	case t.cert == "" || t.key == "":
		return nil, errTLSPartial
	}
	kp, err := loadKeyPair(t.cert, t.key, log)
	if err != nil {
		return nil, err
	}
	return &tlsSetup{
		config: &tls.Config{GetCertificate: kp.get, MinVersion: tls.VersionTLS12},
		names:  kp.leaf().DNSNames,
	}, nil
}

func (t tlsFlags) setupACME(secretFile string) (*tlsSetup, error) {
	for _, d := range t.acmeDomains {
		if d == "" || strings.ContainsAny(d, ":/ ") || net.ParseIP(d) != nil || !strings.Contains(d, ".") {
			return nil, fmt.Errorf("-acme-domain %q: give DNS names (peerlan.example.org), without scheme or port", d)
		}
	}
	dir := t.acmeCache
	if dir == "" {
		if secretFile != "" {
			dir = filepath.Join(filepath.Dir(secretFile), "acme")
		} else {
			cache, err := os.UserCacheDir()
			if err != nil {
				return nil, fmt.Errorf("-acme-cache: no default (%v): give a directory", err)
			}
			dir = filepath.Join(cache, "peerlan", "acme")
		}
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("-acme-cache: %w", err)
	}
	m := &autocert.Manager{
		Prompt:     autocert.AcceptTOS,
		HostPolicy: autocert.HostWhitelist(t.acmeDomains...),
		Cache:      autocert.DirCache(dir),
		Email:      t.acmeEmail,
	}
	if t.acmeDirectory != "" {
		m.Client = &acme.Client{DirectoryURL: t.acmeDirectory}
	}
	cfg := m.TLSConfig() // GetCertificate, and acme-tls/1 for TLS-ALPN-01
	cfg.MinVersion = tls.VersionTLS12
	return &tlsSetup{config: cfg, names: t.acmeDomains, acme: m}, nil
}

// keyPair serves a certificate and key from files, reading them again when
// either file's time changes, at most once per keyPairRecheck.
type keyPair struct {
	certFile, keyFile string
	log               *slog.Logger

	mu              sync.Mutex
	cert            *tls.Certificate
	certMod, keyMod time.Time
	checked         time.Time
}

const keyPairRecheck = time.Minute

func loadKeyPair(certFile, keyFile string, log *slog.Logger) (*keyPair, error) {
	k := &keyPair{certFile: certFile, keyFile: keyFile, log: log}
	if err := k.load(); err != nil {
		return nil, err
	}
	if leaf := k.leaf(); time.Now().After(leaf.NotAfter) {
		log.Warn("the -tls-cert certificate has expired: browsers will refuse it", "file", certFile, "not_after", leaf.NotAfter)
	}
	return k, nil
}

// load reads both files; the caller holds mu or owns k.
func (k *keyPair) load() error {
	cst, err := os.Stat(k.certFile)
	if err != nil {
		return fmt.Errorf("-tls-cert: %w", err)
	}
	kst, err := os.Stat(k.keyFile)
	if err != nil {
		return fmt.Errorf("-tls-key: %w", err)
	}
	certPEM, err := os.ReadFile(k.certFile)
	if err != nil {
		return fmt.Errorf("-tls-cert: %w", err)
	}
	keyPEM, err := os.ReadFile(k.keyFile)
	if err != nil {
		return fmt.Errorf("-tls-key: %w", err)
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		// "private key does not match public key", "failed to find any
		// PEM data": say which files.
		return fmt.Errorf("-tls-cert %s and -tls-key %s: %w", k.certFile, k.keyFile, err)
	}
	if cert.Leaf == nil {
		if cert.Leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return fmt.Errorf("-tls-cert %s: %w", k.certFile, err)
		}
	}
	k.cert, k.certMod, k.keyMod, k.checked = &cert, cst.ModTime(), kst.ModTime(), time.Now()
	return nil
}

func (k *keyPair) leaf() *x509.Certificate {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.cert.Leaf
}

// get is tls.Config.GetCertificate.
func (k *keyPair) get(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if time.Since(k.checked) < keyPairRecheck {
		return k.cert, nil
	}
	k.checked = time.Now()
	cst, err1 := os.Stat(k.certFile)
	kst, err2 := os.Stat(k.keyFile)
	if err1 != nil || err2 != nil || (cst.ModTime().Equal(k.certMod) && kst.ModTime().Equal(k.keyMod)) {
		return k.cert, nil // unchanged, or gone for a moment: keep serving the old one
	}
	if err := k.load(); err != nil { // load changes nothing when it fails
		k.log.Warn("keeping the old TLS certificate: the new files do not load", "err", err)
		return k.cert, nil
	}
	k.log.Info("TLS certificate reloaded", "file", k.certFile, "not_after", k.cert.Leaf.NotAfter)
	return k.cert, nil
}

// pageURLs returns the page's and the WebSocket's base URLs (scheme://host
// [:port]) for a listener on addr, and whether it listens on all addresses.
// A wildcard host becomes localhost; with TLS, a name the certificate is for,
// unless the certificate covers the listen host itself.
func pageURLs(addr net.Addr, ts *tlsSetup) (page, ws string, allAddrs bool) {
	host, port, err := net.SplitHostPort(addr.String())
	if err != nil {
		host, port = addr.String(), ""
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host, allAddrs = "localhost", true
	}
	scheme, wsScheme, defPort := "http", "ws", "80"
	if ts != nil {
		scheme, wsScheme, defPort = "https", "wss", "443"
		if len(ts.names) > 0 && !covers(ts, host) {
			host = strings.TrimPrefix(ts.names[0], "*.")
		}
	}
	hostport := host
	if strings.Contains(host, ":") {
		hostport = "[" + host + "]"
	}
	if port != "" && port != defPort {
		hostport = net.JoinHostPort(host, port)
	}
	return scheme + "://" + hostport, wsScheme + "://" + hostport, allAddrs
}

func covers(ts *tlsSetup, host string) bool {
	if ts.acme != nil {
		for _, n := range ts.names {
			if strings.EqualFold(n, host) {
				return true
			}
		}
		return false
	}
	c, err := ts.config.GetCertificate(&tls.ClientHelloInfo{})
	return err == nil && c.Leaf != nil && c.Leaf.VerifyHostname(host) == nil
}

// portOf returns the port of addr as a number, 0 when it has none.
func portOf(addr string) int {
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		return 0
	}
	n, _ := strconv.Atoi(p)
	return n
}
