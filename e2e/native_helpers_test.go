//go:build linux

package e2e

// Helpers that run peerlan's own binaries (bin/signal, bin/peer, bin/gateway)
// as processes, with network namespaces of the test's own standing for
// separate machines. Every namespace, process and device is removed by
// t.Cleanup, also when the test fails. Test hosts use documentation address
// ranges; nothing in the root namespace's routing, forwarding or firewall
// changes (DESIGN.md, "Tests that build networks").

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/peerlan/peerlan/internal/promtext"
	"github.com/peerlan/peerlan/peer"
)

// RepoRoot is the repository's top folder (the e2e tests run in e2e/).
var RepoRoot = func() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Dir(filepath.Dir(file))
}()

// Binary returns the path of bin/NAME, skipping the test when it has not
// been built (make build).
func Binary(t testing.TB, name string) string {
	t.Helper()
	p := filepath.Join(RepoRoot, "bin", name)
	if _, err := os.Stat(p); err != nil {
		skipOrFail(t, "bin/%s not built: run `make build` first", name)
	}
	return p
}

// skipOrFail skips, unless PEERLAN_E2E_STRICT is set (make test sets it), in
// which case a missing prerequisite is a failure: CI must not pass by
// skipping.
func skipOrFail(t testing.TB, format string, args ...any) {
	t.Helper()
	if os.Getenv("PEERLAN_E2E_STRICT") != "" {
		t.Fatalf(format, args...)
	}
	t.Skipf(format, args...)
}

// RequireNetAdmin skips the test unless it may create namespaces and TAPs.
func RequireNetAdmin(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		skipOrFail(t, "needs root for network namespaces and TAP devices")
	}
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		skipOrFail(t, "needs /dev/net/tun")
	}
}

// RequireCommands skips the test unless every named program is installed.
func RequireCommands(t testing.TB, names ...string) {
	t.Helper()
	for _, n := range names {
		if _, err := exec.LookPath(n); err != nil {
			skipOrFail(t, "%s is not installed (scripts/deps.sh installs it)", n)
		}
	}
}

// randomSuffix returns n random bytes in hex: short names for namespaces and
// devices (interface names are limited to 15 characters).
func randomSuffix(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// ---- network namespaces ----

// Namespace is a network namespace of the test's own, with loopback up.
type Namespace struct {
	Name string
	t    testing.TB
}

// NewNamespace creates the namespace "peerlan-<prefix>-<random>", deleted at
// cleanup together with every device in it.
func NewNamespace(t testing.TB, prefix string) *Namespace {
	t.Helper()
	RequireNetAdmin(t)
	n := &Namespace{Name: "peerlan-" + prefix + "-" + randomSuffix(3), t: t}
	if out, err := exec.Command("ip", "netns", "add", n.Name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v: %s", n.Name, err, out)
	}
	t.Cleanup(func() {
		// Processes still inside would keep it alive: kill them first.
		exec.Command("ip", "netns", "pids", n.Name).Run()
		if out, err := exec.Command("ip", "netns", "pids", n.Name).Output(); err == nil {
			for _, f := range strings.Fields(string(out)) {
				if pid, err := strconv.Atoi(f); err == nil {
					syscall.Kill(pid, syscall.SIGKILL)
				}
			}
		}
		if out, err := exec.Command("ip", "netns", "del", n.Name).CombinedOutput(); err != nil {
			t.Logf("ip netns del %s: %v: %s", n.Name, err, out)
		}
	})
	n.MustRun("ip", "link", "set", "lo", "up")
	return n
}

// Command returns cmd running inside the namespace.
func (n *Namespace) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", n.Name, name}, args...)...)
}

// Run runs a command inside the namespace and returns its combined output.
func (n *Namespace) Run(name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := n.Command(ctx, name, args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s %s in %s: %w: %s", name, strings.Join(args, " "), n.Name, err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// MustRun is Run that fails the test on error.
func (n *Namespace) MustRun(name string, args ...string) string {
	n.t.Helper()
	out, err := n.Run(name, args...)
	if err != nil {
		n.t.Fatal(err)
	}
	return out
}

// Start starts a long-running command inside the namespace, its output piped
// into the test log; it is killed at cleanup.
func (n *Namespace) Start(name string, args ...string) *Process {
	n.t.Helper()
	return StartProcess(n.t, n.Name+" "+filepath.Base(name), "ip", append([]string{"netns", "exec", n.Name, name}, args...)...)
}

// VethPair connects namespace a (device aName, address aAddr as prefix) to
// namespace b (bName, bAddr). Either address may be invalid to leave the
// side unaddressed.
func VethPair(t testing.TB, a *Namespace, aName string, aAddr netip.Prefix, b *Namespace, bName string, bAddr netip.Prefix) {
	t.Helper()
	tmpA, tmpB := "plva"+randomSuffix(3), "plvb"+randomSuffix(3)
	if out, err := exec.Command("ip", "link", "add", tmpA, "type", "veth", "peer", "name", tmpB).CombinedOutput(); err != nil {
		t.Fatalf("ip link add veth: %v: %s", err, out)
	}
	for _, side := range []struct {
		tmp, name string
		ns        *Namespace
		addr      netip.Prefix
	}{{tmpA, aName, a, aAddr}, {tmpB, bName, b, bAddr}} {
		if out, err := exec.Command("ip", "link", "set", side.tmp, "netns", side.ns.Name).CombinedOutput(); err != nil {
			exec.Command("ip", "link", "del", tmpA).Run()
			t.Fatalf("move veth: %v: %s", err, out)
		}
		side.ns.MustRun("ip", "link", "set", side.tmp, "name", side.name)
		if side.addr.IsValid() {
			side.ns.MustRun("ip", "addr", "add", side.addr.String(), "dev", side.name)
		}
		side.ns.MustRun("ip", "link", "set", side.name, "up")
	}
}

// ---- processes ----

// Process is a child process whose output goes to the test log and which is
// stopped (SIGTERM, then SIGKILL) at cleanup.
type Process struct {
	Name string
	cmd  *exec.Cmd
	done chan struct{}
	err  error // valid after done

	mu     sync.Mutex
	output strings.Builder
	notify chan struct{} // closed and replaced on each output line
}

// StartProcess starts name with args.
func StartProcess(t testing.TB, label, name string, args ...string) *Process {
	t.Helper()
	p := &Process{Name: label, cmd: exec.Command(name, args...), done: make(chan struct{}), notify: make(chan struct{})}
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	pr, pw := io.Pipe()
	p.cmd.Stdout, p.cmd.Stderr = pw, pw
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", label, err)
	}
	log := &safeLog{t: t}
	copied := make(chan struct{})
	go func() {
		defer close(copied)
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			log.Logf("[%s] %s", label, line)
			p.mu.Lock()
			p.output.WriteString(line + "\n")
			close(p.notify)
			p.notify = make(chan struct{})
			p.mu.Unlock()
		}
		io.Copy(io.Discard, pr)
	}()
	go func() {
		p.err = p.cmd.Wait()
		pw.Close()
		<-copied
		close(p.done)
	}()
	t.Cleanup(func() {
		p.Stop(5 * time.Second)
		log.stop()
	})
	return p
}

// Signal sends sig to the process group.
func (p *Process) Signal(sig syscall.Signal) { syscall.Kill(-p.cmd.Process.Pid, sig) }

// Stop sends SIGTERM and waits up to grace before SIGKILL; it returns the
// exit error (nil on a clean exit).
func (p *Process) Stop(grace time.Duration) error {
	select {
	case <-p.done:
		return p.err
	default:
	}
	p.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(grace):
		p.Signal(syscall.SIGKILL)
		<-p.done
	}
	return p.err
}

// Kill sends SIGKILL (no cleanup in the process) and waits for the exit.
func (p *Process) Kill() {
	p.Signal(syscall.SIGKILL)
	<-p.done
}

// Exited reports whether the process has exited.
func (p *Process) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Output returns everything the process printed so far.
func (p *Process) Output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.output.String()
}

// WaitOutput waits until the output matches re and returns the submatches,
// failing the test on timeout or when the process exits first.
func (p *Process) WaitOutput(t testing.TB, re *regexp.Regexp, timeout time.Duration) []string {
	t.Helper()
	m, exited := p.waitMatch(re, timeout)
	switch {
	case m != nil:
		return m
	case exited:
		t.Fatalf("%s exited (%v) before printing %q", p.Name, p.err, re)
	default:
		t.Fatalf("%s did not print %q within %v", p.Name, re, timeout)
	}
	return nil
}

// waitQuiet is WaitOutput for goroutines other than the test's: it reports
// whether the output matched re before the timeout or the process's exit.
func (p *Process) waitQuiet(re *regexp.Regexp, timeout time.Duration) bool {
	m, _ := p.waitMatch(re, timeout)
	return m != nil
}

// waitMatch waits until the output matches re and returns the submatches,
// or nil and whether the process exited first (else the timeout passed).
func (p *Process) waitMatch(re *regexp.Regexp, timeout time.Duration) (m []string, exited bool) {
	deadline := time.After(timeout)
	for {
		p.mu.Lock()
		m := re.FindStringSubmatch(p.output.String())
		ch := p.notify
		p.mu.Unlock()
		if m != nil {
			return m, false
		}
		select {
		case <-ch:
		case <-p.done:
			return re.FindStringSubmatch(p.Output()), true
		case <-deadline:
			return nil, false
		}
	}
}

// ---- bin/signal ----

// SignalServer is a running bin/signal on loopback.
type SignalServer struct {
	*Process
	// Base is the page's URL, e.g. http://127.0.0.1:PORT.
	Base string
	// WS is the signaling WebSocket URL.
	WS string
}

// StartSignal runs bin/signal on a free loopback port with a secret of its
// own and extra flags, and waits until /healthz answers.
func StartSignal(t testing.TB, extra ...string) *SignalServer {
	t.Helper()
	bin := Binary(t, "signal")
	addr := fmt.Sprintf("127.0.0.1:%d", FreePort(t))
	secret := filepath.Join(t.TempDir(), "secret")
	args := append([]string{"-addr", addr, "-secret-file", secret}, extra...)
	s := &SignalServer{Base: "http://" + addr, WS: "ws://" + addr + "/signal"}
	s.Process = StartProcess(t, "signal", bin, args...)
	waitHTTP(t, s.Process, s.Base+"/healthz", 20*time.Second)
	return s
}

// SecretFile returns the path of the server's secret (for `signal token`).
func (s *SignalServer) SecretFile() string {
	// The flag package keeps the last value given, so a -secret-file
	// passed to StartSignal overrides its default one.
	args, file := s.cmd.Args, ""
	for i, a := range args {
		if a == "-secret-file" && i+1 < len(args) {
			file = args[i+1]
		}
	}
	return file
}

// Token runs `signal token` against this server's secret.
func (s *SignalServer) Token(t testing.TB, args ...string) string {
	t.Helper()
	out, err := exec.Command(Binary(t, "signal"), append([]string{"token", "-secret-file", s.SecretFile()}, args...)...).Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			t.Fatalf("signal token %v: %v: %s", args, err, ee.Stderr)
		}
		t.Fatalf("signal token %v: %v", args, err)
	}
	return strings.TrimSpace(string(out))
}

// Metrics scrapes the server's /metrics.
func (s *SignalServer) Metrics(t testing.TB) promtext.Samples {
	t.Helper()
	m, err := promtext.Scrape(s.Base + "/metrics")
	if err != nil {
		t.Fatalf("scrape signal metrics: %v", err)
	}
	return m
}

// RelayedBytes is the total of the signal messages' relayed bytes: frames
// never pass through the server, so it must not grow with guest traffic.
func (s *SignalServer) RelayedBytes(t testing.TB) float64 {
	return s.Metrics(t).Sum("peerlan_signal_relayed_bytes_total")
}

func waitHTTP(t testing.TB, p *Process, url string, timeout time.Duration) {
	t.Helper()
	waitHTTPVia(t, p, http.DefaultClient, url, timeout)
}

// waitHTTPVia waits until url answers 200 through client c, failing the test
// when p exits first or the timeout passes.
func waitHTTPVia(t testing.TB, p *Process, c *http.Client, url string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		resp, err := c.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
			err = fmt.Errorf("GET %s: %s", url, resp.Status)
		}
		if p.Exited() {
			t.Fatalf("%s exited before %s answered", p.Name, url)
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not answer within %v: %v", url, timeout, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// ---- bin/peer ----

// NativePeer is a running bin/peer whose TAP lives in a namespace.
type NativePeer struct {
	*Process
	NS  *Namespace
	TAP string
	// StatusURL is the peer's GET /status endpoint.
	StatusURL string
}

// StartPeer runs bin/peer joined to room on sig with its TAP moved into ns.
// WebRTC uses loopback only, so that test traffic stays on this host. extra
// flags are appended (e.g. "-relay", "relay").
func StartPeer(t testing.TB, sig *SignalServer, room string, ns *Namespace, extra ...string) *NativePeer {
	t.Helper()
	p := &NativePeer{NS: ns, TAP: "pl" + randomSuffix(3)}
	status := fmt.Sprintf("127.0.0.1:%d", FreePort(t))
	p.StatusURL = "http://" + status + "/status"
	args := append([]string{"-signal", sig.WS, "-room", room, "-tap", p.TAP, "-netns", ns.Name,
		"-ice-interfaces", "lo", "-ice-loopback", "-status", status, "-status-every", "5s"}, extra...)
	p.Process = StartProcess(t, "peer "+ns.Name, Binary(t, "peer"), args...)
	waitHTTP(t, p.Process, p.StatusURL, 20*time.Second)
	return p
}

// Status returns the peer's current mesh status.
func (p *NativePeer) Status(t testing.TB) peer.MeshStatus {
	t.Helper()
	resp, err := http.Get(p.StatusURL)
	if err != nil {
		t.Fatalf("%s status: %v", p.Name, err)
	}
	defer resp.Body.Close()
	var st peer.MeshStatus
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		t.Fatalf("%s status: %v", p.Name, err)
	}
	return st
}

// WaitLinks waits until the peer has n open links and returns its status.
func (p *NativePeer) WaitLinks(t testing.TB, n int, timeout time.Duration) peer.MeshStatus {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		st := p.Status(t)
		open := 0
		for _, l := range st.Peers {
			if l.State == "open" {
				open++
			}
		}
		if open >= n && st.IP.IsValid() {
			return st
		}
		if p.Exited() {
			t.Fatalf("%s exited", p.Name)
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %d of %d links open after %v: %+v", p.Name, open, n, timeout, st)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// LinkTo returns the status of the link to the peer with address ip.
func LinkTo(st peer.MeshStatus, ip netip.Addr) (peer.LinkStatus, bool) {
	for _, l := range st.Peers {
		if l.IP == ip {
			return l, true
		}
	}
	return peer.LinkStatus{}, false
}

// Lease is what a DHCP client in a namespace was given.
type Lease struct {
	Addr   netip.Prefix
	Router netip.Addr
	MTU    int
}

var leaseRE = regexp.MustCompile(`peerlan-lease ip=(\S+) mask=(\d+) router=(\S*) mtu=(\d*)`)

// LeaseDHCP runs busybox udhcpc on dev inside ns until it has a lease, which
// e2e/testdata/udhcpc.sh applies to the device (address, MTU, default route)
// without touching /etc/resolv.conf.
func LeaseDHCP(t testing.TB, ns *Namespace, dev string) Lease {
	t.Helper()
	RequireCommands(t, "udhcpc")
	script := filepath.Join(RepoRoot, "e2e", "testdata", "udhcpc.sh")
	out, err := ns.Run("udhcpc", "-i", dev, "-f", "-q", "-n", "-t", "10", "-T", "1", "-s", script)
	if err != nil {
		t.Fatalf("DHCP on %s in %s: %v", dev, ns.Name, err)
	}
	m := leaseRE.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("udhcpc printed no lease: %s", out)
	}
	bits, _ := strconv.Atoi(m[2])
	addr, err := netip.ParseAddr(m[1])
	if err != nil {
		t.Fatalf("lease address %q: %v", m[1], err)
	}
	l := Lease{Addr: netip.PrefixFrom(addr, bits)}
	l.Router, _ = netip.ParseAddr(m[3])
	l.MTU, _ = strconv.Atoi(m[4])
	return l
}

// pingRE matches iputils' and busybox's summary lines.
var pingRE = regexp.MustCompile(`(\d+) packets transmitted, (\d+) (?:packets )?received`)

// Ping pings dst count times from ns and fails the test unless every echo
// was answered. It returns ping's output.
func Ping(t testing.TB, ns *Namespace, dst netip.Addr, count int) string {
	t.Helper()
	out, err := ns.Run("ping", "-c", strconv.Itoa(count), "-i", "0.2", "-W", "2", dst.String())
	m := pingRE.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("ping %s from %s: %v\n%s", dst, ns.Name, err, out)
	}
	if m[1] != m[2] || m[1] != strconv.Itoa(count) {
		t.Fatalf("ping %s from %s: %s of %s answered\n%s", dst, ns.Name, m[2], m[1], out)
	}
	return out
}

// IperfResult is what one iperf3 TCP test measured at its receiver, and the
// sender's retransmissions.
type IperfResult struct {
	Bytes       float64
	Mbps        float64
	Retransmits int
}

// StartIperfServer runs iperf3 -s bound to addr inside ns until the test
// ends, and waits until it listens.
func StartIperfServer(t testing.TB, ns *Namespace, addr string) *Process {
	t.Helper()
	srv := ns.Start("iperf3", "-s", "--forceflush", "-B", addr)
	srv.WaitOutput(t, regexp.MustCompile(`Server listening`), 10*time.Second)
	return srv
}

// RunIperf runs one iperf3 TCP test of secs seconds from ns to server,
// leaving out the first omit seconds (slow start); reverse has the server
// send. It fails the test unless the receiver got data.
func RunIperf(t testing.TB, ns *Namespace, server string, secs, omit int, reverse bool) IperfResult {
	t.Helper()
	args := []string{"-c", server, "-t", strconv.Itoa(secs), "-O", strconv.Itoa(omit), "-J"}
	if reverse {
		args = append(args, "-R")
	}
	out, err := ns.Run("iperf3", args...)
	if err != nil {
		t.Fatalf("iperf3 %v: %v", args, err)
	}
	var res struct {
		End struct {
			SumReceived struct {
				Bytes         float64 `json:"bytes"`
				BitsPerSecond float64 `json:"bits_per_second"`
			} `json:"sum_received"`
			SumSent struct {
				Retransmits int `json:"retransmits"`
			} `json:"sum_sent"`
		} `json:"end"`
		Error string `json:"error"`
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil || res.Error != "" ||
		res.End.SumReceived.Bytes == 0 || res.End.SumReceived.BitsPerSecond <= 0 {
		t.Fatalf("iperf3 %v printed no receiver rate (%v %s):\n%s", args, err, res.Error, out)
	}
	return IperfResult{Bytes: res.End.SumReceived.Bytes, Mbps: res.End.SumReceived.BitsPerSecond / 1e6,
		Retransmits: res.End.SumSent.Retransmits}
}
