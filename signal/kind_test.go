package signal_test

import (
	"testing"

	"github.com/peerlan/peerlan/signal/proto"
	"github.com/peerlan/peerlan/signal/signaltest"
)

// TestPeerKindPassedOn: the kind a join names reaches the other peers in
// their welcome and in peer-joined; a join without one (an older peer) and
// one with a value outside the enum join as unknown.
func TestPeerKindPassedOn(t *testing.T) {
	ts := signaltest.Start(t, nil)
	a, _ := signaltest.Join(t, ts, "lab", func(j *proto.Join) { j.Kind = proto.KindBrowser })
	_, wb := signaltest.Join(t, ts, "lab", func(j *proto.Join) { j.Kind = proto.KindNative })
	if len(wb.Peers) != 1 || wb.Peers[0].Kind != proto.KindBrowser {
		t.Fatalf("welcome peers %+v, want the first peer as %q", wb.Peers, proto.KindBrowser)
	}
	if pj := signaltest.Expect[*proto.PeerJoined](a); pj.Peer.Kind != proto.KindNative {
		t.Fatalf("peer-joined %+v, want kind %q", pj.Peer, proto.KindNative)
	}
	for _, k := range []proto.Kind{"", "toaster", proto.Kind(make([]byte, 4096))} {
		_, w := signaltest.Join(t, ts, "lab", func(j *proto.Join) { j.Kind = k })
		if pj := signaltest.Expect[*proto.PeerJoined](a); pj.Peer.ID != w.ID || pj.Peer.Kind != "" {
			t.Fatalf("join with kind %.20q: peer-joined %+v, want it joined with no kind", k, pj.Peer)
		}
	}
}
