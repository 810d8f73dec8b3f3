package userspace

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// blackhole listens on loopback with an accept queue of one that the test
// fills and never accepts from, so the kernel drops every further SYN: a
// connect to it waits, unanswered, like one to a host that drops SYNs,
// without touching any routing or firewall.
func blackhole(t *testing.T) int {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	port := sa.(*syscall.SockaddrInet4).Port
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	for range 3 { // fill the queue; later ones may hang, that is the point
		go func() {
			if c, err := net.DialTimeout("tcp", addr, 2*time.Second); err == nil {
				t.Cleanup(func() { c.Close() })
			}
		}()
	}
	time.Sleep(500 * time.Millisecond)
	if c, err := net.DialTimeout("tcp", addr, 2*time.Second); err == nil {
		c.Close()
		t.Skip("the kernel answered a connect to a full accept queue; no blackhole")
	} else if ne, ok := err.(net.Error); !ok || !ne.Timeout() {
		t.Skipf("connect to the full accept queue: %v, want a timeout", err)
	}
	return port
}

// pollUntil waits, bounded, for cond.
func pollUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestSlowConnects: a guest address dialling an unanswering destination
// holds at most MaxPendingPerGuest connects, its further ones are reset at
// once, and another guest's connection to a live server goes through
// meanwhile; all guests together hold at most MaxPending, and Close ends
// the waiting connects.
func TestSlowConnects(t *testing.T) {
	if _, err := exec.LookPath("curl"); err != nil {
		t.Skip("needs curl")
	}
	live, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer live.Close()
	go func() {
		for {
			c, err := live.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.Read(make([]byte, 4096))
				fmt.Fprint(c, "HTTP/1.0 200 OK\r\nContent-Length: 4\r\n\r\nlive")
			}()
		}
	}()
	hole := blackhole(t)
	silent := netip.MustParseAddr("198.51.100.81")
	const perGuest, all = 4, 8
	l := newGuestLab(t, Config{
		ConnectTimeout: 5 * time.Minute, MaxPendingPerGuest: perGuest, MaxPending: all,
		translate: map[netip.Addr]netip.Addr{internetHost: netip.MustParseAddr("127.0.0.1"), silent: netip.MustParseAddr("127.0.0.1")},
	})
	// Two more guest addresses on the same kernel: the bounds are per
	// guest address, which is what the switch lets each guest use.
	slow, slow2 := "10.86.0.11", "10.86.0.12"
	for _, a := range []string{slow, slow2} {
		l.ip(t, "addr", "add", a+"/24", "dev", "guest0")
	}
	holeURL := fmt.Sprintf("http://%v:%d/", silent, hole)
	curlFrom := func(src string, timeout time.Duration, url string) (string, error) {
		return l.run(timeout+10*time.Second, "curl", "-sS", "--interface", src, "--max-time", fmt.Sprint(int(timeout.Seconds())), url)
	}

	// The slow guest fills its share and more: 2*perGuest connects.
	for range 2 * perGuest {
		l.start(t, "curl", "-sS", "--interface", slow, "--max-time", "300", holeURL)
	}
	pollUntil(t, "the slow guest's connects", func() bool {
		return l.g.Stats().PendingConnects == perGuest && drops(l.g, DropPendingGuest) == perGuest
	})
	out, err := curlFrom(slow, 20*time.Second, holeURL)
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 7 { // 7: could not connect (reset)
		t.Errorf("slow guest's connect beyond its share: %v %q, want curl's exit 7 (refused)", err, out)
	}
	if n := drops(l.g, DropPendingGuest); n != perGuest+1 {
		t.Errorf("%d pending_guest refusals, want %d", n, perGuest+1)
	}

	// Another guest's connect to a live server is not held up.
	liveURL := fmt.Sprintf("http://%v:%d/", internetHost, live.Addr().(*net.TCPAddr).Port)
	if out, err := curlFrom(testGuest.String(), 20*time.Second, liveURL); err != nil || out != "live" {
		t.Fatalf("live guest's curl while connects are pending: %v %q", err, out)
	}

	// A second slow guest fills the global bound; then everyone's new
	// connects are refused until one completes or times out.
	for range perGuest {
		l.start(t, "curl", "-sS", "--interface", slow2, "--max-time", "300", holeURL)
	}
	pollUntil(t, "all pending slots", func() bool { return l.g.Stats().PendingConnects == all })
	if out, err := curlFrom(testGuest.String(), 20*time.Second, liveURL); err == nil {
		t.Errorf("live guest's curl with all %d slots taken succeeded: %q", all, out)
	}
	if n := drops(l.g, DropPending); n != 1 {
		t.Errorf("%d pending refusals, want 1", n)
	}
	if s := l.g.Stats().String(); !strings.Contains(s, "8 connects pending") {
		t.Errorf("status %q does not show the pending connects", s)
	}

	// Close ends the waiting connects rather than waiting 5 minutes.
	closed := make(chan struct{})
	go func() { l.g.Close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(60 * time.Second):
		t.Fatal("Close waited for the pending connects")
	}
}

// TestConnectTimeout: an unanswered connect is reset after ConnectTimeout
// and counted; a refused one (nothing listening) is reset and counted too.
func TestConnectTimeout(t *testing.T) {
	if _, err := exec.LookPath("curl"); err != nil {
		t.Skip("needs curl")
	}
	hole := blackhole(t)
	closedPort := func() int { // a port nothing listens on
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		return ln.Addr().(*net.TCPAddr).Port
	}()
	l := newGuestLab(t, Config{ConnectTimeout: 2 * time.Second, translate: toLoopback})
	for port, reason := range map[int]string{hole: DropConnectTimeout, closedPort: DropConnectFailed} {
		out, err := l.run(60*time.Second, "curl", "-sS", "--max-time", "40", fmt.Sprintf("http://%v:%d/", internetHost, port))
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 7 {
			t.Errorf("port %d: curl %v %q, want exit 7 (refused)", port, err, out)
		}
		if drops(l.g, reason) != 1 {
			t.Errorf("port %d: %d %s drops, want 1", port, drops(l.g, reason), reason)
		}
	}
	if n := l.g.Stats().PendingConnects; n != 0 {
		t.Errorf("%d connects still pending", n)
	}
}
