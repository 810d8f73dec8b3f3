//go:build linux

package gateway

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Test network (all inside namespaces this file creates):
//
//	guest ns                gateway ns                        internet ns
//	eth0 10.86.0.7/24 ──── lan0 (SetupHost: 10.86.0.1/24)
//	default via .1          up0 198.51.100.2/24 ───────────── up1 198.51.100.1/24
//	                        default via 198.51.100.1          lo: 203.0.113.80 (web)
//	                        priv0 192.168.77.1/24 (bridge,         203.0.113.53 (dns)
//	                          the host's private network)         169.254.169.254 (metadata)
//	                        routes to 169.254.169.254 and         172.16.5.5, 172.16.6.6
//	                          172.16.0.0/12 via the internet
//
// The internet namespace has no route back to 10.86.0.0/24: guests reach it
// only through the gateway's masquerade.
const (
	inetUplinkAddr  = "198.51.100.1"
	gwUplinkAddr    = "198.51.100.2"
	webAddr         = "203.0.113.80"
	dnsAddr         = "203.0.113.53"
	metadataAddr    = "169.254.169.254"
	allowedPrivAddr = "172.16.5.5"
	blockedPrivAddr = "172.16.6.6"
	hostPrivAddr    = "192.168.77.1"
	guestAddr       = "10.86.0.7"
	lanGatewayAddr  = "10.86.0.1"
	hostServicePort = "8080"
	metricsAddr     = "127.0.0.1:9187"
)

// requireNetns skips unless the machine can build namespace test networks.
func requireNetns(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("skipping: needs root to create network namespaces")
	}
	for _, tool := range []string{"ip", "nft"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("skipping: %s not installed (%v)", tool, err)
		}
	}
}

// requireTools skips when a client tool the test drives is missing.
func requireTools(t testing.TB, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("skipping: %s not installed (%v)", tool, err)
		}
	}
}

func randSuffix() string {
	b := make([]byte, 3)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// netns is a network namespace deleted at the end of the test.
type netns struct {
	t    testing.TB
	name string
}

func newNetns(t testing.TB, role string) *netns {
	t.Helper()
	n := &netns{t: t, name: "plgw-" + role + "-" + randSuffix()}
	mustRun(t, "ip", "netns", "add", n.name)
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", n.name).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v: %s", n.name, err, out)
		}
		os.RemoveAll(filepath.Join("/etc/netns", n.name))
	})
	n.must("ip", "link", "set", "lo", "up")
	return n
}

// run executes a command inside the namespace.
func (n *netns) run(args ...string) (string, error) {
	return runCmd(append([]string{"ip", "netns", "exec", n.name}, args...)...)
}

func (n *netns) must(args ...string) string {
	n.t.Helper()
	out, err := n.run(args...)
	if err != nil {
		n.t.Fatalf("in %s: %s: %v\n%s", n.name, strings.Join(args, " "), err, out)
	}
	return out
}

// setResolvConf makes `ip netns exec` bind-mount a resolv.conf for this namespace.
func (n *netns) setResolvConf(content string) {
	n.t.Helper()
	dir := filepath.Join("/etc/netns", n.name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		n.t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "resolv.conf"), []byte(content), 0o644); err != nil {
		n.t.Fatal(err)
	}
}

func (n *netns) sysctl(iface, key string) string {
	n.t.Helper()
	return strings.TrimSpace(n.must("cat", sysctlPath(iface, key)))
}

// nftTables lists the inet table names in the namespace.
func (n *netns) nftTables() []string {
	n.t.Helper()
	objs, err := parseNftJSON([]byte(n.must("nft", "-j", "list", "tables")))
	if err != nil {
		n.t.Fatal(err)
	}
	var names []string
	for _, o := range objs {
		if o.Table != nil {
			names = append(names, o.Table.Family+" "+o.Table.Name)
		}
	}
	return names
}

// counters reads a gateway table's named counters.
func (n *netns) counters(table string) Counters {
	n.t.Helper()
	raw, err := parseNftCounters([]byte(n.must("nft", "-j", "list", "counters", "table", "inet", table)), table)
	if err != nil {
		n.t.Fatal(err)
	}
	return countersFrom(raw)
}

func runCmd(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, args[0], args[1:]...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}

func mustRun(t testing.TB, args ...string) string {
	t.Helper()
	out, err := runCmd(args...)
	if err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// vethPair links two namespaces.
func vethPair(t testing.TB, a *netns, aName string, b *netns, bName string) {
	t.Helper()
	mustRun(t, "ip", "link", "add", aName, "netns", a.name, "type", "veth", "peer", "name", bName, "netns", b.name)
}

// testbed is the three-namespace network drawn above.
type testbed struct {
	t        testing.TB
	inet, gw *netns
	guest    *netns
	stateDir string
}

func newTestbed(t testing.TB) *testbed {
	t.Helper()
	requireNetns(t)
	tb := &testbed{t: t, stateDir: t.TempDir()}
	tb.inet = newNetns(t, "inet")
	tb.gw = newNetns(t, "gw")
	tb.guest = newNetns(t, "guest")

	vethPair(t, tb.gw, "up0", tb.inet, "up1")
	tb.inet.must("ip", "addr", "add", inetUplinkAddr+"/24", "dev", "up1")
	tb.inet.must("ip", "link", "set", "up1", "up")
	for _, a := range []string{webAddr, dnsAddr, metadataAddr, allowedPrivAddr, blockedPrivAddr} {
		tb.inet.must("ip", "addr", "add", a+"/32", "dev", "lo")
	}

	tb.gw.must("ip", "addr", "add", gwUplinkAddr+"/24", "dev", "up0")
	tb.gw.must("ip", "link", "set", "up0", "up")
	tb.gw.must("ip", "route", "add", "default", "via", inetUplinkAddr)
	tb.gw.must("ip", "route", "add", metadataAddr+"/32", "via", inetUplinkAddr)
	tb.gw.must("ip", "route", "add", "172.16.0.0/12", "via", inetUplinkAddr)
	// A bridge without ports stands for the host's private network (this
	// kernel has no dummy interfaces); its address is local all the same.
	tb.gw.must("ip", "link", "add", "priv0", "type", "bridge")
	tb.gw.must("ip", "addr", "add", hostPrivAddr+"/24", "dev", "priv0")
	tb.gw.must("ip", "link", "set", "priv0", "up")
	// Upstream for the forwarder's default: a systemd-resolved stub that is
	// not reachable in this namespace, then the internet's server.
	tb.gw.setResolvConf("# as on a systemd-resolved host\nnameserver 127.0.0.53\nnameserver " + dnsAddr + "\n")

	tb.addGuest(tb.guest, "lan0", guestAddr, lanGatewayAddr)
	return tb
}

// addGuest links a guest namespace to a new LAN interface of the gateway.
// The gateway side stays down and unaddressed: SetupHost configures it.
func (tb *testbed) addGuest(guest *netns, lan, addr, router string) {
	vethPair(tb.t, tb.gw, lan, guest, "eth0")
	guest.must("ip", "addr", "add", addr+"/24", "dev", "eth0")
	guest.must("ip", "link", "set", "eth0", "up")
	guest.must("ip", "route", "add", "default", "via", router)
	guest.setResolvConf("nameserver " + router + "\n")
}

// helper is a re-executed test binary running a role inside a namespace.
type helper struct {
	t      testing.TB
	cmd    *exec.Cmd
	lines  chan string
	stderr *syncBuffer
	done   chan struct{}
	err    error // valid after done
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// startHelper runs role in ns; prefix is prepended to the test binary
// (e.g. setpriv), env adds variables. It does not wait for READY.
func startHelper(t testing.TB, ns *netns, role string, cfg helperConfig, prefix []string, env ...string) *helper {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	conf, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	args := append([]string{"netns", "exec", ns.name}, prefix...)
	args = append(args, self, "-test.run=^$")
	h := &helper{t: t, lines: make(chan string, 64), stderr: &syncBuffer{}, done: make(chan struct{})}
	h.cmd = exec.Command("ip", args...)
	h.cmd.Env = append(os.Environ(), helperEnv+"="+role, helperConfigEnv+"="+string(conf))
	h.cmd.Env = append(h.cmd.Env, env...)
	h.cmd.Stderr = h.stderr
	stdout, err := h.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := h.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			h.lines <- sc.Text()
		}
		close(h.lines)
		h.err = h.cmd.Wait()
		close(h.done)
	}()
	t.Cleanup(func() {
		select {
		case <-h.done:
		default:
			h.cmd.Process.Kill()
			<-h.done
		}
		if t.Failed() {
			t.Logf("%s helper stderr:\n%s", role, h.stderr.String())
		}
	})
	return h
}

// line waits for the next stdout line.
func (h *helper) line(timeout time.Duration) (string, bool) {
	select {
	case l, ok := <-h.lines:
		return l, ok
	case <-time.After(timeout):
		return "", false
	}
}

// waitReady fails the test unless the helper prints READY.
func (h *helper) waitReady() {
	h.t.Helper()
	l, ok := h.line(60 * time.Second)
	if !ok || l != "READY" {
		h.cmd.Process.Kill()
		<-h.done
		h.t.Fatalf("helper not ready (got %q): %v\nstderr:\n%s", l, h.err, h.stderr.String())
	}
}

// stop sends sig and waits for the process, returning its remaining stdout.
func (h *helper) stop(sig syscall.Signal) []string {
	h.t.Helper()
	h.cmd.Process.Signal(sig)
	var rest []string
	for l := range h.lines {
		rest = append(rest, l)
	}
	select {
	case <-h.done:
	case <-time.After(60 * time.Second):
		h.t.Fatal("helper did not exit")
	}
	if sig == syscall.SIGTERM && h.err != nil {
		h.t.Errorf("helper exited with %v after SIGTERM\nstderr:\n%s", h.err, h.stderr.String())
	}
	return rest
}

// gatewayConfig is the default gateway configuration on the testbed.
func (tb *testbed) gatewayConfig() helperConfig {
	return helperConfig{
		LAN:         "lan0",
		StateDir:    tb.stateDir,
		MetricsAddr: metricsAddr,
		HostService: "0.0.0.0:" + hostServicePort,
	}
}

func (tb *testbed) startInternet() *helper {
	tb.t.Helper()
	h := startHelper(tb.t, tb.inet, "internet", helperConfig{}, nil)
	h.waitReady()
	tb.t.Cleanup(func() {
		select {
		case <-h.done:
		default:
			h.stop(syscall.SIGTERM)
		}
	})
	return h
}

func (tb *testbed) startGateway(cfg helperConfig) *helper {
	tb.t.Helper()
	h := startHelper(tb.t, tb.gw, "gateway", cfg, nil)
	h.waitReady()
	return h
}

// refuse runs SetupHost expecting a refusal and returns the sentinel name
// the helper matched ("ACCEPTED" if it did not refuse).
func (tb *testbed) refuse(cfg helperConfig, prefix []string, env ...string) (string, string) {
	tb.t.Helper()
	h := startHelper(tb.t, tb.gw, "refuse", cfg, prefix, env...)
	l, ok := h.line(60 * time.Second)
	<-h.done
	if !ok {
		tb.t.Fatalf("refuse helper printed nothing: %v\nstderr:\n%s", h.err, h.stderr.String())
	}
	if l == "ACCEPTED" {
		return l, l
	}
	fields := strings.SplitN(l, " ", 3)
	if len(fields) != 3 || fields[0] != "REFUSED" {
		tb.t.Fatalf("unexpected refuse helper output %q", l)
	}
	return fields[1], fields[2]
}
