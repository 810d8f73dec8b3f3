//go:build linux

package e2e

// CPU profiles of a tab's main thread (V8's sampling profiler over the
// DevTools protocol), for finding where a browser benchmark's time goes.
// BenchmarkBrowserDirectVsRelayed takes them when PEERLAN_BENCH_PROFILE names
// a folder: it writes one .cpuprofile per tab and measurement there (open
// them in Chromium's DevTools, Performance panel) and logs a summary. Build
// the wasm peer with its symbols (`make web-assets WASM_LDFLAGS=`) so that
// Go functions have names.

import (
	"cmp"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/profiler"
	"github.com/chromedp/chromedp"
)

// profileDir is where profiles go, "" for none.
func profileDir() string { return os.Getenv("PEERLAN_BENCH_PROFILE") }

// StartProfile starts V8's sampling profiler in the tab, sampling every
// intervalMicros; the returned func stops it and returns the profile.
func (p *Tab) StartProfile(intervalMicros int64) (stop func() *profiler.Profile) {
	p.t.Helper()
	_, err := chromedp.Call(p.ctx, profiler.Enable, cdp.Empty{})
	if err == nil {
		_, err = chromedp.Call(p.ctx, profiler.SetSamplingInterval, profiler.SetSamplingIntervalParams{Interval: intervalMicros})
	}
	if err == nil {
		_, err = chromedp.Call(p.ctx, profiler.Start, cdp.Empty{})
	}
	if err != nil {
		p.t.Fatalf("tab %s: starting the profiler: %v", p.name, err)
	}
	return func() *profiler.Profile {
		p.t.Helper()
		res, err := chromedp.Call(p.ctx, profiler.Stop, cdp.Empty{})
		if err != nil {
			p.t.Fatalf("tab %s: stopping the profiler: %v", p.name, err)
		}
		return res.Profile
	}
}

// profileCategory names what a profile node's code is: Go (the wasm peer),
// v86 (its wasm and its JavaScript), the page, Go's wasm_exec.js glue, the
// browser's own ("(idle)", "(program)", "(garbage collector)"), or other.
func profileCategory(n *profiler.ProfileNode) string {
	f := n.CallFrame
	name, url := f.FunctionName, f.URL
	switch {
	case strings.HasPrefix(name, "(") && url == "":
		return name
	case strings.HasPrefix(url, "wasm://"):
		if isGoSymbol(name) {
			return "go-wasm"
		}
		return "v86-wasm"
	case strings.HasSuffix(url, "libv86.mjs"):
		return "v86-js"
	case strings.HasSuffix(url, "wasm_exec.js"):
		return "wasm_exec.js"
	case strings.HasSuffix(url, "app.js"):
		return "page"
	case url == "":
		return "native"
	}
	return "other-js"
}

func isGoSymbol(name string) bool {
	for _, p := range []string{"runtime.", "syscall/", "sync.", "github.com/", "main.", "internal/", "time.", "encoding/", "strconv.", "reflect.", "unicode/", "sort.", "slices.", "maps.", "log/", "context.", "errors.", "fmt.", "net/", "crypto/", "io.", "bytes.", "strings.", "math/", "os.", "iter.", "weak.", "unique.", "cmp."} {
		if strings.HasPrefix(name, p) {
			return true
		}
	}
	return false
}

// profileSelf returns each node's self time in microseconds.
func profileSelf(prof *profiler.Profile) map[int64]float64 {
	self := map[int64]float64{}
	for i, id := range prof.Samples {
		if i+1 < len(prof.TimeDeltas) {
			// A sample's delta is the time since the previous one; the
			// time until the next is what this sample stands for.
			self[id] += float64(prof.TimeDeltas[i+1])
		}
	}
	return self
}

// ProfileSummary returns a report of a profile: self time by category and
// the top functions by self time, each as a share of the sampled time.
func ProfileSummary(prof *profiler.Profile, top int) string {
	self := profileSelf(prof)
	byID := map[int64]*profiler.ProfileNode{}
	for _, n := range prof.Nodes {
		byID[n.ID] = n
	}
	var total float64
	cats := map[string]float64{}
	funcs := map[string]float64{}
	for id, us := range self {
		n := byID[id]
		if n == nil {
			continue
		}
		total += us
		c := profileCategory(n)
		cats[c] += us
		funcs[c+" "+n.CallFrame.FunctionName] += us
	}
	if total == 0 {
		return "empty profile"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%.2f s sampled; by category:", total/1e6)
	for _, kv := range sortedByValue(cats) {
		fmt.Fprintf(&b, " %s %.1f%%", kv.k, 100*kv.v/total)
	}
	b.WriteString("\ntop functions by self time:")
	for i, kv := range sortedByValue(funcs) {
		if i == top {
			break
		}
		fmt.Fprintf(&b, "\n  %5.1f%%  %s", 100*kv.v/total, kv.k)
	}
	return b.String()
}

type keyValue struct {
	k string
	v float64
}

func sortedByValue(m map[string]float64) []keyValue {
	var s []keyValue
	for k, v := range m {
		s = append(s, keyValue{k, v})
	}
	slices.SortFunc(s, func(a, b keyValue) int { return cmp.Compare(b.v, a.v) })
	return s
}

// saveProfile writes prof to dir/name.cpuprofile and logs its summary.
func saveProfile(t testing.TB, dir, name string, prof *profiler.Profile) {
	t.Helper()
	data, err := json.Marshal(prof)
	if err != nil {
		t.Fatalf("profile %s: %v", name, err)
	}
	path := filepath.Join(dir, name+".cpuprofile")
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatalf("profile %s: %v", name, err)
	}
	t.Logf("profile %s (%s):\n%s", name, path, ProfileSummary(prof, 25))
}
