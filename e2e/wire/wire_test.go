//go:build linux

package wire

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/peerlan/peerlan/internal/rtnl"
)

// pair makes two namespaces of the test's own joined by a wire.
func pair(t *testing.T, cfg Config) (*Wire, [2]string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root for namespaces and TUN devices")
	}
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		t.Skip("needs /dev/net/tun")
	}
	b := make([]byte, 3)
	rand.Read(b)
	s := hex.EncodeToString(b)
	ns := [2]string{"peerlan-wa-" + s, "peerlan-wb-" + s}
	for _, n := range ns {
		if out, err := exec.Command("ip", "netns", "add", n).CombinedOutput(); err != nil {
			t.Fatalf("ip netns add: %v: %s", err, out)
		}
		t.Cleanup(func() { exec.Command("ip", "netns", "del", n).Run() })
	}
	w, err := New(End{ns[0], "wa" + s, netip.MustParsePrefix("203.0.113.1/30")},
		End{ns[1], "wb" + s, netip.MustParsePrefix("203.0.113.2/30")}, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Close() })
	return w, ns
}

var pingSummary = regexp.MustCompile(`(\d+) packets transmitted, (\d+) received.*\n.*= [\d.]+/([\d.]+)/`)

func ping(t *testing.T, ns string, args ...string) (sent, got int, avgMs float64) {
	t.Helper()
	out, _ := exec.Command("ip", append([]string{"netns", "exec", ns, "ping", "-q"}, append(args, "203.0.113.2")...)...).CombinedOutput()
	m := pingSummary.FindStringSubmatch(string(out))
	if m == nil {
		if m2 := regexp.MustCompile(`(\d+) packets transmitted, (\d+) received`).FindStringSubmatch(string(out)); m2 != nil {
			sent, _ = strconv.Atoi(m2[1])
			return sent, 0, 0
		}
		t.Fatalf("ping printed no summary: %s", out)
	}
	sent, _ = strconv.Atoi(m[1])
	got, _ = strconv.Atoi(m[2])
	avgMs, _ = strconv.ParseFloat(m[3], 64)
	return sent, got, avgMs
}

func TestWireDelay(t *testing.T) {
	w, ns := pair(t, Config{Delay: 20 * time.Millisecond})
	_, got, avg := ping(t, ns[0], "-c", "5", "-i", "0.2")
	if got != 5 || avg < 40 || avg > 60 {
		t.Fatalf("%d of 5 echoes, average RTT %.1f ms; want all, 40-60 ms over a 20 ms wire", got, avg)
	}
	if w.Carried.Load() < 10 {
		t.Fatalf("wire counted %d packets", w.Carried.Load())
	}

	// A TCP stream crosses the delay whole.
	var ln net.Listener
	var err error
	rtnl.InNamespace(ns[1], func() error { ln, err = net.Listen("tcp", "203.0.113.2:0"); return nil })
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	data := make([]byte, 4<<20)
	rand.Read(data)
	sum := make(chan [32]byte, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		h := sha256.New()
		io.Copy(h, c)
		sum <- [32]byte(h.Sum(nil))
	}()
	var c net.Conn
	rtnl.InNamespace(ns[0], func() error { c, err = net.DialTimeout("tcp", ln.Addr().String(), 5*time.Second); return nil })
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := c.Write(data); err != nil {
		t.Fatal(err)
	}
	c.Close()
	select {
	case got := <-sum:
		if got != sha256.Sum256(data) {
			t.Fatal("stream corrupted")
		}
	case <-time.After(30 * time.Second):
		t.Fatal("stream did not arrive")
	}
}

func TestWireLoss(t *testing.T) {
	w, ns := pair(t, Config{Loss: 0.3})
	sent, got, _ := ping(t, ns[0], "-c", "200", "-i", "0.005", "-W", "1")
	// Each echo crosses twice, so about half come back.
	if lost := float64(sent-got) / float64(sent); lost < 0.25 || lost > 0.75 {
		t.Fatalf("%d of %d echoes came back; want about half at 30%% loss each way", got, sent)
	}
	if w.Dropped.Load() == 0 {
		t.Fatal("wire dropped nothing")
	}
}
