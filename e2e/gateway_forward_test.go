//go:build linux

package e2e

// bin/gateway -forward: tools on the gateway's host reach a guest's ports
// through the gateway's loopback, in TestGateway's namespaces (see
// gateway_test.go for the topology). The host's tools run in ns gw: curl
// as a process, the UDP client as a socket this test opened there.

import (
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/peerlan/peerlan/signal/proto"
)

const (
	// fwdGuest is the address of the room's first guest: the signaling
	// server hands out the lowest free address, and the gateway holds .1.
	fwdGuest   = "10.86.0.2"
	fwdTCPPort = "18080" // on 127.0.0.1 in ns gw
	fwdUDPPort = "15353"
	fwdUDPEcho = "5300" // the guest's UDP echo port
)

// fwdCurl fetches url in ns gw (the gateway's host) into a file and returns
// its bytes. It retries for a while: the guest's server may not listen yet,
// and then the forward closes the connection it cannot carry.
func fwdCurl(t *testing.T, l *gwLab, url string) []byte {
	t.Helper()
	out := filepath.Join(t.TempDir(), "fetched")
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(500 * time.Millisecond) {
		_, err := l.gw.Run("curl", "-sS", "--fail", "--connect-timeout", "10", "--max-time", "60", "-o", out, url)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("curl through the forward: %v", err)
		}
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// fwdCheckMetrics checks that the gateway counted the forward's
// connections and at least want bytes from the guest. It polls: the last
// bytes are counted just after they were written to the client.
func fwdCheckMetrics(t *testing.T, l *gwLab, forward string, want int) {
	t.Helper()
	label := `forward="` + forward + `"`
	accepted := `peerlan_gateway_forward_accepted_total{` + label + `}`
	fromGuest := `peerlan_gateway_forward_bytes_total{direction="from_guest",` + label + `}`
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		m := l.metrics()
		if m[accepted] >= 1 && m[fromGuest] >= float64(want) {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("%s = %v, want >= 1; %s = %v, want >= %d", accepted, m[accepted], fromGuest, m[fromGuest], want)
			return
		}
	}
}

// fwdBody is the served file: every byte value, in an order that a short or
// shifted copy cannot match.
func fwdBody(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7 + i/251)
	}
	return b
}

// TestGatewayForward: curl on the gateway's host fetches a file from a
// namespace guest's busybox httpd through -forward tcp:127.0.0.1:..., and
// a UDP forward carries datagrams to a guest's echo and back; a forward to
// an address outside the room stops the gateway after the join, with the
// host restored.
func TestGatewayForward(t *testing.T) {
	RequireCommands(t, "busybox")
	l := gwNewLab(t)
	tcpForward := "tcp:127.0.0.1:" + fwdTCPPort + "=" + fwdGuest + ":80"
	udpForward := "udp:127.0.0.1:" + fwdUDPPort + "=" + fwdGuest + ":" + fwdUDPEcho

	t.Run("guest outside the room", func(t *testing.T) {
		p := l.gw.Start(Binary(t, "gateway"), l.gatewayArgs("-forward", "tcp:127.0.0.1:"+fwdTCPPort+"=10.87.0.2:80")...)
		if code := gwWaitExit(t, p, 60*time.Second); code != 1 {
			t.Errorf("exit code %d, want 1", code)
		}
		if !strings.Contains(p.Output(), "outside the room subnet 10.86.0.0/24") {
			t.Errorf("output lacks the subnet check:\n%s", p.Output())
		}
		l.checkRestored(t)
	})

	gw := l.startGateway("-forward", tcpForward, "-forward", udpForward)
	fwdCheck(t, l, gw, tcpForward, udpForward)

	t.Run("sigterm", func(t *testing.T) {
		if err := gw.Stop(20 * time.Second); err != nil {
			t.Fatalf("bin/gateway did not exit cleanly on SIGTERM: %v", err)
		}
		if !regexp.MustCompile(`msg="forward stopped" forward="` + regexp.QuoteMeta(tcpForward) + `" accepted=[1-9]`).MatchString(gw.Output()) {
			t.Errorf("no final line for the TCP forward")
		}
		l.checkRestored(t)
		if _, err := l.gw.Run("curl", "-sS", "--max-time", "5", "http://127.0.0.1:"+fwdTCPPort+"/"); err == nil {
			t.Errorf("the forward still answers with the gateway gone")
		}
	})
}

// fwdCheck is TestGatewayForward's checks against a running gateway gw
// (either mode) with the forwards tcpForward and udpForward: their log
// lines, then, with a guest started, a file fetched over TCP and datagrams
// echoed over UDP, both counted.
func fwdCheck(t *testing.T, l *gwLab, gw *Process, tcpForward, udpForward string) {
	t.Helper()
	for _, f := range []string{"tcp 127.0.0.1:" + fwdTCPPort + " -> " + fwdGuest + ":80", "udp 127.0.0.1:" + fwdUDPPort + " -> " + fwdGuest + ":" + fwdUDPEcho} {
		if !strings.Contains(gw.Output(), `msg="forwarding `+f+`"`) {
			t.Errorf("no log line for the forward %s", f)
		}
	}
	l.startGuest()
	lease := LeaseDHCP(t, l.guest, l.guestTAP)
	if lease.Addr.Addr().String() != fwdGuest {
		t.Fatalf("the guest leased %v, want %s (the room's first guest address, which the forwards name)", lease.Addr, fwdGuest)
	}

	t.Run("tcp", func(t *testing.T) {
		dir := t.TempDir()
		body := fwdBody(300 << 10)
		if err := os.WriteFile(filepath.Join(dir, "file.bin"), body, 0o644); err != nil {
			t.Fatal(err)
		}
		httpd := l.guest.Start("busybox", "httpd", "-f", "-p", "80", "-h", dir)
		defer httpd.Stop(5 * time.Second)
		got := fwdCurl(t, l, "http://127.0.0.1:"+fwdTCPPort+"/file.bin")
		if !bytes.Equal(got, body) {
			t.Fatalf("fetched %d bytes through the forward, want the file's exact %d bytes", len(got), len(body))
		}
		fwdCheckMetrics(t, l, tcpForward, len(body))
	})

	t.Run("udp", func(t *testing.T) {
		stop := fwdUDPEchoServer(t, l, netip.MustParseAddrPort(fwdGuest+":"+fwdUDPEcho))
		defer stop()
		var c net.Conn
		if err := gwInNamespace(l.gw, func() (err error) { c, err = net.Dial("udp", "127.0.0.1:"+fwdUDPPort); return err }); err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		buf := make([]byte, 2048)
		for i := range 3 {
			msg := fmt.Sprintf("datagram %d", i)
			c.SetDeadline(time.Now().Add(10 * time.Second))
			if _, err := c.Write([]byte(msg)); err != nil {
				t.Fatal(err)
			}
			n, err := c.Read(buf)
			if err != nil {
				t.Fatalf("%s: no answer through the forward: %v", msg, err)
			}
			// The guest sees the gateway's .1 as the client (the proxy's cost).
			from, payload, _ := strings.Cut(string(buf[:n]), " ")
			if payload != msg || !strings.HasPrefix(from, "10.86.0.1:") {
				t.Fatalf("%s: answer %q, want it echoed from a sender at 10.86.0.1", msg, buf[:n])
			}
		}
		fwdCheckMetrics(t, l, udpForward, 3*len("10.86.0.1:1 datagram 0"))
	})
}

// TestGatewayForwardUserspace: TestGatewayForward's TCP and UDP forwards
// with bin/gateway -userspace as nobody, dialing guests through the
// userspace stack (DialGuest).
func TestGatewayForwardUserspace(t *testing.T) {
	RequireCommands(t, "busybox")
	l := gwNewLab(t)
	tcpForward := "tcp:127.0.0.1:" + fwdTCPPort + "=" + fwdGuest + ":80"
	udpForward := "udp:127.0.0.1:" + fwdUDPPort + "=" + fwdGuest + ":" + fwdUDPEcho
	gw := l.startUserspaceGateway("-forward", tcpForward, "-forward", udpForward)
	fwdCheck(t, l, gw, tcpForward, udpForward)
	if err := gw.Stop(20 * time.Second); err != nil {
		t.Fatalf("bin/gateway did not exit cleanly on SIGTERM: %v", err)
	}
	if _, err := l.gw.Run("curl", "-sS", "--max-time", "5", "http://127.0.0.1:"+fwdTCPPort+"/"); err == nil {
		t.Errorf("the forward still answers with the gateway gone")
	}
}

// fwdUDPEchoServer answers each datagram to addr (in ns guest) with
// "SENDER PAYLOAD" until stop is called.
func fwdUDPEchoServer(t *testing.T, l *gwLab, addr netip.AddrPort) (stop func()) {
	t.Helper()
	var pc *net.UDPConn
	if err := gwInNamespace(l.guest, func() (err error) {
		pc, err = net.ListenUDP("udp", net.UDPAddrFromAddrPort(addr))
		return err
	}); err != nil {
		t.Fatalf("UDP echo on %v in the guest namespace: %v", addr, err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 2048)
		for {
			n, from, err := pc.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			pc.WriteToUDPAddrPort([]byte(from.String()+" "+string(buf[:n])), from)
		}
	}()
	return func() { pc.Close(); <-done }
}

// TestGatewayForwardBrowserGuest: curl on the gateway's host fetches a file
// that a v86 guest in headless Chromium serves with busybox httpd, through
// -forward and the gateway's link to the browser (over the relay, as in
// TestGatewayBrowserGuest, whose loopback proxies this test shares).
func TestGatewayForwardBrowserGuest(t *testing.T) {
	fwdBrowserGuest(t, (*gwLab).startGateway)
}

// TestGatewayForwardBrowserGuestUserspace: TestGatewayForwardBrowserGuest
// with bin/gateway -userspace as nobody, dialing the browser guest through
// the userspace stack.
func TestGatewayForwardBrowserGuestUserspace(t *testing.T) {
	fwdBrowserGuest(t, (*gwLab).startUserspaceGateway)
}

// fwdBrowserGuest is TestGatewayForwardBrowserGuest's body with the gateway
// started by start (either mode's).
func fwdBrowserGuest(t *testing.T, start func(l *gwLab, extra ...string) *Process) {
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
	forward := "tcp:127.0.0.1:" + fwdTCPPort + "=" + fwdGuest + ":8080"
	gw := start(l, "-forward", forward)

	tab := StartBrowser(t).OpenTab(t, "guest", "http://"+page+"/?room="+l.room+"&relay=relay", true)
	g := lanWaitGuest(t, tab)
	if g.IP.String() != fwdGuest {
		t.Fatalf("the browser guest leased %v, want %s (the room's first guest address, which the forward names)", g.IP, fwdGuest)
	}
	if link := lanWaitLink(t, tab, netip.MustParseAddr("10.86.0.1"), lanJoinTimeout); link.Role != proto.RoleGateway {
		t.Fatalf("browser's link to .1: %+v, want the gateway", link)
	}
	// The guest writes the numbers 1 to 20000, one a line, and serves them;
	// the host must get exactly those bytes.
	g.Command("mkdir -p /tmp/www && seq 1 20000 > /tmp/www/seq.txt && httpd -p 8080 -h /tmp/www; echo httpd$((1+1))",
		regexp.MustCompile(`(?m)^httpd2$`), CommandTimeout)
	var want strings.Builder
	for i := 1; i <= 20000; i++ {
		want.WriteString(strconv.Itoa(i) + "\n")
	}
	got := fwdCurl(t, l, "http://127.0.0.1:"+fwdTCPPort+"/seq.txt")
	if string(got) != want.String() {
		t.Fatalf("fetched %d bytes through the forward, want the guest's file's exact %d bytes", len(got), want.Len())
	}
	fwdCheckMetrics(t, l, forward, want.Len())
	t.Logf("curl on the gateway host fetched %d bytes from v86 guest %s through -forward %s", len(got), g.IP, forward)
	if err := gw.Stop(20 * time.Second); err != nil {
		t.Errorf("bin/gateway did not exit cleanly: %v", err)
	}
}
