package relay

import (
	"context"
	"net"
	"net/netip"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/peerlan/peerlan/signal/relay/relaytest"
)

// coturnLab is a relay in its own network namespace at 198.51.100.1 (so
// loopback is not its own address), and a second namespace holding TURN
// clients (198.51.100.2) and an "internet" peer (203.0.113.7) running
// coturn's turnutils_peer, a UDP echo server.
type coturnLab struct {
	relayNS, netNS *testNetns
	server         *Server
}

const (
	labRelayIP  = "198.51.100.1"
	labClientIP = "198.51.100.2"
	labPeerIP   = "203.0.113.7"
)

func newCoturnLab(t *testing.T, mod func(*Config)) *coturnLab {
	t.Helper()
	needNetns(t, "turnutils_uclient", "turnutils_peer")
	lab := &coturnLab{relayNS: newTestNetns(t, "plturn-r"), netNS: newTestNetns(t, "plturn-n")}
	linkNetns(t, lab.relayNS, labRelayIP+"/24", lab.netNS, labClientIP+"/24")
	lab.netNS.ip(t, "addr", "add", labPeerIP+"/24", "dev", "lo")
	lab.relayNS.ip(t, "route", "add", "203.0.113.0/24", "via", labClientIP)

	pc, err := lab.relayNS.listenPacket("udp4", labRelayIP+":3478")
	if err != nil {
		t.Fatal(err)
	}
	tcp, err := lab.relayNS.listen("tcp4", labRelayIP+":3478")
	if err != nil {
		t.Fatal(err)
	}
	tlsL, err := lab.relayNS.listen("tcp4", labRelayIP+":5349")
	if err != nil {
		t.Fatal(err)
	}
	tlsConfig, _ := selfSignedTLS(t)
	cfg := Config{
		Secret:       testSecret,
		PacketConns:  []net.PacketConn{pc},
		Listeners:    []net.Listener{tcp},
		TLSListeners: []net.Listener{tlsL},
		TLSConfig:    tlsConfig,
		ListenPacket: lab.relayNS.listenPacket,
		Logger:       testLogger(t),
	}
	if mod != nil {
		mod(&cfg)
	}
	lab.server = startServer(t, cfg)
	if got := lab.server.RelayIP(); got != netip.MustParseAddr(labRelayIP) {
		t.Fatalf("RelayIP %s", got)
	}
	return lab
}

// startPeer runs turnutils_peer (a UDP echo server) in ns on addr:3480.
func startPeer(t *testing.T, ns *testNetns, addr string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	cmd := ns.command(ctx, "turnutils_peer", "-L", addr, "-p", "3480")
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("turnutils_peer %s output:\n%s", addr, out.String())
		}
	})
	// Wait until it listens.
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		ss, _ := exec.Command("ip", "netns", "exec", ns.name, "ss", "-Hlun", "src", addr+":3480").Output()
		if strings.Contains(string(ss), ":3480") {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("turnutils_peer did not start on %s:3480:\n%s", addr, out.String())
}

// uclient runs turnutils_uclient against the lab relay from the client
// namespace and returns its output and whether it exited zero.
func (lab *coturnLab) uclient(t *testing.T, args ...string) (string, bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	args = append(append([]string{"-L", labClientIP}, args...), labRelayIP)
	out, err := lab.netNS.command(ctx, "turnutils_uclient", args...).CombinedOutput()
	t.Logf("turnutils_uclient %s: err=%v\n%s", strings.Join(args, " "), err, out)
	return string(out), err == nil
}

// uclientStats are the totals turnutils_uclient prints on success.
type uclientStats struct {
	sentMsgs, recvMsgs, sentBytes, recvBytes int
	lossless                                 bool
}

var (
	reMsgs  = regexp.MustCompile(`tot_send_msgs=(\d+), tot_recv_msgs=(\d+)`)
	reBytes = regexp.MustCompile(`tot_send_bytes ~ (\d+), tot_recv_bytes ~ (\d+)`)
)

func parseUclient(out string) (uclientStats, bool) {
	// uclient prints running totals; the last ones are final.
	ms, bs := reMsgs.FindAllStringSubmatch(out, -1), reBytes.FindAllStringSubmatch(out, -1)
	if ms == nil || bs == nil {
		return uclientStats{}, false
	}
	m, b := ms[len(ms)-1], bs[len(bs)-1]
	atoi := func(s string) int { n, _ := strconv.Atoi(s); return n }
	return uclientStats{
		sentMsgs: atoi(m[1]), recvMsgs: atoi(m[2]), sentBytes: atoi(b[1]), recvBytes: atoi(b[2]),
		lossless: strings.Contains(out, "Total lost packets 0 (0.000000%)"),
	}, true
}

// TestCoturnClientRelays: coturn's own test client allocates on the relay
// with credentials minted here (by the REST secret, or as an explicit
// username/password), over UDP, TCP and TLS, with channels and with send
// indications, and its datagrams come back from coturn's echo peer.
func TestCoturnClientRelays(t *testing.T) {
	lab := newCoturnLab(t, nil)
	startPeer(t, lab.netNS, labPeerIP)
	secret := string(testSecret)
	minted := mint("minted", time.Hour)
	cases := []struct {
		name string
		args []string
	}{
		{"udp rest secret", []string{"-W", secret, "-u", "u1", "-e", labPeerIP, "-c"}},
		{"udp minted password", []string{"-u", minted.user, "-w", minted.pass, "-e", labPeerIP, "-c"}},
		{"udp send indications", []string{"-W", secret, "-u", "u2", "-e", labPeerIP, "-c", "-s"}},
		{"udp rtp and rtcp", []string{"-W", secret, "-u", "u3", "-e", labPeerIP}},
		{"tcp", []string{"-W", secret, "-u", "u4", "-e", labPeerIP, "-c", "-t"}},
		{"tls", []string{"-W", secret, "-u", "u5", "-e", labPeerIP, "-c", "-t", "-S", "-p", "5349"}},
		// Two clients relay to each other's relayed addresses: the
		// relay's own address is allowed.
		{"client to client", []string{"-W", secret, "-u", "u6", "-c", "-y"}},
	}
	var (
		mu               sync.Mutex
		sent, recv, runs int
	)
	t.Run("clients", func(t *testing.T) {
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				t.Parallel()
				out, ok := lab.uclient(t, append(tc.args, "-n", "20", "-l", "120")...)
				st, parsed := parseUclient(out)
				if !ok || !parsed {
					t.Fatalf("uclient failed (exit ok %v, stats parsed %v)", ok, parsed)
				}
				if st.sentMsgs < 20 || st.recvMsgs != st.sentMsgs || !st.lossless {
					t.Fatalf("uclient stats %+v", st)
				}
				mu.Lock()
				sent += st.sentBytes
				recv += st.recvBytes
				runs++
				mu.Unlock()
			})
		}
	})
	m := lab.server.metrics
	out, in := metricValue(m.bytesOut), metricValue(m.bytesIn)
	t.Logf("%d runs: uclient sent %d and received %d bytes; relay counted %v out, %v in", runs, sent, recv, out, in)
	if out < float64(sent) || in < float64(recv) {
		t.Errorf("relayed bytes out %v in %v, uclient sent %d received %d", out, in, sent, recv)
	}
	if got := metricValue(m.allocationsTotal); got < float64(runs) {
		t.Errorf("allocations_total %v after %d runs", got, runs)
	}
	// UDP allocations outlive uclient (it does not delete them); TCP and
	// TLS ones end with their connection. The gauge tracks pion's count.
	eventually(t, "allocations gauge to match the server", func() bool {
		return metricValue(m.allocations) == float64(lab.server.Allocations())
	})
	if got := metricValue(m.refusals.WithLabelValues(ReasonAuth)); got != 0 {
		t.Errorf("auth refusals %v for valid credentials", got)
	}
}

// TestCoturnClientRefused: no credentials, expired credentials, a wrong
// secret and peers in private space are all refused, with nothing relayed,
// although an echo peer listens on the relay's own loopback.
func TestCoturnClientRefused(t *testing.T) {
	lab := newCoturnLab(t, func(c *Config) { c.MaxAllocationsPerUser = 2 })
	startPeer(t, lab.relayNS, "127.0.0.1")
	startPeer(t, lab.netNS, labPeerIP)
	m := lab.server.metrics
	secret := string(testSecret)
	expired := func() creds {
		u, p := MintCredential(testSecret, "late", -time.Minute, time.Now())
		return creds{u, p}
	}()

	for _, tc := range []struct {
		name string
		args []string
	}{
		{"no credentials", []string{"-e", labPeerIP, "-c"}},
		{"expired", []string{"-u", expired.user, "-w", expired.pass, "-e", labPeerIP, "-c"}},
		{"wrong secret", []string{"-W", "not-the-relay-secret", "-u", "x", "-e", labPeerIP, "-c"}},
		{"user changed", []string{"-u", strings.Replace(mint("eve", time.Hour).user, "eve", "adm", 1),
			"-w", mint("eve", time.Hour).pass, "-e", labPeerIP, "-c"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := metricValue(m.refusals.WithLabelValues(ReasonAuth))
			if _, ok := lab.uclient(t, append(tc.args, "-n", "5")...); ok {
				t.Fatal("uclient succeeded")
			}
			if got := metricValue(m.refusals.WithLabelValues(ReasonAuth)); got <= before {
				t.Fatalf("auth refusals %v -> %v", before, got)
			}
		})
	}
	if n := lab.server.Allocations(); n != 0 {
		t.Fatalf("%d allocations after refused credentials", n)
	}

	for _, tc := range []struct {
		peer  string
		class AddrClass
	}{
		{"127.0.0.1", ClassLoopback},
		{"0.0.0.0", ClassUnspecified},
		{"10.0.0.1", ClassPrivate},
		{"169.254.169.254", ClassLinkLocal},
		{"100.64.0.1", ClassCGNAT},
	} {
		for _, method := range []string{"channel", "send"} {
			t.Run(tc.peer+" "+method, func(t *testing.T) {
				reason := "permission-" + string(tc.class)
				before := metricValue(m.refusals.WithLabelValues(reason))
				args := []string{"-W", secret, "-u", "p-" + tc.peer + method, "-e", tc.peer, "-n", "5", "-c"}
				if method == "send" {
					args = append(args, "-s")
				}
				if _, ok := lab.uclient(t, args...); ok {
					t.Fatal("uclient relayed to", tc.peer)
				}
				if got := metricValue(m.refusals.WithLabelValues(reason)); got <= before {
					t.Fatalf("refusals{%s} %v -> %v", reason, before, got)
				}
			})
		}
	}

	// uclient asks for a relay of the peer's address family, so IPv6 peer
	// forms are sent by a hand-made client from the client namespace.
	t.Run("ipv6 forms", func(t *testing.T) {
		pc, err := lab.netNS.listenPacket("udp4", labClientIP+":0")
		if err != nil {
			t.Fatal(err)
		}
		defer pc.Close()
		v6 := mint("v6", time.Hour)
		r := relaytest.NewRawClient(t, pc, lab.server.Addrs().UDP[0], v6.user, v6.pass)
		r.Allocate()
		for _, peer := range []string{"::1", "::ffff:127.0.0.1", "::ffff:10.0.0.1", "::ffff:0.0.0.0", "fe80::1"} {
			if r.CreatePermissionV6(netip.MustParseAddr(peer)) {
				t.Errorf("permission to %s granted", peer)
			}
		}
	})

	if out := metricValue(m.bytesOut); out != 0 {
		t.Errorf("%v bytes relayed to refused peers", out)
	}

	t.Run("quota", func(t *testing.T) {
		before := metricValue(m.refusals.WithLabelValues(ReasonQuota))
		if _, ok := lab.uclient(t, "-W", secret, "-u", "many", "-e", labPeerIP, "-n", "5", "-c", "-m", "3"); ok {
			t.Fatal("three allocations granted to one user with quota 2")
		}
		if got := metricValue(m.refusals.WithLabelValues(ReasonQuota)); got <= before {
			t.Fatalf("quota refusals %v -> %v", before, got)
		}
	})
}

// TestCoturnAllowList: the refusal of loopback is lifted for a lab that
// allow-lists it, and uclient then reaches an echo peer there.
func TestCoturnAllowList(t *testing.T) {
	lab := newCoturnLab(t, func(c *Config) {
		c.AllowPeers = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
	})
	startPeer(t, lab.relayNS, "127.0.0.1")
	out, ok := lab.uclient(t, "-W", string(testSecret), "-u", "lab", "-e", "127.0.0.1", "-n", "20", "-c")
	st, parsed := parseUclient(out)
	if !ok || !parsed || st.recvMsgs != st.sentMsgs || st.sentMsgs < 20 {
		t.Fatalf("uclient to allow-listed 127.0.0.1 failed: ok %v stats %+v", ok, st)
	}
	if got := metricValue(lab.server.metrics.bytesIn); got < float64(st.recvBytes) {
		t.Fatalf("relayed bytes in %v, uclient received %d", got, st.recvBytes)
	}
	if got := metricValue(lab.server.metrics.refusals.WithLabelValues("permission-loopback")); got != 0 {
		t.Fatalf("loopback refused %v times despite the allow list", got)
	}
}
