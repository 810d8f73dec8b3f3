//go:build linux

package e2e

// Browser guests on a real LAN: the page, the wasm peer (wasm/, loaded from
// dist/peerlan.wasm), the signaling server (bin/signal) and Chromium's
// WebRTC, with no stand-ins.

import (
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/peerlan/peerlan/peer"
	"github.com/peerlan/peerlan/web"
)

// lanLeaseRE matches the guest's lease line (guest/udhcpc.script).
var lanLeaseRE = regexp.MustCompile(`peerlan: eth0 (\d+\.\d+\.\d+\.\d+)/(\d+) router (\S+) mtu (\d+)`)

// lanPingTimeRE matches one reply line of busybox ping.
var lanPingTimeRE = regexp.MustCompile(`(?m)^\d+ bytes from \S+: seq=\d+ ttl=\d+ time=([\d.]+) ms$`)

// lanJoinTimeout bounds how long a tab may take from ready to an open link.
const lanJoinTimeout = 90 * time.Second

// lanRequireWasm skips the test when the wasm peer has not been built, and
// returns the directory to serve the page from: web/ in the checkout, so
// that the test uses the wasm just built rather than whatever bin/signal
// embedded when it was built.
func lanRequireWasm(t testing.TB) string {
	t.Helper()
	dir := filepath.Join(RepoRoot, "web")
	for _, name := range []string{"dist/peerlan.wasm", "dist/wasm_exec.js"} {
		if _, err := os.Stat(filepath.Join(dir, name)); err != nil {
			skipOrFail(t, "wasm peer not built: web/%s is missing; run `make build` first", name)
		}
		if _, err := fs.Stat(web.FS(), name); err != nil {
			skipOrFail(t, "wasm peer not built when this test was compiled: web/%s is missing; run `make build` first", name)
		}
	}
	return dir
}

// lanServer starts bin/signal serving the page from the checkout.
func lanServer(t testing.TB, extra ...string) *SignalServer {
	t.Helper()
	dir := lanRequireWasm(t)
	return StartSignal(t, append([]string{"-web-dir", dir}, extra...)...)
}

// lanGuest is a browser tab whose guest has joined a room.
type lanGuest struct {
	*Tab
	IP netip.Addr
}

// lanWaitGuest waits for the guest's shell, the page's "connected" network
// state and the guest's DHCP lease, and checks that the lease is the address
// the room assigned to this tab's peer.
func lanWaitGuest(t testing.TB, tab *Tab) *lanGuest {
	t.Helper()
	// Not WaitShell: its prompt must end the console, and the lease line
	// often comes right after the first prompt. A command answers instead.
	tab.WaitPhase("ready", BootTimeout)
	lanWaitNet(t, tab, "connected", lanJoinTimeout)
	m := tab.WaitConsole(lanLeaseRE, lanJoinTimeout)
	tab.Command("echo shell$((6*7))", regexp.MustCompile(`(?m)^shell42$`), CommandTimeout)
	ip, err := netip.ParseAddr(m[1])
	if err != nil {
		t.Fatalf("tab %s: lease address %q: %v", tab.name, m[1], err)
	}
	st := lanStatus(t, tab)
	if st.IP != ip || strconv.Itoa(st.Prefix.Bits()) != m[2] || st.Gateway.String() != m[3] {
		t.Fatalf("tab %s: guest leased %s, the room assigned %s/%d router %s", tab.name, m[0], st.IP, st.Prefix.Bits(), st.Gateway)
	}
	return &lanGuest{Tab: tab, IP: ip}
}

// lanWaitNet waits for peerlanPage.net.state, failing at once on "error".
func lanWaitNet(t testing.TB, tab *Tab, want string, timeout time.Duration) pageState {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		st := tab.State()
		if st.Net.State == want {
			return st
		}
		if st.Net.State == "error" || st.Net.State == "unavailable" || time.Now().After(deadline) {
			t.Fatalf("tab %s: network %q (%s), want %q", tab.name, st.Net.State, st.Net.Error, want)
		}
		tab.sleep(pollInterval)
	}
}

// lanStatus reads lan.status() through the page.
func lanStatus(t testing.TB, tab *Tab) peer.MeshStatus {
	t.Helper()
	st := Eval[*peer.MeshStatus](tab, `window.peerlanPage && window.peerlanPage.lan ? window.peerlanPage.lan.status() : null`)
	if st == nil {
		t.Fatalf("tab %s: no lan joined", tab.name)
	}
	return *st
}

// lanWaitLink waits until tab's peer has an open link to ip with a known
// path, and returns it.
func lanWaitLink(t testing.TB, tab *Tab, ip netip.Addr, timeout time.Duration) peer.LinkStatus {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		st := lanStatus(t, tab)
		l, ok := LinkTo(st, ip)
		if ok && l.State == "open" && l.Path != "" {
			return l
		}
		if time.Now().After(deadline) {
			t.Fatalf("tab %s: no open link to %s with a known path after %v: %+v", tab.name, ip, timeout, st.Peers)
		}
		tab.sleep(pollInterval)
	}
}

// lanPing runs busybox ping in the guest and fails unless all count echoes
// were answered. It returns the round-trip times.
func lanPing(t testing.TB, g *lanGuest, dst netip.Addr, count int, interval string) []float64 {
	t.Helper()
	start := time.Now()
	m := g.Command("ping -c "+strconv.Itoa(count)+" -i "+interval+" -W 5 "+dst.String(), pingRE, CommandTimeout+time.Duration(count)*time.Second)
	if m[1] != strconv.Itoa(count) || m[2] != m[1] {
		t.Fatalf("tab %s: ping %s: %s (0%% loss wanted)\n%s", g.name, dst, m[0], g.consoleTail())
	}
	// The summary came last: the reply lines are in the output before it.
	out := g.ConsoleText()
	lines := lanPingTimeRE.FindAllStringSubmatch(out, -1)
	if len(lines) < count {
		t.Fatalf("tab %s: ping %s: %d reply lines on the console, want %d", g.name, dst, len(lines), count)
	}
	var rtts []float64
	for _, l := range lines[len(lines)-count:] {
		v, err := strconv.ParseFloat(l[1], 64)
		if err != nil {
			t.Fatalf("ping time %q: %v", l[1], err)
		}
		rtts = append(rtts, v)
	}
	t.Logf("tab %s: ping %s: %s in %v, RTTs %v ms", g.name, dst, m[0], time.Since(start).Round(time.Millisecond), rtts)
	return rtts
}

func median(v []float64) float64 {
	s := slices.Clone(v)
	sort.Float64s(s)
	if len(s) == 0 {
		return 0
	}
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// lanCheckDirect asserts that tab's link to ip is open, not relayed, and
// carried traffic both ways.
func lanCheckDirect(t testing.TB, tab *Tab, ip netip.Addr) peer.LinkStatus {
	t.Helper()
	l, ok := LinkTo(lanStatus(t, tab), ip)
	if !ok {
		t.Fatalf("tab %s: no link to %s", tab.name, ip)
	}
	if l.State != "open" || l.Path == "" || l.Path == "relay" {
		t.Errorf("tab %s: link to %s is %s over path %q (%s -> %s), want an open direct path",
			tab.name, ip, l.State, l.Path, l.LocalCandidate, l.RemoteCandidate)
	}
	if l.RxFrames == 0 || l.TxFrames == 0 {
		t.Errorf("tab %s: link to %s counted no frames: %+v", tab.name, ip, l)
	}
	t.Logf("tab %s -> %s: path %s (%s -> %s), open in %.0f ms, ICE RTT %.2f ms, rx %d B / tx %d B, drops %d",
		tab.name, ip, l.Path, l.LocalCandidate, l.RemoteCandidate, l.OpenMillis, l.RTTMillis, l.RxBytes, l.TxBytes, l.Drops)
	return l
}

// lanHide hides tab the way a desktop browser does: another tab of its
// window becomes the active one. tab must have been opened without a window
// of its own.
func lanHide(t testing.TB, b *Browser, tab *Tab) {
	t.Helper()
	b.OpenTab(t, "cover-"+tab.name, "about:blank", false).Activate()
	if vis := Eval[string](tab, `document.visibilityState`); vis != "hidden" {
		t.Fatalf("tab %s is %q after another tab became active; the test would prove nothing", tab.name, vis)
	}
}

// intensiveThrottling makes Chromium apply intensive wake-up throttling
// (timers of a hidden page wake once every 20 s) after 5 s hidden instead of
// 5 minutes, so a hidden-tab test sees the worst case quickly.
var intensiveThrottling = chromedp.Flag("enable-features", "IntensiveWakeUpThrottling:grace_period_seconds/5/duration_between_wake_ups_seconds/20")

// TestBrowserLAN is issue 4's proof: two guests in two tabs of two separate
// Chromium processes join one room through a real bin/signal and ping each
// other over a direct WebRTC data channel: no loss, no byte of it through
// the signaling server, a selected ICE pair that is not a relay. Then guest
// B's tab goes to the background (under Chromium's harshest timer
// throttling) and keeps answering A's pings.
func TestBrowserLAN(t *testing.T) {
	VerifyNoLeaks(t)
	RequireChromium(t)
	RequireGuestImage(t)
	sig := lanServer(t)
	url := sig.Base + "/?room=" + uniqueRoom("lan")

	bA := StartBrowser(t)
	bB := StartBrowser(t, intensiveThrottling)
	tabA := bA.OpenTab(t, "A", url, true)
	tabB := bB.OpenTab(t, "B", url, false) // in the main window, so that it can be hidden
	a, b := lanWaitGuest(t, tabA), lanWaitGuest(t, tabB)
	if a.IP == b.IP {
		t.Fatalf("both guests have %s", a.IP)
	}
	lanWaitLink(t, a.Tab, b.IP, lanJoinTimeout)
	lanWaitLink(t, b.Tab, a.IP, lanJoinTimeout)

	before := sig.RelayedBytes(t)
	lanPing(t, a, b.IP, 5, "1")
	lanPing(t, b, a.IP, 5, "1")
	if after := sig.RelayedBytes(t); after != before {
		t.Errorf("the signaling server relayed %v bytes while the guests pinged; frames must not pass through it", after-before)
	}
	lanCheckDirect(t, a.Tab, b.IP)
	lanCheckDirect(t, b.Tab, a.IP)

	t.Run("HiddenTabAnswers", func(t *testing.T) {
		// A page timer that ticks 10 times a second when visible.
		Eval[chromedp.Void](b.Tab, `window.__lanProbe = 0; setInterval(() => window.__lanProbe++, 100)`)
		lanHide(t, bB, b.Tab)
		b.sleep(8 * time.Second) // past the throttling's grace period
		before := sig.RelayedBytes(t)
		ticks0, start := Eval[int](b.Tab, `window.__lanProbe`), time.Now()
		lanPing(t, a, b.IP, 5, "1")
		ticks, wall := Eval[int](b.Tab, `window.__lanProbe`)-ticks0, time.Since(start).Seconds()
		if vis := Eval[string](b.Tab, `document.visibilityState`); vis != "hidden" {
			t.Fatalf("tab B became %q during the pings", vis)
		}
		// Proof that the tab really was in the background: its timers were
		// throttled while its guest answered.
		if ticks > int(wall*10/2) {
			t.Errorf("a 100 ms timer in hidden tab B ticked %d times in %.1fs: Chromium did not throttle it, so this shows no background tab", ticks, wall)
		}
		t.Logf("hidden tab B: its 100 ms timer ticked %d times in %.1fs while its guest answered every ping", ticks, wall)
		if after := sig.RelayedBytes(t); after != before {
			t.Errorf("the signaling server relayed %v bytes while the hidden guest answered", after-before)
		}
	})

	// Both pages report the room on their panel: each sees the other.
	for _, c := range []struct {
		g     *lanGuest
		other netip.Addr
	}{{a, b.IP}, {b, a.IP}} {
		st := lanStatus(t, c.g.Tab)
		if st.Signal != "connected" || len(st.Peers) != 1 || st.Peers[0].IP != c.other {
			t.Errorf("tab %s: status signal %q peers %+v, want connected with one peer %s", c.g.name, st.Signal, st.Peers, c.other)
		}
	}
}
