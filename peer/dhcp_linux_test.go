//go:build linux

package peer

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/peerlan/peerlan/peer/ether"
	"github.com/peerlan/peerlan/peer/tap"
)

// TestDHCPUdhcpcOnTAP serves Debian's busybox udhcpc, running in a network
// namespace of its own on a real TAP device, from a LocalPort on the TAP's
// file descriptor. It walks a guest through its whole life: DISCOVER to
// bound, a renewal unicast to the server, an address change that the next
// renewal turns into NAK and a new lease, a RELEASE on exit, and a
// broadcast-flag client taking the released address again.
func TestDHCPUdhcpcOnTAP(t *testing.T) {
	udhcpc := requireDHCPTestTAP(t)
	// Registered first, so it runs after every other cleanup.
	t.Cleanup(func() { goleak.VerifyNone(t) })

	suffix := dhcpTestSuffix(t)
	ns := "peerlan-dhcp-" + suffix
	tapName := "pld" + suffix
	dhcpTestRun(t, "ip", "netns", "add", ns)
	t.Cleanup(func() { dhcpTestRunQuiet("ip", "netns", "del", ns) })

	// Opened in the root namespace; the fd keeps working after the device
	// moves into the guest's namespace.
	dev, err := tap.Open(tap.Config{Name: tapName})
	if err != nil {
		t.Fatalf("open TAP: %v", err)
	}
	dhcpTestRun(t, "ip", "link", "set", tapName, "netns", ns)
	dhcpTestRun(t, "ip", "-n", ns, "link", "set", tapName, "address", dhcpTestGuest.String(), "up")

	first := netip.MustParsePrefix("192.0.2.23/24")
	second := netip.MustParsePrefix("192.0.2.57/24")
	router := netip.MustParseAddr("192.0.2.1")
	log := slog.New(slog.NewTextHandler(dhcpTestLogWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	srv, err := NewDHCPServer(DHCPConfig{Lease: first, ServiceMAC: dhcpTestService, MTU: 1400,
		LeaseTime: time.Hour, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	lp := NewLocalPort(dev, srv, log)

	// The switch's side: read what the guest sends on to the mesh. Acting
	// as the room's gateway, answer ARP for .1 with the service MAC, so the
	// guest can unicast its renewals and RELEASE to the server identifier.
	var leaked, arpAnswered atomic.Int64
	readerDone := make(chan struct{})
	go func() {
		defer close(readerDone)
		buf := make([]byte, 64<<10)
		reply := make([]byte, ether.ARPFrameLen)
		for {
			n, err := lp.Read(buf)
			if err != nil {
				return
			}
			if _, toServer, _ := parseDHCPToServer(buf[:n]); toServer {
				leaked.Add(1)
			}
			e, err := ether.ParseEthernet(buf[:n])
			if err != nil || e.Type() != ether.TypeARP {
				continue
			}
			a, err := ether.ParseARP(e.Payload())
			if err != nil || a.Op() != ether.ARPRequest || a.TargetIP() != router {
				continue
			}
			if rn, err := ether.BuildARPReply(reply, a, dhcpTestService); err == nil {
				if _, err := lp.Write(reply[:rn]); err == nil {
					arpAnswered.Add(1)
				}
			}
		}
	}()
	t.Cleanup(func() {
		lp.Close()
		<-readerDone
	})

	dir := t.TempDir()
	script := filepath.Join(dir, "udhcpc.sh")
	body, err := os.ReadFile(filepath.Join("testdata", "dhcp-udhcpc.sh"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(script, body, 0o755); err != nil {
		t.Fatal(err)
	}
	events := &dhcpTestEvents{file: filepath.Join(dir, "events")}

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	startUdhcpc := func(extra ...string) *exec.Cmd {
		args := append([]string{"netns", "exec", ns, udhcpc, "-f", "-i", tapName, "-s", script, "-t", "5", "-T", "2"}, extra...)
		cmd := exec.CommandContext(ctx, "ip", args...)
		cmd.Env = append(os.Environ(), "PEERLAN_DHCP_OUT="+events.file)
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if cmd.ProcessState == nil {
				cmd.Process.Kill()
				cmd.Wait()
			}
			t.Logf("udhcpc %v output:\n%s", extra, out.String())
		})
		return cmd
	}

	// 1. DISCOVER → OFFER (unicast: no broadcast flag) → REQUEST → ACK.
	cmd := startUdhcpc("-R")
	ev := events.next(t, "bound ip=192.0.2.23 ")
	for _, want := range []string{"mask=24", "subnet=255.255.255.0", "broadcast=192.0.2.255", "router=192.0.2.1",
		"dns=192.0.2.1", "mtu=1400", "lease=3600", "serverid=192.0.2.1"} {
		if !strings.Contains(ev, want) {
			t.Errorf("udhcpc got %q, missing %s", ev, want)
		}
	}
	dhcpTestCheckIface(t, ns, tapName, "192.0.2.23/24", "192.0.2.255", "192.0.2.1", 1400)

	// 2. A renewal (SIGUSR1): unicast REQUEST to .1 with ciaddr, ACK to ciaddr.
	if err := cmd.Process.Signal(syscall.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	events.next(t, "renew ip=192.0.2.23 ")
	if arpAnswered.Load() == 0 {
		t.Error("the renewal went out without an ARP for the server identifier")
	}

	// 3. The peer's address changes: the next renewal is NAKed and the
	// guest comes back with the new address.
	if err := srv.SetLease(second); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Process.Signal(syscall.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	events.next(t, "nak ")
	events.next(t, "bound ip=192.0.2.57 ")
	dhcpTestCheckIface(t, ns, tapName, "192.0.2.57/24", "192.0.2.255", "192.0.2.1", 1400)
	if out := dhcpTestOutput(t, "ip", "-n", ns, "-4", "-o", "addr", "show", "dev", tapName); strings.Contains(out, "192.0.2.23") {
		t.Errorf("old address still configured: %s", out)
	}

	// 4. Exit with -R: udhcpc releases the lease.
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("udhcpc: %v", err)
	}
	dhcpTestWaitFor(t, "RELEASE counted", func() bool { return srv.Stats().Releases == 1 })

	// 5. A one-shot client asking for broadcast replies gets the released
	// address, whatever it remembers.
	cmd = startUdhcpc("-q", "-n", "-B", "-r", "192.0.2.99")
	if err := cmd.Wait(); err != nil {
		t.Fatalf("udhcpc -B: %v", err)
	}
	events.next(t, "bound ip=192.0.2.57 ")

	st := lp.Stats()
	t.Logf("stats %+v", st)
	if leaked.Load() != 0 {
		t.Errorf("%d DHCP client datagrams reached the switch", leaked.Load())
	}
	if st.DHCP.Naks != 1 || st.DHCP.Acks < 4 || st.DHCP.Offers < 3 || st.DHCP.Strangers != 0 || st.DHCP.Malformed != 0 {
		t.Errorf("DHCP stats %+v", st.DHCP)
	}
	if st.DHCPReplies != st.DHCP.Offers+st.DHCP.Acks+st.DHCP.Naks || st.ReplyDrops != 0 {
		t.Errorf("replies %d drops %d", st.DHCPReplies, st.ReplyDrops)
	}
}

// requireDHCPTestTAP skips unless the machine can run the TAP test, and
// returns udhcpc's path.
func requireDHCPTestTAP(t *testing.T) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to create network namespaces and TAP devices")
	}
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		t.Skipf("no TUN/TAP support: %v", err)
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("needs ip(8) (Debian package iproute2)")
	}
	for _, p := range []string{"udhcpc"} {
		if path, err := exec.LookPath(p); err == nil {
			return path
		}
	}
	t.Skip("needs busybox udhcpc (Debian package udhcpc)")
	return ""
}

func dhcpTestSuffix(t *testing.T) string {
	b := make([]byte, 3)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

func dhcpTestRun(t *testing.T, name string, args ...string) {
	t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
}

func dhcpTestRunQuiet(name string, args ...string) {
	exec.Command(name, args...).Run()
}

func dhcpTestOutput(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// dhcpTestCheckIface asserts what the udhcpc script configured.
func dhcpTestCheckIface(t *testing.T, ns, dev, cidr, brd, router string, mtu int) {
	t.Helper()
	addr := dhcpTestOutput(t, "ip", "-n", ns, "-4", "-o", "addr", "show", "dev", dev)
	if !strings.Contains(addr, "inet "+cidr+" brd "+brd) {
		t.Errorf("address: %s", addr)
	}
	route := dhcpTestOutput(t, "ip", "-n", ns, "-4", "route", "show", "default")
	if !strings.Contains(route, "default via "+router+" dev "+dev) {
		t.Errorf("default route: %s", route)
	}
	link := dhcpTestOutput(t, "ip", "-n", ns, "-o", "link", "show", "dev", dev)
	if !strings.Contains(link, " mtu "+strconv.Itoa(mtu)+" ") {
		t.Errorf("link: %s", link)
	}
}

// dhcpTestEvents reads the udhcpc script's log in order.
type dhcpTestEvents struct {
	file string
	seen int // lines already matched or passed over
}

// next waits for a line after those seen that starts with prefix, and
// returns it.
func (ev *dhcpTestEvents) next(t *testing.T, prefix string) string {
	t.Helper()
	var line string
	dhcpTestWaitFor(t, "udhcpc event "+strings.TrimSpace(prefix), func() bool {
		b, _ := os.ReadFile(ev.file)
		lines := strings.Split(string(b), "\n")
		for i := ev.seen; i < len(lines); i++ {
			if strings.HasPrefix(lines[i], prefix) {
				line, ev.seen = lines[i], i+1
				return true
			}
		}
		return false
	})
	return line
}

func dhcpTestWaitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// dhcpTestLogWriter sends a logger's lines to the test log.
type dhcpTestLogWriter struct{ t *testing.T }

func (w dhcpTestLogWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(b), "\n"))
	return len(b), nil
}
