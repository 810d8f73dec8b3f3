//go:build linux

package e2e

import (
	"slices"
	"strconv"
	"testing"
)

// rawChannelJS sets up a plain RTCDataChannel with peerlan's settings in a
// page, for the harness to negotiate (as jsBridgeJS does, under other names
// so that it can share a page with the wasm peer): globalThis.__raw.
const rawChannelJS = `(() => {
  let pc = null;
  const raw = {dc: null, onmessage: null};
  const start = () => {
    pc = new RTCPeerConnection();
    const dc = pc.createDataChannel("raw", {negotiated: true, id: 0, ordered: false, maxRetransmits: 0});
    dc.binaryType = "arraybuffer";
    dc.onmessage = (e) => raw.onmessage && raw.onmessage(e);
    dc.onopen = () => { raw.dc = dc; };
  };
  const gathered = () => new Promise((resolve) => {
    if (pc.iceGatheringState === "complete") return resolve();
    pc.addEventListener("icegatheringstatechange", () => { if (pc.iceGatheringState === "complete") resolve(); });
  });
  raw.offer = async () => { start(); await pc.setLocalDescription(); await gathered(); return pc.localDescription.sdp; };
  raw.answer = async (sdp) => {
    start();
    await pc.setRemoteDescription({type: "offer", sdp});
    await pc.setLocalDescription();
    await gathered();
    return pc.localDescription.sdp;
  };
  raw.accept = async (sdp) => { await pc.setRemoteDescription({type: "answer", sdp}); return true; };
  raw.open = () => raw.dc !== null;
  globalThis.__raw = raw;
})()`

// frameEchoJS makes the page echo every frame of the test's EtherType, on
// the wasm peer (swapping the MACs) and on the raw channel.
const frameEchoJS = `(() => {
  lan.onframe = (f) => {
    if (f[12] !== 0x88 || f[13] !== 0xb6) return;
    const r = new Uint8Array(f);
    r.set(f.subarray(6, 12), 0); r.set(f.subarray(0, 6), 6);
    lan.send(r);
  };
  __raw.onmessage = (e) => __raw.dc.send(e.data);
  return true;
})()`

// frameRTTJS sends n frames of size bytes one at a time, the next when the
// echo of the last came back, over the wasm peer (mode "peerlan") or the raw
// channel ("raw"), and returns the round trips in microseconds.
func frameRTTJS(mode string, n, size int) string {
	return `(async (mode, n, size) => {
  const f = new Uint8Array(size);
  f.set([2, 0, 0, 0, 0, 0x98, 2, 0, 0, 0, 0, 0x43, 0x88, 0xb6]);
  const rtts = [];
  for (let i = 0; i < n; i++) {
    await new Promise((r) => setTimeout(r, 2));
    f[14] = i & 255;
    const t0 = performance.now();
    await new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(mode + ": no echo of frame " + i)), 5000);
      const done = () => { clearTimeout(timer); resolve(); };
      if (mode === "raw") {
        __raw.onmessage = () => done();
        __raw.dc.send(f);
      } else {
        lan.onframe = (g) => { if (g[12] === 0x88 && g[13] === 0xb6) done(); };
        lan.send(f);
      }
    });
    rtts.push((performance.now() - t0) * 1000);
  }
  return rtts;
})(` + jsString(mode) + `, ` + strconv.Itoa(n) + `, ` + strconv.Itoa(size) + `)`
}

// trimmedMean is the mean of v without its lowest and highest fraction.
func trimmedMean(v []float64, fraction float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	cut := int(float64(len(s)) * fraction)
	s = s[cut : len(s)-cut]
	if len(s) == 0 {
		return 0
	}
	var sum float64
	for _, x := range s {
		sum += x
	}
	return sum / float64(len(s))
}

// BenchmarkBrowserFrameRTT measures what the wasm peer adds to a frame's
// trip, without emulators: two pages in two Chromium processes, one echoing
// every frame back, the other timing one frame at a time there and back
// (us-peerlan: lan.send → switch → link → data channel → the other peer's
// link → switch → lan.onframe, and the same way back), against the same trip
// on a plain data channel with the same settings between the same two pages
// (us-raw). us-added-per-hop is the difference over the four passes through
// a peer; the figures are trimmed means of 1514-byte frames.
func BenchmarkBrowserFrameRTT(b *testing.B) {
	RequireChromium(b)
	x, y, _ := linkBarePeers(b, lanServer(b), "rtt")
	for _, tab := range []*Tab{x, y} {
		Eval[bool](tab, rawChannelJS+`, true`)
	}
	offer := Eval[string](x, `__raw.offer()`)
	answer := Eval[string](y, `__raw.answer(`+jsString(offer)+`)`)
	Eval[bool](x, `__raw.accept(`+jsString(answer)+`)`)
	for _, tab := range []*Tab{x, y} {
		waitTrue(b, tab, `__raw.open()`, lanJoinTimeout)
	}
	Eval[bool](y, frameEchoJS)
	const perRound, size = 100, 1514
	Eval[[]float64](x, frameRTTJS("peerlan", 10, size)) // warm up: MAC learning, JIT
	Eval[[]float64](x, frameRTTJS("raw", 10, size))
	if dir := profileDir(); dir != "" {
		stopX, stopY := x.StartProfile(100), y.StartProfile(100)
		Eval[[]float64](x, frameRTTJS("peerlan", 500, size))
		saveProfile(b, dir, "frame-rtt-X", stopX())
		saveProfile(b, dir, "frame-rtt-Y", stopY())
	}
	var lan, raw []float64
	b.ResetTimer()
	for range b.N {
		for range 3 { // interleaved rounds
			lan = append(lan, Eval[[]float64](x, frameRTTJS("peerlan", perRound, size))...)
			raw = append(raw, Eval[[]float64](x, frameRTTJS("raw", perRound, size))...)
		}
	}
	b.StopTimer()
	// performance.now() is coarsened to 100 µs (with jitter) in a page that
	// is not cross-origin isolated: a trimmed mean resolves finer than a
	// median of such readings.
	ml, mr := trimmedMean(lan, 0.1), trimmedMean(raw, 0.1)
	b.ReportMetric(ml, "us-peerlan")
	b.ReportMetric(mr, "us-raw")
	b.ReportMetric((ml-mr)/4, "us-added-per-hop")
	b.ReportMetric(ml/mr, "x-raw")
}
