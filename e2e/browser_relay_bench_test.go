//go:build linux

package e2e

// Issue 12's browser half, "Direct beats relayed": two v86 guests in two
// Chromium processes, connected three ways in one run:
//
//   - peerlan: the page with the wasm peer, a real bin/signal, the mesh's
//     direct data channel;
//   - jsbridge: the page with a plain-JS stand-in for the wasm peer that
//     sends every frame of the guest's NIC on an RTCDataChannel with
//     peerlan's settings (pre-negotiated id 0, unordered, maxRetransmits 0)
//     and hands every message to the NIC; the test harness carries the SDP
//     between the tabs, and no peerlan code is in the path;
//   - wsrelay: v86's own WebSocket adapter (net_device.relay_url, one binary
//     message per frame) against e2e/wsrelay on loopback, the relayed
//     design every browser-VM network used before.
//
// For each, the guest-to-guest ping median and the guest-to-guest TCP
// throughput (busybox httpd in one guest serving a 16 MiB file, busybox
// wget in the other, timed by busybox time in the guest).

import (
	"fmt"
	"log/slog"
	"net/http/httptest"
	"net/netip"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/peerlan/peerlan/e2e/wsrelay"
	"github.com/peerlan/peerlan/web"
)

// jsBridgeJS stands in for the wasm peer (globalThis.peerlan) with the
// plainest data channel bridge: lan.send is RTCDataChannel.send, and every
// message is handed to lan.onframe as a new Uint8Array. The page's frame
// bridge (bridgeV86 in web/attach.mjs) is the same code that feeds the wasm
// peer, so the two differ only in what carries the frame. globalThis.__jsBridge lets the test
// harness negotiate the connection: offer() in one tab, answer(sdp) in the
// other, accept(sdp) back in the first (non-trickle: each description holds
// every candidate), then open() is true on both once the channel is open.
const jsBridgeJS = `(() => {
  const lan = {
    onframe: null,
    dc: null,
    dropped: 0,
    send(frame) {
      const dc = lan.dc;
      if (dc === null) { lan.dropped++; return false; }
      dc.send(frame);
      return true;
    },
    status() { return {id: "jsbridge", ip: "", prefix: 0, gateway: "", signal: "connected", error: "", peers: [], drops: {}}; },
    leave() {},
  };
  let pc = null;
  const start = () => {
    pc = new RTCPeerConnection();
    const dc = pc.createDataChannel("peerlan", {negotiated: true, id: 0, ordered: false, maxRetransmits: 0});
    dc.binaryType = "arraybuffer";
    dc.onmessage = (e) => { if (lan.onframe) lan.onframe(new Uint8Array(e.data)); };
    dc.onopen = () => { lan.dc = dc; };
    dc.onclose = () => { lan.dc = null; };
  };
` + jsNegotiationJS + `
    open() { return lan.dc !== null; },
    dropped() { return lan.dropped; },
  };
  globalThis.peerlan = { version: "plain-JS RTCDataChannel bridge", async join() { return lan; } };
})();`

// jsNegotiationJS is the part of jsBridgeJS and jsWorkerJS that lets the
// harness negotiate (see jsBridgeJS): it expects a start() that makes pc and
// its channel, and opens globalThis.__jsBridge, which the script closes with
// its own open() (and dropped()).
const jsNegotiationJS = `  const gathered = () => new Promise((resolve) => {
    if (pc.iceGatheringState === "complete") return resolve();
    pc.addEventListener("icegatheringstatechange", () => { if (pc.iceGatheringState === "complete") resolve(); });
  });
  globalThis.__jsBridge = {
    async offer() { start(); await pc.setLocalDescription(); await gathered(); return pc.localDescription.sdp; },
    async answer(sdp) {
      start();
      await pc.setRemoteDescription({type: "offer", sdp});
      await pc.setLocalDescription();
      await gathered();
      return pc.localDescription.sdp;
    },
    async accept(sdp) { await pc.setRemoteDescription({type: "answer", sdp}); return true; },`

// jsWorkerJS is jsBridgeJS with the data channel in a dedicated Worker: the
// channel is transferred there in the task that created it (Chromium allows
// no later transfer), the page posts each frame to the worker, which sends
// it, and the worker posts each message back to the page. It measures what a
// peer off the page's thread could gain (the emulator keeps the thread), and
// is not in the default setups.
const jsWorkerJS = `(() => {
  const src = "let dc = null;" +
    "onmessage = (e) => {" +
    "  if (e.data instanceof RTCDataChannel) {" +
    "    dc = e.data; dc.binaryType = 'arraybuffer';" +
    "    dc.onopen = () => postMessage('open');" +
    "    dc.onmessage = (m) => postMessage(m.data, [m.data]);" +
    "    if (dc.readyState === 'open') postMessage('open');" +
    "    return;" +
    "  }" +
    "  if (dc && dc.readyState === 'open') dc.send(e.data);" +
    "};";
  const worker = new Worker(URL.createObjectURL(new Blob([src], {type: "text/javascript"})));
  let open = false;
  const lan = {
    onframe: null,
    send(frame) {
      if (!open) return false;
      const c = frame.slice();
      worker.postMessage(c.buffer, [c.buffer]);
      return true;
    },
    status() { return {id: "jsworker", ip: "", prefix: 0, gateway: "", signal: "connected", error: "", peers: [], drops: {}}; },
    leave() {},
  };
  worker.onmessage = (e) => {
    if (e.data === "open") { open = true; return; }
    if (lan.onframe) lan.onframe(new Uint8Array(e.data));
  };
  let pc = null;
  const start = () => {
    pc = new RTCPeerConnection();
    const dc = pc.createDataChannel("peerlan", {negotiated: true, id: 0, ordered: false, maxRetransmits: 0});
    worker.postMessage(dc, [dc]);
  };
` + jsNegotiationJS + `
    open() { return open; },
  };
  globalThis.peerlan = { version: "plain-JS RTCDataChannel bridge in a worker", async join() { return lan; } };
})();`

// relayBenchSetups are the three ways of connecting the guests, in the order
// of the first round; later rounds rotate it, so no setup always runs first.
// PEERLAN_BENCH_SETUPS (comma-separated) runs a subset while developing, or
// adds "jsworker" (see jsWorkerJS); the ratios are reported only when both
// of their setups ran.
var relayBenchSetups = []string{"peerlan", "jsbridge", "wsrelay"}

// relayBenchRound counts rounds across runs, so that -count rotates too.
var relayBenchRound int

func relayBenchSelected() []string {
	env := os.Getenv("PEERLAN_BENCH_SETUPS")
	if env == "" {
		return relayBenchSetups
	}
	return strings.Split(env, ",")
}

// relayBenchFile is the file the TCP test transfers: 16 MiB, in guest memory.
const relayBenchFileMiB = 16

// relayPingCount is how many pings each setup's median is taken over.
const relayPingCount = 30

// guestPair is two guests, each in its own Chromium process, that can reach
// each other at their addresses.
type guestPair struct {
	a, b     *lanGuest
	browsers []*Browser
	check    func() // after the measurements: checks the path (peerlan)
}

// close stops both browsers, so that the next setup has the cores.
func (p *guestPair) close() {
	p.a.Close()
	p.b.Close()
	for _, br := range p.browsers {
		br.Close()
	}
}

// staticGuests boots a guest in each of two browsers at url, with init
// scripts, and gives them fixed addresses (there is no DHCP server).
func staticGuests(b *testing.B, url string, scripts ...string) *guestPair {
	b.Helper()
	p := &guestPair{}
	var tabs [2]*Tab
	for i, name := range []string{"A", "B"} {
		br := StartBrowser(b)
		p.browsers = append(p.browsers, br)
		tabs[i] = br.OpenTab(b, name, "", true)
		for _, s := range scripts {
			tabs[i].InitScript(s)
		}
		tabs[i].Navigate(url)
	}
	addrs := [2]string{"10.86.0.7", "10.86.0.8"}
	var gs [2]*lanGuest
	for i, tab := range tabs {
		tab.WaitPhase("ready", BootTimeout)
		tab.Command("killall udhcpc; ip addr add "+addrs[i]+"/24 dev eth0; ip link set eth0 up; echo up$((1+1))",
			regexp.MustCompile(`(?m)^up2$`), CommandTimeout)
		gs[i] = &lanGuest{Tab: tab}
		gs[i].IP = netip.MustParseAddr(addrs[i])
	}
	p.a, p.b = gs[0], gs[1]
	return p
}

// startGuestPair connects two fresh guests the way setup names.
func startGuestPair(b *testing.B, setup string, sig *SignalServer, page string) *guestPair {
	b.Helper()
	switch setup {
	case "peerlan":
		url := sig.Base + "/?room=" + uniqueRoom("direct")
		brA, brB := StartBrowser(b), StartBrowser(b)
		tabA, tabB := brA.OpenTab(b, "A", url, true), brB.OpenTab(b, "B", url, true)
		p := &guestPair{a: lanWaitGuest(b, tabA), b: lanWaitGuest(b, tabB), browsers: []*Browser{brA, brB}}
		lanWaitLink(b, p.a.Tab, p.b.IP, lanJoinTimeout)
		lanWaitLink(b, p.b.Tab, p.a.IP, lanJoinTimeout)
		p.check = func() {
			for _, g := range []*lanGuest{p.a, p.b} {
				lanCheckDirect(b, g.Tab, map[*lanGuest]*lanGuest{p.a: p.b, p.b: p.a}[g].IP)
				b.Logf("tab %s: switch drops %v, guest port %v", g.name, lanStatus(b, g.Tab).Drops,
					Eval[map[string]uint64](g.Tab, `window.peerlanPage.lan.status().guest`))
			}
		}
		return p
	case "jsbridge", "jsworker":
		script := jsBridgeJS
		if setup == "jsworker" {
			script = jsWorkerJS
		}
		p := staticGuests(b, page+"/?room="+uniqueRoom(setup), script)
		offer := Eval[string](p.a.Tab, `globalThis.__jsBridge.offer()`)
		answer := Eval[string](p.b.Tab, `globalThis.__jsBridge.answer(`+jsString(offer)+`)`)
		Eval[bool](p.a.Tab, `globalThis.__jsBridge.accept(`+jsString(answer)+`)`)
		for _, g := range []*lanGuest{p.a, p.b} {
			waitTrue(b, g.Tab, `globalThis.__jsBridge.open()`, lanJoinTimeout)
		}
		return p
	case "wsrelay":
		relay := wsrelay.NewServer(slog.New(slog.DiscardHandler))
		srv := httptest.NewServer(relay)
		b.Cleanup(srv.Close)
		ws := "ws://" + strings.TrimPrefix(srv.URL, "http://") + "/"
		p := staticGuests(b, page+"/?room="+uniqueRoom("wsrelay"), `globalThis.peerlanRelayURL = `+jsString(ws)+`;`)
		p.check = func() {
			b.Logf("wsrelay: %d frames forwarded, %d dropped", relay.Forwarded.Load(), relay.Dropped.Load())
			if relay.Forwarded.Load() == 0 {
				b.Errorf("the WebSocket relay forwarded no frame: the guests did not use it")
			}
		}
		return p
	}
	b.Fatalf("unknown setup %q", setup)
	return nil
}

// waitTrue polls a JavaScript expression until it is true.
func waitTrue(t testing.TB, tab *Tab, expr string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !Eval[bool](tab, expr) {
		if time.Now().After(deadline) {
			t.Fatalf("tab %s: %s still false after %v", tab.name, expr, timeout)
		}
		tab.sleep(pollInterval)
	}
}

// timeRE matches busybox time's wall-clock line ("real\t0m 5.23s").
var timeRE = regexp.MustCompile(`(?m)^real\s+(?:(\d+)h\s*)?(\d+)m\s*([\d.]+)s\s*$`)

// wgetRE matches the line the TCP test prints after wget.
var wgetRE = regexp.MustCompile(`(?m)^wget-rc=(\d+)$`)

// serveFile makes guest g serve a file of relayBenchFileMiB with busybox
// httpd on port 8080.
func serveFile(t testing.TB, g *lanGuest) {
	t.Helper()
	g.Command(fmt.Sprintf("dd if=/dev/zero of=/tmp/f bs=64k count=%d 2>/dev/null; httpd -p 8080 -h /tmp; echo httpd$((1+1))", relayBenchFileMiB*16),
		regexp.MustCompile(`(?m)^httpd2$`), CommandTimeout)
}

// wgetSeconds fetches the served file from guest from into g (to /dev/null)
// and returns the wall-clock seconds busybox time measured in the guest.
func wgetSeconds(t testing.TB, g *lanGuest, from *lanGuest) float64 {
	t.Helper()
	off := g.ConsoleLen()
	m := g.Command("time wget -q -O /dev/null http://"+from.IP.String()+":8080/f; echo wget-rc=$?", wgetRE, 5*time.Minute)
	if m[1] != "0" {
		t.Fatalf("tab %s: wget from %s failed (exit %s)\n%s", g.name, from.IP, m[1], g.consoleTail())
	}
	out := Eval[string](g.Tab, "window.peerlanPage.consoleText().slice("+strconv.Itoa(off)+")")
	tm := timeRE.FindStringSubmatch(out)
	if tm == nil {
		t.Fatalf("tab %s: no time output after wget:\n%s", g.name, out)
	}
	h, _ := strconv.Atoi("0" + tm[1])
	mins, _ := strconv.Atoi(tm[2])
	secs, err := strconv.ParseFloat(tm[3], 64)
	if err != nil {
		t.Fatalf("time %q: %v", tm[0], err)
	}
	return float64(h*3600+mins*60) + secs
}

// relayResult is one setup's measurements in one round.
type relayResult struct {
	pingMedian float64 // ms
	mbps       float64 // MB/s (10^6 bytes) of the file transfer
}

// measurePair runs the ping and TCP tests on a pair.
func measurePair(b *testing.B, setup string, p *guestPair) relayResult {
	b.Helper()
	lanRTTs(b, p.a, p.b.IP.String(), 3) // ARP, warm-up
	profiled := func(what string, run func()) {
		dir := profileDir()
		if dir == "" {
			run()
			return
		}
		stopA, stopB := p.a.StartProfile(200), p.b.StartProfile(200)
		run()
		saveProfile(b, dir, setup+"-"+what+"-A", stopA())
		saveProfile(b, dir, setup+"-"+what+"-B", stopB())
	}
	var rtts []float64
	profiled("ping", func() { rtts = lanRTTs(b, p.a, p.b.IP.String(), relayPingCount) })
	serveFile(b, p.b)
	var secs float64
	profiled("wget", func() { secs = wgetSeconds(b, p.a, p.b) })
	if p.check != nil {
		p.check()
	}
	r := relayResult{pingMedian: median(rtts), mbps: float64(relayBenchFileMiB<<20) / secs / 1e6}
	b.Logf("%s: ping median %.2f ms (RTTs %v); %d MiB in %.2f s = %.2f MB/s", setup, r.pingMedian, rtts, relayBenchFileMiB, secs, r.mbps)
	return r
}

// BenchmarkBrowserDirectVsRelayed measures, in one run, guest-to-guest ping
// and TCP throughput between two browser guests over peerlan, over the
// plain-JS data channel bridge, and over v86's WebSocket adapter with a relay
// (see the top of this file). Each iteration is one round of all three, in
// rotating order, each with fresh browsers; the figures are medians over
// rounds. x-jsbridge-ping is peerlan's ping median over the bridge's (goal
// ≤ 1.1); x-wsrelay-wget is peerlan's throughput over the relay's (goal ≥ 1).
func BenchmarkBrowserDirectVsRelayed(b *testing.B) {
	RequireChromium(b)
	RequireGuestImage(b)
	sig := lanServer(b)
	page := ServePage(b, web.FS())
	setups := relayBenchSelected()
	results := map[string][]relayResult{}
	b.ResetTimer()
	for range b.N {
		for i := range setups {
			setup := setups[(i+relayBenchRound)%len(setups)]
			p := startGuestPair(b, setup, sig, page)
			results[setup] = append(results[setup], measurePair(b, setup, p))
			p.close()
		}
		relayBenchRound++
	}
	b.StopTimer()
	ping := map[string]float64{}
	mbps := map[string]float64{}
	for _, s := range setups {
		var pv, tv []float64
		for _, r := range results[s] {
			pv = append(pv, r.pingMedian)
			tv = append(tv, r.mbps)
		}
		ping[s], mbps[s] = median(pv), median(tv)
		b.ReportMetric(ping[s], "ms-ping-"+s)
		b.ReportMetric(mbps[s], "MB/s-wget-"+s)
	}
	ratio := func(unit string, v map[string]float64, base string) {
		if v["peerlan"] > 0 && v[base] > 0 {
			b.ReportMetric(v["peerlan"]/v[base], unit)
		}
	}
	ratio("x-jsbridge-ping", ping, "jsbridge")
	ratio("x-wsrelay-wget", mbps, "wsrelay")
	ratio("x-jsbridge-wget", mbps, "jsbridge")
}
