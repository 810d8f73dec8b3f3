package main

import (
	"flag"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/peerlan/peerlan/gateway/portfwd"
	"github.com/peerlan/peerlan/internal/cli"
)

func TestParseRate(t *testing.T) {
	for in, want := range map[string]uint64{
		"": 0, "0": 0, "250000": 250000, "20mbit": 2_500_000, "20Mbit/s": 2_500_000, "1gbit": 125_000_000,
		"5MB": 5_000_000, "1MiB": 1 << 20, "64KiB": 64 << 10, "100kB/s": 100_000, "1.5MB": 1_500_000,
	} {
		got, err := parseRate(in)
		if err != nil || got != want {
			t.Errorf("parseRate(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"fast", "10b", "10 furlongs", "-5MB", "1kbit", "100", "800kbps"} {
		if got, err := parseRate(in); err == nil {
			t.Errorf("parseRate(%q) = %d, want an error", in, got)
		}
	}
}

func TestParseUpstreamAndPrefix(t *testing.T) {
	if ap, err := parseUpstream("203.0.113.1"); err != nil || ap != netip.MustParseAddrPort("203.0.113.1:53") {
		t.Errorf("parseUpstream without port = %v, %v", ap, err)
	}
	if ap, err := parseUpstream("203.0.113.1:5353"); err != nil || ap.Port() != 5353 {
		t.Errorf("parseUpstream with port = %v, %v", ap, err)
	}
	if _, err := parseUpstream("resolver.example"); err == nil {
		t.Error("parseUpstream accepted a name")
	}
	if p, err := parsePrefix("192.168.1.7"); err != nil || p != netip.MustParsePrefix("192.168.1.7/32") {
		t.Errorf("parsePrefix(address) = %v, %v", p, err)
	}
	if p, err := parsePrefix("172.16.0.0/12"); err != nil || p.Bits() != 12 {
		t.Errorf("parsePrefix(prefix) = %v, %v", p, err)
	}
	if _, err := parsePrefix("nope"); err == nil {
		t.Error("parsePrefix accepted garbage")
	}
}

func TestReadToken(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	file := filepath.Join(t.TempDir(), "token")
	os.WriteFile(file, []byte("from-file\n"), 0o600)
	t.Setenv(tokenEnv, "from-env")
	cases := []struct {
		o    options
		want string
	}{
		{options{tokenFile: file}, "from-file"},
		{options{token: "from-flag"}, "from-flag"},
		{options{}, "from-env"},
	}
	for _, c := range cases {
		if got, err := readToken(c.o, log); err != nil || got != c.want {
			t.Errorf("readToken(%+v) = %q, %v; want %q", c.o, got, err, c.want)
		}
	}
	if _, err := readToken(options{tokenFile: file, token: "x"}, log); err == nil {
		t.Error("both -token-file and -token accepted")
	}
	t.Setenv(tokenEnv, "")
	if _, err := readToken(options{}, log); err == nil || !strings.Contains(err.Error(), "signal token") {
		t.Errorf("no token: err = %v, want a hint at `signal token`", err)
	}
}

func TestUsageErrors(t *testing.T) {
	for _, args := range [][]string{
		{}, {"-room", "r"}, {"-room", "bad room", "-token", "x"}, {"-room", "r", "-token", "x", "-rate", "fast"},
		{"-room", "r", "-token", "x", "-allow", "nope"}, {"-room", "r", "-token", "x", "-dns", "nope"},
		{"-room", "r", "-token", "x", "-tap", "a/b"}, {"-room", "r", "-token", "x", "extra"},
		{"-room", "r", "-token", "x", "-forward", "tcp:127.0.0.1:8080"},
		{"-room", "r", "-token", "x", "-forward", "tcp:127.0.0.1:8080=10.86.0.2:80,sctp:127.0.0.1:9=10.86.0.2:9"},
	} {
		t.Setenv(tokenEnv, "")
		if code := run(append(args, "-log-level", "error")); code != 2 {
			t.Errorf("run(%q) = %d, want 2", args, code)
		}
	}
}

func TestParseForwards(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	o := options{room: "r", token: "x", tap: "peerlan-gw0", mtu: 1400}
	o.forward.Set("tcp:127.0.0.1:8080=10.86.0.2:80, udp:127.0.0.1:5353=10.86.0.2:53")
	o.forward.Set("tcp::2222=10.86.0.3:22")
	c, err := parse(o, log)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, sp := range c.forwards {
		got = append(got, sp.String())
	}
	want := "tcp:127.0.0.1:8080=10.86.0.2:80 udp:127.0.0.1:5353=10.86.0.2:53 tcp::2222=10.86.0.3:22"
	if strings.Join(got, " ") != want {
		t.Errorf("forwards %q, want %q", got, want)
	}
	o.forward = cli.List{"tcp:127.0.0.1:8080=[fd00::2]:80"}
	if _, err := parse(o, log); err == nil || !strings.Contains(err.Error(), "-forward") || !strings.Contains(err.Error(), "not IPv4") {
		t.Errorf("IPv6 guest: %v, want a -forward error", err)
	}
	// The guest must be in the room subnet, checked once it is known.
	subnet := netip.MustParsePrefix("10.86.0.0/24")
	if err := checkForwards(c.forwards, subnet); err != nil {
		t.Errorf("checkForwards: %v", err)
	}
	outside, _ := portfwd.ParseSpec("tcp:127.0.0.1:8080=10.87.0.2:80")
	if err := checkForwards(append(c.forwards, outside), subnet); err == nil || !strings.Contains(err.Error(), "outside the room subnet") {
		t.Errorf("guest outside the subnet: %v", err)
	}
}

func TestUserspaceRefusesKernelFlags(t *testing.T) {
	for _, args := range [][]string{
		{"-userspace", "-tap", "gw0"}, {"-userspace", "-uplink", "eth0"}, {"-userspace", "-offload=false"},
	} {
		if code := run(append(args, "-room", "r", "-token", "x", "-log-level", "error")); code != 2 {
			t.Errorf("run(%q) = %d, want 2", args, code)
		}
	}
}

func TestUserspaceStateDir(t *testing.T) {
	t.Setenv("XDG_RUNTIME_DIR", "/run/user/65534")
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	o := options{stateDir: "/run/peerlan", offload: true}
	fs.StringVar(&o.stateDir, "state-dir", o.stateDir, "")
	if err := userspaceFlags(fs, &o); err != nil {
		t.Fatal(err)
	}
	if o.stateDir != "/run/user/65534/peerlan" || o.offload {
		t.Errorf("state dir %q, offload %v; want the user's runtime dir and no offload", o.stateDir, o.offload)
	}
	fs.Parse([]string{"-state-dir", "/var/lib/gw"})
	if err := userspaceFlags(fs, &o); err != nil || o.stateDir != "/var/lib/gw" {
		t.Errorf("explicit -state-dir became %q (%v)", o.stateDir, err)
	}
}

func TestLatePort(t *testing.T) {
	p := newLatePort()
	if n, err := p.Write(make([]byte, 60)); n != 60 || err != nil {
		t.Errorf("Write before attach = %d, %v; want the frame dropped quietly", n, err)
	}
	done := make(chan error, 1)
	go func() { _, err := p.Read(make([]byte, 1514)); done <- err }()
	p.Close()
	if err := <-done; err == nil {
		t.Error("Read returned no error after Close")
	}
	if _, err := p.Write(make([]byte, 60)); err == nil {
		t.Error("Write after Close returned no error")
	}
}
