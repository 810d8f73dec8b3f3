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
	"strings"
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
	waitNet(t, tab, "connected", lanJoinTimeout)
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

// waitNet waits for peerlanPage.net.state to be want, failing at once when
// the page reached another final state ("error" or "unavailable").
func waitNet(t testing.TB, tab *Tab, want string, timeout time.Duration) pageState {
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

// lanStatus reads lan.status() of the page's lan, or of globalThis.lan in a
// page without the emulator (TestBrowserLANAPI).
func lanStatus(t testing.TB, tab *Tab) peer.MeshStatus {
	t.Helper()
	st := Eval[*peer.MeshStatus](tab, `(() => { const lan = (window.peerlanPage && window.peerlanPage.lan) || globalThis.lan;
		return lan ? lan.status() : null; })()`)
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

// lanLoadPeerJS loads the wasm peer into a page of the server's origin that
// has no emulator (the API is emulator-agnostic) and returns its version.
const lanLoadPeerJS = `(async () => {
  if (!globalThis.Go) (0, eval)(await (await fetch("/dist/wasm_exec.js")).text());
  const go = new Go();
  const { instance } = await WebAssembly.instantiateStreaming(fetch("/dist/peerlan.wasm"), go.importObject);
  go.run(instance);
  while (!globalThis.peerlan) await new Promise((r) => setTimeout(r, 10));
  return peerlan.version;
})()`

// lanJoinResultJS evaluates to "resolved" or to how join rejected.
func lanJoinResultJS(opts string) string {
	return `peerlan.join(` + opts + `).then((lan) => { lan.leave(); return "resolved"; },
		(e) => (e instanceof Error ? "Error: " : "not an Error: ") + (e && e.message))`
}

// TestBrowserLANAPI drives globalThis.peerlan directly, in pages with no
// emulator: join's validation and refusals, two peers exchanging a frame
// through send and onframe (send copies a reused buffer), drops counted, and
// leave.
func TestBrowserLANAPI(t *testing.T) {
	VerifyNoLeaks(t)
	RequireChromium(t)
	sig := lanServer(t, "-token-rooms", "locked-*")
	br := StartBrowser(t)
	x := br.OpenTab(t, "X", sig.Base+"/healthz", true)
	y := br.OpenTab(t, "Y", sig.Base+"/healthz", true)
	for _, tab := range []*Tab{x, y} {
		v := Eval[string](tab, lanLoadPeerJS)
		if !regexp.MustCompile(`^peerlan \S+ go1\.`).MatchString(v) {
			t.Errorf("peerlan.version %q", v)
		}
	}
	ws := jsString(sig.WS)

	t.Run("JoinRefusals", func(t *testing.T) {
		room := jsString(uniqueRoom("api"))
		for _, c := range []struct{ opts, want string }{
			{`undefined`, "want one options object"},
			{`{room: ` + room + `}`, "option signal is required"},
			{`{signal: "http://127.0.0.1/signal", room: ` + room + `}`, "want the signaling server's WebSocket URL"},
			{`{signal: ` + ws + `}`, "option room is required"},
			{`{signal: ` + ws + `, room: "-bad room"}`, `option room "-bad room"`},
			{`{signal: ` + ws + `, room: ` + room + `, relay: "sometimes"}`, `option relay "sometimes"`},
			{`{signal: ` + ws + `, room: ` + room + `, colour: "blue"}`, `unknown option "colour"`},
			{`{signal: ` + ws + `, room: ` + room + `, iceServers: [{urls: "http://x"}]}`, "iceServers[0].urls"},
			{`{signal: ` + ws + `, room: ` + room + `, timeoutMs: -1}`, "option timeoutMs"},
			{`{signal: "ws://127.0.0.1:` + strconv.Itoa(FreePort(t)) + `/signal", room: ` + room + `}`, "cannot reach the signaling server"},
			{`{signal: ` + ws + `, room: "locked-1"}`, "token-required"},
			{`{signal: ` + ws + `, room: "locked-1", token: "forged"}`, "token-invalid"},
		} {
			got := Eval[string](x, lanJoinResultJS(c.opts))
			t.Logf("join(%s): %s", c.opts, got)
			if !strings.HasPrefix(got, "Error: peerlan.join: ") || !strings.Contains(got, c.want) {
				t.Errorf("join(%s): %q, want an Error mentioning %q", c.opts, got, c.want)
			}
		}
	})

	t.Run("FrameExchange", func(t *testing.T) {
		room := jsString(uniqueRoom("api"))
		join := `(async () => {
			globalThis.lan = await peerlan.join({signal: ` + ws + `, room: ` + room + `, logLevel: "warn"});
			globalThis.got = [];
			lan.onframe = (f) => { got.push(Array.from(f)); };
			return (await lan.status()).ip;
		})()`
		ipX, ipY := Eval[string](x, join), Eval[string](y, join)
		if ipX == "" || ipY == "" || ipX == ipY {
			t.Fatalf("addresses %q and %q", ipX, ipY)
		}
		lanWaitLink(t, x, netip.MustParseAddr(ipY), lanJoinTimeout)
		lanWaitLink(t, y, netip.MustParseAddr(ipX), lanJoinTimeout)

		// X sends a broadcast frame from a buffer it overwrites right after
		// send returns, as v86 does with its NIC buffer.
		queued := Eval[bool](x, `(() => {
			const buf = new Uint8Array(128);
			buf.set([255,255,255,255,255,255, 2,0,0,0,0,0x42, 0x88,0xb5]);
			buf.set(new TextEncoder().encode("peerlan-api-frame"), 14);
			const ok = lan.send(buf.subarray(0, 64));
			buf.fill(0xee);
			return ok;
		})()`)
		if !queued {
			t.Fatal("lan.send returned false for a valid frame")
		}
		deadline := time.Now().Add(10 * time.Second)
		for {
			frames := Eval[[][]byte](y, `got.filter((f) => f[12] === 0x88 && f[13] === 0xb5)`)
			if len(frames) > 0 {
				f := frames[0]
				if len(f) != 64 || string(f[14:31]) != "peerlan-api-frame" || f[40] != 0 {
					t.Errorf("Y received %v, want the 64-byte frame X sent, not its overwritten buffer", f)
				}
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("Y did not receive X's broadcast frame")
			}
			y.sleep(pollInterval)
		}

		// Invalid frames are refused without an exception, and counted.
		bad := Eval[[]bool](x, `[lan.send("text"), lan.send(new Uint8Array(0)), lan.send(new Uint8Array(2000))]`)
		if !slices.Equal(bad, []bool{false, false, false}) {
			t.Errorf("send of invalid frames returned %v, want all false", bad)
		}
		type guestStats struct {
			FromGuest uint64 `json:"from_guest"`
			BadSize   uint64 `json:"dropped_bad_size"`
		}
		g := Eval[guestStats](x, `lan.status().guest`)
		if g.FromGuest != 1 || g.BadSize != 3 {
			t.Errorf("X's guest counters %+v, want 1 frame queued and 3 refused", g)
		}

		// leave resolves once the peer has stopped; Y sees X go.
		Eval[chromedp.Void](x, `lan.leave()`)
		st := lanStatus(t, x)
		if st.Signal != "closed" || len(st.Peers) != 0 {
			t.Errorf("after leave: signal %q, peers %v; want closed and none", st.Signal, st.Peers)
		}
		if Eval[bool](x, `lan.send(new Uint8Array(60))`) {
			t.Error("send after leave returned true")
		}
		deadline = time.Now().Add(20 * time.Second)
		for len(lanStatus(t, y).Peers) != 0 {
			if time.Now().After(deadline) {
				t.Fatalf("Y still lists X after X left: %+v", lanStatus(t, y).Peers)
			}
			y.sleep(pollInterval)
		}
		Eval[chromedp.Void](y, `lan.leave()`)
	})
}

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

// TestBrowserPingsNativePeer puts a browser guest and a native bin/peer
// (its TAP in a namespace of the test's own, addressed by the room's DHCP)
// in one room: each pings the other over a direct link, with no byte of it
// through the signaling server.
func TestBrowserPingsNativePeer(t *testing.T) {
	VerifyNoLeaks(t)
	RequireChromium(t)
	RequireGuestImage(t)
	RequireNetAdmin(t)
	RequireCommands(t, "ping", "udhcpc")
	sig := lanServer(t)
	room := uniqueRoom("native")
	ns := NewNamespace(t, "brw")
	np := StartPeer(t, sig, room, ns)

	tab := StartBrowser(t).OpenTab(t, "guest", sig.Base+"/?room="+room, true)
	g := lanWaitGuest(t, tab)
	np.WaitLinks(t, 1, lanJoinTimeout)
	lease := LeaseDHCP(t, ns, np.TAP)
	nativeIP := lease.Addr.Addr()
	if st := np.Status(t); nativeIP != st.IP {
		t.Fatalf("namespace leased %s, the room assigned %s", lease.Addr, st.IP)
	}
	lanWaitLink(t, tab, nativeIP, lanJoinTimeout)

	before := sig.RelayedBytes(t)
	lanNativePing(t, ns, g.IP, 5)
	lanPing(t, g, nativeIP, 5, "1")
	if after := sig.RelayedBytes(t); after != before {
		t.Errorf("the signaling server relayed %v bytes during the pings; frames must not pass through it", after-before)
	}
	lanCheckDirect(t, tab, nativeIP)
	l, ok := LinkTo(np.Status(t), g.IP)
	if !ok || l.State != "open" || l.Path == "" || l.Path == "relay" || l.Transport != "webrtc" {
		t.Errorf("native peer's link to the browser guest: %+v, want open, direct and webrtc", l)
	}
}

// lanNativePing pings dst from ns and fails unless all count echoes were
// answered. Unlike Ping it waits for late replies (-w): with replies coming,
// iputils' -W waits only two round trips after the last echo, and a guest
// in a busy browser can take longer than that.
func lanNativePing(t testing.TB, ns *Namespace, dst netip.Addr, count int) {
	t.Helper()
	out, err := ns.Run("ping", "-c", strconv.Itoa(count), "-i", "0.2", "-w", strconv.Itoa(10+count), dst.String())
	m := pingRE.FindStringSubmatch(out)
	if m == nil || m[1] != strconv.Itoa(count) || m[2] != m[1] {
		t.Fatalf("ping %s from %s: %v\n%s", dst, ns.Name, err, out)
	}
	t.Logf("ping %s from %s:\n%s", dst, ns.Name, strings.TrimSpace(out))
}
