//go:build !js

package peer_test

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/peerlan/peerlan/peer"
	"github.com/peerlan/peerlan/peer/ether"
	"github.com/peerlan/peerlan/peer/porttest"
	"github.com/peerlan/peerlan/signal/proto"
	"github.com/peerlan/peerlan/signal/signaltest"
)

// TestMeshTransports: links between native peers go over package
// nativertc with 8,000-byte SCTP packets on loopback; a peer set to
// standard packets offers pion/webrtc's PeerConnection and answers a native
// offer with standard packets; super-frames cross every one of these links
// whole.
func TestMeshTransports(t *testing.T) {
	srv := startSignal(t, "")
	lo := func(standard bool) *peer.TransportConfig {
		return &peer.TransportConfig{Interfaces: []string{"lo"}, StandardPackets: standard}
	}
	a := runOffloadPeerWith(t, srv.url(), false, lo(false), "a")
	b := runOffloadPeerWith(t, srv.url(), false, lo(false), "b")
	c := runOffloadPeerWith(t, srv.url(), false, lo(true), "c") // offers a to b: webrtc
	peers := []offloadPeer{a, b, c}
	waitFor(t, "links to open", func() bool {
		for _, p := range peers {
			for _, l := range p.Status().Peers {
				if l.State != "open" {
					return false
				}
			}
			if len(p.Status().Peers) != 2 {
				return false
			}
		}
		return true
	})
	// The newcomer offers: b to a natively; c to a and b over webrtc.
	want := map[[2]int]string{{0, 1}: "native/8000", {1, 0}: "native/8000",
		{0, 2}: "webrtc", {2, 0}: "webrtc", {1, 2}: "webrtc", {2, 1}: "webrtc"}
	for i, p := range peers {
		for _, l := range p.Status().Peers {
			j := indexOfIP(peers, l.IP.String())
			if got := l.Transport; got != want[[2]int{i, j}] {
				t.Errorf("link %d to %d: transport %q, want %q", i, j, got, want[[2]int{i, j}])
			}
		}
	}

	// A c-offered link answered natively, with standard packets.
	d := runOffloadPeerWith(t, srv.url(), false, lo(false), "d") // offers natively to c
	waitFor(t, "d's links to open, on both ends", func() bool {
		open := 0
		for _, l := range d.Status().Peers {
			if l.State == "open" {
				open++
			}
		}
		cOpen := false // c's side of the link may open a moment later
		for _, l := range c.Status().Peers {
			cOpen = cOpen || (l.IP == d.Status().IP && l.State == "open")
		}
		return open == 3 && cOpen
	})
	for _, l := range c.Status().Peers {
		if l.IP == d.Status().IP && l.Transport != "native/1200" {
			t.Errorf("c answered d's native offer with transport %q, want native/1200", l.Transport)
		}
	}

	data := make([]byte, 40*1448)
	for i := range data {
		data[i] = byte(i * 7)
	}
	for _, to := range []offloadPeer{b, c, d} {
		super, o := porttest.TCPSuperFrame(ether.Broadcast, mac(0xa), a.Status().IP, to.Status().IP, data, 1448)
		a.guest.Inbound <- porttest.OffloadFrame{Frame: super, Offload: o}
		waitSuperFrame(t, to, super, o)
	}
}

func indexOfIP(peers []offloadPeer, ip string) int {
	for i, p := range peers {
		if p.Status().IP.String() == ip {
			return i
		}
	}
	return -1
}

// TestMeshOffersSDPAfterIgnoredNativeOffer: a peer that says it is native
// but ignores native offers (one older than them) gets a native offer
// first and, once that session times out unanswered, an SDP offer.
func TestMeshOffersSDPAfterIgnoredNativeOffer(t *testing.T) {
	if testing.Short() {
		t.Skip("waits out the negotiation timeout (20 s)")
	}
	srv := startSignal(t, "")
	old := signaltest.Dial(t, srv.url(), nil)
	old.Send(&proto.Join{V: proto.ProtocolVersion, Room: "lab", Kind: proto.KindNative})
	signaltest.Expect[*proto.Welcome](old)
	runOffloadPeer(t, srv.url(), false, "new") // the newcomer offers to old

	var offers []string // "native" or "sdp", in order
	deadline := time.Now().Add(40 * time.Second)
	for len(offers) < 2 || offers[len(offers)-1] != "sdp" {
		m, err := old.Next(time.Until(deadline))
		if err != nil {
			t.Fatalf("offers so far %v; then %v", offers, err)
		}
		s, ok := m.(*proto.Signal)
		if !ok {
			continue
		}
		var n struct {
			Kind   string           `json:"kind"`
			SDP    string           `json:"sdp"`
			Native *json.RawMessage `json:"native"`
		}
		if err := json.Unmarshal(s.Data, &n); err != nil || n.Kind != "offer" {
			continue
		}
		switch {
		case n.Native != nil && n.SDP == "":
			offers = append(offers, "native")
		case n.SDP != "" && n.Native == nil:
			offers = append(offers, "sdp")
		default:
			t.Fatalf("an offer with neither or both: %s", s.Data)
		}
	}
	if offers[0] != "native" {
		t.Errorf("offers %v: the first to a native peer should be native", offers)
	}
}
