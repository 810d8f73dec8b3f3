package rtnl

import (
	"errors"
	"net"
	"os"
	"os/exec"
	"testing"

	"golang.org/x/sys/unix"
)

func TestAttrAligns(t *testing.T) {
	b := Attr(nil, 3, []byte("tap0\x00"))
	if len(b) != 12 || b[0] != 9 || b[2] != 3 { // 4-byte header + 5 bytes, padded to 12
		t.Fatalf("Attr = % x", b)
	}
}

// TestRequestInNamespace changes loopback's MTU in a namespace of the
// test's own and sees the kernel's errno for a link that does not exist.
func TestRequestInNamespace(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root for a network namespace")
	}
	ns := "peerlan-rtnl-test"
	if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v: %s", err, out)
	}
	defer exec.Command("ip", "netns", "del", ns).Run()
	var mtu int
	err := InNamespace(ns, func() error {
		lo, err := net.InterfaceByName("lo")
		if err != nil {
			return err
		}
		if err := Request(unix.RTM_NEWLINK, 0, Attr(LinkMsg(lo.Index, unix.IFF_UP, unix.IFF_UP), unix.IFLA_MTU, Uint32(1400))); err != nil {
			return err
		}
		lo, err = net.InterfaceByName("lo")
		if err == nil {
			mtu = lo.MTU
		}
		return err
	})
	if err != nil || mtu != 1400 {
		t.Fatalf("MTU %d, %v; want 1400", mtu, err)
	}
	err = InNamespace(ns, func() error {
		return Request(unix.RTM_NEWLINK, 0, Attr(LinkMsg(0, 0, 0), unix.IFLA_IFNAME, []byte("nosuch0\x00")))
	})
	if !errors.Is(err, unix.ENODEV) {
		t.Fatalf("missing link: %v, want ENODEV", err)
	}
	if err := InNamespace("peerlan-no-such-ns", func() error { return nil }); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("missing namespace: %v", err)
	}
}

// TestInNamespaceReturnsHome: after InNamespace, no thread of the process is
// left in the namespace (a main thread left there would make the process
// look like one of the namespace's, and get it killed with it).
func TestInNamespaceReturnsHome(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root for a network namespace")
	}
	ns := "peerlan-rtnl-home"
	if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v: %s", err, out)
	}
	defer exec.Command("ip", "netns", "del", ns).Run()
	for range 50 {
		if err := InNamespace(ns, func() error { return nil }); err != nil {
			t.Fatal(err)
		}
	}
	var st unix.Stat_t
	if err := unix.Stat("/run/netns/"+ns, &st); err != nil {
		t.Fatal(err)
	}
	tasks, _ := os.ReadDir("/proc/self/task")
	for _, task := range tasks {
		var ts unix.Stat_t
		if unix.Stat("/proc/self/task/"+task.Name()+"/ns/net", &ts) == nil && ts.Ino == st.Ino {
			t.Fatalf("thread %s is still in %s", task.Name(), ns)
		}
	}
}
