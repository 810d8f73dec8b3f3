//go:build linux

package e2e

import (
	"net/netip"
	"testing"
	"time"

	"github.com/peerlan/peerlan/peer"
)

// TestNativeLAN is issue 3's proof: two namespaces stand for two machines,
// each holding the TAP of a bin/peer process. Each namespace's DHCP client
// gets the server-assigned address from its local peer; ping and iperf3 then
// run both ways, directly between the peers (as offloaded super-frames),
// while the signaling server's relayed-bytes counter stays where it was.
func TestNativeLAN(t *testing.T) {
	RequireCommands(t, "ping", "iperf3", "udhcpc")
	sig := StartSignal(t)
	room := "native-" + randomSuffix(4)
	nsA, nsB := NewNamespace(t, "lan-a"), NewNamespace(t, "lan-b")
	a := StartPeer(t, sig, room, nsA)
	stateB := t.TempDir()
	b := StartPeer(t, sig, room, nsB, "-state-dir", stateB)

	stA := a.WaitLinks(t, 1, 30*time.Second)
	stB := b.WaitLinks(t, 1, 30*time.Second)
	leaseA, leaseB := LeaseDHCP(t, nsA, a.TAP), LeaseDHCP(t, nsB, b.TAP)
	for _, c := range []struct {
		lease Lease
		st    assigned
	}{{leaseA, assigned{stA.IP, stA.Prefix, stA.Gateway}}, {leaseB, assigned{stB.IP, stB.Prefix, stB.Gateway}}} {
		if c.lease.Addr.Addr() != c.st.ip || c.lease.Addr.Bits() != c.st.prefix.Bits() || c.lease.Router != c.st.gateway {
			t.Fatalf("DHCP lease %+v, want the server's assignment %+v", c.lease, c.st)
		}
		if c.lease.MTU <= 0 {
			t.Errorf("lease without an interface MTU: %+v", c.lease)
		}
	}

	before := sig.RelayedBytes(t)
	Ping(t, nsA, leaseB.Addr.Addr(), 10)
	Ping(t, nsB, leaseA.Addr.Addr(), 10)

	StartIperfServer(t, nsB, leaseB.Addr.Addr().String())
	for _, reverse := range []bool{false, true} {
		r := RunIperf(t, nsA, leaseB.Addr.Addr().String(), 3, 0, reverse)
		t.Logf("iperf3 TCP A->B reverse=%v: %.1f Mbit/s", reverse, r.Mbps)
	}
	if after := sig.RelayedBytes(t); after != before {
		t.Errorf("signaling server relayed %v bytes during guest traffic; frames must not pass through it", after-before)
	}

	for _, c := range []struct {
		p     *NativePeer
		other netip.Addr
	}{{a, leaseB.Addr.Addr()}, {b, leaseA.Addr.Addr()}} {
		l, ok := LinkTo(c.p.Status(t), c.other)
		if !ok {
			t.Fatalf("%s has no link to %s", c.p.Name, c.other)
		}
		if l.Path == "" || l.Path == "relay" {
			t.Errorf("%s: link to %s has path %q, want a direct one", c.p.Name, c.other, l.Path)
		}
		if l.RxBytes == 0 || l.TxBytes == 0 {
			t.Errorf("%s: link to %s counted no bytes: %+v", c.p.Name, c.other, l)
		}
		// Two native peers with offload TAPs (the default) carry TCP as
		// super-frames: iperf3's data went by frames far over 1518 bytes.
		if !l.Offload {
			t.Errorf("%s: link to %s did not negotiate offload", c.p.Name, c.other)
		}
		if avg := l.TxBytes / max(l.TxFrames, 1); avg <= 2*peer.MaxFrameSize {
			t.Errorf("%s: link to %s sent %d bytes in %d frames (%d on average): no super-frames", c.p.Name, c.other, l.TxBytes, l.TxFrames, avg)
		}
		// Between native peers on loopback, the link is nativertc's and its
		// probe found that the path carries large SCTP packets.
		if l.Transport != "native/8000" {
			t.Errorf("%s: link to %s has transport %q, want native/8000", c.p.Name, c.other, l.Transport)
		}
		t.Logf("%s -> %s: path %s (%s -> %s), %s, open in %.1f ms, rtt %.2f ms", c.p.Name, c.other, l.Path,
			l.LocalCandidate, l.RemoteCandidate, l.Transport, l.OpenMillis, l.RTTMillis)
	}

	// B dies without a word and comes back: its saved resume token gives it
	// its id and address again (without it the server would hold both for
	// the dead run during its resume grace, and B would join as a new peer).
	b.Kill()
	b2 := StartPeer(t, sig, room, nsB, "-state-dir", stateB)
	st2 := b2.WaitLinks(t, 1, 30*time.Second)
	if st2.ID != stB.ID || st2.IP != stB.IP {
		t.Fatalf("restarted peer is %s at %v, want %s at %v as before the kill", st2.ID, st2.IP, stB.ID, stB.IP)
	}
	if lease := LeaseDHCP(t, nsB, b2.TAP); lease.Addr.Addr() != stB.IP {
		t.Fatalf("restarted peer leased %v, want %v", lease.Addr, stB.IP)
	}
	// The new TAP has a new MAC address; the gratuitous ARP B's peer sends
	// after the DHCP ACK updates A's neighbour entry, so A reaches B at once
	// (without it A kept sending to the old MAC until the entry went stale).
	Ping(t, nsA, stB.IP, 3)
}

type assigned struct {
	ip      netip.Addr
	prefix  netip.Prefix
	gateway netip.Addr
}
