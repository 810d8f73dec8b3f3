//go:build linux

package gateway

import (
	"encoding/json"
	"fmt"
	"os"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// guestCurl fetches url from the guest namespace with a real HTTP client.
func guestCurl(ns *netns, url string, extra ...string) (string, error) {
	args := append([]string{"curl", "-sS", "--connect-timeout", "2", "--max-time", "10"}, extra...)
	return ns.run(append(args, url)...)
}

// expectBlocked checks that probe fails from the guest and that the drop
// counter for reason grew while it ran.
func expectBlocked(t *testing.T, tb *testbed, reason string, probe func() (string, error)) {
	t.Helper()
	table := tableName("lan0")
	before := tb.gw.counters(table).Drops[reason]
	if out, err := probe(); err == nil {
		t.Fatalf("reachable from the guest, want it dropped (%s): %s", reason, out)
	}
	if after := tb.gw.counters(table).Drops[reason]; after <= before {
		t.Errorf("drop_%s counter %d -> %d: the policy did not count the drop", reason, before, after)
	}
}

func TestGatewayEndToEnd(t *testing.T) {
	requireNetns(t)
	requireTools(t, "dig", "curl", "ping")
	tb := newTestbed(t)
	tb.startInternet()
	orig := map[string]string{"lan0": tb.gw.sysctl("lan0", "forwarding"), "up0": tb.gw.sysctl("up0", "forwarding")}
	origAll := tb.gw.sysctl("all", "forwarding")

	cfg := tb.gatewayConfig()
	cfg.Allow = []string{"172.16.5.0/24"}
	gw := tb.startGateway(cfg)
	table := tableName("lan0")

	t.Run("host setup", func(t *testing.T) {
		if out := tb.gw.must("ip", "-4", "addr", "show", "dev", "lan0"); !strings.Contains(out, "inet "+lanGatewayAddr+"/24 brd 10.86.0.255") {
			t.Errorf("lan0 lacks %s/24 with broadcast:\n%s", lanGatewayAddr, out)
		}
		for _, iface := range []string{"lan0", "up0"} {
			if got := tb.gw.sysctl(iface, "forwarding"); got != "1" {
				t.Errorf("%s forwarding = %s, want 1", iface, got)
			}
		}
		if got := tb.gw.sysctl("all", "forwarding"); got != origAll {
			t.Errorf("global forwarding changed to %s", got)
		}
		if _, err := os.Stat(statePath(tb.stateDir, "lan0")); err != nil {
			t.Errorf("state file: %v", err)
		}
	})

	t.Run("dns through .1", func(t *testing.T) {
		out := tb.guest.must("dig", "+short", "+time=3", "+tries=1", "@"+lanGatewayAddr, "www.example.test", "A")
		if strings.TrimSpace(out) != webAddr {
			t.Errorf("www.example.test = %q, want %s", out, webAddr)
		}
		out = tb.guest.must("dig", "+time=3", "+tries=1", "@"+lanGatewayAddr, "nothing.example.test", "A")
		if !strings.Contains(out, "status: NXDOMAIN") {
			t.Errorf("nothing.example.test is not NXDOMAIN:\n%s", out)
		}
	})

	t.Run("dns truncation falls back to tcp", func(t *testing.T) {
		// dig advertises 1232 bytes; the answer is ~1.7 kB. The forwarder
		// must retry upstream over TCP, then set TC for dig, which retries
		// over TCP to .1.
		out := tb.guest.must("dig", "+short", "+time=3", "+tries=1", "@"+lanGatewayAddr, "big.example.test", "A")
		if n := len(strings.Fields(out)); n != bigNameCount {
			t.Errorf("big.example.test: %d addresses, want %d", n, bigNameCount)
		}
		m := scrape(t, tb.gw)
		for _, name := range []string{"peerlan_gateway_dns_upstream_tcp_retries_total", "peerlan_gateway_dns_truncated_total", `peerlan_gateway_dns_queries_total{transport="tcp"}`} {
			if m[name] < 1 {
				t.Errorf("%s = %v, want >= 1", name, m[name])
			}
		}
	})

	t.Run("http through the masquerade", func(t *testing.T) {
		out, err := guestCurl(tb.guest, "http://www.example.test/")
		if err != nil {
			t.Fatalf("curl: %v: %s", err, out)
		}
		if !strings.Contains(out, "local="+webAddr+":80") || !strings.Contains(out, "remote="+gwUplinkAddr+":") {
			t.Errorf("page %q: want served by %s to the gateway's uplink address %s", out, webAddr, gwUplinkAddr)
		}
	})

	t.Run("ping the gateway", func(t *testing.T) {
		tb.guest.must("ping", "-c", "1", "-W", "2", lanGatewayAddr)
	})

	t.Run("allow list opens a private prefix", func(t *testing.T) {
		out, err := guestCurl(tb.guest, "http://"+allowedPrivAddr+"/")
		if err != nil || !strings.Contains(out, "remote="+gwUplinkAddr+":") {
			t.Errorf("allow-listed %s: %v: %s", allowedPrivAddr, err, out)
		}
	})

	blocked := []struct {
		name, url, reason string
	}{
		{"cloud metadata", "http://" + metadataAddr + "/", DropMetadata},
		{"private address behind the uplink", "http://" + blockedPrivAddr + "/", DropPrivate},
		{"host's private network", "http://" + hostPrivAddr + ":" + hostServicePort + "/", DropPrivate},
		{"host's uplink address", "http://" + gwUplinkAddr + ":" + hostServicePort + "/", DropHost},
		{"host service on .1", "http://" + lanGatewayAddr + ":" + hostServicePort + "/", DropHost},
	}
	for _, b := range blocked {
		t.Run("blocks "+b.name, func(t *testing.T) {
			// The target works from the gateway host itself: what stops the
			// guest is the policy, not a missing route or server.
			if out, err := tb.gw.run("curl", "-sS", "--max-time", "5", b.url); err != nil {
				t.Fatalf("control: %s unreachable from the gateway namespace: %v: %s", b.url, err, out)
			}
			expectBlocked(t, tb, b.reason, func() (string, error) { return guestCurl(tb.guest, b.url) })
		})
	}

	t.Run("blocks ping to the host's other address", func(t *testing.T) {
		expectBlocked(t, tb, DropHost, func() (string, error) {
			return tb.guest.run("ping", "-c", "1", "-W", "1", gwUplinkAddr)
		})
	})

	t.Run("drops ipv6", func(t *testing.T) {
		tb.gw.must("ip", "-6", "addr", "add", "2001:db8:86::1/64", "dev", "lan0", "nodad")
		tb.guest.must("ip", "-6", "addr", "add", "2001:db8:86::7/64", "dev", "eth0", "nodad")
		expectBlocked(t, tb, DropIPv6, func() (string, error) {
			return tb.guest.run("ping", "-6", "-c", "1", "-W", "1", "2001:db8:86::1")
		})
		tb.gw.must("ip", "-6", "addr", "del", "2001:db8:86::1/64", "dev", "lan0")
	})

	t.Run("no open resolver or inbound connections from the uplink side", func(t *testing.T) {
		tb.inet.must("ip", "route", "add", "10.86.0.0/24", "via", gwUplinkAddr)
		defer tb.inet.must("ip", "route", "del", "10.86.0.0/24", "via", gwUplinkAddr)
		tb.inet.must("ping", "-c", "1", "-W", "2", lanGatewayAddr) // control: .1 is reachable
		for _, server := range []string{lanGatewayAddr, gwUplinkAddr} {
			if out, err := tb.inet.run("dig", "+time=1", "+tries=1", "@"+server, "www.example.test"); err == nil {
				t.Errorf("the forwarder answered %s from the uplink side:\n%s", server, out)
			}
		}
		before := tb.gw.counters(table)
		if out, err := tb.inet.run("curl", "-sS", "--connect-timeout", "2", "http://"+guestAddr+"/"); err == nil {
			t.Errorf("reached the guest from outside: %s", out)
		}
		after := tb.gw.counters(table)
		if after.Drops[DropUnsolicited] <= before.Drops[DropUnsolicited] || after.FlowsInternetToGuest <= before.FlowsInternetToGuest {
			t.Errorf("unsolicited inbound not counted: drops %d -> %d, flows %d -> %d",
				before.Drops[DropUnsolicited], after.Drops[DropUnsolicited], before.FlowsInternetToGuest, after.FlowsInternetToGuest)
		}
	})

	t.Run("uplink forwarding does not route other networks", func(t *testing.T) {
		// Another network behind the gateway host, not the room: switching
		// on up0's forwarding for the room must not open a path to it.
		side := newNetns(t, "side")
		vethPair(t, tb.gw, "side0", side, "eth0")
		tb.gw.must("ip", "addr", "add", "192.168.88.1/24", "dev", "side0")
		tb.gw.must("ip", "link", "set", "side0", "up")
		side.must("ip", "addr", "add", "192.168.88.2/24", "dev", "eth0")
		side.must("ip", "link", "set", "eth0", "up")
		tb.inet.must("ip", "route", "add", "192.168.88.0/24", "via", gwUplinkAddr)
		defer tb.inet.must("ip", "route", "del", "192.168.88.0/24", "via", gwUplinkAddr)
		before := tb.gw.counters(table).Drops[DropUplink]
		if out, err := tb.inet.run("ping", "-c", "1", "-W", "1", "192.168.88.2"); err == nil {
			t.Errorf("reached a host behind the gateway from the uplink: %s", out)
		}
		if after := tb.gw.counters(table).Drops[DropUplink]; after <= before {
			t.Errorf("drop_uplink %d -> %d: the packet was not stopped by the guard", before, after)
		}
	})

	t.Run("metrics", func(t *testing.T) {
		m := scrape(t, tb.gw)
		for _, name := range []string{
			`peerlan_gateway_forwarded_bytes_total{direction="guest_to_internet"}`,
			`peerlan_gateway_forwarded_bytes_total{direction="internet_to_guest"}`,
			`peerlan_gateway_forwarded_packets_total{direction="internet_to_guest"}`,
			`peerlan_gateway_flows_total{direction="guest_to_internet"}`,
			`peerlan_gateway_policy_drops_total{reason="metadata"}`,
			`peerlan_gateway_policy_drops_total{reason="private"}`,
			`peerlan_gateway_policy_drops_total{reason="host"}`,
			`peerlan_gateway_dns_queries_total{transport="udp"}`,
		} {
			if m[name] < 1 {
				t.Errorf("%s = %v, want >= 1", name, m[name])
			}
		}
		if _, ok := m[`peerlan_gateway_dns_failures_total{reason="timeout"}`]; !ok {
			t.Error("DNS failure metrics missing")
		}
	})

	rest := gw.stop(syscall.SIGTERM)
	t.Logf("gateway output after SIGTERM: %q", rest)
	if len(rest) == 0 || !strings.HasPrefix(rest[0], "STATUS room 10.86.0.0/24 on lan0 via up0: out ") {
		t.Errorf("no status line: %q", rest)
	}
	t.Run("sigterm restores the host", func(t *testing.T) {
		assertRestored(t, tb, "lan0", orig)
	})
}

// assertRestored checks that no trace of the gateway for lan is left.
func assertRestored(t *testing.T, tb *testbed, lan string, orig map[string]string) {
	t.Helper()
	if tables := tb.gw.nftTables(); slices.Contains(tables, "inet "+tableName(lan)) {
		t.Errorf("table still present: %v", tables)
	}
	for iface, want := range orig {
		if got := tb.gw.sysctl(iface, "forwarding"); got != want {
			t.Errorf("%s forwarding = %s, want the original %s", iface, got, want)
		}
	}
	if out := tb.gw.must("ip", "-4", "addr", "show", "dev", lan); strings.Contains(out, "inet ") {
		t.Errorf("%s keeps an address:\n%s", lan, out)
	}
	if out := tb.gw.must("ip", "link", "show", "dev", lan); strings.Contains(out, ",UP") {
		t.Errorf("%s left up:\n%s", lan, out)
	}
	if _, err := os.Stat(statePath(tb.stateDir, lan)); !os.IsNotExist(err) {
		t.Errorf("state file left behind: %v", err)
	}
}

// scrape fetches the helper's /metrics and returns "name{labels}" -> value.
func scrape(t *testing.T, gw *netns) map[string]float64 {
	t.Helper()
	out := gw.must("curl", "-sS", "--max-time", "5", "http://"+metricsAddr+"/metrics")
	m := make(map[string]float64)
	for _, line := range strings.Split(out, "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("metrics line %q: %v", line, err)
		}
		m[line[:i]] = v
	}
	return m
}

// normalizedTable lists a table as JSON without handles and counter values,
// so that two loads of the same ruleset compare equal.
func normalizedTable(t *testing.T, ns *netns, table string) []string {
	t.Helper()
	var doc struct {
		Nftables []map[string]any `json:"nftables"`
	}
	if err := json.Unmarshal([]byte(ns.must("nft", "-j", "list", "table", "inet", table)), &doc); err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, o := range doc.Nftables {
		if _, ok := o["metainfo"]; ok {
			continue
		}
		stripVolatile(o)
		b, _ := json.Marshal(o)
		out = append(out, string(b))
	}
	return out
}

func stripVolatile(v any) {
	switch v := v.(type) {
	case map[string]any:
		for _, k := range []string{"handle", "packets", "bytes"} {
			delete(v, k)
		}
		for _, x := range v {
			stripVolatile(x)
		}
	case []any:
		for _, x := range v {
			stripVolatile(x)
		}
	}
}

// TestGatewayAllowList opens what TestGatewayEndToEnd proves blocked: the
// same guest, routes and servers, only the policy differs.
func TestGatewayAllowList(t *testing.T) {
	requireNetns(t)
	requireTools(t, "curl")
	tb := newTestbed(t)
	tb.startInternet()
	cfg := tb.gatewayConfig()
	cfg.Allow = []string{metadataAddr + "/32", "192.168.77.0/24"}
	gw := tb.startGateway(cfg)
	defer gw.stop(syscall.SIGTERM)
	for _, url := range []string{"http://" + metadataAddr + "/", "http://" + hostPrivAddr + ":" + hostServicePort + "/"} {
		if out, err := guestCurl(tb.guest, url); err != nil {
			t.Errorf("allow-listed %s unreachable: %v: %s", url, err, out)
		}
	}
	expectBlocked(t, tb, DropPrivate, func() (string, error) { return guestCurl(tb.guest, "http://"+blockedPrivAddr+"/") })
	expectBlocked(t, tb, DropHost, func() (string, error) {
		return guestCurl(tb.guest, "http://"+gwUplinkAddr+":"+hostServicePort+"/")
	})
}

func TestGatewayCrashRecovery(t *testing.T) {
	requireNetns(t)
	requireTools(t, "curl")
	tb := newTestbed(t)
	tb.startInternet()
	orig := map[string]string{"lan0": tb.gw.sysctl("lan0", "forwarding"), "up0": tb.gw.sysctl("up0", "forwarding")}
	table := tableName("lan0")

	first := tb.startGateway(tb.gatewayConfig())
	before := normalizedTable(t, tb.gw, table)
	if out, err := guestCurl(tb.guest, "http://"+webAddr+"/"); err != nil {
		t.Fatalf("first run: %v: %s", err, out)
	}
	first.stop(syscall.SIGKILL)

	// A crash leaves everything in place.
	if !slices.Contains(tb.gw.nftTables(), "inet "+table) {
		t.Fatal("table vanished with the process; the crash test proves nothing")
	}
	if got := tb.gw.sysctl("lan0", "forwarding"); got != "1" {
		t.Fatalf("lan0 forwarding = %s after the crash, want 1", got)
	}
	if _, err := os.Stat(statePath(tb.stateDir, "lan0")); err != nil {
		t.Fatalf("state file after the crash: %v", err)
	}

	second := tb.startGateway(tb.gatewayConfig())
	after := normalizedTable(t, tb.gw, table)
	if !reflect.DeepEqual(before, after) {
		t.Errorf("ruleset after restart differs:\nbefore: %v\nafter:  %v", before, after)
	}
	var ours []string
	for _, name := range tb.gw.nftTables() {
		if strings.HasPrefix(name, "inet peerlan_gw_") {
			ours = append(ours, name)
		}
	}
	if len(ours) != 1 {
		t.Errorf("gateway tables after restart: %v, want exactly one", ours)
	}
	if out, err := guestCurl(tb.guest, "http://"+webAddr+"/"); err != nil {
		t.Errorf("after restart: %v: %s", err, out)
	}
	second.stop(syscall.SIGTERM)
	// The restart must restore the values from before the first run, not
	// the ones the crash left.
	assertRestored(t, tb, "lan0", orig)
}

func TestGatewaySharedUplink(t *testing.T) {
	requireNetns(t)
	requireTools(t, "curl")
	tb := newTestbed(t)
	tb.startInternet()
	guest2 := newNetns(t, "guest2")
	tb.addGuest(guest2, "lan1", "10.87.0.7", "10.87.0.1")
	orig := map[string]string{"lan0": "0", "lan1": "0", "up0": tb.gw.sysctl("up0", "forwarding")}
	if orig["up0"] != "0" {
		t.Fatalf("up0 forwarding starts at %s", orig["up0"])
	}

	a := tb.startGateway(tb.gatewayConfig())
	cfgB := tb.gatewayConfig()
	cfgB.LAN, cfgB.Subnet, cfgB.MetricsAddr, cfgB.HostService = "lan1", "10.87.0.0/24", "", ""
	b := tb.startGateway(cfgB)
	for _, g := range []*netns{tb.guest, guest2} {
		if out, err := guestCurl(g, "http://"+webAddr+"/"); err != nil {
			t.Fatalf("%s: %v: %s", g.name, err, out)
		}
	}

	a.stop(syscall.SIGTERM)
	if got := tb.gw.sysctl("up0", "forwarding"); got != "1" {
		t.Errorf("stopping one gateway switched the shared uplink's forwarding to %s", got)
	}
	if got := tb.gw.sysctl("lan0", "forwarding"); got != "0" {
		t.Errorf("lan0 forwarding = %s after its gateway stopped", got)
	}
	if out, err := guestCurl(guest2, "http://"+webAddr+"/"); err != nil {
		t.Errorf("the other room lost the internet: %v: %s", err, out)
	}

	b.stop(syscall.SIGTERM)
	assertRestored(t, tb, "lan1", map[string]string{"lan1": "0", "up0": orig["up0"]})
}

func TestGatewayRateLimit(t *testing.T) {
	requireNetns(t)
	requireTools(t, "curl")
	tb := newTestbed(t)
	tb.startInternet()
	const rate = 256 << 10 // bytes/s
	const size = 1 << 20
	cfg := tb.gatewayConfig()
	cfg.RateLimit = rate
	gw := tb.startGateway(cfg)
	defer gw.stop(syscall.SIGTERM)

	// The kernel's byte bucket holds one second of the rate, so a transfer
	// of size bytes takes at least (size - rate) / rate seconds. Allow one
	// more second of slack for timing and TCP's first window.
	minSeconds := float64(size-2*rate) / rate
	transfer := func(t *testing.T, url string, args ...string) {
		t.Helper()
		out, err := guestCurl(tb.guest, url, append([]string{"-o", "/dev/null", "-w", "%{time_total} %{size_download} %{size_upload}", "--max-time", "60"}, args...)...)
		if err != nil {
			t.Fatalf("curl: %v: %s", err, out)
		}
		var secs float64
		var down, up int
		if _, err := fmt.Sscan(out, &secs, &down, &up); err != nil {
			t.Fatalf("curl output %q: %v", out, err)
		}
		if down+up < size {
			t.Fatalf("moved %d+%d bytes, want %d", down, up, size)
		}
		t.Logf("%d bytes in %.2fs (%.0f KiB/s, limit %d KiB/s)", down+up, secs, float64(down+up)/secs/1024, rate>>10)
		if secs < minSeconds {
			t.Errorf("transfer took %.2fs, under the %.2fs the limit allows", secs, minSeconds)
		}
	}
	before := tb.gw.counters(tableName("lan0")).Drops[DropRateLimit]
	t.Run("download", func(t *testing.T) {
		transfer(t, fmt.Sprintf("http://%s/blob?bytes=%d", webAddr, size))
	})
	t.Run("upload", func(t *testing.T) {
		file := t.TempDir() + "/upload"
		if err := os.WriteFile(file, make([]byte, size), 0o644); err != nil {
			t.Fatal(err)
		}
		transfer(t, "http://"+webAddr+"/upload", "--data-binary", "@"+file)
	})
	if after := tb.gw.counters(tableName("lan0")).Drops[DropRateLimit]; after <= before {
		t.Errorf("drop_ratelimit %d -> %d: the limiter never acted", before, after)
	}
}

func TestGatewayRefusals(t *testing.T) {
	requireNetns(t)
	tb := newTestbed(t)
	orig := tb.gw.sysctl("up0", "forwarding")
	untouched := func(t *testing.T) {
		t.Helper()
		if tables := tb.gw.nftTables(); slices.Contains(tables, "inet "+tableName("lan0")) {
			t.Errorf("refused setup left a table: %v", tables)
		}
		if got := tb.gw.sysctl("lan0", "forwarding"); got != "0" {
			t.Errorf("refused setup changed lan0 forwarding to %s", got)
		}
		if got := tb.gw.sysctl("up0", "forwarding"); got != orig {
			t.Errorf("refused setup changed up0 forwarding to %s", got)
		}
		if out := tb.gw.must("ip", "-4", "addr", "show", "dev", "lan0"); strings.Contains(out, "inet ") {
			t.Errorf("refused setup left an address on lan0:\n%s", out)
		}
	}
	cases := []struct {
		name   string
		edit   func(*helperConfig)
		prefix []string
		env    []string
		want   string
	}{
		{"subnet overlaps the host's private network", func(c *helperConfig) { c.Subnet = "192.168.77.0/24" }, nil, nil, "subnet_overlap"},
		{"subnet overlaps a routed prefix", func(c *helperConfig) { c.Subnet = "172.16.8.0/24" }, nil, nil, "subnet_overlap"},
		{"uplink missing", func(c *helperConfig) { c.Uplink = "nope0" }, nil, nil, "uplink_missing"},
		{"lan missing", func(c *helperConfig) { c.LAN = "nope1" }, nil, nil, "lan_missing"},
		{"nft missing", func(*helperConfig) {}, nil, []string{"PATH=" + t.TempDir()}, "nft_missing"},
	}
	if _, err := os.Stat("/usr/bin/setpriv"); err == nil {
		cases = append(cases, struct {
			name   string
			edit   func(*helperConfig)
			prefix []string
			env    []string
			want   string
		}{"without CAP_NET_ADMIN", func(*helperConfig) {}, []string{"/usr/bin/setpriv", "--bounding-set=-net_admin", "--"}, nil, "not_privileged"})
	} else {
		t.Log("setpriv not installed: not testing the privilege refusal")
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg := tb.gatewayConfig()
			c.edit(&cfg)
			got, msg := tb.refuse(cfg, c.prefix, c.env...)
			t.Logf("refusal: %s", msg)
			if got != c.want {
				t.Errorf("got %s (%s), want %s", got, msg, c.want)
			}
			untouched(t)
		})
	}
	t.Run("no default route to pick the uplink from", func(t *testing.T) {
		tb.gw.must("ip", "route", "del", "default")
		defer tb.gw.must("ip", "route", "add", "default", "via", inetUplinkAddr)
		got, msg := tb.refuse(tb.gatewayConfig(), nil)
		t.Logf("refusal: %s", msg)
		if got != "no_default_route" {
			t.Errorf("got %s (%s), want no_default_route", got, msg)
		}
		untouched(t)
	})
	t.Run("second gateway for the same LAN", func(t *testing.T) {
		requireTools(t, "curl")
		gw := tb.startGateway(tb.gatewayConfig())
		got, msg := tb.refuse(tb.gatewayConfig(), nil)
		t.Logf("refusal: %s", msg)
		if got != "already_running" {
			t.Errorf("got %s (%s), want already_running", got, msg)
		}
		// The refusal must not have disturbed the running gateway.
		if !slices.Contains(tb.gw.nftTables(), "inet "+tableName("lan0")) {
			t.Error("running gateway's table is gone")
		}
		gw.stop(syscall.SIGTERM)
		untouched(t)
	})
}

func TestRulesetLoads(t *testing.T) {
	requireNetns(t)
	ns := newNetns(t, "load")
	for name, rs := range sampleRulesets {
		t.Run(name, func(t *testing.T) {
			file := t.TempDir() + "/" + name + ".nft"
			if err := os.WriteFile(file, []byte(rs.text()), 0o644); err != nil {
				t.Fatal(err)
			}
			// Load twice: the second load must replace, not duplicate.
			for range 2 {
				if out, err := ns.run("nft", "-f", file); err != nil {
					t.Fatalf("nft rejected %s: %v\n%s", name, err, out)
				}
			}
			objs, err := parseNftJSON([]byte(ns.must("nft", "-j", "list", "table", "inet", rs.Table)))
			if err != nil {
				t.Fatal(err)
			}
			rules := map[string]int{}
			chains := 0
			for _, o := range objs {
				if o.Rule != nil {
					rules[o.Rule.Chain]++
				}
				if o.Chain != nil {
					chains++
				}
			}
			if chains != expectedChains {
				t.Errorf("%d chains, want %d", chains, expectedChains)
			}
			wantGuestIn := 6 + len(blockedDestinations)
			if rules["guest_in"] != wantGuestIn {
				t.Errorf("guest_in has %d rules, want %d", rules["guest_in"], wantGuestIn)
			}
			ns.must("nft", "delete", "table", "inet", rs.Table)
		})
	}
}
