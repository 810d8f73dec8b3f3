//go:build linux

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"golang.org/x/sys/unix"

	"github.com/peerlan/peerlan/internal/promtext"
	"github.com/peerlan/peerlan/signal/proto"
	"github.com/peerlan/peerlan/signal/relay/relaytest"
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

// relayIperf runs an iperf3 TCP test of secs seconds (after one omitted
// second of slow start) from A's namespace to an iperf3 server in B's
// (reverse: B to A).
func (p *relayPair) relayIperf(t testing.TB, secs int, reverse bool) IperfResult {
	t.Helper()
	return RunIperf(t, p.nsA, p.leaseB.Addr.Addr().String(), secs, 1, reverse)
}

// relayIperfServer starts iperf3 -s in B's namespace.
func (p *relayPair) relayIperfServer(t testing.TB) {
	t.Helper()
	StartIperfServer(t, p.nsB, p.leaseB.Addr.Addr().String())
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

// ---- turnutils_uclient against bin/signal's embedded relay ----

// The uclient lab: bin/signal (page, signaling and TURN) in namespace R at
// 198.51.100.1, so that loopback is not the relay's own address; TURN
// clients in namespace C at 198.51.100.2, with an "internet" echo peer
// (coturn's turnutils_peer) at 203.0.113.7 on C's loopback and another echo
// peer on R's own 127.0.0.1, which the relay must never reach.
const (
	uclRelayIP  = "198.51.100.1"
	uclClientIP = "198.51.100.2"
	uclPeerIP   = "203.0.113.7"
)

type uclientLab struct {
	nsR, nsC *Namespace
}

func newUclientLab(t *testing.T) *uclientLab {
	t.Helper()
	RequireCommands(t, "turnutils_uclient", "turnutils_peer", "ss")
	lab := &uclientLab{nsR: NewNamespace(t, "uclr"), nsC: NewNamespace(t, "uclc")}
	VethPair(t, lab.nsR, "eth0", netip.MustParsePrefix(uclRelayIP+"/24"), lab.nsC, "eth0", netip.MustParsePrefix(uclClientIP+"/24"))
	lab.nsC.MustRun("ip", "addr", "add", uclPeerIP+"/24", "dev", "lo")
	lab.nsR.MustRun("ip", "route", "add", "203.0.113.0/24", "via", uclClientIP)
	relayEchoPeer(t, lab.nsC, uclPeerIP)
	relayEchoPeer(t, lab.nsR, "127.0.0.1")
	return lab
}

// relayEchoPeer runs turnutils_peer (a UDP echo server) on addr:3480 in ns.
func relayEchoPeer(t *testing.T, ns *Namespace, addr string) {
	t.Helper()
	ns.Start("turnutils_peer", "-L", addr, "-p", "3480")
	deadline := time.Now().Add(10 * time.Second)
	for {
		out, _ := ns.Run("ss", "-Hlun", "src", addr+":3480")
		if strings.Contains(out, ":3480") {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("turnutils_peer did not listen on %s:3480 in %s", addr, ns.Name)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// uclientSignal is a bin/signal serving in the lab's relay namespace.
type uclientSignal struct {
	*Process
	lab      *uclientLab
	httpAddr string // host:port of page, signaling and metrics
	turnPort int
}

// startSignal runs bin/signal in namespace R with its embedded TURN relay
// on UDP and TCP turnPort, and its HTTP side on httpPort.
func (lab *uclientLab) startSignal(t *testing.T, httpPort, turnPort int, extra ...string) *uclientSignal {
	t.Helper()
	s := &uclientSignal{lab: lab, httpAddr: net.JoinHostPort(uclRelayIP, strconv.Itoa(httpPort)), turnPort: turnPort}
	turn := net.JoinHostPort(uclRelayIP, strconv.Itoa(turnPort))
	args := append([]string{"-addr", s.httpAddr, "-turn-udp", turn, "-turn-tcp", turn,
		"-turn-secret-file", filepath.Join(t.TempDir(), "turn-secret"), "-log-level", "debug"}, extra...)
	s.Process = lab.nsR.Start(Binary(t, "signal"), args...)
	s.WaitOutput(t, regexp.MustCompile(`peerlan signaling server listening`), 20*time.Second)
	return s
}

// relayInNetns runs f on an OS thread inside namespace ns, then moves the
// thread back. Sockets f opens stay in that namespace whichever thread uses
// them later. The thread goes back to the scheduler only once it is back in
// its own namespace (it may be the main thread, whose namespace is what
// `ip netns pids` reports for the whole process); if it cannot return, it
// exits with the goroutine.
func relayInNetns(ns string, f func()) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		home, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			errc <- err
			return
		}
		defer home.Close()
		target, err := os.Open("/run/netns/" + ns)
		if err != nil {
			errc <- err
			return
		}
		err = unix.Setns(int(target.Fd()), unix.CLONE_NEWNET)
		target.Close()
		if err != nil {
			errc <- err
			return
		}
		f()
		if unix.Setns(int(home.Fd()), unix.CLONE_NEWNET) == nil {
			runtime.UnlockOSThread()
		}
		errc <- nil
	}()
	return <-errc
}

// relayDialer dials TCP from inside namespace ns.
func relayDialer(ns string) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (c net.Conn, err error) {
		if nerr := relayInNetns(ns, func() {
			var d net.Dialer
			c, err = d.DialContext(ctx, network, addr)
		}); nerr != nil {
			return nil, nerr
		}
		return c, err
	}
}

// welcome joins room from namespace C, as a peer would, and returns the
// server's welcome. The connection is closed on return (the peer leaves).
func (s *uclientSignal) welcome(t *testing.T, room string) proto.Welcome {
	t.Helper()
	d := websocket.Dialer{NetDialContext: relayDialer(s.lab.nsC.Name), HandshakeTimeout: 10 * time.Second}
	ws, _, err := d.Dial("ws://"+s.httpAddr+"/signal", nil)
	if err != nil {
		t.Fatalf("dial the signaling server from %s: %v", s.lab.nsC.Name, err)
	}
	defer ws.Close()
	if err := ws.WriteJSON(proto.Join{Type: "join", V: 1, Room: room}); err != nil {
		t.Fatal(err)
	}
	ws.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		_, b, err := ws.ReadMessage()
		if err != nil {
			t.Fatalf("no welcome: %v", err)
		}
		var w proto.Welcome
		if err := json.Unmarshal(b, &w); err != nil {
			t.Fatalf("message %s: %v", b, err)
		}
		if w.Type == "welcome" {
			return w
		}
		t.Logf("before the welcome: %s", b)
	}
}

// metrics scrapes the server's /metrics from namespace C.
func (s *uclientSignal) metrics(t *testing.T) promtext.Samples {
	t.Helper()
	c := http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DialContext: relayDialer(s.lab.nsC.Name)}}
	resp, err := c.Get("http://" + s.httpAddr + "/metrics")
	if err != nil {
		t.Fatalf("scrape metrics: %v", err)
	}
	defer resp.Body.Close()
	m, err := promtext.Parse(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// turnCreds returns the one TURN server entry of a welcome, checking that
// it names this relay and carries a REST credential for the peer.
func (s *uclientSignal) turnCreds(t *testing.T, w proto.Welcome) proto.ICEServer {
	t.Helper()
	if len(w.ICEServers) != 1 {
		t.Fatalf("welcome ice_servers %+v, want the embedded relay", w.ICEServers)
	}
	ice := w.ICEServers[0]
	hostport := net.JoinHostPort(uclRelayIP, strconv.Itoa(s.turnPort))
	want := []string{"turn:" + hostport + "?transport=udp", "turn:" + hostport + "?transport=tcp"}
	if !slices.Equal(ice.URLs, want) {
		t.Errorf("welcome TURN URLs %v, want %v", ice.URLs, want)
	}
	if !strings.HasSuffix(ice.Username, ":"+string(w.ID)) || ice.Credential == "" {
		t.Fatalf("welcome credential %q/%q is not <expiry>:%s", ice.Username, ice.Credential, w.ID)
	}
	return ice
}

// uclient runs turnutils_uclient from namespace C against the relay and
// returns its output and whether it exited zero.
func (s *uclientSignal) uclient(t *testing.T, args ...string) (string, bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	args = append(append([]string{"-L", uclClientIP, "-p", strconv.Itoa(s.turnPort)}, args...), uclRelayIP)
	out, err := s.lab.nsC.Command(ctx, "turnutils_uclient", args...).CombinedOutput()
	t.Logf("turnutils_uclient %s: err=%v\n%s", strings.Join(args, " "), err, relayTail(string(out), 12))
	return string(out), err == nil
}

func relayTail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = append([]string{"..."}, lines[len(lines)-n:]...)
	}
	return strings.Join(lines, "\n")
}

var (
	uclMsgsRE = regexp.MustCompile(`tot_send_msgs=(\d+), tot_recv_msgs=(\d+)`)
	uclLossRE = regexp.MustCompile(`Total lost packets 0 \(0\.000000%\)`)
)

// uclientRelayed checks that a successful uclient run got every message
// back through the relay and returns how many it sent.
func uclientRelayed(t *testing.T, out string, ok bool, want int) {
	t.Helper()
	all := uclMsgsRE.FindAllStringSubmatch(out, -1)
	if !ok || all == nil {
		t.Fatalf("uclient failed (exit ok %v)", ok)
	}
	last := all[len(all)-1]
	sent, _ := strconv.Atoi(last[1])
	recv, _ := strconv.Atoi(last[2])
	if sent < want || recv != sent || !uclLossRE.MatchString(out) {
		t.Fatalf("uclient sent %d, got back %d (want %d, lossless)", sent, recv, want)
	}
}

// TestRelayUclientWelcomeCredentials is issue 6's third-party client proof:
// coturn's turnutils_uclient allocates on bin/signal's embedded relay with
// the credentials a welcome carries and gets its datagrams back from an
// echo peer through the relay, over UDP and TCP; the same client is refused
// without credentials, with credentials bin/signal minted that have since
// expired, and with a password for another peer id.
func TestRelayUclientWelcomeCredentials(t *testing.T) {
	lab := newUclientLab(t)
	sig := lab.startSignal(t, 8080, 3478)
	w := sig.welcome(t, "ucl-"+randomSuffix(3))
	ice := sig.turnCreds(t, w)

	before := sig.metrics(t)
	for _, tc := range []struct {
		name string
		args []string
	}{
		{"udp channel", []string{"-c"}},
		{"udp send indications", []string{"-c", "-s"}},
		{"tcp", []string{"-c", "-t"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"-u", ice.Username, "-w", ice.Credential, "-e", uclPeerIP, "-n", "20", "-l", "200"}, tc.args...)
			out, ok := sig.uclient(t, args...)
			uclientRelayed(t, out, ok, 20)
		})
	}
	after := sig.metrics(t)
	if d := after.Sum("peerlan_turn_relayed_bytes_total") - before.Sum("peerlan_turn_relayed_bytes_total"); d < 3*2*20*200 {
		t.Errorf("relay counted %v relayed bytes for 3 runs of 20 echoed 200-byte messages", d)
	}
	if d := after["peerlan_turn_allocations_total"] - before["peerlan_turn_allocations_total"]; d < 3 {
		t.Errorf("%v allocations for 3 runs", d)
	}
	if after[`peerlan_turn_refusals_total{reason="auth"}`] != 0 {
		t.Errorf("auth refusals for the welcome's credentials: %v", after[`peerlan_turn_refusals_total{reason="auth"}`])
	}

	// A second server whose credentials live one second.
	short := lab.startSignal(t, 8081, 3479, "-turn-ttl", "1s")
	stale := short.turnCreds(t, short.welcome(t, "ucl-"+randomSuffix(3)))
	time.Sleep(2100 * time.Millisecond)

	other := sig.turnCreds(t, sig.welcome(t, "ucl-"+randomSuffix(3)))
	for _, tc := range []struct {
		name string
		sig  *uclientSignal
		args []string
	}{
		{"no credentials", sig, nil},
		{"expired welcome credentials", short, []string{"-u", stale.Username, "-w", stale.Credential}},
		{"another peer's password", sig, []string{"-u", ice.Username, "-w", other.Credential}},
		{"peer id changed", sig, []string{"-u", strings.Replace(ice.Username, string(w.ID), "admin", 1), "-w", ice.Credential}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m0 := tc.sig.metrics(t)
			if _, ok := tc.sig.uclient(t, append(tc.args, "-e", uclPeerIP, "-n", "5", "-c")...); ok {
				t.Fatal("uclient succeeded")
			}
			m1 := tc.sig.metrics(t)
			k := `peerlan_turn_refusals_total{reason="auth"}`
			if m1[k] <= m0[k] {
				t.Errorf("%s %v -> %v", k, m0[k], m1[k])
			}
			if m1["peerlan_turn_allocations_total"] != m0["peerlan_turn_allocations_total"] {
				t.Errorf("an allocation was granted")
			}
		})
	}
	// The relay refused the stale credential for its age, not for its
	// password (the relay logs why at debug level).
	if !strings.Contains(short.Output(), "credential expired") {
		t.Error("the short-lived server did not log an expired credential")
	}
}

// TestRelayUclientRefusesPrivatePeers: with valid credentials from a
// welcome, turnutils_uclient cannot get a permission or channel to loopback,
// the unspecified address, private space, CGNAT space or the cloud metadata
// address, although an echo peer listens on the relay's own 127.0.0.1; a
// hand-made client cannot get them for ::1 and ::ffff:127.0.0.1 and other
// IPv6 forms either. Nothing is relayed, and each refusal is counted under
// its class.
func TestRelayUclientRefusesPrivatePeers(t *testing.T) {
	lab := newUclientLab(t)
	sig := lab.startSignal(t, 8080, 3478)
	ice := sig.turnCreds(t, sig.welcome(t, "ucl-"+randomSuffix(3)))
	for _, tc := range []struct {
		peer, class string
		extra       []string
	}{
		{"127.0.0.1", "loopback", nil},
		{"0.0.0.0", "unspecified", nil},
		{"10.0.0.1", "private", nil},
		{"169.254.169.254", "link-local", nil},
		{"100.64.0.1", "cgnat", nil},
	} {
		for _, method := range []string{"channel", "send"} {
			t.Run(tc.peer+" "+method, func(t *testing.T) {
				k := fmt.Sprintf(`peerlan_turn_refusals_total{reason="permission-%s"}`, tc.class)
				m0 := sig.metrics(t)
				args := append([]string{"-u", ice.Username, "-w", ice.Credential, "-e", tc.peer, "-n", "5", "-c"}, tc.extra...)
				if method == "send" {
					args = append(args, "-s")
				}
				if _, ok := sig.uclient(t, args...); ok {
					t.Fatal("uclient relayed to", tc.peer)
				}
				m1 := sig.metrics(t)
				if m1[k] <= m0[k] {
					t.Errorf("%s %v -> %v: not refused as %s", k, m0[k], m1[k], tc.class)
				}
				if d := m1.Sum("peerlan_turn_relayed_bytes_total") - m0.Sum("peerlan_turn_relayed_bytes_total"); d != 0 {
					t.Errorf("%v bytes relayed", d)
				}
			})
		}
	}

	// ::1 and ::ffff:127.0.0.1: uclient, like any RFC 6156 client, asks
	// for an IPv6 relayed address to reach an IPv6 peer, which pion/turn
	// (IPv4 relays only) does not grant, so it never gets as far as asking
	// for the permission. An attacker would ask anyway: a hand-made client
	// from the client namespace allocates with the welcome's credentials
	// and requests permissions with IPv6-family peer addresses.
	t.Run("ipv6 forms", func(t *testing.T) {
		var pc net.PacketConn
		var err error
		if nerr := relayInNetns(lab.nsC.Name, func() { pc, err = net.ListenPacket("udp4", uclClientIP+":0") }); nerr != nil || err != nil {
			t.Fatalf("socket in %s: %v %v", lab.nsC.Name, nerr, err)
		}
		defer pc.Close()
		server := &net.UDPAddr{IP: net.ParseIP(uclRelayIP), Port: sig.turnPort}
		r := relaytest.NewRawClient(t, pc, server, ice.Username, ice.Credential)
		r.Allocate()
		for _, tc := range []struct{ peer, class string }{
			{"::1", "loopback"},
			{"::ffff:127.0.0.1", "loopback"},
			{"::ffff:10.0.0.1", "private"},
			{"::ffff:169.254.169.254", "link-local"},
			{"::ffff:0.0.0.0", "unspecified"},
			{"::", "unspecified"},
		} {
			k := fmt.Sprintf(`peerlan_turn_refusals_total{reason="permission-%s"}`, tc.class)
			m0 := sig.metrics(t)
			if r.CreatePermissionV6(netip.MustParseAddr(tc.peer)) {
				t.Errorf("permission to %s granted", tc.peer)
			}
			if m1 := sig.metrics(t); m1[k] != m0[k]+1 {
				t.Errorf("%s: %s %v -> %v", tc.peer, k, m0[k], m1[k])
			}
		}
		// The same encoding of a global address is granted: the refusals
		// are about the addresses, not the encoding.
		if !r.CreatePermissionV6(netip.MustParseAddr("::ffff:" + uclPeerIP)) {
			t.Errorf("permission to ::ffff:%s refused", uclPeerIP)
		}
	})
	if out := sig.metrics(t).Sum("peerlan_turn_relayed_bytes_total"); out != 0 {
		t.Errorf("%v bytes relayed in all", out)
	}
}

// TestRelayBrowserPing is issue 6's browser proof: two v86 guests in two
// Chromium processes, both pages opened with relay=relay, join one room on
// a bin/signal running the embedded TURN relay on loopback (see the note at
// the top of this file) and ping each other. Each tab's selected ICE pair
// is a relay pair, the relay's relayed-bytes counter grew by at least the
// pings' bytes, and the signaling server relayed nothing meanwhile.
func TestRelayBrowserPing(t *testing.T) {
	VerifyNoLeaks(t)
	RequireChromium(t)
	RequireGuestImage(t)
	turnAddr := fmt.Sprintf("127.0.0.1:%d", relayFreeUDPPort(t))
	sig := lanServer(t, "-turn-udp", turnAddr, "-turn-ports", "50800-50999")
	url := sig.Base + "/?relay=relay&room=" + uniqueRoom("relay")

	bA, bB := StartBrowser(t), StartBrowser(t)
	a, b := lanWaitGuest(t, bA.OpenTab(t, "A", url, true)), lanWaitGuest(t, bB.OpenTab(t, "B", url, true))
	if a.IP == b.IP {
		t.Fatalf("both guests have %s", a.IP)
	}
	lanWaitLink(t, a.Tab, b.IP, lanJoinTimeout)
	lanWaitLink(t, b.Tab, a.IP, lanJoinTimeout)

	sigBefore, turnBefore := sig.RelayedBytes(t), turnRelayedBytes(t, sig)
	lanPing(t, a, b.IP, 5, "0.5")
	lanPing(t, b, a.IP, 5, "0.5")
	sigAfter, turnAfter := sig.RelayedBytes(t), turnRelayedBytes(t, sig)
	if sigAfter != sigBefore {
		t.Errorf("the signaling server relayed %v bytes while the guests pinged; frames must not pass through it", sigAfter-sigBefore)
	}
	// 20 ICMP packets (5 echoes each way) of 98-byte frames, each through
	// two allocations.
	if turnAfter-turnBefore < 2*20*98 {
		t.Errorf("TURN relayed %v bytes for 5 pings each way", turnAfter-turnBefore)
	}
	t.Logf("TURN relayed %.0f bytes during the pings", turnAfter-turnBefore)
	for _, c := range []struct {
		g     *lanGuest
		other netip.Addr
	}{{a, b.IP}, {b, a.IP}} {
		st := lanStatus(t, c.g.Tab)
		if st.Relay != "relay" {
			t.Errorf("tab %s: relay policy %q, want relay", c.g.name, st.Relay)
		}
		l, ok := LinkTo(st, c.other)
		if !ok || l.State != "open" || l.Path != "relay" || l.LocalCandidate != "relay" {
			t.Errorf("tab %s: link to %s %+v, want open with a relay pair", c.g.name, c.other, l)
			continue
		}
		t.Logf("tab %s -> %s: path %s (%s -> %s), open in %.0f ms, ICE RTT %.2f ms", c.g.name, c.other,
			l.Path, l.LocalCandidate, l.RemoteCandidate, l.OpenMillis, l.RTTMillis)
	}
	if got := Eval[string](a.Tab, `document.getElementById("net-relay").textContent`); !strings.Contains(got, "relay only") {
		t.Errorf("tab A's network panel shows the policy as %q", got)
	}
}
