//go:build linux

package tap

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/peerlan/peerlan/internal/rtnl"
	"github.com/peerlan/peerlan/peer/ether"
)

func requireTAP(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root for TAP devices and namespaces")
	}
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		t.Skip("no /dev/net/tun")
	}
}

func suffix(*testing.T) string {
	b := make([]byte, 3)
	rand.Read(b)
	return hex.EncodeToString(b)
}

func ipOut(t *testing.T, args ...string) (string, error) {
	t.Helper()
	out, err := exec.Command("ip", args...).CombinedOutput()
	return string(out), err
}

// inNamespace runs fn on an OS thread that has entered a fresh network
// namespace, so that devices fn creates (and commands it runs) stay out of
// the root namespace. The thread is discarded afterwards.
func inNamespace(t *testing.T, fn func()) {
	t.Helper()
	ns := "peerlan-tap-" + suffix(t)
	if out, err := ipOut(t, "netns", "add", ns); err != nil {
		t.Fatalf("ip netns add: %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
	if err := rtnl.InNamespace(ns, func() error { fn(); return nil }); err != nil {
		t.Fatal(err)
	}
}

func TestValidName(t *testing.T) {
	for name, want := range map[string]bool{
		"peerlan0": true, "a": true, "exactly15chars_": true,
		"": false, "sixteen_chars_xx": false, "a/b": false, "a:b": false, "a b": false,
	} {
		if got := ValidName(name); got != want {
			t.Errorf("ValidName(%q) = %v, want %v", name, got, want)
		}
	}
}

func TestOpenRefusesBadConfig(t *testing.T) {
	if _, err := Open(Config{Name: "bad/name"}); !errors.Is(err, ErrBadName) {
		t.Errorf("bad name: err = %v, want ErrBadName", err)
	}
	if _, err := Open(Config{Name: "ok0", Bridge: "no such bridge"}); !errors.Is(err, ErrBadName) {
		t.Errorf("bad bridge name: err = %v, want ErrBadName", err)
	}
	if _, err := Open(Config{Name: "ok0", MTU: 9000}); err == nil || !strings.Contains(err.Error(), "MTU") {
		t.Errorf("MTU 9000: err = %v, want an MTU error", err)
	}
}

// TestOpenIntoNamespace moves a real TAP into a namespace of the test's own,
// checks its MTU and state there, and that Close removes it.
func TestOpenIntoNamespace(t *testing.T) {
	requireTAP(t)
	s := suffix(t)
	ns, name := "peerlan-tap-"+s, "plt"+s
	if out, err := ipOut(t, "netns", "add", ns); err != nil {
		t.Fatalf("ip netns add: %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })

	d, err := Open(Config{Name: name, MTU: 1400, Netns: ns})
	if err != nil {
		t.Fatal(err)
	}
	out, err := ipOut(t, "-n", ns, "-o", "link", "show", "dev", name)
	if err != nil {
		t.Fatalf("TAP not in namespace: %v: %s", err, out)
	}
	if !strings.Contains(out, "mtu 1400") || !strings.Contains(out, ",UP") {
		t.Errorf("link in namespace = %q, want mtu 1400 and UP", out)
	}
	if _, err := ipOut(t, "link", "show", "dev", name); err == nil {
		t.Errorf("TAP %s still in the root namespace", name)
	}

	// A second device of the same name in the same place is refused.
	if d2, err := Open(Config{Name: name, Netns: ns}); err == nil {
		d2.Close()
		t.Errorf("second Open(%s) succeeded", name)
	}

	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if out, err := ipOut(t, "-n", ns, "link", "show", "dev", name); err == nil {
		t.Errorf("TAP survives Close: %s", out)
	}
}

// TestOpenBusy: a TAP held by another file descriptor is busy.
func TestOpenBusy(t *testing.T) {
	requireTAP(t)
	inNamespace(t, func() {
		name := "plb" + suffix(t)
		d, err := Open(Config{Name: name})
		if err != nil {
			t.Error(err)
			return
		}
		defer d.Close()
		d2, err := Open(Config{Name: name})
		if err == nil {
			d2.Close()
			t.Error("second Open of a held TAP succeeded")
			return
		}
		if !errors.Is(err, ErrBusy) {
			t.Errorf("err = %v, want ErrBusy", err)
		}
	})
}

// TestOpenMissingBridge: the error names the bridge and the TAP is removed.
func TestOpenMissingBridge(t *testing.T) {
	requireTAP(t)
	inNamespace(t, func() {
		name := "plm" + suffix(t)
		_, err := Open(Config{Name: name, Bridge: "plnobr" + suffix(t)})
		if err == nil || !strings.Contains(err.Error(), "bridge") {
			t.Errorf("err = %v, want a bridge error", err)
			return
		}
		if out, err := ipOut(t, "link", "show", "dev", name); err == nil {
			t.Errorf("TAP left behind after a failed Open: %s", out)
		}
	})
}

// TestOpenOnBridge: the TAP joins an existing bridge, as QEMU set-ups need.
func TestOpenOnBridge(t *testing.T) {
	requireTAP(t)
	inNamespace(t, func() {
		br, name := "plbr"+suffix(t), "plq"+suffix(t)
		if out, err := ipOut(t, "link", "add", br, "type", "bridge"); err != nil {
			t.Errorf("add bridge: %v: %s", err, out)
			return
		}
		d, err := Open(Config{Name: name, Bridge: br})
		if err != nil {
			t.Error(err)
			return
		}
		defer d.Close()
		out, _ := ipOut(t, "-o", "link", "show", "dev", name)
		if !strings.Contains(out, "master "+br) {
			t.Errorf("link = %q, want master %s", out, br)
		}
	})
}

// TestOffloadCarriesTCP joins two namespaces through a pair of offload TAPs
// and a pump of this test's own, and sends 8 MiB over TCP between them. The
// A-to-B direction moves super-frames as they are (ReadOffload, then
// WriteOffload), which must happen (the kernel sends TSO super-frames); B to
// A reads through the plain Read, whose software segmentation and
// checksums the kernel must accept, or the transfer would stall.
func TestOffloadCarriesTCP(t *testing.T) {
	requireTAP(t)
	s := suffix(t)
	nsA, nsB := "peerlan-tapa-"+s, "peerlan-tapb-"+s
	for _, ns := range []string{nsA, nsB} {
		if out, err := ipOut(t, "netns", "add", ns); err != nil {
			t.Fatalf("ip netns add: %v: %s", err, out)
		}
		t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
		ipOut(t, "-n", ns, "link", "set", "lo", "up")
	}
	a, err := Open(Config{Name: "pla" + s, Netns: nsA, Offload: true})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := Open(Config{Name: "plb" + s, Netns: nsB, Offload: true})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	for _, x := range []struct{ ns, dev, addr string }{{nsA, a.Name(), "192.0.2.1/24"}, {nsB, b.Name(), "192.0.2.2/24"}} {
		if out, err := ipOut(t, "-n", x.ns, "addr", "add", x.addr, "dev", x.dev); err != nil {
			t.Fatalf("addr: %v: %s", err, out)
		}
	}
	var supers, segmentsBack atomic.Int64
	go func() { // A -> B: super-frames pass through untouched
		buf := make([]byte, ether.MaxOffloadFrameSize)
		for {
			n, o, err := a.ReadOffload(buf)
			if err != nil {
				return
			}
			if o.GSO != ether.GSONone {
				supers.Add(1)
			}
			b.WriteOffload(buf[:n], o)
		}
	}()
	go func() { // B -> A: complete frames only
		buf := make([]byte, 64<<10)
		for {
			n, err := b.Read(buf)
			if err != nil {
				return
			}
			if n > ether.MaxFrameLen {
				t.Errorf("plain Read returned a %d-byte frame", n)
			}
			segmentsBack.Add(1)
			a.Write(buf[:n])
		}
	}()

	const size = 8 << 20
	var ln net.Listener
	rtnl.InNamespace(nsB, func() error { ln, err = net.Listen("tcp", "192.0.2.2:0"); return nil })
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	sums := make(chan [32]byte, 2)
	go func() { // B receives one stream and sends one back
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		h := sha256.New()
		io.CopyN(h, c, size)
		sums <- [32]byte(h.Sum(nil))
		c.Write(bytes.Repeat([]byte("peerlan "), size/8))
	}()
	var c net.Conn
	rtnl.InNamespace(nsA, func() error { c, err = net.DialTimeout("tcp", ln.Addr().String(), 5*time.Second); return nil })
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	data := make([]byte, size)
	rand.Read(data)
	if _, err := c.Write(data); err != nil {
		t.Fatalf("send A->B: %v", err)
	}
	back := sha256.New()
	if n, err := io.CopyN(back, c, size); err != nil {
		t.Fatalf("receive B->A: %d bytes, %v", n, err)
	}
	if got := <-sums; got != sha256.Sum256(data) {
		t.Fatal("A->B stream corrupted")
	}
	if [32]byte(back.Sum(nil)) != sha256.Sum256(bytes.Repeat([]byte("peerlan "), size/8)) {
		t.Fatal("B->A stream corrupted")
	}
	if supers.Load() == 0 {
		t.Error("no super-frame crossed A->B: the kernel did not use TSO")
	}
	t.Logf("A->B super-frames %d; B->A complete frames %d", supers.Load(), segmentsBack.Load())
}
