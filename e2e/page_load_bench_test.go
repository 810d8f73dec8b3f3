//go:build linux

package e2e

import (
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"

	"github.com/peerlan/peerlan/web"
)

// Goals of issue 15: page load to "connected".
const (
	pageLoadGoalLoopback = 1000 * time.Millisecond
	pageLoadGoalEmulated = 5000 * time.Millisecond
)

// pageNet is a network a page loads over: loopback as it is, or Chromium's
// emulation of a link (DevTools Network.emulateNetworkConditionsByRule,
// applied to every request of the tab).
type pageNet struct {
	name string
	cond *network.Conditions
	goal time.Duration
}

var pageNets = []pageNet{
	{"loopback", nil, pageLoadGoalLoopback},
	// 20 Mbit/s each way, 40 ms from request to response headers.
	{"20mbit-40ms", &network.Conditions{Latency: 40, DownloadThroughput: 20e6 / 8, UploadThroughput: 20e6 / 8}, pageLoadGoalEmulated},
}

// pageLoad is one navigation: the bytes Chromium received for it (headers
// included: the sum of encodedDataLength over its requests), its requests,
// and the page's own time from navigation start to "connected".
type pageLoad struct {
	bytes     float64
	requests  int
	connected time.Duration
	// images is when the guest image was in (it downloads beside the
	// wasm peer, and the emulator's boot then shares the cores with it).
	images time.Duration
}

// pageLoadRounds is how many times each handler is measured per network,
// alternating which goes first; medians are reported. The test machine's
// cores are shared, and one load's time to "connected" moved by half a
// second between runs while the bytes never did.
const pageLoadRounds = 3

// BenchmarkPageLoad loads the page from a real bin/signal in headless
// Chromium with an empty cache (first) and again in the same profile
// (repeat), on loopback and under emulation of 20 Mbit/s and 40 ms, and
// reports the bytes on the wire and page load -> connected for each (the
// medians of pageLoadRounds). The baseline in the same run is the handler
// bin/signal had before internal/static (http.FileServer: no compression,
// no validator, so a repeat load downloads everything again), serving the
// same files in front of the same bin/signal ("plain-" metrics). x-goal is
// the time over the goal (1 s loopback, 5 s emulated); x-plain is
// static / plain.
func BenchmarkPageLoad(b *testing.B) {
	RequireChromium(b)
	RequireGuestImage(b)
	sig := StartSignal(b)
	plain := plainPageServer(b, sig)
	for _, pn := range pageNets {
		b.Run(pn.name, func(b *testing.B) {
			var st, pl [2][]pageLoad // first, repeat
			for n := range b.N * pageLoadRounds {
				var s, p [2]pageLoad
				if n%2 == 0 {
					p = loadPageTwice(b, plain, pn)
					s = loadPageTwice(b, sig.Base, pn)
				} else {
					s = loadPageTwice(b, sig.Base, pn)
					p = loadPageTwice(b, plain, pn)
				}
				for i := range 2 {
					pl[i] = append(pl[i], p[i])
					st[i] = append(st[i], s[i])
				}
			}
			for i, which := range []string{"first", "repeat"} {
				s, p := medianLoad(st[i]), medianLoad(pl[i])
				b.ReportMetric(s.bytes, which+"-B")
				b.ReportMetric(float64(s.connected.Milliseconds()), which+"-ms-connected")
				b.ReportMetric(p.bytes, "plain-"+which+"-B")
				b.ReportMetric(float64(p.connected.Milliseconds()), "plain-"+which+"-ms-connected")
				b.ReportMetric(float64(s.connected)/float64(pn.goal), "x-goal-"+which)
				b.ReportMetric(float64(p.connected)/float64(pn.goal), "x-goal-plain-"+which)
				b.ReportMetric(s.bytes/p.bytes, "x-plain-"+which+"-B")
				b.Logf("%s %s load (medians): static %.0f B in %d requests, guest image in after %v, connected after %v; plain %.0f B in %d requests, %v, %v",
					pn.name, which, s.bytes, s.requests, s.images, s.connected, p.bytes, p.requests, p.images, p.connected)
				b.Logf("%s %s load, each round: static %v; plain %v", pn.name, which, connectedTimes(st[i]), connectedTimes(pl[i]))
			}
		})
	}
}

// medianLoad returns the median of each figure of loads on its own.
func medianLoad(loads []pageLoad) pageLoad {
	med := func(f func(pageLoad) float64) float64 {
		v := make([]float64, len(loads))
		for i, l := range loads {
			v[i] = f(l)
		}
		slices.Sort(v)
		if len(v)%2 == 1 {
			return v[len(v)/2]
		}
		return (v[len(v)/2-1] + v[len(v)/2]) / 2
	}
	return pageLoad{
		bytes:     med(func(l pageLoad) float64 { return l.bytes }),
		requests:  int(med(func(l pageLoad) float64 { return float64(l.requests) })),
		connected: time.Duration(med(func(l pageLoad) float64 { return float64(l.connected) })),
		images:    time.Duration(med(func(l pageLoad) float64 { return float64(l.images) })),
	}
}

func connectedTimes(loads []pageLoad) []time.Duration {
	var d []time.Duration
	for _, l := range loads {
		d = append(d, l.connected)
	}
	return d
}

// loadPageTwice opens the page at base in a new browser (an empty profile)
// under pn, waits for "connected" and every file of the guest image, then
// loads it again in the same tab (a new room), and returns both loads.
func loadPageTwice(b *testing.B, base string, pn pageNet) [2]pageLoad {
	b.Helper()
	br := StartBrowser(b)
	defer br.Close()
	tab := br.OpenTab(b, "page", "", true)
	defer tab.Close()
	if _, err := chromedp.Call(tab.ctx, network.Enable, network.EnableParams{}); err != nil {
		b.Fatalf("Network.enable: %v", err)
	}
	if pn.cond != nil {
		if _, err := chromedp.Call(tab.ctx, network.EmulateNetworkConditionsByRule,
			network.EmulateNetworkConditionsByRuleParams{MatchedNetworkConditions: []*network.Conditions{pn.cond}}); err != nil {
			b.Fatalf("Network.emulateNetworkConditionsByRule: %v", err)
		}
	}
	var mu sync.Mutex
	var bytes float64
	var requests int
	var last time.Time
	go func() {
		for ev, err := range chromedp.Events(tab.ctx, network.LoadingFinished) {
			if err != nil {
				return
			}
			mu.Lock()
			bytes += ev.EncodedDataLength
			requests++
			last = time.Now()
			mu.Unlock()
		}
	}()
	var loads [2]pageLoad
	for i := range loads {
		mu.Lock()
		bytes, requests, last = 0, 0, time.Now()
		mu.Unlock()
		tab.Navigate(base + "/?room=" + uniqueRoom("pageload"))
		st := waitNet(b, tab, "connected", lanJoinTimeout)
		// Every file is fetched once the guest image is in: wait for it
		// and for the network to fall quiet.
		deadline := time.Now().Add(BootTimeout)
		for {
			st = tab.State()
			mu.Lock()
			quiet := time.Since(last)
			mu.Unlock()
			if _, ok := st.Timings["imagesLoaded"]; ok && quiet > 500*time.Millisecond {
				break
			}
			if st.Phase == "error" || time.Now().After(deadline) {
				b.Fatalf("%s: waiting for the guest image: phase %q %s", base, st.Phase, st.Error)
			}
			tab.sleep(100 * time.Millisecond)
		}
		mu.Lock()
		loads[i] = pageLoad{bytes: bytes, requests: requests,
			connected: time.Duration(st.Timings["netJoined"]) * time.Millisecond,
			images:    time.Duration(st.Timings["imagesLoaded"]) * time.Millisecond}
		mu.Unlock()
	}
	return loads
}

// plainPageServer serves web.FS() the way bin/signal did before
// internal/static (http.FileServer with Cache-Control: no-cache and no
// validator: embedded files have no modification time) and proxies the
// signaling WebSocket to sig, so the page connects as it does from sig
// itself. It returns the base URL.
func plainPageServer(b *testing.B, sig *SignalServer) string {
	b.Helper()
	target, err := url.Parse(sig.Base)
	if err != nil {
		b.Fatal(err)
	}
	proxy := httputil.NewSingleHostReverseProxy(target) // keeps the Host header: same origin
	files := http.FileServer(http.FS(web.FS()))
	mux := http.NewServeMux()
	mux.Handle("/signal", proxy)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("Cache-Control", "no-cache")
		files.ServeHTTP(w, r)
	})
	srv := httptest.NewServer(mux)
	b.Cleanup(srv.Close)
	if resp, err := http.Get(srv.URL + "/"); err != nil || resp.StatusCode != 200 {
		b.Fatalf("plain page server: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}
	return srv.URL
}
