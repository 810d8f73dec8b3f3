//go:build linux

package e2e

import (
	"testing"

	"github.com/peerlan/peerlan/signal/proto"
)

// TestBrowserAttach runs web/attach-test.html, a v86 page of its own that
// builds its own V86 and puts it on the LAN with attach.mjs's attachV86
// (served by bin/signal beside the wasm peer), in a room with a native peer:
// the guest leases the room's address over DHCP and pings the native peer's
// namespace, which pings it back, over a direct link.
func TestBrowserAttach(t *testing.T) {
	VerifyNoLeaks(t)
	RequireChromium(t)
	RequireGuestImage(t)
	RequireNetAdmin(t)
	RequireCommands(t, "ping", "udhcpc")
	sig := lanServer(t)
	room := uniqueRoom("attach")
	ns := NewNamespace(t, "att")
	np := StartPeer(t, sig, room, ns)

	tab := StartBrowser(t).OpenTab(t, "attach", sig.Base+"/attach-test.html?room="+room, true)
	g := lanWaitGuest(t, tab) // the lease is the address the room gave the attached peer
	np.WaitLinks(t, 1, lanJoinTimeout)
	lease := LeaseDHCP(t, ns, np.TAP)
	nativeIP := lease.Addr.Addr()
	lanWaitLink(t, tab, nativeIP, lanJoinTimeout)

	before := sig.RelayedBytes(t)
	lanPing(t, g, nativeIP, 3, "0.5")
	lanNativePing(t, ns, g.IP, 3)
	if after := sig.RelayedBytes(t); after != before {
		t.Errorf("the signaling server relayed %v bytes during the pings", after-before)
	}
	lanCheckDirect(t, tab, nativeIP)
	st := tab.State()
	if st.Frames.ToLan == 0 || st.Frames.FromLan == 0 {
		t.Errorf("attachment frame counters %+v after the pings", st.Frames)
	}
	if l, ok := LinkTo(np.Status(t), g.IP); !ok || l.Kind != proto.KindBrowser {
		t.Errorf("the native peer sees the attached page as %+v, want kind browser", l)
	}

	// detach() unhooks the card and leaves the room: the native peer's
	// link to it goes away.
	Eval[bool](tab, `window.peerlanPage.attachment.detach().then(() => true)`)
	np.WaitLinks(t, 0, lanJoinTimeout)
	deadline := 0
	for len(np.Status(t).Peers) != 0 {
		if deadline++; deadline > 100 {
			t.Fatalf("the native peer still lists the detached page: %+v", np.Status(t).Peers)
		}
		tab.sleep(pollInterval)
	}
}
