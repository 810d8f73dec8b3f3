//go:build linux

package e2e

import (
	"bytes"
	"compress/gzip"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"
	"time"
)

// lanEchoHostJS replaces the wasm peer with a host inside the page at
// 10.86.0.9 that answers the guest's ARP and ICMP echo requests at once. A
// guest pinging it measures what the emulator, the guest kernel and the
// page's frame bridge cost per round trip, without any network: the
// baseline of BenchmarkBrowserLANPing.
const lanEchoHostJS = `(() => {
  const mac = [2, 0, 0x5e, 0, 0, 9], ip = [10, 86, 0, 9];
  const isHost = (f, at) => f[at] === ip[0] && f[at + 1] === ip[1] && f[at + 2] === ip[2] && f[at + 3] === ip[3];
  const lan = {
    onframe: null,
    send(frame) {
      const f = frame;
      let r = null;
      if (f.length >= 42 && f[12] === 8 && f[13] === 6 && f[21] === 1 && isHost(f, 38)) {
        r = new Uint8Array(42);
        r.set(f.subarray(6, 12), 0); r.set(mac, 6); r[12] = 8; r[13] = 6;
        r.set([0, 1, 8, 0, 6, 4, 0, 2], 14);
        r.set(mac, 22); r.set(ip, 28); r.set(f.subarray(22, 28), 32); r.set(f.subarray(28, 32), 38);
      } else if (f.length >= 42 && f[12] === 8 && f[13] === 0 && f[23] === 1 && isHost(f, 30)) {
        const icmp = 14 + (f[14] & 15) * 4;
        if (f[icmp] !== 8) return true;
        r = new Uint8Array(f);
        r.set(f.subarray(6, 12), 0); r.set(mac, 6);
        r.set(f.subarray(30, 34), 26); r.set(f.subarray(26, 30), 30);
        r[icmp] = 0;
        let sum = ((r[icmp + 2] << 8) | r[icmp + 3]) + 0x0800;
        sum = (sum & 0xffff) + (sum >> 16);
        r[icmp + 2] = sum >> 8; r[icmp + 3] = sum & 0xff;
      }
      if (r) queueMicrotask(() => lan.onframe && lan.onframe(r));
      return true;
    },
    status() { return {ip: "10.86.0.7", prefix: "10.86.0.0/24", gateway: "", signal: "connected", peers: [], drops: {}}; },
    leave() {},
  };
  globalThis.peerlan = { version: "echo host", async join() { return lan; } };
})();`

// lanRTTs runs `ping -c count -i 0.2` in the guest and returns the round
// trip times (ms) busybox printed, failing unless every echo was answered.
func lanRTTs(b *testing.B, g *lanGuest, dst string, count int) []float64 {
	b.Helper()
	off := g.ConsoleLen()
	g.Command("ping -c "+strconv.Itoa(count)+" -i 0.2 -W 5 "+dst, pingRE, CommandTimeout+time.Duration(count)*time.Second)
	out := Eval[string](g.Tab, "window.peerlanPage.consoleText().slice("+strconv.Itoa(off)+")")
	m := pingRE.FindStringSubmatch(out)
	if m == nil || m[1] != strconv.Itoa(count) || m[2] != m[1] {
		b.Fatalf("tab %s: ping %s: %q, want %d of %d answered", g.name, dst, m, count, count)
	}
	var rtts []float64
	for _, l := range lanPingTimeRE.FindAllStringSubmatch(out, -1) {
		v, err := strconv.ParseFloat(l[1], 64)
		if err != nil {
			b.Fatalf("ping time %q: %v", l[1], err)
		}
		rtts = append(rtts, v)
	}
	if len(rtts) != count {
		b.Fatalf("tab %s: %d reply lines for %d echoes", g.name, len(rtts), count)
	}
	return rtts
}

// BenchmarkBrowserLANPing measures the round trip of a ping between two
// guests in two tabs of two Chromium processes over the wasm peers' direct
// data channel (ms-median), against a guest pinging a host inside its own
// page (ms-bridge-median: emulator, guest kernel and frame bridge, no
// network). x-bridge is their ratio: what the LAN adds. The baseline guest
// runs alone; the LAN's two emulators share the machine's cores.
func BenchmarkBrowserLANPing(b *testing.B) {
	RequireChromium(b)
	RequireGuestImage(b)
	sig := lanServer(b)
	const count = 20

	// Baseline: one guest and the in-page echo host.
	br := StartBrowser(b)
	base := br.OpenTab(b, "bridge", "", true)
	base.InitScript(lanEchoHostJS)
	base.Navigate(sig.Base + "/?room=" + uniqueRoom("bench"))
	base.WaitPhase("ready", BootTimeout)
	base.Command("killall udhcpc; ip addr add 10.86.0.7/24 dev eth0; ip link set eth0 up; echo up$((1+1))",
		regexp.MustCompile(`(?m)^up2$`), CommandTimeout)
	bridge := lanRTTs(b, &lanGuest{Tab: base}, "10.86.0.9", count)
	base.Close()

	// The LAN: two browsers, one guest each.
	url := sig.Base + "/?room=" + uniqueRoom("bench")
	a := lanWaitGuest(b, StartBrowser(b).OpenTab(b, "A", url, true))
	g := lanWaitGuest(b, StartBrowser(b).OpenTab(b, "B", url, true))
	lanWaitLink(b, a.Tab, g.IP, lanJoinTimeout)
	lanRTTs(b, a, g.IP.String(), 3) // ARP, warm-up

	var lan []float64
	b.ResetTimer()
	for range b.N {
		lan = append(lan, lanRTTs(b, a, g.IP.String(), count)...)
	}
	b.StopTimer()
	l := lanCheckDirect(b, a.Tab, g.IP)
	mLAN, mBridge := median(lan), median(bridge)
	b.ReportMetric(mLAN, "ms-median")
	b.ReportMetric(mBridge, "ms-bridge-median")
	if mBridge > 0 {
		b.ReportMetric(mLAN/mBridge, "x-bridge")
	}
	b.ReportMetric(l.RTTMillis, "ms-ice-rtt")
	b.Logf("guest ping RTTs (ms): LAN %v; bridge %v", lan, bridge)
}

// BenchmarkBrowserLANConnect measures how long a fresh tab takes from
// navigation to "connected" (the page fetched and started the wasm peer and
// the server welcomed it: ms-to-connected), and how long a second tab's
// link to the first takes to open once that second peer has joined
// (ms-link-open, the WebRTC negotiation). Files come from loopback, so
// download time is nearly nil; compiling the wasm is not.
func BenchmarkBrowserLANConnect(b *testing.B) {
	RequireChromium(b)
	RequireGuestImage(b)
	sig := lanServer(b)
	br := StartBrowser(b)
	var connected, link float64
	for range b.N {
		url := sig.Base + "/?room=" + uniqueRoom("connect")
		first := br.OpenTab(b, "first", url, true)
		st := waitNet(b, first, "connected", lanJoinTimeout)
		connected += float64(st.Timings["netJoined"])
		second := br.OpenTab(b, "second", url, true)
		st = waitNet(b, second, "connected", lanJoinTimeout)
		connected += float64(st.Timings["netJoined"])
		firstIP := lanStatus(b, first).IP
		l := lanWaitLink(b, second, firstIP, lanJoinTimeout)
		link += l.OpenMillis
		second.Close()
		first.Close()
	}
	n := float64(b.N)
	b.ReportMetric(connected/(2*n), "ms-to-connected")
	b.ReportMetric(link/n, "ms-link-open")
}

// BenchmarkWasmSize reports the size of the built wasm peer: raw, and as
// bin/signal sends it to a browser that takes gzip or brotli (the variants
// make build puts beside it: gzip -9 -n and brotli -q 11), against the goal
// of 2 MB (10^6 bytes) gzip'd (x-goal-gzip). bytes-go-gzip is Go's own
// compress/gzip at its best level, a second opinion that needs no build.
func BenchmarkWasmSize(b *testing.B) {
	lanRequireWasm(b)
	path := filepath.Join(RepoRoot, "web", "dist", "peerlan.wasm")
	raw, err := os.ReadFile(path)
	if err != nil {
		b.Fatal(err)
	}
	var buf bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	zw.Write(raw)
	if err := zw.Close(); err != nil {
		b.Fatal(err)
	}
	sizes := map[string]int64{}
	for _, ext := range []string{".gz", ".br"} {
		fi, err := os.Stat(path + ext)
		if err != nil {
			b.Fatalf("the served variant: %v (make build makes it)", err)
		}
		sizes[ext] = fi.Size()
	}
	for range b.N {
	}
	b.ReportMetric(float64(len(raw)), "bytes-raw")
	b.ReportMetric(float64(sizes[".gz"]), "bytes-gzip")
	b.ReportMetric(float64(sizes[".br"]), "bytes-brotli")
	b.ReportMetric(float64(buf.Len()), "bytes-go-gzip")
	b.ReportMetric(float64(sizes[".gz"])/2e6, "x-goal-gzip")
}
