//go:build linux

package e2e

// Issue 5's proof: bin/gateway routes a room to a test "internet", entirely
// inside namespaces of the test's own.
//
// Topology (every address a documentation one, except the room's subnet,
// which the signaling server assigns, and the RFC 1918 address that stands
// for the gateway host's private network):
//
//	 ns inet ("the internet")                      ns gw (the gateway host)
//	 ┌──────────────────────────────────┐          ┌──────────────────────────────────┐
//	 │ HTTP :80 (all addresses)         │  veth    │ bin/gateway                      │
//	 │ DNS 203.0.113.1:53 (gateway.test)│ gwlink ─ uplink0 203.0.113.2/24, default  │
//	 │ bin/signal 203.0.113.1:8080      │ .1/24    │   via 203.0.113.1                │
//	 │ 169.254.169.254 on lo (metadata) │          │ TAP .1/prefix (from the welcome) │
//	 │ bin/peer (the guest's peer) ─┐   │          │ priv0 192.168.77.1/24 + HTTP :80 │
//	 └──────────────────────────────┼───┘          └──────────────────────────────────┘
//	                           TAP moved into
//	                         ns guest (DHCP, dig, curl; nothing but lo and the TAP)
//
// The signaling server and the guest's peer stand on the internet, like a
// public server and a browser: both daemons' WebRTC (and the gateway's
// WebSocket) run over the gwlink/uplink0 veth, and nothing touches the root
// namespace. The guest namespace has no interface but its TAP, whose frames
// reach only bin/peer's switch and from there the mesh, so whatever the
// guest reaches, it reached through the gateway; the test page shows the
// client address the internet saw (the gateway's masqueraded uplink address).
// The test's own servers are sockets of this test process, opened on a
// thread that entered the namespace (a socket stays in the namespace it was
// created in); daemons' HTTP endpoints are read the same way.

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
	"golang.org/x/sys/unix"

	"github.com/peerlan/peerlan/internal/promtext"
	"github.com/peerlan/peerlan/peer"
	"github.com/peerlan/peerlan/signal/proto"
)

const (
	gwInetAddr     = "203.0.113.1" // the internet host: web, DNS, signaling
	gwUplinkAddr   = "203.0.113.2" // the gateway's uplink
	gwPrivAddr     = "192.168.77.1"
	gwMetadataAddr = "169.254.169.254"
	gwSignalPort   = "8080"
	gwHostPort     = "81"             // a web server of the gateway host on its uplink address
	gwMetricsAddr  = "127.0.0.1:9100" // in ns gw
	gwTestName     = "www.gateway.test."
	gwPageTitle    = "peerlan gateway test page"
	gwUplink       = "uplink0"
	gwInetLink     = "gwlink"
)

// gwLab is the three-namespace network above with bin/signal running.
type gwLab struct {
	t                 testing.TB
	inet, gw, guest   *Namespace
	sig               *SignalServer
	room, tap         string // room name; the gateway's TAP
	tokenFile         string // the room's gateway token
	stateDir          string
	inetHTTP, gwHTTP  *http.Client
	guestPeer         *Process
	guestTAP          string
	guestStatusURL    string
	uplinkForwarding0 string // net.ipv4.conf.uplink0.forwarding before any gateway ran
}

// gwNewLab builds the namespaces, links, servers and the signaling server
// (with sigExtra flags).
func gwNewLab(t testing.TB, sigExtra ...string) *gwLab {
	t.Helper()
	RequireCommands(t, "nft", "curl", "dig", "udhcpc", "ping")
	l := &gwLab{
		t:        t,
		inet:     NewNamespace(t, "gw-inet"),
		gw:       NewNamespace(t, "gw-host"),
		guest:    NewNamespace(t, "gw-guest"),
		room:     "gateway-" + randomSuffix(4),
		tap:      "plgw" + randomSuffix(3),
		guestTAP: "plgg" + randomSuffix(3),
		stateDir: t.TempDir(),
	}
	l.inetHTTP, l.gwHTTP = gwHTTPClient(l.inet), gwHTTPClient(l.gw)
	VethPair(t, l.inet, gwInetLink, netip.MustParsePrefix(gwInetAddr+"/24"), l.gw, gwUplink, netip.MustParsePrefix(gwUplinkAddr+"/24"))
	l.gw.MustRun("ip", "route", "add", "default", "via", gwInetAddr)

	// The cloud metadata service lives "on the internet" side, routed from the
	// gateway host as on a cloud VM; the host's private network is an
	// interface with a web server of its own.
	l.inet.MustRun("ip", "addr", "add", gwMetadataAddr+"/32", "dev", "lo")
	l.gw.MustRun("ip", "route", "add", gwMetadataAddr+"/32", "via", gwInetAddr)
	gwLocalVeth(l.gw, "priv0", gwPrivAddr+"/24")

	gwServeHTTP(t, l.inet, "0.0.0.0:80")
	gwServeHTTP(t, l.gw, gwPrivAddr+":80")
	gwServeHTTP(t, l.gw, gwUplinkAddr+":"+gwHostPort)
	gwServeDNS(t, l.inet, gwInetAddr+":53")
	l.uplinkForwarding0 = l.sysctl(gwUplink)

	l.sig = l.startSignal(sigExtra...)
	l.tokenFile = filepath.Join(t.TempDir(), "gateway-token")
	if err := os.WriteFile(l.tokenFile, []byte(l.sig.Token(t, "-room", l.room, "-gateway")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return l
}

// startSignal runs bin/signal in ns inet.
func (l *gwLab) startSignal(extra ...string) *SignalServer {
	l.t.Helper()
	bin := Binary(l.t, "signal")
	addr := gwInetAddr + ":" + gwSignalPort
	secret := filepath.Join(l.t.TempDir(), "secret")
	s := &SignalServer{Base: "http://" + addr, WS: "ws://" + addr + "/signal"}
	s.Process = l.inet.Start(bin, append([]string{"-addr", addr, "-secret-file", secret}, extra...)...)
	waitHTTPVia(l.t, s.Process, l.inetHTTP, s.Base+"/healthz", 20*time.Second)
	return s
}

// gatewayArgs are bin/gateway's flags for this lab.
func (l *gwLab) gatewayArgs(extra ...string) []string {
	return append([]string{"-signal", l.sig.WS, "-room", l.room, "-token-file", l.tokenFile, "-tap", l.tap,
		"-dns", gwInetAddr, "-ice-interfaces", gwUplink, "-state-dir", l.stateDir,
		"-metrics", gwMetricsAddr, "-status-every", "2s"}, extra...)
}

var gwReadyRE = regexp.MustCompile(`msg="gateway ready".* subnet=(\S+) address=(\S+)`)

// startGateway runs bin/gateway in ns gw and waits until it serves.
func (l *gwLab) startGateway(extra ...string) *Process {
	l.t.Helper()
	p := l.gw.Start(Binary(l.t, "gateway"), l.gatewayArgs(extra...)...)
	m := p.WaitOutput(l.t, gwReadyRE, 60*time.Second)
	if m[2] != "10.86.0.1" {
		l.t.Fatalf("gateway took %s in %s, want the default room subnet's .1", m[2], m[1])
	}
	return p
}

// startGuest runs the guest's bin/peer in ns inet, its TAP in ns guest, and
// waits for an open link to the gateway.
func (l *gwLab) startGuest(extra ...string) {
	l.t.Helper()
	status := "127.0.0.1:9200"
	l.guestStatusURL = "http://" + status + "/status"
	args := append([]string{"-signal", l.sig.WS, "-room", l.room, "-tap", l.guestTAP, "-netns", l.guest.Name,
		"-ice-interfaces", gwInetLink, "-status", status, "-status-every", "5s"}, extra...)
	l.guestPeer = l.inet.Start(Binary(l.t, "peer"), args...)
	waitHTTPVia(l.t, l.guestPeer, l.inetHTTP, l.guestStatusURL, 20*time.Second)
	l.waitGatewayLink("", 60*time.Second)
}

// guestStatus reads the guest peer's mesh status.
func (l *gwLab) guestStatus() peer.MeshStatus {
	l.t.Helper()
	body, err := gwGet(l.inetHTTP, l.guestStatusURL)
	if err != nil {
		l.t.Fatalf("guest peer status: %v", err)
	}
	var st peer.MeshStatus
	if err := json.Unmarshal([]byte(body), &st); err != nil {
		l.t.Fatalf("guest peer status: %v", err)
	}
	return st
}

// waitGatewayLink waits until the guest's peer has an open link to a
// gateway peer other than not and returns that link.
func (l *gwLab) waitGatewayLink(not proto.PeerID, timeout time.Duration) peer.LinkStatus {
	l.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		st := l.guestStatus()
		for _, p := range st.Peers {
			if p.Role == proto.RoleGateway && p.State == "open" && st.GatewayPeer == p.ID && p.ID != not {
				return p
			}
		}
		if time.Now().After(deadline) {
			l.t.Fatalf("guest has no open link to the gateway after %v: %+v", timeout, st)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// metrics scrapes bin/gateway's /metrics.
func (l *gwLab) metrics() promtext.Samples {
	l.t.Helper()
	body, err := gwGet(l.gwHTTP, "http://"+gwMetricsAddr+"/metrics")
	if err != nil {
		l.t.Fatalf("gateway metrics: %v", err)
	}
	s, err := promtext.Parse(strings.NewReader(body))
	if err != nil {
		l.t.Fatalf("gateway metrics: %v", err)
	}
	return s
}

// peerlanTables lists the peerlan gateway tables in ns gw.
func (l *gwLab) peerlanTables() []string {
	l.t.Helper()
	var tables []string
	for _, line := range strings.Split(l.gw.MustRun("nft", "list", "tables"), "\n") {
		if strings.Contains(line, "peerlan_gw_") {
			tables = append(tables, strings.TrimSpace(line))
		}
	}
	return tables
}

// ruleCount counts the rules of the gateway's table in ns gw.
func (l *gwLab) ruleCount() int {
	l.t.Helper()
	out := l.gw.MustRun("nft", "-j", "list", "table", "inet", "peerlan_gw_"+l.tap)
	return strings.Count(out, `{"rule":`)
}

// tapExists reports whether the gateway's TAP is in ns gw.
func (l *gwLab) tapExists() bool {
	_, err := l.gw.Run("ip", "link", "show", "dev", l.tap)
	return err == nil
}

func (l *gwLab) sysctl(iface string) string {
	l.t.Helper()
	return strings.TrimSpace(l.gw.MustRun("cat", "/proc/sys/net/ipv4/conf/"+iface+"/forwarding"))
}

// guestCurl fetches url from the guest namespace.
func (l *gwLab) guestCurl(url string, timeout time.Duration) (string, error) {
	return l.guest.Run("curl", "-sS", "--connect-timeout", fmt.Sprint(int(timeout.Seconds())), "--max-time",
		fmt.Sprint(int(timeout.Seconds())+5), url)
}

// checkRestored asserts that no trace of a gateway is left in ns gw.
func (l *gwLab) checkRestored(t *testing.T) {
	t.Helper()
	if tables := l.peerlanTables(); len(tables) != 0 {
		t.Errorf("nftables tables left behind: %q", tables)
	}
	if l.tapExists() {
		t.Errorf("TAP %s still exists", l.tap)
	}
	if got := l.sysctl(gwUplink); got != l.uplinkForwarding0 {
		t.Errorf("%s forwarding = %s, want it restored to %s", gwUplink, got, l.uplinkForwarding0)
	}
	if entries, _ := os.ReadDir(l.stateDir); len(entries) > 0 {
		for _, e := range entries {
			if strings.HasSuffix(e.Name(), ".json") {
				t.Errorf("state file %s left behind", e.Name())
			}
		}
	}
}

// gwWaitExit waits for p to exit and returns its exit code.
func gwWaitExit(t testing.TB, p *Process, timeout time.Duration) int {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !p.Exited() {
		if time.Now().After(deadline) {
			t.Fatalf("%s still running after %v", p.Name, timeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := p.Stop(0); err != nil {
		if ee, ok := err.(interface{ ExitCode() int }); ok {
			return ee.ExitCode()
		}
		t.Fatalf("%s: %v", p.Name, err)
	}
	return 0
}

// TestGateway is issue 5's end-to-end proof; see the topology above.
func TestGateway(t *testing.T) {
	l := gwNewLab(t)
	bin := Binary(t, "gateway")

	t.Run("refusals", func(t *testing.T) {
		refuse := func(t *testing.T, want string, p *Process) {
			t.Helper()
			if code := gwWaitExit(t, p, 60*time.Second); code != 1 {
				t.Errorf("exit code %d, want 1", code)
			}
			if !strings.Contains(p.Output(), want) {
				t.Errorf("output lacks %q:\n%s", want, p.Output())
			}
			l.checkRestored(t)
		}
		t.Run("not root", func(t *testing.T) {
			RequireCommands(t, "setpriv")
			args := append([]string{"PEERLAN_GATEWAY_TOKEN=x", "setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", bin},
				gwWithout(l.gatewayArgs(), "-token-file")...)
			refuse(t, "CAP_NET_ADMIN is required", l.gw.Start("env", args...))
		})
		t.Run("nft missing", func(t *testing.T) {
			args := append([]string{"PATH=" + t.TempDir(), bin}, l.gatewayArgs()...)
			refuse(t, "nft (nftables CLI) not found", l.gw.Start("env", args...))
		})
		t.Run("gateway token refused", func(t *testing.T) {
			join := filepath.Join(t.TempDir(), "join-token")
			os.WriteFile(join, []byte(l.sig.Token(t, "-room", l.room)), 0o600) // a join token, not a gateway one
			args := append(gwWithout(l.gatewayArgs(), "-token-file"), "-token-file", join)
			refuse(t, "refused us as the room's gateway: token-", l.gw.Start(bin, args...))
		})
		t.Run("subnet overlaps a host route", func(t *testing.T) {
			gwLocalVeth(l.gw, "ovl0", "10.86.0.200/25")
			defer l.gw.Run("ip", "link", "del", "ovl0")
			refuse(t, "overlaps an existing host route", l.gw.Start(bin, l.gatewayArgs()...))
		})
	})
	if t.Failed() {
		t.FailNow()
	}

	gw := l.startGateway()
	firstRules := l.ruleCount()
	l.startGuest()

	gwCheckRoom(t, l, gw, false)

	t.Run("kill -9 and restart", func(t *testing.T) {
		old := l.waitGatewayLink("", 10*time.Second).ID
		gw.Kill()
		if tables := l.peerlanTables(); len(tables) != 1 {
			t.Fatalf("after kill -9: tables %q, want the crashed run's one left (else this test proves nothing)", tables)
		}
		if l.tapExists() {
			t.Errorf("TAP %s outlived its process", l.tap)
		}
		gw = l.startGateway()
		// The resume token saved in -state-dir gives the new run the old id
		// (and .1) at once, instead of gateway-taken until the server
		// notices the dead connection and its grace period ends.
		if !strings.Contains(gw.Output(), `msg="joined room as its gateway" id=`+string(old)+" ") {
			t.Errorf("the restarted gateway did not resume its identity %s:\n%s", old, gw.Output())
		}
		if !strings.Contains(gw.Output(), "recovering from a gateway that did not stop cleanly") {
			t.Errorf("the restarted gateway did not report recovering the crashed run's state")
		}
		if tables := l.peerlanTables(); len(tables) != 1 {
			t.Errorf("after restart: tables %q, want exactly one", tables)
		}
		if n := l.ruleCount(); n != firstRules {
			t.Errorf("after restart: %d rules, want %d as on the first start", n, firstRules)
		}
		// The guest knew .1 by the old TAP's MAC address; the new gateway's
		// gratuitous ARP must replace it at once, not after the neighbour
		// entry went stale (up to a minute).
		gw.WaitOutput(t, regexp.MustCompile(`msg="gateway status" peers=1 open=1`), 60*time.Second)
		mac := strings.TrimSpace(l.gw.MustRun("cat", "/sys/class/net/"+l.tap+"/address"))
		deadline := time.Now().Add(5 * time.Second)
		for {
			neigh := l.guest.MustRun("ip", "neigh", "show", "10.86.0.1", "dev", l.guestTAP)
			if strings.Contains(neigh, mac) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("guest's neighbour entry for .1 is %q, want the new TAP's %s", strings.TrimSpace(neigh), mac)
			}
			time.Sleep(100 * time.Millisecond)
		}
		out, err := l.guestCurl("http://"+gwInetAddr+"/", 5*time.Second)
		if err != nil || !strings.Contains(out, gwPageTitle) {
			t.Fatalf("guest cannot fetch the page through the restarted gateway: %v %s", err, out)
		}
	})

	t.Run("sigterm restores the host", func(t *testing.T) {
		if err := gw.Stop(20 * time.Second); err != nil {
			t.Fatalf("bin/gateway did not exit cleanly on SIGTERM: %v", err)
		}
		if !strings.Contains(gw.Output(), "stopped; host restored") {
			t.Errorf("no final log line")
		}
		l.checkRestored(t)
		if out, err := l.guestCurl("http://"+gwInetAddr+"/", 2*time.Second); err == nil {
			t.Errorf("guest still reaches the internet with the gateway gone: %s", out)
		}
	})
}

// startUserspaceGateway runs bin/gateway -userspace in ns gw as nobody
// (uid 65534, no capabilities), with the token in the environment (the
// token file is root's) and a state directory of nobody's, and waits until
// it serves.
func (l *gwLab) startUserspaceGateway(extra ...string) *Process {
	l.t.Helper()
	RequireCommands(l.t, "setpriv")
	token, err := os.ReadFile(l.tokenFile)
	if err != nil {
		l.t.Fatal(err)
	}
	state := filepath.Join(l.t.TempDir(), "state")
	if err := os.Mkdir(state, 0o700); err != nil {
		l.t.Fatal(err)
	}
	if err := os.Chown(state, 65534, 65534); err != nil {
		l.t.Fatal(err)
	}
	// nobody must reach the binary: t.TempDir's parents are 0700 root's in
	// some setups, so it runs from a copy the test makes readable.
	bin := filepath.Join(state, "gateway")
	if out, err := l.gw.Run("cp", Binary(l.t, "gateway"), bin); err != nil {
		l.t.Fatalf("copying bin/gateway: %v %s", err, out)
	}
	for dir := state; dir != "/"; dir = filepath.Dir(dir) {
		if fi, err := os.Stat(dir); err == nil && fi.Mode().Perm()&0o001 == 0 {
			os.Chmod(dir, fi.Mode().Perm()|0o011)
		}
	}
	args := gwWithout(gwWithout(gwWithout(l.gatewayArgs(), "-token-file"), "-tap"), "-state-dir")
	args = append([]string{"PEERLAN_GATEWAY_TOKEN=" + strings.TrimSpace(string(token)), "HOME=/nonexistent",
		"setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all", bin,
		"-userspace", "-state-dir", state}, append(args, extra...)...)
	p := l.gw.Start("env", args...)
	m := p.WaitOutput(l.t, gwReadyRE, 60*time.Second)
	if m[2] != "10.86.0.1" {
		l.t.Fatalf("gateway took %s in %s, want the default room subnet's .1", m[2], m[1])
	}
	return p
}

// TestGatewayUserspace is TestGateway's guest checks with bin/gateway
// -userspace running unprivileged: the same lease, DNS, page and refusals,
// with no TAP, nftables table or forwarding switched on in ns gw.
func TestGatewayUserspace(t *testing.T) {
	l := gwNewLab(t)
	gw := l.startUserspaceGateway()

	t.Run("unprivileged and no host changes", func(t *testing.T) {
		status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", gw.cmd.Process.Pid))
		if err != nil {
			t.Fatal(err)
		}
		if !regexp.MustCompile(`(?m)^Uid:\s+65534\s`).Match(status) || !regexp.MustCompile(`(?m)^CapEff:\s+0+$`).Match(status) {
			t.Errorf("bin/gateway does not run as nobody without capabilities:\n%s", status)
		}
		if tables := l.peerlanTables(); len(tables) != 0 {
			t.Errorf("nftables tables: %q", tables)
		}
		if l.tapExists() {
			t.Errorf("TAP %s exists", l.tap)
		}
		if got := l.sysctl(gwUplink); got != l.uplinkForwarding0 {
			t.Errorf("%s forwarding = %s, was %s", gwUplink, got, l.uplinkForwarding0)
		}
	})
	l.startGuest()
	gwCheckRoom(t, l, gw, true)

	t.Run("sigterm", func(t *testing.T) {
		if err := gw.Stop(20 * time.Second); err != nil {
			t.Fatalf("bin/gateway did not exit cleanly on SIGTERM: %v", err)
		}
		if !strings.Contains(gw.Output(), `msg=stopped`) {
			t.Errorf("no final log line:\n%s", gw.Output())
		}
		if out, err := l.guestCurl("http://"+gwInetAddr+"/", 2*time.Second); err == nil {
			t.Errorf("guest still reaches the internet with the gateway gone: %s", out)
		}
	})

	t.Run("restart", func(t *testing.T) {
		// A new stack, a new MAC: the guest learns it from the gratuitous
		// ARP and sends no ARP of its own, so the stack must ask for the
		// guest's MAC in a way the guest's switch accepts.
		gw = l.startUserspaceGateway()
		defer gw.Stop(20 * time.Second)
		l.waitGatewayLink("", 60*time.Second)
		out, err := l.guestCurl("http://"+gwInetAddr+"/", 5*time.Second)
		if err != nil || !strings.Contains(out, gwPageTitle) {
			t.Fatalf("guest cannot fetch the page through the restarted gateway: %v %s", err, out)
		}
	})
}

// gwCheckRoom is what a guest of the room gets from a running gateway, in
// either mode: a lease (from its own peer), DNS through .1 over UDP and TCP,
// the internet host's page fetched through the gateway (from its uplink
// address), the egress policy's refusals counted, and the metrics and
// status line.
func gwCheckRoom(t *testing.T, l *gwLab, gw *Process, userspace bool) {
	var lease Lease
	ok := t.Run("dhcp lease", func(t *testing.T) {
		lease = LeaseDHCP(t, l.guest, l.guestTAP)
		if lease.Router != netip.MustParseAddr("10.86.0.1") || !netip.MustParsePrefix("10.86.0.0/24").Contains(lease.Addr.Addr()) {
			t.Fatalf("lease %+v: want an address in 10.86.0.0/24 with router 10.86.0.1", lease)
		}
	})
	if !ok {
		t.FailNow()
	}

	var resolved string
	t.Run("dns through .1", func(t *testing.T) {
		out := l.guest.MustRun("dig", "+short", "+time=3", "+tries=2", "@10.86.0.1", gwTestName, "A")
		if resolved = strings.TrimSpace(out); resolved != gwInetAddr {
			t.Fatalf("%s = %q, want %s", gwTestName, out, gwInetAddr)
		}
		out = l.guest.MustRun("dig", "+time=3", "+tries=2", "@10.86.0.1", "missing.gateway.test.", "A")
		if !strings.Contains(out, "status: NXDOMAIN") {
			t.Errorf("missing.gateway.test is not NXDOMAIN:\n%s", out)
		}
		out = l.guest.MustRun("dig", "+tcp", "+short", "+time=3", "+tries=2", "@10.86.0.1", gwTestName, "A")
		if strings.TrimSpace(out) != gwInetAddr {
			t.Errorf("over TCP: %s = %q, want %s", gwTestName, out, gwInetAddr)
		}
	})

	t.Run("http through the gateway", func(t *testing.T) {
		if resolved == "" {
			t.Skip("no address resolved")
		}
		out, err := l.guestCurl("http://"+resolved+"/", 5*time.Second)
		if err != nil {
			t.Fatalf("curl: %v", err)
		}
		if !strings.Contains(out, gwPageTitle) || !strings.Contains(out, "remote="+gwUplinkAddr+":") {
			t.Errorf("page %q: want the test page, fetched from the gateway's masqueraded address %s", out, gwUplinkAddr)
		}
		if !userspace {
			Ping(t, l.guest, netip.MustParseAddr(gwInetAddr), 3)
			return
		}
		// A userspace stack cannot send echo requests for a guest and does
		// not answer them in the internet host's name either.
		before := l.metrics()[`peerlan_gateway_policy_drops_total{reason="icmp"}`]
		if out, err := l.guest.Run("ping", "-c", "2", "-i", "0.2", "-W", "1", gwInetAddr); err == nil {
			t.Errorf("guest pinged %s through the userspace gateway:\n%s", gwInetAddr, out)
		}
		if after := l.metrics()[`peerlan_gateway_policy_drops_total{reason="icmp"}`]; after <= before {
			t.Errorf("icmp drops %v -> %v: not counted", before, after)
		}
	})

	t.Run("egress policy", func(t *testing.T) {
		for _, c := range []struct{ name, addr, reason string }{
			{"gateway host's private network", gwPrivAddr, "private"},
			{"cloud metadata", gwMetadataAddr, "metadata"},
			{"gateway host's own uplink address", gwUplinkAddr + ":" + gwHostPort, "host"},
		} {
			t.Run(c.name, func(t *testing.T) {
				// The address serves the test page to the gateway host itself,
				// so only the policy can keep the guest out.
				if out, err := gwGet(l.gwHTTP, "http://"+c.addr+"/"); err != nil || !strings.Contains(out, gwPageTitle) {
					t.Fatalf("control: %s unreachable from the gateway host itself: %v", c.addr, err)
				}
				series := `peerlan_gateway_policy_drops_total{reason="` + c.reason + `"}`
				before := l.metrics()[series]
				if out, err := l.guestCurl("http://"+c.addr+"/", 2*time.Second); err == nil {
					t.Errorf("guest fetched http://%s/: %s", c.addr, out)
				}
				if !strings.Contains(c.addr, ":") { // ping on the host's addresses is answered by design
					if out, err := l.guest.Run("ping", "-c", "2", "-i", "0.2", "-W", "1", c.addr); err == nil {
						t.Errorf("guest pinged %s:\n%s", c.addr, out)
					}
				}
				if after := l.metrics()[series]; after <= before {
					t.Errorf("%s = %v -> %v: the drops were not counted", series, before, after)
				}
			})
		}
	})

	t.Run("metrics and status line", func(t *testing.T) {
		m := l.metrics()
		names := []string{
			`peerlan_gateway_forwarded_bytes_total{direction="guest_to_internet"}`,
			`peerlan_gateway_forwarded_bytes_total{direction="internet_to_guest"}`,
			`peerlan_gateway_dns_queries_total{transport="udp"}`,
			`peerlan_gateway_dns_queries_total{transport="tcp"}`,
			`peerlan_gateway_peers`,
		}
		status := regexp.MustCompile(`msg="gateway status" peers=1 open=1 traffic=".*out [1-9]`)
		if userspace {
			status = regexp.MustCompile(`msg="gateway status" peers=1 open=1 traffic="from guests [1-9].*to guests [1-9]`)
		} else {
			names = append(names, `peerlan_gateway_flows_total{direction="guest_to_internet"}`)
		}
		for _, name := range names {
			if m[name] < 1 {
				t.Errorf("%s = %v, want >= 1", name, m[name])
			}
		}
		gw.WaitOutput(t, status, 10*time.Second)
	})
}

// gwLocalVeth gives ns an interface name with address addr (and its
// connected route): one end of a veth pair whose other end (name+"p") stays
// in ns too. A dummy device would do, but not every kernel has the module.
func gwLocalVeth(ns *Namespace, name, addr string) {
	ns.MustRun("ip", "link", "add", name, "type", "veth", "peer", "name", name+"p")
	ns.MustRun("ip", "addr", "add", addr, "dev", name)
	ns.MustRun("ip", "link", "set", name+"p", "up")
	ns.MustRun("ip", "link", "set", name, "up")
}

// TestGatewayBrowserGuest: a v86 guest in headless Chromium resolves the
// test name through .1 and fetches the test page with wget through
// bin/gateway, in TestGateway's namespaces.
//
// Chromium runs in the root namespace (the browser harness starts it there),
// which has no route to the test's namespaces and must not get one. So the
// browser reaches the lab only through two loopback TCP proxies of this test
// process (a socket the test dialed inside ns inet): one to the signaling
// server, which also serves the page, and one to the embedded TURN relay's
// TCP listener, which the welcome advertises as 127.0.0.1:3478. The page
// runs with relay=relay, so Chromium sends nothing but TCP to those two
// proxies: its relayed candidate lives on the relay in ns inet, from where
// it reaches the gateway's host candidate on the uplink.
func TestGatewayBrowserGuest(t *testing.T) {
	VerifyNoLeaks(t)
	RequireChromium(t)
	RequireGuestImage(t)
	webDir := lanRequireWasm(t)
	const turnPort = "3478"
	l := gwNewLab(t, "-web-dir", webDir, "-turn-tcp", gwInetAddr+":"+turnPort, "-turn-host", "127.0.0.1",
		"-turn-ports", "50200-50299")
	if _, err := gwProxy(t, "127.0.0.1:"+turnPort, l.inet, gwInetAddr+":"+turnPort); err != nil {
		skipOrFail(t, "loopback TCP port %s for the TURN proxy is taken: %v", turnPort, err)
	}
	page, err := gwProxy(t, "127.0.0.1:0", l.inet, gwInetAddr+":"+gwSignalPort)
	if err != nil {
		t.Fatal(err)
	}
	gw := l.startGateway()

	tab := StartBrowser(t).OpenTab(t, "guest", "http://"+page+"/?room="+l.room+"&relay=relay", true)
	g := lanWaitGuest(t, tab)
	link := lanWaitLink(t, tab, netip.MustParseAddr("10.86.0.1"), lanJoinTimeout)
	if link.Role != proto.RoleGateway || link.Path != "relay" {
		t.Errorf("browser's link to .1: %+v, want the gateway over the relay", link)
	}
	if st := lanStatus(t, tab); st.GatewayPeer != link.ID {
		t.Errorf("page status names gateway peer %q, want %q", st.GatewayPeer, link.ID)
	}
	// The panel names the gateway (no "no internet" notice) and its kind.
	waitFor(t, tab, `document.getElementById("net-gateway").textContent.startsWith("10.86.0.1 ") ? "ok" : ""`)
	if kind := Eval[string](tab, `(() => { const c = document.querySelector('#peer-rows tr[data-peer=`+jsString(string(link.ID))+`] td.kind'); return c ? c.textContent : ""; })()`); kind != "gateway" {
		t.Errorf("the gateway's row shows kind %q", kind)
	}
	m := g.Command("wget -q -O - http://"+strings.TrimSuffix(gwTestName, ".")+"/",
		regexp.MustCompile(`(?m)^local=(\S+) remote=(\S+)$`), CommandTimeout)
	if !strings.HasPrefix(m[2], gwUplinkAddr+":") {
		t.Errorf("the page was fetched from %s, want the gateway's masqueraded %s", m[2], gwUplinkAddr)
	}
	if !strings.Contains(g.ConsoleText(), gwPageTitle) {
		t.Errorf("the guest's console lacks the page title")
	}
	// The counters are read at most once a second (a status line may just
	// have read them): poll.
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		if l.metrics()[`peerlan_gateway_forwarded_bytes_total{direction="internet_to_guest"}`] > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("the gateway counted no bytes to the guest")
			break
		}
	}
	t.Logf("v86 guest %s fetched the page through the gateway: %s", g.IP, m[0])
	if err := gw.Stop(20 * time.Second); err != nil {
		t.Errorf("bin/gateway did not exit cleanly: %v", err)
	}
	if tables := l.peerlanTables(); len(tables) != 0 {
		t.Errorf("tables left behind: %q", tables)
	}
}

// gwProxy listens on addr in the root namespace (loopback) and forwards
// every connection to target, dialed inside ns. It returns the listening
// address.
func gwProxy(t testing.TB, addr string, ns *Namespace, target string) (string, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return "", err
	}
	var mu sync.Mutex
	conns := map[net.Conn]bool{}
	track := func(c net.Conn, add bool) bool {
		mu.Lock()
		defer mu.Unlock()
		if conns == nil {
			return false
		}
		if add {
			conns[c] = true
		} else {
			delete(conns, c)
		}
		return true
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				var up net.Conn
				err := gwInNamespace(ns, func() (err error) { up, err = net.DialTimeout("tcp", target, 5*time.Second); return err })
				if err != nil {
					c.Close()
					return
				}
				if !track(c, true) || !track(up, true) {
					c.Close()
					up.Close()
					return
				}
				go func() { io.Copy(up, c); up.Close(); track(up, false) }()
				io.Copy(c, up)
				c.Close()
				track(c, false)
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		<-done
		mu.Lock()
		for c := range conns {
			c.Close()
		}
		conns = nil
		mu.Unlock()
	})
	return ln.Addr().String(), nil
}

// gwWithout removes flag and its value from args.
func gwWithout(args []string, flag string) []string {
	var out []string
	for i := 0; i < len(args); i++ {
		if args[i] == flag {
			i++
			continue
		}
		out = append(out, args[i])
	}
	return out
}

// ---- namespaces from inside the test process ----

// gwInNamespace runs fn on an OS thread that entered ns, then moves the
// thread back. Sockets fn creates belong to ns for their lifetime, whichever
// thread uses them later.
func gwInNamespace(ns *Namespace, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		own, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		defer own.Close()
		target, err := os.Open("/run/netns/" + ns.Name)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		defer target.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("setns %s: %w", ns.Name, err)
			return
		}
		err = fn()
		// Back home: the runtime may run anything on this thread afterwards,
		// and it may be the main thread, which stands for the whole process
		// in `ip netns pids`. If that fails the thread stays locked and
		// exits with the goroutine.
		if unix.Setns(int(own.Fd()), unix.CLONE_NEWNET) == nil {
			runtime.UnlockOSThread()
		}
		errc <- err
	}()
	return <-errc
}

// gwHTTPClient is an HTTP client whose connections start in ns.
func gwHTTPClient(ns *Namespace) *http.Client {
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		var c net.Conn
		err := gwInNamespace(ns, func() error {
			var err error
			c, err = (&net.Dialer{}).DialContext(ctx, network, addr)
			return err
		})
		return c, err
	}
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DialContext: dial, DisableKeepAlives: true}}
}

func gwGet(c *http.Client, url string) (string, error) {
	resp, err := c.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err == nil && resp.StatusCode != http.StatusOK {
		err = fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return string(b), err
}

// gwServeHTTP serves the test page on addr inside ns until the test ends.
// The page names the addresses of both ends as the server saw them.
func gwServeHTTP(t testing.TB, ns *Namespace, addr string) {
	t.Helper()
	var ln net.Listener
	if err := gwInNamespace(ns, func() (err error) { ln, err = net.Listen("tcp", addr); return err }); err != nil {
		t.Fatalf("listen %s in %s: %v", addr, ns.Name, err)
	}
	srv := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		local, _ := r.Context().Value(http.LocalAddrContextKey).(net.Addr)
		fmt.Fprintf(w, "%s\nlocal=%v remote=%s\n", gwPageTitle, local, r.RemoteAddr)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
}

// gwServeDNS serves gateway.test on addr (UDP and TCP) inside ns until the
// test ends: gwTestName has an A record (gwInetAddr), other names are
// NXDOMAIN.
func gwServeDNS(t testing.TB, ns *Namespace, addr string) {
	t.Helper()
	var pc net.PacketConn
	var ln net.Listener
	err := gwInNamespace(ns, func() (err error) {
		if pc, err = net.ListenPacket("udp", addr); err != nil {
			return err
		}
		ln, err = net.Listen("tcp", addr)
		return err
	})
	if err != nil {
		t.Fatalf("DNS server on %s in %s: %v", addr, ns.Name, err)
	}
	handler := dns.HandlerFunc(func(w dns.ResponseWriter, q *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(q)
		m.Authoritative = true
		if len(q.Question) == 1 && strings.EqualFold(q.Question[0].Name, gwTestName) && q.Question[0].Qtype == dns.TypeA {
			m.Answer = []dns.RR{&dns.A{
				Hdr: dns.RR_Header{Name: q.Question[0].Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60},
				A:   net.ParseIP(gwInetAddr),
			}}
		} else if !(len(q.Question) == 1 && strings.EqualFold(q.Question[0].Name, gwTestName)) {
			m.Rcode = dns.RcodeNameError
		}
		w.WriteMsg(m)
	})
	for _, srv := range []*dns.Server{{PacketConn: pc, Handler: handler}, {Listener: ln, Handler: handler}} {
		go srv.ActivateAndServe()
		t.Cleanup(func() { srv.Shutdown() })
	}
}
