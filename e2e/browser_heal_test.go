//go:build linux

package e2e

import (
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// TestBrowserLinksHealAfterSleep is TestNativeLinksHealAfterSleep with
// browser tabs: two guests in two Chromium processes, each in turn frozen
// with SIGSTOP (every process of that browser, as a laptop lid closing
// freezes them all) until the signaling server has announced its peer gone,
// past the resume grace, then continued. Both guests must ping each other
// within healBound of the sleeper rejoining.
//
// A joins first, so B offers on the link and A answers. B sleeps first, as
// the offerer, and stays the offerer when the link heals (A's new link waits
// for B's offer, or asks B for one); then A sleeps, as the answerer, which is
// the case that used to stay unlinked for good: A's link waits for an offer
// and B's new link for A's. Each sleeper's role is checked from the "link
// open" lines of its log before it sleeps.
func TestBrowserLinksHealAfterSleep(t *testing.T) {
	VerifyNoLeaks(t)
	RequireChromium(t)
	RequireGuestImage(t)
	// Short keepalive and grace, so that a few seconds' sleep outlasts both.
	sig := lanServer(t, "-keepalive", "250ms", "-keepalive-timeout", "1s", "-resume-grace", "1s")
	url := sig.Base + "/?room=" + uniqueRoom("heal")

	bA, bB := StartBrowser(t), StartBrowser(t)
	tabA := healOpenTab(t, bA, "A", url)
	waitNet(t, tabA, "connected", lanJoinTimeout) // A is in the room before B joins
	tabB := healOpenTab(t, bB, "B", url)
	a, b := lanWaitGuest(t, tabA), lanWaitGuest(t, tabB)
	lanWaitLink(t, a.Tab, b.IP, lanJoinTimeout)
	lanWaitLink(t, b.Tab, a.IP, lanJoinTimeout)
	if got := healOfferer(t, b.Tab, a.IP); got != "true" {
		t.Fatalf("tab B's link to A opened with offerer=%s; B joined last and must offer", got)
	}
	healPing(t, a, b, time.Now().Add(CommandTimeout))

	for _, s := range []struct {
		sleeper, other *lanGuest
		br             *Browser
		role           string // the sleeper's role on the link as it goes to sleep
	}{
		{b, a, bB, "offerer"},
		{a, b, bA, "answerer"},
	} {
		name := s.sleeper.name
		wantOfferer := strconv.FormatBool(s.role == "offerer")
		if got := healOfferer(t, s.sleeper.Tab, s.other.IP); got != wantOfferer {
			t.Fatalf("tab %s's link opened last with offerer=%s; it should sleep as the %s", name, got, s.role)
		}
		procs := healFreeze(t, s.br)
		slept := time.Now()
		gone := false
		deadline := slept.Add(15 * time.Second)
		for !gone && time.Now().Before(deadline) {
			_, linked := LinkTo(lanStatus(t, s.other.Tab), s.sleeper.IP)
			gone = !linked
			time.Sleep(50 * time.Millisecond)
		}
		heardGone := time.Since(slept)
		healThaw(procs)
		if !gone {
			t.Fatalf("tab %s still lists %s %v after %s's browser was stopped", s.other.name, s.sleeper.IP, heardGone.Round(time.Millisecond), name)
		}
		t.Logf("tab %s (the %s) slept %v; tab %s heard it leave after %v, past its resume grace",
			name, s.role, time.Since(slept).Round(time.Millisecond), s.other.name, heardGone.Round(time.Millisecond))

		// Rejoined: the sleeper's signaling is connected again and the other
		// side has a link to it again (the server announced it).
		continued := time.Now()
		waitCond(t, 15*time.Second, "tab "+name+" to rejoin", func() bool {
			_, listed := LinkTo(lanStatus(t, s.other.Tab), s.sleeper.IP)
			return listed && lanStatus(t, s.sleeper.Tab).Signal == "connected"
		})
		rejoined := time.Now()
		t.Logf("tab %s rejoined %v after it was continued", name, rejoined.Sub(continued).Round(time.Millisecond))
		healPing(t, a, b, rejoined.Add(healBound))
		t.Logf("heal: the guests ping each other %v after tab %s (slept as the %s) rejoined",
			time.Since(rejoined).Round(time.Millisecond), name, s.role)
		lanWaitLink(t, a.Tab, b.IP, healBound)
		lanWaitLink(t, b.Tab, a.IP, healBound)
		for _, g := range []*lanGuest{a, b} {
			if st := lanStatus(t, g.Tab); st.Signal != "connected" || len(st.Peers) != 1 {
				t.Errorf("tab %s after healing: signal %q, links %+v; want connected with one link", g.name, st.Signal, st.Peers)
			}
		}
		t.Logf("tab %s's link came back with offerer=%s", name, healOfferer(t, s.sleeper.Tab, s.other.IP))
	}
	// The status is a snapshot the peer refreshes on its events and every
	// 250 ms, so the last pings' frames may not be counted yet.
	for _, g := range [][2]*lanGuest{{a, b}, {b, a}} {
		waitCond(t, 5*time.Second, "tab "+g[0].name+"'s link to count frames both ways", func() bool {
			l, ok := LinkTo(lanStatus(t, g[0].Tab), g[1].IP)
			return ok && l.RxFrames > 0 && l.TxFrames > 0
		})
	}
	lanCheckDirect(t, a.Tab, b.IP)
	lanCheckDirect(t, b.Tab, a.IP)
}

// healLogJS records the wasm peer's "link open" log lines (see
// wasm/console.go) in window.__peerlanLinkOpens, before the page runs.
const healLogJS = `(() => {
  window.__peerlanLinkOpens = [];
  const log = console.log;
  console.log = function (...args) {
    const s = String(args[0]);
    if (s.startsWith("peerlan: ") && s.includes('msg="link open"')) window.__peerlanLinkOpens.push(s);
    return log.apply(this, args);
  };
})()`

// healOpenTab opens the page in a window of its own, recording its links'
// opening log lines.
func healOpenTab(t testing.TB, b *Browser, name, url string) *Tab {
	t.Helper()
	tab := b.OpenTab(t, name, "", true)
	tab.InitScript(healLogJS)
	tab.Navigate(url)
	return tab
}

var healOffererRE = regexp.MustCompile(`\bofferer=(true|false)\b`)

// healOfferer returns "true" or "false": whether tab's peer offered on the
// session of its link to ip that opened last, from its log.
func healOfferer(t testing.TB, tab *Tab, ip netip.Addr) string {
	t.Helper()
	lines := Eval[[]string](tab, `window.__peerlanLinkOpens`)
	for i := len(lines) - 1; i >= 0; i-- {
		if strings.Contains(lines[i], " ip="+ip.String()+" ") {
			if m := healOffererRE.FindStringSubmatch(lines[i]); m != nil {
				return m[1]
			}
		}
	}
	t.Fatalf("tab %s logged no link open to %s: %q", tab.name, ip, lines)
	return ""
}

// healPing makes each guest ping the other, one echo a second, until one is
// answered each way, failing the test when that takes past deadline.
func healPing(t testing.TB, a, b *lanGuest, deadline time.Time) {
	t.Helper()
	tries := int(time.Until(deadline)/time.Second) + 1
	guests := []struct{ g, to *lanGuest }{{a, b}, {b, a}}
	offsets := make([]int, len(guests))
	for i, p := range guests {
		offsets[i] = p.g.ConsoleLen()
		// The shell echoes the line: "heal-"ok and "heal-"fail print as
		// heal-ok and heal-fail only when run.
		p.g.Type("n=0; until ping -c 1 -W 1 " + p.to.IP.String() + " >/dev/null; do n=$((n+1)); [ $n -ge " +
			strconv.Itoa(tries) + ` ] && break; done; [ $n -lt ` + strconv.Itoa(tries) + ` ] && echo "heal-"ok-$n || echo "heal-"fail` + "\n")
	}
	re := regexp.MustCompile(`(?m)^heal-(ok-\d+|fail)\s*$`)
	for i, p := range guests {
		m := p.g.WaitConsoleAfter(offsets[i], re, time.Until(deadline)+CommandTimeout)
		if m[1] == "fail" || time.Now().After(deadline) {
			t.Fatalf("guest %s cannot ping %s by the deadline (%s, %v late): statuses\nA %+v\nB %+v", p.g.name, p.to.IP, m[0],
				time.Since(deadline).Round(time.Millisecond), lanStatus(t, a.Tab), lanStatus(t, b.Tab))
		}
	}
}

// healFreeze stops every process of the browser, the browser process first
// (so that it sees none of its children hang), and returns their ids: the
// descendants of the browser process (zygotes, renderer, network service,
// utilities), 10 of them here. Chromium's crashpad handlers, reparented to
// init, keep running; they carry none of the page's traffic.
func healFreeze(t testing.TB, b *Browser) []int {
	t.Helper()
	root := chromedp.FromContext(b.ctx).Browser.Process()
	if root == nil {
		t.Fatal("no browser process")
	}
	procs := []int{root.Pid}
	t.Cleanup(func() { healThaw(procs) }) // before the browser's cleanup stops it
	if err := syscall.Kill(root.Pid, syscall.SIGSTOP); err != nil {
		t.Fatalf("stopping the browser: %v", err)
	}
	// Children are listed after their parents; a frozen parent forks none.
	for i := 0; i < len(procs); i++ {
		for _, c := range childProcs(procs[i]) {
			_ = syscall.Kill(c, syscall.SIGSTOP)
			procs = append(procs, c)
		}
	}
	t.Logf("stopped the browser's %d processes %v", len(procs), procs)
	if len(procs) < 3 {
		t.Fatalf("the browser has processes %v; want its renderer and network service too", procs)
	}
	return procs
}

// healThaw continues the processes healFreeze stopped, children first.
func healThaw(procs []int) {
	for i := len(procs) - 1; i >= 0; i-- {
		_ = syscall.Kill(procs[i], syscall.SIGCONT)
	}
}

// childProcs lists the processes whose parent is pid.
func childProcs(pid int) []int {
	ents, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range ents {
		id, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...; comm may hold spaces and parentheses.
		s := string(stat)
		f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
		if len(f) > 1 && f[1] == strconv.Itoa(pid) {
			out = append(out, id)
		}
	}
	return out
}
