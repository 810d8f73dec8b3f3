//go:build linux

package e2e

import (
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

const (
	churnNative     = 8 // peers; the first churnStable never churn
	churnStable     = 4
	churnNativeFor  = 20 * time.Second
	churnNativeStep = 800 * time.Millisecond
)

// BenchmarkNativeChurn is issue 13's soak of the mesh: eight bin/peer in
// namespaces, of which four are disrupted one at a time for 20 s (killed
// with SIGKILL and restarted with their state dir, so they resume; stopped
// with SIGSTOP past the resume grace and continued; stopped with SIGTERM
// and started again) while the other four run throughout. Reported: how
// long after each disruption every one of the 28 links is open again,
// median and worst ("heal-p50-s", "heal-max-s"; the goal is 10 s), and the
// steady peers' goroutines, RSS and live heap (after a collection) against
// their own before the churn, the worst of the four ("x-goroutines",
// "x-rss", "x-heap"; 1 = baseline). RSS lags: Go returns freed memory to
// the system only gradually, so goroutines and the heap are the leak test.
func BenchmarkNativeChurn(b *testing.B) {
	for range b.N {
		sig := StartSignal(b, "-keepalive", "250ms", "-keepalive-timeout", "1s", "-resume-grace", "1s")
		room := "churn-" + randomSuffix(4)
		type member struct {
			p     *NativePeer
			ns    *Namespace
			state string
		}
		ms := make([]*member, churnNative)
		start := func(m *member) {
			m.p = StartPeer(b, sig, room, m.ns, "-state-dir", m.state, "-pprof", "-status-every", "0")
		}
		for i := range ms {
			ms[i] = &member{ns: NewNamespace(b, "churn"+strconv.Itoa(i)), state: b.TempDir()}
			start(ms[i])
		}
		allOpen := func(timeout time.Duration) time.Duration {
			t0 := time.Now()
			for _, m := range ms {
				m.p.WaitLinks(b, churnNative-1, timeout)
			}
			return time.Since(t0)
		}
		allOpen(60 * time.Second)
		time.Sleep(2 * time.Second) // let the fresh sessions settle
		var baseG, baseRSS, baseHeap [churnStable]float64
		for i := range churnStable {
			baseG[i], baseRSS[i], baseHeap[i] = peerGoroutines(b, ms[i].p), peerRSS(b, ms[i].p), peerHeap(b, ms[i].p)
		}

		rng := rand.New(rand.NewPCG(7, 13))
		var kills, sleeps, restarts int
		var heals []time.Duration
		for t0 := time.Now(); time.Since(t0) < churnNativeFor; {
			m := ms[churnStable+rng.IntN(churnNative-churnStable)]
			op := rng.IntN(3)
			switch op {
			case 0:
				m.p.Kill()
				start(m)
				kills++
			case 1:
				m.p.Signal(syscall.SIGSTOP)
				time.Sleep(3 * time.Second) // past keepalive timeout and grace
				m.p.Signal(syscall.SIGCONT)
				sleeps++
			case 2:
				if err := m.p.Stop(5 * time.Second); err != nil {
					b.Fatalf("%s did not stop cleanly: %v", m.p.Name, err)
				}
				start(m)
				restarts++
			}
			// Every link open again, timed from the end of the disruption.
			heals = append(heals, allOpen(60*time.Second))
			b.Logf("%s %s: every link open %v later", [...]string{"kill", "sleep", "restart"}[op], m.p.Name, heals[len(heals)-1].Round(time.Millisecond))
		}
		slices.Sort(heals)
		time.Sleep(2 * time.Second) // closed sessions finish closing
		xG, xRSS, xHeap := 0.0, 0.0, 0.0
		for i := range churnStable {
			g, rss, heap := peerGoroutines(b, ms[i].p), peerRSS(b, ms[i].p), peerHeap(b, ms[i].p)
			xG, xRSS, xHeap = max(xG, g/baseG[i]), max(xRSS, rss/baseRSS[i]), max(xHeap, heap/baseHeap[i])
			b.Logf("%s: goroutines %v -> %v, RSS %.1f -> %.1f MiB, live heap %.1f -> %.1f MiB", ms[i].p.Name,
				baseG[i], g, baseRSS[i]/(1<<20), rss/(1<<20), baseHeap[i]/(1<<20), heap/(1<<20))
		}
		b.ReportMetric(0, "ns/op")
		b.ReportMetric(heals[len(heals)/2].Seconds(), "heal-p50-s")
		b.ReportMetric(heals[len(heals)-1].Seconds(), "heal-max-s")
		b.ReportMetric(xG, "x-goroutines")
		b.ReportMetric(xRSS, "x-rss")
		b.ReportMetric(xHeap, "x-heap")
		b.ReportMetric(float64(kills), "kills")
		b.ReportMetric(float64(sleeps), "sleeps")
		b.ReportMetric(float64(restarts), "restarts")
	}
}

// peerProfile fetches one of the peer's profiles (it runs with -pprof) as
// text, with query's parameters.
func peerProfile(b *testing.B, p *NativePeer, query string) string {
	b.Helper()
	resp, err := http.Get(strings.TrimSuffix(p.StatusURL, "/status") + "/debug/pprof/" + query)
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		b.Fatal(err)
	}
	return string(body)
}

// peerGoroutines counts the peer's goroutines.
func peerGoroutines(b *testing.B, p *NativePeer) float64 {
	b.Helper()
	var n float64
	if _, err := fmt.Sscanf(peerProfile(b, p, "goroutine?debug=1"), "goroutine profile: total %g", &n); err != nil {
		b.Fatalf("%s: goroutine profile: %v", p.Name, err)
	}
	return n
}

// peerHeap reads the peer's live heap (HeapInuse) right after a garbage
// collection; the second of two, since what sync.Pools hold survives one.
func peerHeap(b *testing.B, p *NativePeer) float64 {
	b.Helper()
	peerProfile(b, p, "heap?gc=1&debug=1")
	for _, line := range strings.Split(peerProfile(b, p, "heap?gc=1&debug=1"), "\n") {
		if rest, ok := strings.CutPrefix(line, "# HeapInuse = "); ok {
			n, err := strconv.ParseFloat(strings.TrimSpace(rest), 64)
			if err != nil {
				b.Fatal(err)
			}
			return n
		}
	}
	b.Fatalf("%s: no HeapInuse in the heap profile", p.Name)
	return 0
}

// peerRSS reads the peer process's resident set in bytes.
func peerRSS(b *testing.B, p *NativePeer) float64 {
	b.Helper()
	st, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))
	if err != nil {
		b.Fatal(err)
	}
	for _, line := range strings.Split(string(st), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseFloat(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 64)
			if err != nil {
				b.Fatal(err)
			}
			return kb * 1024
		}
	}
	b.Fatalf("%s: no VmRSS", p.Name)
	return 0
}
