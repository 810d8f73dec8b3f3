//go:build linux

package tap

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
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
	done := make(chan struct{})
	go func() {
		defer close(done)
		runtime.LockOSThread() // never unlocked: the thread exits with the goroutine
		f, err := os.Open("/run/netns/" + ns)
		if err != nil {
			t.Error(err)
			return
		}
		defer f.Close()
		if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
			t.Errorf("setns: %v", err)
			return
		}
		fn()
	}()
	<-done
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
