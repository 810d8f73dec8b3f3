//go:build linux

package e2e

import (
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"testing"

	"github.com/peerlan/peerlan/signal/proto"
)

// TestBrowserAttach runs web/attach-test.html, a v86 page of its own that
// builds its own V86 and puts it on the LAN with attach.mjs's attachV86
// (served by bin/signal beside the wasm peer), in a room with a native peer:
// the guest leases the room's address over DHCP and pings the native peer's
// namespace, which pings it back, over a direct link. The page is served by
// bin/signal itself, and from an origin of its own that imports attach.mjs,
// v86 and the wasm peer from bin/signal (CORS) and is in its -origins.
func TestBrowserAttach(t *testing.T) {
	VerifyNoLeaks(t)
	RequireChromium(t)
	RequireGuestImage(t)
	RequireNetAdmin(t)
	RequireCommands(t, "ping", "udhcpc")
	t.Run("same-origin", func(t *testing.T) {
		sig := lanServer(t)
		testAttach(t, sig, sig.Base+"/attach-test.html?room=")
	})
	t.Run("other-origin", func(t *testing.T) {
		// The other origin serves the test page only: everything else must
		// come from bin/signal.
		site := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path != "/attach-test.html" {
				http.NotFound(w, r)
				return
			}
			http.ServeFile(w, r, filepath.Join(RepoRoot, "web", "attach-test.html"))
		}))
		t.Cleanup(site.Close)
		sig := lanServer(t, "-origins", site.URL)
		testAttach(t, sig, site.URL+"/attach-test.html?from="+url.QueryEscape(sig.Base+"/")+"&room=")
	})
}

// testAttach opens pageURL plus a room name and runs TestBrowserAttach's
// checks against a native peer in that room.
func testAttach(t *testing.T, sig *SignalServer, pageURL string) {
	room := uniqueRoom("attach")
	ns := NewNamespace(t, "att")
	np := StartPeer(t, sig, room, ns)

	tab := StartBrowser(t).OpenTab(t, "attach", pageURL+room, true)
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
