//go:build linux

package e2e

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/peerlan/peerlan/peer/qemuport"
)

// TestQemuGuest is issue 16's QEMU proof: qemu-system-i386 (TCG, no root
// needed for it) boots the project's guest image with its NIC on QEMU's
// -netdev stream (then dgram) socket backend, attached to a bin/peer -qemu
// with no TAP. The guest's udhcpc gets the server-assigned address from that
// peer, the guest pings a namespace peer (a TAP, as in TestNativeLAN) and
// the namespace pings the guest back.
func TestQemuGuest(t *testing.T) {
	RequireCommands(t, "qemu-system-i386", "ping", "udhcpc", "setpriv")
	kernel, initrd, cmdline := qemuGuestImage(t)
	sig := StartSignal(t)
	room := "qemu-" + randomSuffix(4)
	ns := NewNamespace(t, "qemu")
	nsPeer := StartPeer(t, sig, room, ns)
	nsPeer.WaitLinks(t, 0, 30*time.Second)
	lease := LeaseDHCP(t, ns, nsPeer.TAP)

	// stream: QEMU connects to the peer; connect: the peer connects to
	// QEMU's listening socket; dgram: datagrams both ways.
	for _, mode := range []string{"stream", "connect", "dgram"} {
		t.Run(mode, func(t *testing.T) {
			dir := nobodyDir(t)
			sock := filepath.Join(dir, "peer.sock")
			qp := startQemuPeer(t, sig, room, mode+":unix:"+sock)
			if mode != "connect" {
				if fi, err := os.Stat(sock); err != nil || fi.Mode().Perm() != 0o600 {
					t.Fatalf("peer's socket: %v, %v; want mode 0600", fi, err)
				}
			}
			// The second boot is QEMU restarted: a new connection (stream,
			// connect) or a new sender address (dgram) replaces the old
			// one, the peer and its address stay.
			var ip netip.Addr
			for boot := 1; boot <= 2; boot++ {
				netdev := "stream,id=n0,server=off,addr.type=unix,addr.path=" + sock
				switch mode {
				case "connect":
					netdev = "stream,id=n0,server=on,addr.type=unix,addr.path=" + sock
				case "dgram":
					netdev = fmt.Sprintf("dgram,id=n0,local.type=unix,local.path=%s/qemu%d.sock,remote.type=unix,remote.path=%s", dir, boot, sock)
				}
				start := time.Now()
				vm, con := bootQemu(t, dir, kernel, initrd, cmdline+" hostname=qemu-"+mode, netdev)
				con.Wait(t, regexp.MustCompile(`peerlan guest ready`), 45*time.Second)
				booted := time.Since(start)
				m := con.Wait(t, qemuLeaseRE, 45*time.Second)
				leased := time.Since(start)
				st := qp.WaitLinks(t, 1, 10*time.Second)
				if m[1] != st.IP.String() || m[3] != st.Gateway.String() {
					t.Fatalf("boot %d: guest leased %s router %s, want the server's assignment %v router %v", boot, m[1], m[3], st.IP, st.Gateway)
				}
				if ip.IsValid() && st.IP != ip {
					t.Fatalf("after QEMU's restart the peer has %v, want %v as before", st.IP, ip)
				}
				ip = st.IP
				t.Logf("boot %d: QEMU start to guest ready %v, to DHCP lease %v", boot, booted.Round(time.Millisecond), leased.Round(time.Millisecond))

				// The shell reads the console's tty: a line typed before
				// its prompt waits for it.
				count := 5
				if boot == 2 {
					count = 3
				}
				con.Send(fmt.Sprintf("ping -c %d %s", count, lease.Addr.Addr()))
				out := con.Wait(t, qemuPingRE, 30*time.Second)
				if out[1] != fmt.Sprint(count) || out[2] != out[1] {
					t.Fatalf("boot %d: guest ping %s: %s of %s answered", boot, lease.Addr.Addr(), out[2], out[1])
				}
				pong := Ping(t, ns, st.IP, count)
				rtt := "?"
				if m := regexp.MustCompile(`rtt min/avg/max/mdev = (\S+) ms`).FindStringSubmatch(pong); m != nil {
					rtt = m[1]
				}
				t.Logf("boot %d: guest -> namespace ping min/avg/max %s ms; namespace -> guest min/avg/max/mdev %s ms", boot, out[3], rtt)
				if qs := qemuStats(t, qp); qs.RxFrames < uint64(count) || qs.TxFrames < uint64(count) || qs.Connects != uint64(boot) {
					t.Errorf("boot %d: the peer's /status counts %+v for the QEMU port, want at least %d frames each way and %d connections", boot, qs, count, boot)
				}
				vm.Kill()
			}
			replaced := map[string]string{"stream": `msg="QEMU connected".* connection=2`, "connect": `msg="QEMU connected".* connection=2`, "dgram": `QEMU now sends from a new address`}[mode]
			if !regexp.MustCompile(replaced).MatchString(qp.Output()) {
				t.Errorf("peer did not log QEMU's restart (%s)", replaced)
			}
			if err := qp.Stop(5 * time.Second); err != nil {
				t.Errorf("peer: %v", err)
			}
			if _, err := os.Stat(sock); mode != "connect" && !os.IsNotExist(err) {
				t.Errorf("peer's socket after its exit: %v, want it removed", err)
			}
		})
	}
}

// qemuStats reads the QEMU port's counters from the peer's /status.
func qemuStats(t *testing.T, p *NativePeer) qemuport.Stats {
	t.Helper()
	resp, err := http.Get(p.StatusURL)
	if err != nil {
		t.Fatalf("GET %s: %v", p.StatusURL, err)
	}
	defer resp.Body.Close()
	var st struct {
		QEMU *qemuport.Stats `json:"qemu"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil || st.QEMU == nil {
		t.Fatalf("GET %s: no qemu counters (%v)", p.StatusURL, err)
	}
	return *st.QEMU
}

// qemuLeaseRE matches the guest's lease line on its console
// (guest/udhcpc.script): address, prefix length, router.
var qemuLeaseRE = regexp.MustCompile(`peerlan: eth0 ([0-9.]+)/(\d+) router (\S+)[ \r\n]`)

// qemuPingRE matches the summary of the guest's busybox ping.
var qemuPingRE = regexp.MustCompile(`(\d+) packets transmitted, (\d+) packets received(?s:.*?)round-trip min/avg/max = (\S+) ms`)

// qemuGuestImage returns the project's guest image (the v86 one; QEMU
// boots it as it is) and its kernel command line, skipping (failing, when
// strict) if it is not built.
func qemuGuestImage(t *testing.T) (kernel, initrd, cmdline string) {
	t.Helper()
	kernel = filepath.Join(RepoRoot, "web", "dist", "guest", "bzImage")
	initrd = filepath.Join(RepoRoot, "web", "dist", "guest", "initrd.gz")
	for _, f := range []string{kernel, initrd} {
		if _, err := os.Stat(f); err != nil {
			skipOrFail(t, "guest image %s not built: run `make build` first", f)
		}
	}
	b, err := os.ReadFile(filepath.Join(RepoRoot, "web", "dist", "guest", "cmdline.txt"))
	if err != nil {
		skipOrFail(t, "guest cmdline: %v", err)
	}
	return kernel, initrd, strings.TrimSpace(string(b))
}

// TestQemuBrowserGuest puts a QEMU guest (bin/peer -qemu, no TAP) and a v86
// guest in a browser tab in one room: each pings the other over a direct
// link, and no byte of it passes through the signaling server.
func TestQemuBrowserGuest(t *testing.T) {
	VerifyNoLeaks(t)
	RequireChromium(t)
	RequireGuestImage(t)
	RequireCommands(t, "qemu-system-i386", "setpriv")
	kernel, initrd, cmdline := qemuGuestImage(t)
	sig := lanServer(t)
	room := uniqueRoom("qemu-br")
	dir := nobodyDir(t)
	sock := filepath.Join(dir, "peer.sock")
	qp := startQemuPeer(t, sig, room, "stream:unix:"+sock)
	vm, con := bootQemu(t, dir, kernel, initrd, cmdline+" hostname=qemu-br", "stream,id=n0,server=off,addr.type=unix,addr.path="+sock)
	defer vm.Kill()
	m := con.Wait(t, qemuLeaseRE, 45*time.Second)

	tab := StartBrowser(t).OpenTab(t, "guest", sig.Base+"/?room="+room, true)
	g := lanWaitGuest(t, tab)
	st := qp.WaitLinks(t, 1, lanJoinTimeout)
	if m[1] != st.IP.String() {
		t.Fatalf("QEMU guest leased %s, the room assigned its peer %v", m[1], st.IP)
	}
	lanWaitLink(t, tab, st.IP, lanJoinTimeout)

	before := sig.RelayedBytes(t)
	lanPing(t, g, st.IP, 3, "0.5")
	con.Send("ping -c 3 " + g.IP.String())
	out := con.Wait(t, qemuPingRE, 30*time.Second)
	if out[1] != "3" || out[2] != "3" {
		t.Fatalf("QEMU guest ping %s: %s of %s answered", g.IP, out[2], out[1])
	}
	t.Logf("QEMU guest -> browser guest: min/avg/max %s ms", out[3])
	if after := sig.RelayedBytes(t); after != before {
		t.Errorf("the signaling server relayed %v bytes during the pings", after-before)
	}
	lanCheckDirect(t, tab, st.IP)
}

// nobodyDir returns a directory owned by the unprivileged user nobody
// (bin/peer -qemu and QEMU run as that user) inside a test temp dir.
func nobodyDir(t *testing.T) string {
	t.Helper()
	tmp := t.TempDir()
	for _, d := range []string{filepath.Dir(tmp), tmp} {
		if err := os.Chmod(d, 0o711); err != nil {
			t.Fatal(err)
		}
	}
	dir := filepath.Join(tmp, "run")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(dir, nobodyUID, nobodyUID); err != nil {
		t.Fatal(err)
	}
	return dir
}

// nobodyUID is Debian's nobody (and nogroup's gid).
const nobodyUID = 65534

// asNobody prefixes a command line with setpriv so that it runs as nobody,
// without root's capabilities: QEMU's socket backends and bin/peer -qemu
// need none.
func asNobody(name string, args ...string) (string, []string) {
	return "setpriv", append([]string{"--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all", name}, args...)
}

// startQemuPeer runs bin/peer -qemu addr joined to room, waiting until its
// status endpoint answers (its socket is listening before that).
func startQemuPeer(t *testing.T, sig *SignalServer, room, addr string) *NativePeer {
	t.Helper()
	p := &NativePeer{}
	status := fmt.Sprintf("127.0.0.1:%d", FreePort(t))
	p.StatusURL = "http://" + status + "/status"
	name, args := asNobody(Binary(t, "peer"), "-signal", sig.WS, "-room", room, "-qemu", addr,
		"-ice-interfaces", "lo", "-ice-loopback", "-status", status, "-status-every", "5s")
	p.Process = StartProcess(t, "peer qemu", name, args...)
	waitHTTP(t, p.Process, p.StatusURL, 20*time.Second)
	return p
}

// bootQemu starts qemu-system-i386 (TCG) with the guest image and netdev as
// its virtio NIC, the serial console on a unix socket in dir; QEMU waits for
// the console's connection before it starts the guest, so nothing is lost.
func bootQemu(t *testing.T, dir, kernel, initrd, cmdline, netdev string) (*Process, *guestConsole) {
	t.Helper()
	serial := filepath.Join(dir, "console.sock")
	os.Remove(serial) // a previous boot's
	name, args := asNobody("qemu-system-i386", "-accel", "tcg", "-m", "128", "-nographic", "-no-reboot",
		"-monitor", "none", "-chardev", "socket,id=con,path="+serial+",server=on,wait=on", "-serial", "chardev:con",
		"-kernel", kernel, "-initrd", initrd, "-append", cmdline,
		"-netdev", netdev, "-device", "virtio-net-pci,netdev=n0,mac=52:54:00:12:34:56,romfile=")
	vm := StartProcess(t, "qemu", name, args...)
	var c net.Conn
	deadline := time.Now().Add(10 * time.Second)
	for {
		var err error
		if c, err = net.Dial("unix", serial); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("QEMU's console socket: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	con := &guestConsole{c: c, notify: make(chan struct{})}
	log := &safeLog{t: t}
	t.Cleanup(func() { c.Close() })
	t.Cleanup(log.stop) // before the close: the copier logs no more
	go con.copy(log)
	return vm, con
}

// guestConsole is the guest's serial console: what it printed so far, and
// a way to type.
type guestConsole struct {
	c net.Conn

	mu     sync.Mutex
	out    strings.Builder
	notify chan struct{} // closed and replaced when out grows
	closed bool
}

func (g *guestConsole) copy(log *safeLog) {
	r := bufio.NewReader(g.c)
	var line []byte
	buf := make([]byte, 4096)
	for {
		n, err := r.Read(buf)
		g.mu.Lock()
		g.out.Write(buf[:n])
		close(g.notify)
		g.notify = make(chan struct{})
		if err != nil {
			g.closed = true
		}
		g.mu.Unlock()
		for _, b := range buf[:n] {
			if b == '\n' {
				log.Logf("[guest] %s", strings.TrimRight(string(line), "\r"))
				line = line[:0]
			} else {
				line = append(line, b)
			}
		}
		if err != nil {
			return
		}
	}
}

// Wait waits until everything printed since the last match matches re, and
// returns the submatches.
func (g *guestConsole) Wait(t *testing.T, re *regexp.Regexp, timeout time.Duration) []string {
	t.Helper()
	deadline := time.After(timeout)
	for {
		g.mu.Lock()
		s := g.out.String()
		loc := re.FindStringSubmatchIndex(s)
		ch, closed := g.notify, g.closed
		if loc != nil {
			rest := s[loc[1]:]
			g.out.Reset()
			g.out.WriteString(rest)
		}
		g.mu.Unlock()
		if loc != nil {
			m := make([]string, len(loc)/2)
			for i := range m {
				if loc[2*i] >= 0 {
					m[i] = s[loc[2*i]:loc[2*i+1]]
				}
			}
			return m
		}
		if closed {
			t.Fatalf("guest console closed before %q", re)
		}
		select {
		case <-ch:
		case <-deadline:
			t.Fatalf("guest did not print %q within %v", re, timeout)
		}
	}
}

// Send types line and Enter at the guest's shell.
func (g *guestConsole) Send(line string) { g.c.Write([]byte(line + "\n")) }

// TestQemuFlags: -qemu replaces the TAP, so -tap, -bridge and -netns with it
// are refused (exit 2, naming the clash), as is an address that is not
// unix:PATH, stream:unix:PATH or dgram:unix:PATH; a live socket is not
// taken over. None of this needs root.
func TestQemuFlags(t *testing.T) {
	bin := Binary(t, "peer")
	for _, c := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"-qemu", "unix:/tmp/x.sock", "-tap", "t0"}, 2, "cannot be used with -tap"},
		{[]string{"-qemu", "unix:/tmp/x.sock", "-bridge", "br0", "-netns", "n"}, 2, "cannot be used with -bridge, -netns"},
		{[]string{"-qemu", "/tmp/x.sock"}, 2, "want unix:PATH"},
		{[]string{"-qemu", "tcp:127.0.0.1:1"}, 2, "want unix:PATH"},
	} {
		out, err := exec.Command(bin, append([]string{"-room", "r"}, c.args...)...).CombinedOutput()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != c.code || !strings.Contains(string(out), c.want) {
			t.Errorf("bin/peer %v: %v, want exit %d saying %q:\n%s", c.args, err, c.code, c.want, out)
		}
	}

	sock := filepath.Join(t.TempDir(), "live.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	out, err := exec.Command(bin, "-room", "r", "-signal", "ws://127.0.0.1:1/signal", "-qemu", "unix:"+sock).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "in use") {
		t.Errorf("bin/peer on a live socket: %v, want a refusal naming it in use:\n%s", err, out)
	}
}
