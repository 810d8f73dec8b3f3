//go:build linux

package e2e

import (
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"regexp"
	"strconv"
	"testing"
	"time"
)

// Where the relay lives in these tests. bin/peer's WebRTC runs in the root
// namespace on loopback only (StartPeer), and the root namespace's routing
// must not change, so the relay listens on 127.0.0.1 too. That needs no
// allow list: with policy relay both peers only have relay candidates, and
// each sends to the other's relayed address, which is the relay's own
// address (127.0.0.1) at a live allocation's port, the one exception the
// relay makes to its refusal of loopback (DESIGN.md invariant 8). A write to
// any other loopback port would still be dropped. The refusals themselves
// are proven with the relay on a non-loopback address in a namespace
// (TestRelayUclient*).

// relayFreeUDPPort returns a UDP port on 127.0.0.1 that was free a moment
// ago, whose TCP twin was free too.
func relayFreeUDPPort(t testing.TB) int {
	t.Helper()
	for range 20 {
		port := FreePort(t)
		pc, err := net.ListenPacket("udp4", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if err == nil {
			pc.Close()
			return port
		}
	}
	t.Fatal("no free UDP port on 127.0.0.1")
	return 0
}

// relayPair is two bin/peer processes with policy relay, each with its TAP
// in a namespace of its own and a DHCP lease on it.
type relayPair struct {
	nsA, nsB       *Namespace
	a, b           *NativePeer
	leaseA, leaseB Lease
	// connect is how long the slower of the two took from its start to an
	// open link, as the test saw it (process start included).
	connect time.Duration
	// openMillis is the slower link's own measure: session start to open
	// data channel.
	openMillis float64
}

func relayStartPair(t testing.TB, sig *SignalServer, label string, extra ...string) *relayPair {
	t.Helper()
	room := label + "-" + randomSuffix(4)
	p := &relayPair{nsA: NewNamespace(t, label+"a"), nsB: NewNamespace(t, label+"b")}
	flags := append([]string{"-relay", "relay"}, extra...)
	start := time.Now()
	p.a = StartPeer(t, sig, room, p.nsA, flags...)
	p.b = StartPeer(t, sig, room, p.nsB, flags...)
	stA := p.a.WaitLinks(t, 1, 45*time.Second)
	stB := p.b.WaitLinks(t, 1, 45*time.Second)
	p.connect = time.Since(start)
	p.openMillis = max(stA.Peers[0].OpenMillis, stB.Peers[0].OpenMillis)
	p.leaseA, p.leaseB = LeaseDHCP(t, p.nsA, p.a.TAP), LeaseDHCP(t, p.nsB, p.b.TAP)
	return p
}

// relayCheckPaths fails unless both peers' links run through the relay.
func (p *relayPair) relayCheckPaths(t testing.TB) {
	t.Helper()
	for _, c := range []struct {
		p     *NativePeer
		other netip.Addr
	}{{p.a, p.leaseB.Addr.Addr()}, {p.b, p.leaseA.Addr.Addr()}} {
		l, ok := LinkTo(c.p.Status(t), c.other)
		if !ok {
			t.Fatalf("%s has no link to %s", c.p.Name, c.other)
		}
		if l.Path != "relay" || l.LocalCandidate != "relay" {
			t.Errorf("%s: link to %s has path %q (%s -> %s), want relay", c.p.Name, c.other, l.Path, l.LocalCandidate, l.RemoteCandidate)
		}
		t.Logf("%s -> %s: path %s (%s -> %s), open in %.1f ms, rtt %.2f ms, rx %d tx %d bytes", c.p.Name, c.other,
			l.Path, l.LocalCandidate, l.RemoteCandidate, l.OpenMillis, l.RTTMillis, l.RxBytes, l.TxBytes)
	}
}

// iperfResult is what relayIperf measured.
type iperfResult struct {
	Bytes float64 // received by the receiver
	Mbps  float64
}

// relayIperf runs an iperf3 TCP test of secs seconds from A's namespace to
// an iperf3 server in B's (reverse: B to A).
func (p *relayPair) relayIperf(t testing.TB, secs int, reverse bool) iperfResult {
	t.Helper()
	server := p.leaseB.Addr.Addr().String()
	args := []string{"-c", server, "-t", strconv.Itoa(secs), "-J"}
	if reverse {
		args = append(args, "-R")
	}
	out, err := p.nsA.Run("iperf3", args...)
	if err != nil {
		t.Fatalf("iperf3 %v: %v", args, err)
	}
	var res struct {
		End struct {
			SumReceived struct {
				Bytes         float64 `json:"bytes"`
				BitsPerSecond float64 `json:"bits_per_second"`
			} `json:"sum_received"`
		} `json:"end"`
		Error string `json:"error"`
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil || res.Error != "" || res.End.SumReceived.Bytes == 0 {
		t.Fatalf("iperf3 %v: %v %s\n%s", args, err, res.Error, out)
	}
	return iperfResult{Bytes: res.End.SumReceived.Bytes, Mbps: res.End.SumReceived.BitsPerSecond / 1e6}
}

// relayIperfServer starts iperf3 -s in B's namespace.
func (p *relayPair) relayIperfServer(t testing.TB) {
	t.Helper()
	srv := p.nsB.Start("iperf3", "-s", "--forceflush", "-B", p.leaseB.Addr.Addr().String())
	srv.WaitOutput(t, regexp.MustCompile(`Server listening`), 10*time.Second)
}

// turnRelayedBytes sums the embedded relay's relayed payload bytes.
func turnRelayedBytes(t testing.TB, sig *SignalServer) float64 {
	t.Helper()
	return sig.Metrics(t).Sum("peerlan_turn_relayed_bytes_total")
}

// TestRelayNativeIperf is issue 6's native proof: two bin/peer namespaces
// with policy relay link up through bin/signal's embedded TURN relay; ping
// and iperf3 both ways run through it. The links' selected pairs are relay
// pairs, the relay's relayed-bytes counter grew by at least what iperf3
// moved, and the signaling server relayed nothing meanwhile.
func TestRelayNativeIperf(t *testing.T) {
	RequireCommands(t, "ping", "iperf3", "udhcpc")
	turnAddr := fmt.Sprintf("127.0.0.1:%d", relayFreeUDPPort(t))
	sig := StartSignal(t, "-turn-udp", turnAddr, "-turn-ports", "50200-50399")
	p := relayStartPair(t, sig, "rly")
	t.Logf("linked through the relay in %v (link open in %.0f ms)", p.connect.Round(time.Millisecond), p.openMillis)
	if got := sig.Metrics(t).Sum("peerlan_turn_allocations"); got < 2 {
		t.Errorf("%v TURN allocations, want one per peer at least", got)
	}

	sigBefore, turnBefore := sig.RelayedBytes(t), turnRelayedBytes(t, sig)
	Ping(t, p.nsA, p.leaseB.Addr.Addr(), 10)
	Ping(t, p.nsB, p.leaseA.Addr.Addr(), 10)
	if turnAfter := turnRelayedBytes(t, sig); turnAfter-turnBefore < 2*10*84 {
		t.Errorf("TURN relayed %v bytes for 20 pings, want at least their ICMP bytes", turnAfter-turnBefore)
	}

	p.relayIperfServer(t)
	var moved float64
	for _, reverse := range []bool{false, true} {
		turn0 := turnRelayedBytes(t, sig)
		r := p.relayIperf(t, 3, reverse)
		turn1 := turnRelayedBytes(t, sig)
		moved += r.Bytes
		t.Logf("iperf3 TCP through the relay, reverse=%v: %.1f Mbit/s, %.1f MB; TURN relayed %.1f MB", reverse, r.Mbps, r.Bytes/1e6, (turn1-turn0)/1e6)
		// Each byte crosses the relay twice (into A's allocation, out of
		// B's), with SCTP, DTLS and TCP/IP headers on top.
		if turn1-turn0 < 2*r.Bytes {
			t.Errorf("TURN relayed %v bytes while iperf3 moved %v (reverse %v)", turn1-turn0, r.Bytes, reverse)
		}
	}
	if after := sig.RelayedBytes(t); after != sigBefore {
		t.Errorf("signaling server relayed %v bytes during guest traffic; frames must not pass through it", after-sigBefore)
	}
	p.relayCheckPaths(t)
	m := sig.Metrics(t)
	for _, k := range []string{`peerlan_turn_refusals_total{reason="auth"}`, `peerlan_turn_dropped_packets_total{reason="own-address"}`} {
		if m[k] != 0 {
			t.Errorf("%s = %v", k, m[k])
		}
	}
	t.Logf("iperf3 moved %.1f MB through the relay", moved/1e6)
}
