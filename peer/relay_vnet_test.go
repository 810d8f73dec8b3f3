package peer_test

import (
	"net"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/pion/logging"
	"github.com/pion/transport/v4/vnet"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"

	"github.com/peerlan/peerlan/peer"
	"github.com/peerlan/peerlan/peer/ether"
	"github.com/peerlan/peerlan/signal"
	"github.com/peerlan/peerlan/signal/proto"
	"github.com/peerlan/peerlan/signal/relay"
)

// A relay lab on a pion/transport virtual network (DESIGN.md testing ladder,
// step 2): two peers, each behind its own symmetric NAT, and the embedded
// TURN relay on the "internet" between them. The internet router drops every
// packet between the two NATs' public addresses, so the peers have no direct
// path at all; only the relay connects them. Signaling runs over real
// loopback (it is not what is being tested); ICE and TURN run on the vnet.
//
//	LAN A 10.1.0.0/24          internet 198.51.100.0/24           LAN B 10.2.0.0/24
//	peer A ── NAT A .10 ───────────┬──── ✗ ────────────── NAT B .20 ── peer B
//	                               └── TURN 198.51.100.1:3478 ─┘
//
// newPublicBVNet puts peer B on the internet itself (.30, no NAT), still
// without a direct path to NAT A, so the relay can reach B unasked.
const (
	vnetWAN       = "198.51.100.0/24"
	vnetTURNIP    = "198.51.100.1"
	vnetNATAIP    = "198.51.100.10"
	vnetNATBIP    = "198.51.100.20"
	vnetPublicBIP = "198.51.100.30"
	vnetTURNURL   = "turn:" + vnetTURNIP + ":3478?transport=udp"
)

var vnetTURNSecret = []byte("vnet relay test secret, 32 bytes")

// relayVNet is the lab: the router, the peers' stacks, the relay and the
// dropped-packet count of the blocked direct path.
type relayVNet struct {
	wan        *vnet.Router
	netA, netB *vnet.Net
	relay      *relay.Server
	metrics    *prometheus.Registry
	blocked    chan struct{} // receives (non-blocking) for each dropped direct packet
}

func newRelayVNet(t *testing.T) *relayVNet { return newVNetLab(t, false) }

func newPublicBVNet(t *testing.T) *relayVNet { return newVNetLab(t, true) }

func newVNetLab(t *testing.T, publicB bool) *relayVNet {
	t.Helper()
	lf := logging.NewDefaultLoggerFactory()
	lf.DefaultLogLevel = logging.LogLevelWarn
	wan, err := vnet.NewRouter(&vnet.RouterConfig{CIDR: vnetWAN, LoggerFactory: lf})
	if err != nil {
		t.Fatal(err)
	}
	lab := &relayVNet{wan: wan, metrics: prometheus.NewRegistry(), blocked: make(chan struct{}, 1)}
	natA, natB := netip.MustParseAddr(vnetNATAIP), netip.MustParseAddr(vnetNATBIP)
	if publicB {
		natB = netip.MustParseAddr(vnetPublicBIP)
	}
	wan.AddChunkFilter(func(c vnet.Chunk) bool {
		src, dst := chunkIP(c.SourceAddr()), chunkIP(c.DestinationAddr())
		if (src == natA && dst == natB) || (src == natB && dst == natA) {
			select {
			case lab.blocked <- struct{}{}:
			default:
			}
			return false
		}
		return true
	})

	turnNet, err := vnet.NewNet(&vnet.NetConfig{StaticIPs: []string{vnetTURNIP}})
	if err != nil {
		t.Fatal(err)
	}
	if err := wan.AddNet(turnNet); err != nil {
		t.Fatal(err)
	}
	lan := func(cidr, public string) *vnet.Net {
		r, err := vnet.NewRouter(&vnet.RouterConfig{
			CIDR:      cidr,
			StaticIPs: []string{public},
			// Symmetric NAT: a new mapping per destination, and only
			// the destination of a mapping may answer through it.
			NATType: &vnet.NATType{
				MappingBehavior:   vnet.EndpointAddrPortDependent,
				FilteringBehavior: vnet.EndpointAddrPortDependent,
			},
			LoggerFactory: lf,
		})
		if err != nil {
			t.Fatal(err)
		}
		n, err := vnet.NewNet(&vnet.NetConfig{})
		if err != nil {
			t.Fatal(err)
		}
		if err := r.AddNet(n); err != nil {
			t.Fatal(err)
		}
		if err := wan.AddRouter(r); err != nil {
			t.Fatal(err)
		}
		return n
	}
	lab.netA = lan("10.1.0.0/24", vnetNATAIP)
	if publicB {
		if lab.netB, err = vnet.NewNet(&vnet.NetConfig{StaticIPs: []string{vnetPublicBIP}}); err != nil {
			t.Fatal(err)
		}
		if err := wan.AddNet(lab.netB); err != nil {
			t.Fatal(err)
		}
	} else {
		lab.netB = lan("10.2.0.0/24", vnetNATBIP)
	}
	if err := wan.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = wan.Stop() })

	pc, err := turnNet.ListenPacket("udp4", vnetTURNIP+":3478")
	if err != nil {
		t.Fatal(err)
	}
	lab.relay, err = relay.New(relay.Config{
		Secret:       vnetTURNSecret,
		PacketConns:  []net.PacketConn{pc},
		ListenPacket: turnNet.ListenPacket,
		MinPort:      50000, MaxPort: 50100,
		Logger:     testLogger(t, "turn"),
		Registerer: lab.metrics,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = lab.relay.Close() })
	return lab
}

func chunkIP(a net.Addr) netip.Addr {
	if ua, ok := a.(*net.UDPAddr); ok {
		ip, _ := netip.AddrFromSlice(ua.IP)
		return ip.Unmap()
	}
	return netip.Addr{}
}

// relayedBytes sums peerlan_turn_relayed_bytes_total over both directions.
func (lab *relayVNet) relayedBytes(t *testing.T) float64 {
	t.Helper()
	mfs, err := lab.metrics.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() == "peerlan_turn_relayed_bytes_total" {
			for _, m := range mf.GetMetric() {
				sum += m.GetCounter().GetValue()
			}
		}
	}
	return sum
}

// startTURNSignal runs a signaling server on loopback whose welcomes list
// the vnet relay with credentials minted for each peer, valid for ttl, as
// bin/signal does; with refresh > 0 it sends fresh ones that often.
func startTURNSignal(t *testing.T, ttl, refresh time.Duration) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv, err := signal.New(signal.Config{
		Secret: meshSecret,
		Logger: testLogger(t, "signal"),
		ICEServers: func(_ string, id proto.PeerID) []proto.ICEServer {
			user, pass := relay.MintCredential(vnetTURNSecret, string(id), ttl, time.Now())
			return []proto.ICEServer{{URLs: []string{vnetTURNURL}, Username: user, Credential: pass}}
		},
		ICERefresh: refresh,
	})
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: srv}
	go hs.Serve(ln)
	t.Cleanup(func() {
		hs.Close()
		srv.Close()
	})
	return "ws://" + ln.Addr().String() + "/signal"
}

// startVNetPeer starts a Mesh whose WebRTC stack is n.
func startVNetPeer(t *testing.T, url string, n *vnet.Net, policy peer.RelayPolicy, guestMAC ether.MAC) *meshPeer {
	t.Helper()
	return runMeshPeer(t, peer.MeshConfig{
		Signal:    url,
		Room:      "vnet",
		Relay:     policy,
		Transport: &peer.TransportConfig{Net: n},
	}, guestMAC)
}

// TestMeshRelayFallbackVNet: with the default policy (all), two peers
// without a direct path still link up, through the relay, and exchange
// frames both ways; the relay counted the bytes.
func TestMeshRelayFallbackVNet(t *testing.T) {
	ignore := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, ignore) }) // after the lab's and peers' cleanups
	lab := newRelayVNet(t)
	url := startTURNSignal(t, time.Hour, 0)
	a := startVNetPeer(t, url, lab.netA, peer.RelayAll, mac(0xa))
	b := startVNetPeer(t, url, lab.netB, peer.RelayAll, mac(0xb))
	waitOpen(t, 1, a, b)

	for _, p := range []*meshPeer{a, b} {
		// The selected pair is read in the background once the link opens.
		l := p.Status().Peers[0]
		for deadline := time.Now().Add(5 * time.Second); l.Path == "" && time.Now().Before(deadline); l = p.Status().Peers[0] {
			time.Sleep(50 * time.Millisecond)
		}
		if l.Path != "relay" {
			t.Errorf("%v: link path %q (%s -> %s), want relay", p.mac, l.Path, l.LocalCandidate, l.RemoteCandidate)
		}
		t.Logf("%v: path %s (%s -> %s) open in %.0f ms", p.mac, l.Path, l.LocalCandidate, l.RemoteCandidate, l.OpenMillis)
	}
	select {
	case <-lab.blocked:
	default:
		t.Error("no packet tried the direct path: the test does not prove the fallback")
	}

	before := lab.relayedBytes(t)
	a.send(t, ether.Broadcast, "through the relay")
	b.expectFrame(t, "through the relay")
	b.send(t, a.mac, "and back")
	a.expectFrame(t, "and back")
	if after := lab.relayedBytes(t); after <= before {
		t.Errorf("relayed bytes %v -> %v while frames flowed", before, after)
	}
	if lab.relay.Allocations() == 0 {
		t.Error("no TURN allocation on the relay")
	}
}

// TestMeshRelayFreshCredentialsVNet: a peer that joined with TURN
// credentials that have since expired still links through the relay with a
// peer that joins later, because the signaling server refreshed them.
func TestMeshRelayFreshCredentialsVNet(t *testing.T) {
	ignore := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, ignore) })
	lab := newRelayVNet(t)
	// Expiry has a resolution of one second, so 2 s is the shortest TTL
	// that surely outlives the join.
	const ttl = 2 * time.Second
	url := startTURNSignal(t, ttl, ttl/4)
	a := startVNetPeer(t, url, lab.netA, peer.RelayOnly, mac(0xa))
	for deadline := time.Now().Add(10 * time.Second); a.Status().ID == ""; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("a did not join within 10 s")
		}
	}
	time.Sleep(ttl + 1500*time.Millisecond) // a's welcome credentials are stale now
	b := startVNetPeer(t, url, lab.netB, peer.RelayOnly, mac(0xb))
	waitOpen(t, 1, a, b)
	a.send(t, b.mac, "with fresh credentials")
	b.expectFrame(t, "with fresh credentials")
	if n := lab.relay.Allocations(); n < 2 {
		t.Errorf("%d TURN allocations, want one for each peer", n)
	}
}

// TestMeshDirectPolicyAgainstRelayingPeerVNet: a peer with policy direct
// and one with policy all, without a direct path between them, where the
// relay can reach the direct peer unasked (it is on the internet). The
// all peer's relayed candidate would reach the direct peer as a
// peer-reflexive one and carry the link through the relay; the direct
// peer's offer or answer says "direct", so the other side uses no TURN on
// the link and it does not open. Both orders: the direct peer offering,
// and answering an offer that came with TURN.
func TestMeshDirectPolicyAgainstRelayingPeerVNet(t *testing.T) {
	for _, directOffers := range []bool{true, false} {
		name := "direct peer answers"
		if directOffers {
			name = "direct peer offers"
		}
		t.Run(name, func(t *testing.T) {
			ignore := goleak.IgnoreCurrent()
			t.Cleanup(func() { goleak.VerifyNone(t, ignore) })
			lab := newPublicBVNet(t)
			url := startTURNSignal(t, time.Hour, 0)
			var a, b *meshPeer
			if directOffers { // the newcomer offers
				a = startVNetPeer(t, url, lab.netA, peer.RelayAll, mac(0xa))
				time.Sleep(500 * time.Millisecond)
				b = startVNetPeer(t, url, lab.netB, peer.RelayNever, mac(0xb))
			} else {
				b = startVNetPeer(t, url, lab.netB, peer.RelayNever, mac(0xb))
				time.Sleep(500 * time.Millisecond)
				a = startVNetPeer(t, url, lab.netA, peer.RelayAll, mac(0xa))
			}
			deadline := time.Now().Add(10 * time.Second)
			for time.Now().Before(deadline) {
				for _, p := range []*meshPeer{a, b} {
					for _, l := range p.Status().Peers {
						if l.State == "open" {
							t.Fatalf("%v: link opened via %q (%s -> %s) although one side allows direct paths only",
								p.mac, l.Path, l.LocalCandidate, l.RemoteCandidate)
						}
					}
				}
				time.Sleep(100 * time.Millisecond)
			}
			select {
			case <-lab.blocked:
			default:
				t.Error("no packet tried the direct path: the test does not prove anything")
			}
			for deadline := time.Now().Add(10 * time.Second); lab.relay.Allocations() != 0; time.Sleep(100 * time.Millisecond) {
				if time.Now().After(deadline) {
					t.Fatalf("%d TURN allocations left on a link with a direct-only peer", lab.relay.Allocations())
				}
			}
		})
	}
}

// TestMeshDirectPolicyFailsVNet: with policy direct the same two peers do
// not use the relay, so their link fails, with a status that says why.
func TestMeshDirectPolicyFailsVNet(t *testing.T) {
	ignore := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, ignore) })
	lab := newRelayVNet(t)
	url := startTURNSignal(t, time.Hour, 0)
	a := startVNetPeer(t, url, lab.netA, peer.RelayNever, mac(0xa))
	b := startVNetPeer(t, url, lab.netB, peer.RelayNever, mac(0xb))

	var failed peer.LinkStatus
	deadline := time.Now().Add(60 * time.Second)
	for failed.State != "failed" {
		if time.Now().After(deadline) {
			t.Fatalf("no failed link within 60 s: A %+v, B %+v", a.Status().Peers, b.Status().Peers)
		}
		for _, p := range []*meshPeer{a, b} {
			for _, l := range p.Status().Peers {
				if l.State == "open" {
					t.Fatalf("%v: link opened (path %q) although the direct path is blocked", p.mac, l.Path)
				}
				if l.State == "failed" {
					failed = l
				}
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("failed link: %+v", failed)
	if !strings.Contains(failed.Error, "direct") {
		t.Errorf("failed link's error %q does not say that only direct paths were allowed", failed.Error)
	}
	if n := lab.relay.Allocations(); n != 0 {
		t.Errorf("%d TURN allocations with policy direct", n)
	}
	if got := lab.relayedBytes(t); got != 0 {
		t.Errorf("relay carried %v bytes with policy direct", got)
	}
}
