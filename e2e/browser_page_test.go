//go:build linux

package e2e

// The page as a newcomer sees it, checked in a real Chromium: what the
// network panel says (address, gateway, peer kinds, the path legend), the
// traffic sparkline, the terminal's frame, the lease line and the prompt,
// and the retry countdown after a failed join. Screenshots are decoded and
// sampled, and saved under the test's temp dir.

import (
	"bytes"
	"image"
	"image/png"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/peerlan/peerlan/signal/proto"
)

// pageRect is an element's bounding box in CSS pixels.
type pageRect struct{ X, Y, W, H float64 }

func elementRect(t *testing.T, tab *Tab, selector string) pageRect {
	t.Helper()
	r := Eval[*pageRect](tab, `(() => { const e = document.querySelector(`+jsString(selector)+`); if (!e) return null;
		const r = e.getBoundingClientRect(); return {X: r.x, Y: r.y, W: r.width, H: r.height}; })()`)
	if r == nil || r.W == 0 || r.H == 0 {
		t.Fatalf("tab %s: %s is not on the page (%+v)", tab.name, selector, r)
	}
	return *r
}

// screenshot captures the tab's viewport as PNG, saves it under the test's
// temp dir (and in $PEERLAN_SCREENSHOT_DIR when set, which outlives the
// test) and returns it decoded with the device pixel ratio.
func screenshot(t *testing.T, tab *Tab, name string) (image.Image, float64) {
	t.Helper()
	buf, err := chromedp.Run(tab.ctx, chromedp.CaptureScreenshot())
	if err != nil {
		t.Fatalf("tab %s: screenshot: %v", tab.name, err)
	}
	path := filepath.Join(t.TempDir(), name+".png")
	if err := os.WriteFile(path, buf, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s", path)
	if dir := os.Getenv("PEERLAN_SCREENSHOT_DIR"); dir != "" { // to look at them after the test
		if err := os.WriteFile(filepath.Join(dir, t.Name()+"-"+name+".png"), buf, 0o644); err != nil {
			t.Errorf("keeping the screenshot: %v", err)
		}
	}
	img, err := png.Decode(bytes.NewReader(buf))
	if err != nil {
		t.Fatalf("screenshot %s: %v", path, err)
	}
	return img, Eval[float64](tab, `window.devicePixelRatio`)
}

// luma is a pixel's brightness, 0-255.
func luma(img image.Image, x, y int) float64 {
	r, g, b, _ := img.At(x, y).RGBA()
	return (0.2126*float64(r) + 0.7152*float64(g) + 0.0722*float64(b)) / 257
}

// TestBrowserPageScreenshot opens the page with a native peer in the room (no
// gateway), pings the guest from the native side, and checks what the page
// shows: "My IP" as address/prefix length once, the missing gateway said in
// words, the peer's kind, a path with its explanation and the legend, a
// sparkline that drew the traffic, a terminal dark to its edges, and the
// lease line on a line of its own with the prompt shown again after it.
func TestBrowserPageScreenshot(t *testing.T) {
	VerifyNoLeaks(t)
	RequireChromium(t)
	RequireGuestImage(t)
	RequireNetAdmin(t)
	RequireCommands(t, "ping", "udhcpc")
	sig := lanServer(t)
	room := uniqueRoom("shot")
	ns := NewNamespace(t, "shot")
	np := StartPeer(t, sig, room, ns)

	// Scrollbars drawn as on a desktop (chromedp's defaults hide them), so
	// that a scrollbar track in the console shows in the screenshot.
	tab := StartBrowser(t, chromedp.Flag("hide-scrollbars", false)).OpenTab(t, "page", sig.Base+"/?room="+room, true)
	tab.WaitPhase("ready", BootTimeout)
	waitNet(t, tab, "connected", lanJoinTimeout)
	tab.WaitConsole(lanLeaseRE, lanJoinTimeout)
	// The lease line usually arrives while the shell waits at its prompt:
	// the screen must show it on a line of its own, and the prompt again
	// on the last line.
	leaseLine := regexp.MustCompile(`(?m)^peerlan: eth0 \S+ router \S+ mtu \d+$`)
	lastPrompt := regexp.MustCompile(`\nguest:/# ?$`)
	deadline := time.Now().Add(CommandTimeout)
	for {
		screen := Eval[string](tab, `window.peerlanPage.screenText()`)
		if leaseLine.MatchString(screen) && lastPrompt.MatchString(screen) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the terminal does not show the lease line on a line of its own and the prompt last:\n%s", screen)
		}
		tab.sleep(pollInterval)
	}
	g := lanWaitGuest(t, tab)

	np.WaitLinks(t, 1, lanJoinTimeout)
	lease := LeaseDHCP(t, ns, np.TAP)
	nativeIP := lease.Addr.Addr()
	lanWaitLink(t, tab, nativeIP, lanJoinTimeout)
	if l, ok := LinkTo(np.Status(t), g.IP); !ok || l.Kind != proto.KindBrowser {
		t.Errorf("the native peer sees the page's peer as kind %q, want %q", l.Kind, proto.KindBrowser)
	}
	// Traffic for the sparkline: a few seconds of pings of 1 KiB.
	if out, err := ns.Run("ping", "-c", "15", "-i", "0.2", "-s", "1000", "-w", "30", g.IP.String()); err != nil {
		t.Fatalf("ping from the native peer: %v\n%s", err, out)
	}
	tab.sleep(2 * time.Second) // two more status samples

	text := func(id string) string {
		return Eval[string](tab, `document.getElementById(`+jsString(id)+`).textContent`)
	}
	if ip, want := text("net-ip"), g.IP.String()+"/24"; ip != want {
		t.Errorf("My IP shows %q, want %q", ip, want)
	}
	if gw := text("net-gateway"); gw != "no gateway in this room: no internet" {
		t.Errorf("Gateway shows %q in a room without one, want it to say there is no internet", gw)
	}
	rows := Eval[[][]string](tab, `Array.from(document.querySelectorAll("#peer-rows tr"), (tr) => Array.from(tr.cells, (c) => c.textContent))`)
	if len(rows) != 1 || len(rows[0]) < 5 || rows[0][0] != nativeIP.String() || rows[0][1] != "native" || !strings.HasPrefix(rows[0][2], "direct (") {
		t.Errorf("peer rows %q, want one row: %s, native, a direct path", rows, nativeIP)
	}
	if title := Eval[string](tab, `document.querySelector("#peer-rows tr td:nth-child(3)").title`); !strings.HasPrefix(title, "direct") {
		t.Errorf("the path cell's explanation is %q", title)
	}
	legend := text("legend")
	for _, want := range []string{"direct, same network", "direct through NAT", "direct, learned from the peer", "relayed by TURN"} {
		if !strings.Contains(legend, want) {
			t.Errorf("the legend %q does not explain %q", legend, want)
		}
	}
	if label := Eval[string](tab, `document.querySelector("#peer-rows canvas.spark").getAttribute("aria-label")`); !strings.Contains(label, "peak") || strings.Contains(label, "peak 0 B/s") {
		t.Errorf("sparkline label %q: want a peak above 0", label)
	}

	if bad := Eval[[]string](tab, a11yCheckJS); len(bad) > 0 {
		t.Errorf("accessibility: %d problems:\n%s", len(bad), strings.Join(bad, "\n"))
	}

	img, dpr := screenshot(t, tab, "page")
	px := func(v float64) int { return int(v * dpr) }

	// The sparkline drew something: pixels in the accent colours.
	sp := elementRect(t, tab, "#peer-rows canvas.spark")
	drawn := 0
	for y := px(sp.Y); y < px(sp.Y+sp.H); y++ {
		for x := px(sp.X); x < px(sp.X+sp.W); x++ {
			r, g, b, _ := img.At(x, y).RGBA()
			if r>>8 < 120 && (b>>8 > 120 || g>>8 > 80) && r != g {
				drawn++
			}
		}
	}
	if drawn < 20 {
		t.Errorf("the sparkline at %+v has %d coloured pixels after 3 s of pings, want some line", sp, drawn)
	}

	// The terminal is dark to its edges: sample a band along each side
	// inside the frame (a light scrollbar track once made a white strip).
	term := elementRect(t, tab, "#terminal")
	var bright []string
	sample := func(side string, x, y int) {
		if l := luma(img, x, y); l > 80 {
			bright = append(bright, side)
		}
	}
	for i := 0; i < 40; i++ {
		fy := term.Y + 2 + (term.H-4)*float64(i)/39
		fx := term.X + 2 + (term.W-4)*float64(i)/39
		// A scrollbar is about 15 px wide; its arrow buttons (light
		// glyphs on a dark scrollbar) take its ends.
		ry := term.Y + 20 + (term.H-40)*float64(i)/39
		for _, in := range []float64{3, 6, 10, 14, 18} {
			sample("right", px(term.X+term.W-in), px(ry))
		}
		sample("left", px(term.X+2), px(fy))
		sample("bottom", px(fx), px(term.Y+term.H-3))
		sample("top", px(fx), px(term.Y+2))
	}
	if len(bright) > 0 {
		t.Errorf("%d light pixels at the terminal's edges (%v): a light strip in the console frame %+v", len(bright), uniqueStrings(bright), term)
	}
}

// a11yCheckJS lists the page's text outside the terminal whose colour has
// less than 4.5:1 contrast with its background (WCAG AA for normal text),
// and form controls without a name (a label, aria-label or button text).
const a11yCheckJS = `(() => {
  const parse = (c) => { const m = /rgba?\(([^)]+)\)/.exec(c); if (!m) return null;
    const p = m[1].split(/[ ,\/]+/).filter(Boolean).map(Number); return {r: p[0], g: p[1], b: p[2], a: p.length > 3 ? p[3] : 1}; };
  const lum = ({r, g, b}) => { const f = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; };
    return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b); };
  const bg = (el) => { for (let e = el; e; e = e.parentElement) { const c = parse(getComputedStyle(e).backgroundColor);
    if (c && c.a > 0.5) return c; } return {r: 255, g: 255, b: 255, a: 1}; };
  const bad = [];
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  for (let n; (n = walker.nextNode());) {
    const text = n.textContent.trim();
    const el = n.parentElement;
    if (!text || el.closest(".terminal, noscript")) continue;
    if (!el.getBoundingClientRect().width) continue; // not shown
    const [hi, lo] = [lum(parse(getComputedStyle(el).color)), lum(bg(el))].sort((x, y) => y - x);
    const ratio = (hi + 0.05) / (lo + 0.05);
    if (ratio < 4.5) bad.push(el.tagName + "#" + el.id + "." + el.className + " " + JSON.stringify(text.slice(0, 30)) + ": contrast " + ratio.toFixed(2));
  }
  for (const c of document.querySelectorAll("input, button, select, textarea")) {
    if (c.closest(".terminal")) continue;
    const name = (c.labels && c.labels.length ? c.labels[0].textContent : "") || c.getAttribute("aria-label") || (c.tagName === "BUTTON" ? c.textContent : "");
    if (!name.trim()) bad.push("no name for " + c.tagName + "#" + c.id);
  }
  return bad;
})()`

func uniqueStrings(s []string) []string {
	var out []string
	seen := map[string]bool{}
	for _, v := range s {
		if !seen[v] {
			seen[v] = true
			out = append(out, v)
		}
	}
	return out
}

// TestBrowserPageRetries serves the page where the signaling endpoint fails
// at first: the page must say it is retrying, count down, try again on its
// own with a growing wait, and join as soon as "Retry now" is pressed once
// the server is back.
func TestBrowserPageRetries(t *testing.T) {
	VerifyNoLeaks(t)
	RequireChromium(t)
	sig := lanServer(t)
	backend, err := url.Parse(sig.Base)
	if err != nil {
		t.Fatal(err)
	}
	var up atomic.Bool
	proxy := httputil.NewSingleHostReverseProxy(backend)
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/signal" && !up.Load() {
			http.Error(w, "down for the test", http.StatusServiceUnavailable)
			return
		}
		// Host stays the front's: bin/signal checks the Origin against it.
		proxy.ServeHTTP(w, r)
	}))
	t.Cleanup(front.Close)

	tab := StartBrowser(t).OpenTab(t, "retry", front.URL+"/?room="+uniqueRoom("retry"), true)
	type netState struct {
		State    string `json:"state"`
		Error    string `json:"error"`
		RetryIn  int    `json:"retryIn"`
		Attempts int    `json:"attempts"`
	}
	netNow := func() netState { return Eval[netState](tab, `window.peerlanPage ? window.peerlanPage.net : {}`) }
	waitState := func(what string, ok func(netState) bool, timeout time.Duration) netState {
		t.Helper()
		deadline := time.Now().Add(timeout)
		for {
			st := netNow()
			if ok(st) {
				return st
			}
			if time.Now().After(deadline) {
				t.Fatalf("network %+v after %v, want %s", st, timeout, what)
			}
			tab.sleep(100 * time.Millisecond)
		}
	}
	first := waitState("retrying", func(s netState) bool { return s.State == "retrying" }, time.Minute)
	if !strings.Contains(first.Error, "signaling server") {
		t.Errorf("retry reason %q does not say what failed", first.Error)
	}
	shown := Eval[string](tab, `(() => { const e = document.getElementById("net-retry"); return e.hidden ? "" : e.textContent; })()`)
	if !regexp.MustCompile(`Retrying in \d+ s`).MatchString(shown) || !strings.Contains(shown, "Retry now") {
		t.Errorf("the retry box shows %q, want a countdown and a Retry now button", shown)
	}
	// It tries again by itself, waiting longer each time.
	third := waitState("a third try", func(s netState) bool { return s.State == "retrying" && s.Attempts >= 3 }, time.Minute)
	if third.RetryIn < 2 {
		t.Errorf("after %d failed tries the next waits %d s; want the wait to grow", third.Attempts, third.RetryIn)
	}
	if bad := Eval[[]string](tab, a11yCheckJS); len(bad) > 0 {
		t.Errorf("accessibility while retrying: %d problems:\n%s", len(bad), strings.Join(bad, "\n"))
	}
	img, dpr := screenshot(t, tab, "retrying")
	// The retry box is drawn: its area is not the panel's white.
	box := elementRect(t, tab, "#net-retry")
	if l := luma(img, int((box.X+4)*dpr), int((box.Y+4)*dpr)); l > 250 {
		t.Errorf("the retry box at %+v is not drawn in the screenshot (luma %.0f)", box, l)
	}

	up.Store(true)
	Eval[chromedp.Void](tab, `document.getElementById("net-retry-now").click()`)
	start := time.Now()
	waitState("connected", func(s netState) bool { return s.State == "connected" }, 20*time.Second)
	t.Logf("joined %v after Retry now (the countdown was at %d s)", time.Since(start).Round(time.Millisecond), third.RetryIn)
	if hidden := Eval[bool](tab, `document.getElementById("net-retry").hidden`); !hidden {
		t.Errorf("the retry box is still shown after joining")
	}
}

// TestBrowserPageRoomField checks the Room field: it starts with the URL's
// room, refuses a name the server would refuse (saying why, marked invalid
// for assistive technology) and loads the page with a valid one, keeping
// the other parameters.
func TestBrowserPageRoomField(t *testing.T) {
	VerifyNoLeaks(t)
	RequireChromium(t)
	RequirePageAssets(t)
	base := ServePage(t, withoutPeer())
	room := uniqueRoom("field")
	tab := StartBrowser(t).OpenTab(t, "field", base+"/?room="+room+"&relay=relay", true)
	if got := waitFor(t, tab, `document.getElementById("room-input").value`); got != room {
		t.Errorf("the room field starts with %q, want the URL's %q", got, room)
	}
	if label := Eval[string](tab, `document.querySelector('label[for="room-input"]').textContent`); label != "Room" {
		t.Errorf("the room field's label is %q", label)
	}
	submit := func(name string) {
		Eval[chromedp.Void](tab, `(() => { const i = document.getElementById("room-input"); i.value = `+jsString(name)+`;
			i.dispatchEvent(new Event("input")); document.getElementById("room-form").requestSubmit(); })()`)
	}
	submit("no spaces/allowed")
	if inv := Eval[string](tab, `document.getElementById("room-input").getAttribute("aria-invalid")`); inv != "true" {
		t.Errorf("an invalid room name is marked aria-invalid=%q", inv)
	}
	if msg := Eval[string](tab, `document.getElementById("room-error").textContent`); !strings.Contains(msg, "letters, digits") {
		t.Errorf("the room field explains an invalid name with %q", msg)
	}
	if href := Eval[string](tab, `location.href`); !strings.Contains(href, "room="+room) {
		t.Errorf("an invalid room name changed the page to %s", href)
	}
	next := uniqueRoom("next")
	submit(next)
	href := waitFor(t, tab, `location.href.includes("room=`+next+`") ? location.href : ""`)
	u, err := url.Parse(href)
	if err != nil {
		t.Fatal(err)
	}
	if u.Query().Get("relay") != "relay" {
		t.Errorf("joining another room lost the relay parameter: %s", href)
	}
	if got := waitFor(t, tab, `document.getElementById("net-room").textContent === `+jsString(next)+` ? "ok" : ""`); got != "ok" {
		t.Errorf("the reloaded page does not show room %s", next)
	}
}
