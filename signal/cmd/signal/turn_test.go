package main

import (
	"errors"
	"flag"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/peerlan/peerlan/signal/relay"
)

func parseTURNFlags(t *testing.T, args ...string) turnFlags {
	t.Helper()
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	var f turnFlags
	f.register(fs)
	if err := fs.Parse(args); err != nil {
		t.Fatal(err)
	}
	return f
}

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// TestTURNWelcomeCredentials: with the embedded relay and an external
// coturn URL, each welcome lists the relay's URLs and the external ones with
// a credential minted for the peer that the relay's check accepts with the
// secret from -turn-secret-file; STUN URLs come without credentials.
func TestTURNWelcomeCredentials(t *testing.T) {
	secretFile := filepath.Join(t.TempDir(), "turn-secret")
	f := parseTURNFlags(t, "-turn-udp", "127.0.0.1:0", "-turn-tcp", "127.0.0.1:0",
		"-turn-secret-file", secretFile, "-turn-ttl", "10m", "-turn-ports", "50000-50010")
	reg := prometheus.NewRegistry()
	srv, ice, err := setupTURN(f, []string{"turn:coturn.example:3478?transport=udp", "stun:stun.example:3478"}, quiet, reg)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	raw, err := os.ReadFile(secretFile)
	if err != nil {
		t.Fatalf("secret file not created: %v", err)
	}
	secret := []byte(strings.TrimSpace(string(raw)))
	now := time.Now()
	got := ice("room", "peer-1")
	if len(got) != 3 {
		t.Fatalf("ice servers %+v, want embedded, external TURN and STUN", got)
	}
	if !slices.Equal(got[0].URLs, srv.ICEURLs("127.0.0.1")) || len(got[0].URLs) != 2 {
		t.Errorf("embedded URLs %v, relay serves %v", got[0].URLs, srv.ICEURLs("127.0.0.1"))
	}
	if got[1].URLs[0] != "turn:coturn.example:3478?transport=udp" || got[2].URLs[0] != "stun:stun.example:3478" {
		t.Errorf("external servers %+v", got[1:])
	}
	if got[2].Username != "" || got[2].Credential != "" {
		t.Errorf("STUN server with credentials: %+v", got[2])
	}
	for _, s := range got[:2] {
		user, err := relay.CheckCredential(secret, s.Username, s.Credential, now)
		if err != nil || user != "peer-1" {
			t.Errorf("credential %q/%q: user %q, %v", s.Username, s.Credential, user, err)
		}
		exp, _, _ := relay.ParseCredentialUsername(s.Username)
		if d := exp.Sub(now); d < 9*time.Minute || d > 11*time.Minute {
			t.Errorf("credential expires in %v, want the 10m TTL", d)
		}
		if _, err := relay.CheckCredential(secret, s.Username, s.Credential, now.Add(11*time.Minute)); !errors.Is(err, relay.ErrCredentialExpired) {
			t.Errorf("credential after its TTL: %v, want expired", err)
		}
	}
	if other := ice("room", "peer-2"); other[0].Username == got[0].Username {
		t.Errorf("two peers got the same username %q", other[0].Username)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(mfs, func(m *dto.MetricFamily) bool { return strings.HasPrefix(m.GetName(), "peerlan_turn_") }) {
		t.Error("relay metrics not registered on the server's registry")
	}
}

// TestTURNOff: without TURN flags there is no relay, and external TURN URLs
// without a secret are handed out as given.
func TestTURNOff(t *testing.T) {
	f := parseTURNFlags(t)
	srv, ice, err := setupTURN(f, nil, quiet, prometheus.NewRegistry())
	if err != nil || srv != nil || ice != nil {
		t.Fatalf("no flags: relay %v, ice func set %v, err %v", srv, ice != nil, err)
	}
	srv, ice, err = setupTURN(f, []string{"turn:coturn.example:3478"}, quiet, prometheus.NewRegistry())
	if err != nil || srv != nil {
		t.Fatalf("external only: relay %v, err %v", srv, err)
	}
	if got := ice("r", "p"); len(got) != 1 || got[0].Username != "" {
		t.Fatalf("external TURN without a secret: %+v", got)
	}
}

func TestTURNFlagErrors(t *testing.T) {
	for _, args := range [][]string{
		{"-turn-udp", "127.0.0.1:0", "-turn-ports", "60000-50000"},
		{"-turn-udp", "127.0.0.1:0", "-turn-ports", "x"},
		{"-turn-udp", "127.0.0.1:0", "-turn-relay-ip", "not-an-ip"},
		{"-turn-udp", "0.0.0.0:0"}, // no relay IP
		{"-turn-tls", "127.0.0.1:0"},
		{"-turn-udp", "127.0.0.1:0", "-turn-ttl", "0s"},
	} {
		f := parseTURNFlags(t, args...)
		if srv, _, err := setupTURN(f, nil, quiet, prometheus.NewRegistry()); err == nil {
			srv.Close()
			t.Errorf("%v: accepted", args)
		} else {
			t.Logf("%v: %v", args, err)
		}
	}
	if _, _, err := setupTURN(parseTURNFlags(t), []string{"http://x"}, quiet, prometheus.NewRegistry()); err == nil {
		t.Error("-ice http://x accepted")
	}
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	var f turnFlags
	f.register(fs)
	if err := fs.Parse([]string{"-turn-allow", "10.0.0.0/8,bogus"}); err == nil {
		t.Error("-turn-allow bogus accepted")
	}
}
