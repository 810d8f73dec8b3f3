//go:build linux

package e2e

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestUMLGuest is issue 16's User-Mode-Linux proof: a UML kernel (Debian's
// user-mode-linux, run as nobody) boots the UML initramfs (make uml-guest)
// with its eth0 on a TAP of nobody's in a namespace of the test's own, on a
// bridge there that bin/peer -bridge attaches to the room. The guest's udhcpc
// must get the address the room assigned to that peer from the peer itself;
// then the guest pings a namespace peer and a v86 guest in a browser tab,
// both ping it back, and no byte of it passes through the signaling server.
func TestUMLGuest(t *testing.T) {
	VerifyNoLeaks(t)
	RequireChromium(t)
	RequireGuestImage(t)
	RequireNetAdmin(t)
	RequireCommands(t, umlBinary, "setpriv", "ping", "udhcpc")
	initrd := umlGuestImage(t)
	sig := lanServer(t)
	room := uniqueRoom("uml")

	other := NewNamespace(t, "umlo")
	op := StartPeer(t, sig, room, other)
	lease := LeaseDHCP(t, other, op.TAP)
	otherIP := lease.Addr.Addr()

	// The UML host: a bridge, the TAP UML opens (nobody's, so UML needs no
	// capability) and bin/peer's own TAP on it.
	host := NewNamespace(t, "uml")
	host.MustRun("ip", "link", "add", "br0", "type", "bridge")
	host.MustRun("ip", "tuntap", "add", "dev", "umltap", "mode", "tap", "user", "nobody")
	host.MustRun("ip", "link", "set", "umltap", "master", "br0", "up")
	host.MustRun("ip", "link", "set", "br0", "up")
	bp := StartPeer(t, sig, room, host, "-bridge", "br0")

	start := time.Now()
	const mac = "52:54:00:75:6d:01"
	vm, con := bootUML(t, host, initrd, "umltap", mac, "hostname=uml")
	con.Wait(t, regexp.MustCompile(`peerlan guest ready`), 60*time.Second)
	ready := time.Since(start)
	umlRequireUnprivileged(t, vm)
	m := con.Wait(t, qemuLeaseRE, 60*time.Second)
	leased := time.Since(start)
	st := bp.WaitLinks(t, 1, 30*time.Second)
	if m[1] != st.IP.String() || m[3] != st.Gateway.String() {
		t.Fatalf("UML guest leased %s router %s, want its peer's assignment %v router %v", m[1], m[3], st.IP, st.Gateway)
	}
	// The lease came from the bridge's peer, for UML's own NIC.
	bp.WaitOutput(t, regexp.MustCompile(`msg="DHCP client bound".* client=`+mac), 10*time.Second)
	umlIP := st.IP
	t.Logf("UML start to guest ready %v, to DHCP lease %v", ready.Round(time.Millisecond), leased.Round(time.Millisecond))

	tab := StartBrowser(t).OpenTab(t, "guest", sig.Base+"/?room="+room, true)
	g := lanWaitGuest(t, tab)
	bp.WaitLinks(t, 2, lanJoinTimeout)
	lanWaitLink(t, tab, umlIP, lanJoinTimeout)

	before := sig.RelayedBytes(t)
	for _, dst := range []struct {
		name string
		ip   netip.Addr
	}{{"namespace peer", otherIP}, {"browser guest", g.IP}} {
		// The first echo may wait for ARP: the minimum is one round trip's
		// cost, the average includes that wait.
		con.Send(fmt.Sprintf("ping -c 10 -i 0.2 -W 5 %s", dst.ip))
		out := con.Wait(t, qemuPingRE, 60*time.Second)
		if out[1] != "10" || out[2] != "10" {
			t.Fatalf("UML guest ping %s (%s): %s of %s answered", dst.name, dst.ip, out[2], out[1])
		}
		t.Logf("UML guest -> %s %s: min/avg/max %s ms", dst.name, dst.ip, out[3])
	}
	pong := Ping(t, other, umlIP, 10)
	if m := regexp.MustCompile(`rtt min/avg/max/mdev = (\S+) ms`).FindStringSubmatch(pong); m != nil {
		t.Logf("namespace peer -> UML guest: min/avg/max/mdev %s ms", m[1])
	}
	lanPing(t, g, umlIP, 10, "0.2")
	if after := sig.RelayedBytes(t); after != before {
		t.Errorf("the signaling server relayed %v bytes during the pings; frames must not pass through it", after-before)
	}
	lanCheckDirect(t, tab, umlIP)
	bst := bp.Status(t)
	for _, ip := range []netip.Addr{otherIP, g.IP} {
		l, ok := LinkTo(bst, ip)
		if !ok || l.State != "open" || l.Path == "" || l.Path == "relay" || l.RxFrames == 0 || l.TxFrames == 0 {
			t.Errorf("UML's peer: link to %s is %+v (found %v), want open, direct and used", ip, l, ok)
		}
	}
}

// umlBinary is Debian's user-mode-linux kernel (an alternative for
// /usr/bin/linux.uml).
const umlBinary = "linux"

// umlGuestImage returns the UML initramfs (guest/guest.mk, uml-guest),
// skipping (failing, when strict) if it is not built.
func umlGuestImage(t *testing.T) string {
	t.Helper()
	initrd := filepath.Join(RepoRoot, ".cache", "guest", "uml", "initrd.gz")
	if _, err := os.Stat(initrd); err != nil {
		skipOrFail(t, "UML initramfs %s not built: run `make uml-guest` (or `make build`) first", initrd)
	}
	return initrd
}

// bootUML runs the UML kernel as nobody inside ns with initrd, its eth0 on
// the TAP tap (which nobody must own) with mac, and extra on its command
// line. Its memory file and uml_dir go to a temp dir of nobody's; its console
// (con0) is a pty whose master the test holds, so the guest's shell has a
// real tty and nothing it prints before the test reads is lost.
func bootUML(t *testing.T, ns *Namespace, initrd, tap, mac, extra string) (*Process, *guestConsole) {
	t.Helper()
	dir := nobodyDir(t)
	master, slave := openPty(t)
	name, args := asNobody(umlBinary, "mem=64M", "initrd="+initrd, "uml_dir="+dir,
		"con=null", "con0=tty:"+slave, "ssl=null",
		fmt.Sprintf("eth0=tuntap,%s,%s", tap, mac), "quiet", extra)
	// Debian makes /dev/net/tun 0666, so that a TAP's owner can open it,
	// but a container may have it 0600. UML then gets a /dev/net of its own:
	// a tmpfs with a 0666 node in a private mount namespace, made before
	// root's rights are dropped; the host's /dev stays as it is.
	wrap := []string{"netns", "exec", ns.Name, "unshare", "--mount", "--propagation", "private",
		"sh", "-ec", `mount -t tmpfs -o size=16k,mode=0755 peerlan-uml-tun /dev/net
mknod -m 0666 /dev/net/tun c 10 200
exec "$@"`, "uml", "env", "TMPDIR=" + dir, name}
	vm := StartProcess(t, "uml", "ip", append(wrap, args...)...)
	con := &guestConsole{c: ptyConn{master}, notify: make(chan struct{})}
	log := &safeLog{t: t}
	t.Cleanup(log.stop) // before openPty's close: the copier logs no more
	go con.copy(log)
	return vm, con
}

// umlRequireUnprivileged fails the test unless the UML kernel (vm's process,
// which ip, unshare, sh, env and setpriv each exec'd into) runs as nobody
// with no capability left.
func umlRequireUnprivileged(t *testing.T, vm *Process) {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", vm.cmd.Process.Pid))
	if err != nil {
		t.Fatalf("UML's process status: %v", err)
	}
	st := string(b)
	want := map[string]*regexp.Regexp{
		"uid":  regexp.MustCompile(`(?m)^Uid:\s+65534\s+65534\s+65534\s+65534$`),
		"caps": regexp.MustCompile(`(?m)^CapEff:\s+0+$`),
		"name": regexp.MustCompile(`(?m)^Name:\s+linux`),
	}
	for what, re := range want {
		if !re.MatchString(st) {
			t.Errorf("UML's process (%s) does not match %q:\n%s", what, re, st)
		}
	}
}

// openPty opens a pseudo-terminal pair: the master, and the slave's path
// (owned by nobody, for UML to open). The test keeps a descriptor of the
// slave open until its cleanup, so the master reads nothing but the guest's
// output, and no EIO while UML has not opened the slave yet.
func openPty(t *testing.T) (*os.File, string) {
	t.Helper()
	master, err := os.OpenFile("/dev/ptmx", os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		skipOrFail(t, "no pseudo-terminals: %v", err)
	}
	t.Cleanup(func() { master.Close() })
	// Through Control, not Fd: Fd would take the file out of the poller.
	var n uint32
	var ioErr error
	rc, err := master.SyscallConn()
	if err == nil {
		err = rc.Control(func(fd uintptr) {
			if ioErr = unix.IoctlSetPointerInt(int(fd), unix.TIOCSPTLCK, 0); ioErr == nil {
				n, ioErr = unix.IoctlGetUint32(int(fd), unix.TIOCGPTN)
			}
		})
	}
	if err != nil || ioErr != nil {
		t.Fatalf("unlock the pty: %v %v", err, ioErr)
	}
	path := fmt.Sprintf("/dev/pts/%d", n)
	slave, err := os.OpenFile(path, os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Fatalf("open %s: %v", path, err)
	}
	t.Cleanup(func() { slave.Close() })
	if err := os.Chown(path, nobodyUID, nobodyUID); err != nil {
		t.Fatal(err)
	}
	return master, path
}

// ptyConn is a pty master as the net.Conn guestConsole reads and writes
// (*os.File has everything but the addresses).
type ptyConn struct{ *os.File }

func (ptyConn) LocalAddr() net.Addr  { return ptyAddr{} }
func (ptyConn) RemoteAddr() net.Addr { return ptyAddr{} }

type ptyAddr struct{}

func (ptyAddr) Network() string { return "pty" }
func (ptyAddr) String() string  { return "pty" }
