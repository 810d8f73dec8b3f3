//go:build linux

package e2e

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/peerlan/peerlan/peer"
)

// TestNativeLinkHealsAfterAddressChange: a peer's host moves to another
// address (a laptop changing networks). Its WebRTC path and its signaling
// connection both die with the old address; the peer notices (ICE
// disconnect limit, the server's announced keepalive), rejoins from the new
// address and renegotiates, and the guests ping again without anyone
// restarting anything.
//
// The peers' processes run inside namespaces of their own joined by a veth
// (198.51.100.0/24), the signaling server beside peer A, so that B's
// address can change; each guest is a further namespace holding its TAP.
func TestNativeLinkHealsAfterAddressChange(t *testing.T) {
	RequireCommands(t, "ping", "udhcpc", "curl")
	hostA, hostB := NewNamespace(t, "host-a"), NewNamespace(t, "host-b")
	VethPair(t, hostA, "wan0", netip.MustParsePrefix("198.51.100.1/24"), hostB, "wan0", netip.MustParsePrefix("198.51.100.2/24"))
	port := FreePort(t)
	sigURL := fmt.Sprintf("ws://198.51.100.1:%d/signal", port)
	hostA.Start(Binary(t, "signal"), "-addr", fmt.Sprintf("198.51.100.1:%d", port), "-keepalive", "500ms", "-keepalive-timeout", "2s")
	type nsPeer struct {
		host, guest *Namespace
		tap, status string
	}
	start := func(host *Namespace, name string) nsPeer {
		p := nsPeer{host: host, guest: NewNamespace(t, name), tap: "pl" + randomSuffix(3), status: fmt.Sprintf("127.0.0.1:%d", FreePort(t))}
		host.Start(Binary(t, "peer"), "-signal", sigURL, "-room", "move", "-tap", p.tap, "-netns", p.guest.Name,
			"-ice-interfaces", "wan0", "-status", p.status)
		return p
	}
	status := func(p nsPeer) (peer.MeshStatus, bool) {
		out, err := p.host.Run("curl", "-sf", "http://"+p.status+"/status")
		var st peer.MeshStatus
		return st, err == nil && json.Unmarshal([]byte(out), &st) == nil
	}
	waitOpen := func(p nsPeer) peer.MeshStatus {
		t.Helper()
		var st peer.MeshStatus
		waitCond(t, 30*time.Second, "a link to open", func() bool {
			var ok bool
			st, ok = status(p)
			return ok && len(st.Peers) == 1 && st.Peers[0].State == "open"
		})
		return st
	}
	time.Sleep(300 * time.Millisecond) // the server listens
	a := start(hostA, "guest-a")
	waitCond(t, 20*time.Second, "A to join", func() bool { st, ok := status(a); return ok && st.Signal == "connected" })
	b := start(hostB, "guest-b")
	waitOpen(a)
	waitOpen(b)
	ipA := LeaseDHCP(t, a.guest, a.tap).Addr.Addr()
	ipB := LeaseDHCP(t, b.guest, b.tap).Addr.Addr()
	Ping(t, b.guest, ipA, 3)

	// B's host moves from .2 to .3.
	hostB.MustRun("ip", "addr", "del", "198.51.100.2/24", "dev", "wan0")
	hostB.MustRun("ip", "addr", "add", "198.51.100.3/24", "dev", "wan0")
	moved := time.Now()
	if !pingUntil(b.guest, ipA, moved.Add(30*time.Second)) {
		stA, _ := status(a)
		stB, _ := status(b)
		t.Fatalf("B's guest cannot ping A's 30 s after B's address changed:\nA %+v\nB %+v", stA, stB)
	}
	healed := time.Since(moved)
	Ping(t, a.guest, ipB, 3)
	stB := waitOpen(b)
	t.Logf("guests ping again %v after B's address changed; B's link now %s -> %s", healed.Round(time.Millisecond),
		stB.Peers[0].LocalCandidate, stB.Peers[0].RemoteCandidate)
	if healed > 15*time.Second {
		t.Errorf("healing took %v, want at most 15 s (ICE's disconnect limit, the keepalive, a renegotiation)", healed)
	}
}
