// Package testpki makes throwaway certificates for tests: a CA, and a
// server certificate it signs for localhost, 127.0.0.1 and the hosts a test
// names, valid from an hour ago for a day, as Go values and as PEM files in
// the test's temporary directory. Any failure fails the test.
package testpki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// PKI is one CA and the server certificate it signed.
type PKI struct {
	Pool *x509.CertPool  // trusts the CA
	Cert tls.Certificate // the server's certificate and key, Leaf set
	// CertFile and KeyFile hold Cert as PEM (the certificate, and the key
	// in PKCS #8), mode 0600.
	CertFile, KeyFile string
}

// New makes a CA and a server certificate for localhost, 127.0.0.1 and
// hosts (DNS names or IP addresses).
func New(tb testing.TB, hosts ...string) *PKI {
	tb.Helper()
	start := time.Now().Add(-time.Hour)
	caKey := newKey(tb)
	ca := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "peerlan test CA"},
		NotBefore: start, NotAfter: start.Add(25 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caCert := create(tb, ca, ca, caKey, caKey)
	key := newKey(tb)
	leaf := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "localhost"},
		DNSNames: []string{"localhost"}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore: start, NotAfter: start.Add(25 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			leaf.IPAddresses = append(leaf.IPAddresses, ip)
		} else {
			leaf.DNSNames = append(leaf.DNSNames, h)
		}
	}
	leafCert := create(tb, leaf, caCert, key, caKey)
	p := &PKI{Pool: x509.NewCertPool(), Cert: tls.Certificate{Certificate: [][]byte{leafCert.Raw}, PrivateKey: key, Leaf: leafCert}}
	p.Pool.AddCert(caCert)
	dir := tb.TempDir()
	p.CertFile = writePEM(tb, filepath.Join(dir, "cert.pem"), "CERTIFICATE", leafCert.Raw)
	p.KeyFile = KeyFile(tb, key)
	return p
}

// KeyFile writes key (a fresh one when nil: a key that matches no
// certificate) as PEM in PKCS #8 and returns the file.
func KeyFile(tb testing.TB, key *ecdsa.PrivateKey) string {
	tb.Helper()
	if key == nil {
		key = newKey(tb)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		tb.Fatal(err)
	}
	return writePEM(tb, filepath.Join(tb.TempDir(), "key.pem"), "PRIVATE KEY", der)
}

func newKey(tb testing.TB) *ecdsa.PrivateKey {
	tb.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	return k
}

func create(tb testing.TB, tmpl, parent *x509.Certificate, key, parentKey *ecdsa.PrivateKey) *x509.Certificate {
	tb.Helper()
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
	if err != nil {
		tb.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		tb.Fatal(err)
	}
	return c
}

func writePEM(tb testing.TB, path, typ string, der []byte) string {
	tb.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		tb.Fatal(err)
	}
	return path
}
