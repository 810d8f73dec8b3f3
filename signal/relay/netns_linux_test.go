package relay

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// testNetns is a network namespace owned by one test. Sockets are opened in
// it by a goroutine locked to an OS thread that entered the namespace and
// never leaves it (the thread dies with the goroutine), so no other
// goroutine ever runs in the namespace by accident. A socket stays in the
// namespace it was created in, whichever thread uses it later.
type testNetns struct {
	name string
	jobs chan func()
	done chan struct{}
}

var errNetnsClosed = errors.New("netns worker stopped")

// needNetns skips unless the machine can build namespaces.
func needNetns(tb testing.TB, tools ...string) {
	tb.Helper()
	if os.Geteuid() != 0 {
		tb.Skip("needs root to create network namespaces")
	}
	for _, tool := range append([]string{"ip"}, tools...) {
		if _, err := exec.LookPath(tool); err != nil {
			tb.Skipf("needs %s (Debian package %s)", tool, debianPackage(tool))
		}
	}
}

func debianPackage(tool string) string {
	if strings.HasPrefix(tool, "turn") {
		return "coturn"
	}
	return "iproute2"
}

func newTestNetns(tb testing.TB, prefix string) *testNetns {
	tb.Helper()
	var b [4]byte
	_, _ = rand.Read(b[:])
	n := &testNetns{name: prefix + "-" + hex.EncodeToString(b[:]), jobs: make(chan func()), done: make(chan struct{})}
	if out, err := exec.Command("ip", "netns", "add", n.name).CombinedOutput(); err != nil {
		tb.Skipf("cannot create a network namespace: %v: %s", err, out)
	}
	tb.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", n.name).CombinedOutput(); err != nil {
			tb.Errorf("deleting netns %s: %v: %s", n.name, err, out)
		}
	})
	n.ip(tb, "link", "set", "lo", "up")

	ready := make(chan error)
	go n.worker(ready)
	if err := <-ready; err != nil {
		tb.Fatalf("entering netns %s: %v", n.name, err)
	}
	tb.Cleanup(func() { close(n.jobs); <-n.done })
	return n
}

func (n *testNetns) worker(ready chan<- error) {
	defer close(n.done)
	runtime.LockOSThread() // never unlocked: the thread exits with us
	f, err := os.Open("/run/netns/" + n.name)
	if err == nil {
		err = unix.Setns(int(f.Fd()), unix.CLONE_NEWNET)
		_ = f.Close()
	}
	ready <- err
	if err != nil {
		return
	}
	for job := range n.jobs {
		job()
	}
}

// do runs f on the thread inside the namespace.
func (n *testNetns) do(f func()) error {
	finished := make(chan struct{})
	select {
	case n.jobs <- func() { f(); close(finished) }:
	case <-n.done:
		return errNetnsClosed
	}
	<-finished
	return nil
}

func (n *testNetns) listenPacket(network, address string) (pc net.PacketConn, err error) {
	if derr := n.do(func() { pc, err = net.ListenPacket(network, address) }); derr != nil {
		return nil, derr
	}
	return pc, err
}

func (n *testNetns) listen(network, address string) (l net.Listener, err error) {
	if derr := n.do(func() { l, err = net.Listen(network, address) }); derr != nil {
		return nil, derr
	}
	return l, err
}

func (n *testNetns) ip(tb testing.TB, args ...string) {
	tb.Helper()
	if out, err := exec.Command("ip", append([]string{"-n", n.name}, args...)...).CombinedOutput(); err != nil {
		tb.Fatalf("ip -n %s %s: %v: %s", n.name, strings.Join(args, " "), err, out)
	}
}

// command runs name inside the namespace.
func (n *testNetns) command(ctx context.Context, name string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", n.name, name}, args...)...)
}

// linkNetns joins a and b with a veth pair and gives each end an address
// ("198.51.100.1/24").
func linkNetns(tb testing.TB, a *testNetns, aAddr string, b *testNetns, bAddr string) {
	tb.Helper()
	var r [3]byte
	_, _ = rand.Read(r[:])
	ifA, ifB := "pla"+hex.EncodeToString(r[:]), "plb"+hex.EncodeToString(r[:])
	a.ip(tb, "link", "add", ifA, "type", "veth", "peer", "name", ifB, "netns", b.name)
	a.ip(tb, "addr", "add", aAddr, "dev", ifA)
	b.ip(tb, "addr", "add", bAddr, "dev", ifB)
	a.ip(tb, "link", "set", ifA, "up")
	b.ip(tb, "link", "set", ifB, "up")
}

func (n *testNetns) String() string { return fmt.Sprintf("netns %s", n.name) }
