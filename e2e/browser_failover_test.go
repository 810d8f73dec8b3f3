//go:build linux

package e2e

import (
	"fmt"
	"net/url"
	"strings"
	"testing"

	"github.com/peerlan/peerlan/web"
)

// TestBrowserPageSignalFailover gives the page three signaling URLs in
// ?signal=: one on a host the page does not trust, which it must leave out
// with a warning (never dial: the signaling server picks the guest's peers
// and gateway), then a port where nothing listens, then a real bin/signal.
// The wasm peer must skip the dead one and join through the last, and the
// network panel must name that server as the second of two.
func TestBrowserPageSignalFailover(t *testing.T) {
	VerifyNoLeaks(t)
	RequireChromium(t)
	RequirePageAssets(t)
	lanRequireWasm(t)
	// Without the guest image the emulator does not boot: the network does
	// not need it, and the cores are left to the others' tests.
	base := ServePage(t, hidePaths{web.FS(), []string{"dist/guest"}})
	sig := StartSignal(t, "-origins", base)
	dead := fmt.Sprintf("ws://127.0.0.1:%d/signal", FreePort(t))
	foreign := "ws://198.51.100.7/signal" // a documentation address: never dialed
	q := url.Values{"room": {uniqueRoom("failover")}, "signal": {foreign + "," + dead + "," + sig.WS}}
	tab := StartBrowser(t).OpenTab(t, "failover", base+"/?"+q.Encode(), true)

	waitNet(t, tab, "connected", lanJoinTimeout)
	st := Eval[struct {
		ID        string `json:"id"`
		Signal    string `json:"signal"`
		SignalURL string `json:"signal_url"`
	}](tab, `window.peerlanPage.lan.status()`)
	if st.ID == "" || st.Signal != "connected" || st.SignalURL != sig.WS {
		t.Fatalf("lan.status() %+v, want connected through %s", st, sig.WS)
	}
	want := sig.WS + " (2 of 2)"
	shown := waitFor(t, tab, `(() => { const e = document.getElementById("net-server");
		return e.textContent === "–" ? "" : e.textContent; })()`)
	if shown != want {
		t.Errorf("the network panel shows server %q, want %q", shown, want)
	}
	if title := Eval[string](tab, `document.getElementById("net-server").title`); !strings.Contains(title, dead) || strings.Contains(title, foreign) {
		t.Errorf("the server's title %q should list %s and not %s", title, dead, foreign)
	}
	alerts := Eval[string](tab, `document.getElementById("alerts").textContent`)
	if !strings.Contains(alerts, foreign) || !strings.Contains(alerts, "not a host this page trusts") {
		t.Errorf("alerts %q do not say that %s was left out", alerts, foreign)
	}
	if joins := sig.Metrics(t).Sum("peerlan_signal_joins_total"); joins != 1 {
		t.Errorf("bin/signal counted %v joins, want the page's one", joins)
	}
	t.Logf("joined through %s after %s; panel: %q", sig.WS, dead, shown)
}

// TestBrowserPageSignalFailsOverWhenServerDies: the page is joined through
// the first of two bin/signal instances that share a token secret; the
// first is killed, and the wasm peer moves to the second and resumes there
// with its id and address (the resume token verifies on any instance), and
// the panel names the second server.
func TestBrowserPageSignalFailsOverWhenServerDies(t *testing.T) {
	VerifyNoLeaks(t)
	RequireChromium(t)
	RequirePageAssets(t)
	lanRequireWasm(t)
	base := ServePage(t, hidePaths{web.FS(), []string{"dist/guest"}})
	a := StartSignal(t, "-origins", base)
	b := StartSignal(t, "-origins", base, "-secret-file", a.SecretFile()) // the last -secret-file counts
	q := url.Values{"room": {uniqueRoom("failover")}, "signal": {a.WS + "," + b.WS}}
	tab := StartBrowser(t).OpenTab(t, "failover", base+"/?"+q.Encode(), true)
	type status struct {
		ID        string `json:"id"`
		IP        string `json:"ip"`
		Signal    string `json:"signal"`
		SignalURL string `json:"signal_url"`
	}
	read := func() status {
		return Eval[status](tab, `window.peerlanPage.lan ? window.peerlanPage.lan.status() : {}`)
	}
	waitNet(t, tab, "connected", lanJoinTimeout)
	first := read()
	if first.SignalURL != a.WS || first.ID == "" {
		t.Fatalf("lan.status() %+v, want joined through %s", first, a.WS)
	}
	shown := waitFor(t, tab, `(() => { const t = document.getElementById("net-server").textContent;
		return t.includes("1 of 2") ? t : ""; })()`)
	if shown != a.WS+" (1 of 2)" {
		t.Errorf("the panel shows %q before the failover", shown)
	}

	a.Kill()
	shown = waitFor(t, tab, `(() => { const t = document.getElementById("net-server").textContent;
		return t.includes("2 of 2") ? t : ""; })()`)
	if shown != b.WS+" (2 of 2)" {
		t.Errorf("the panel shows %q after the failover, want %s (2 of 2)", shown, b.WS)
	}
	second := read()
	if second.SignalURL != b.WS || second.Signal != "connected" || second.ID != first.ID || second.IP != first.IP {
		t.Fatalf("after %s died: %+v, want connected through %s as %s/%s", a.WS, second, b.WS, first.ID, first.IP)
	}
	if st := tab.State(); st.Net.State != "connected" {
		t.Errorf("the page's network is %q after the failover: the lan should have survived it", st.Net.State)
	}
	t.Logf("resumed as %s/%s on %s after %s was killed", second.ID, second.IP, b.WS, a.WS)
}
