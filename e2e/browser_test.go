//go:build linux

package e2e

import (
	"fmt"
	"io/fs"
	"math/rand/v2"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/peerlan/peerlan/web"
)

// uniqueRoom returns a room name no other test run uses.
func uniqueRoom(prefix string) string {
	return fmt.Sprintf("%s-%08x", prefix, rand.Uint32())
}

// hidePaths hides the named files and folders (with everything under them)
// of an FS, as if they had not been built.
type hidePaths struct {
	fs.FS
	paths []string
}

func (h hidePaths) Open(name string) (fs.File, error) {
	for _, p := range h.paths {
		if name == p || strings.HasPrefix(name, p+"/") {
			return nil, &fs.PathError{Op: "open", Path: name, Err: fs.ErrNotExist}
		}
	}
	return h.FS.Open(name)
}

// TestBrowserPageWithoutGuest checks what the page does on its own, with no
// guest image served: the room link, the URL parameters, and a clear failure.
func TestBrowserPageWithoutGuest(t *testing.T) {
	VerifyNoLeaks(t)
	RequireChromium(t)
	RequirePageAssets(t)
	base := ServePage(t, hidePaths{web.FS(), []string{"dist/guest"}})
	b := StartBrowser(t)

	t.Run("RandomRoomInURL", func(t *testing.T) {
		tab := b.OpenTab(t, "noroom", base+"/?relay=relay&token=tok", true)
		href := waitFor(t, tab, `location.href.includes("room=") ? location.href : ""`)
		u, err := url.Parse(href)
		if err != nil {
			t.Fatal(err)
		}
		room := u.Query().Get("room")
		if !regexp.MustCompile(`^[a-z]+-[a-z]+-[0-9]{4}$`).MatchString(room) {
			t.Errorf("generated room %q is not a readable word-word-number name", room)
		}
		if got := u.Query().Get("relay"); got != "relay" {
			t.Errorf("relay parameter lost when the room was added: %q", href)
		}
		if got := u.Query().Get("token"); got != "tok" {
			t.Errorf("token parameter lost when the room was added: %q", href)
		}
		share := Eval[string](tab, `document.getElementById("share-link").value`)
		if share != href {
			t.Errorf("share link %q, want the page URL %q", share, href)
		}
		if shown := Eval[string](tab, `document.getElementById("net-room").textContent`); shown != room {
			t.Errorf("network panel shows room %q, want %q", shown, room)
		}
		if policy := Eval[string](tab, `document.getElementById("net-relay").textContent`); !strings.Contains(policy, "relay only") {
			t.Errorf("relay=relay shown as %q", policy)
		}
	})

	t.Run("MissingImageIsReported", func(t *testing.T) {
		tab := b.OpenTab(t, "noimage", base+"/?room="+uniqueRoom("noimage"), true)
		st := tab.WaitPhase("error", time.Minute)
		if !strings.Contains(st.Error, "make build") || !strings.Contains(st.Error, "dist/guest/") {
			t.Errorf("page error %q does not name the missing file and `make build`", st.Error)
		}
		alerts := Eval[string](tab, `document.getElementById("alerts").textContent`)
		if !strings.Contains(alerts, "The guest cannot run") {
			t.Errorf("the page shows no error to the user; alerts: %q", alerts)
		}
	})

	t.Run("BadParameters", func(t *testing.T) {
		tab := b.OpenTab(t, "badparams", base+"/?room=-bad room&relay=sometimes&nic=e1000", true)
		st := waitNet(t, tab, "error", 30*time.Second)
		if !strings.Contains(st.Net.Error, "not a valid room name") {
			t.Errorf("net error %q, want an invalid-room message", st.Net.Error)
		}
		alerts := Eval[string](tab, `document.getElementById("alerts").textContent`)
		for _, want := range []string{"relay=sometimes", "nic=e1000", "not a valid room name"} {
			if !strings.Contains(alerts, want) {
				t.Errorf("alerts %q do not mention %q", alerts, want)
			}
		}
	})
}

// waitFor polls a JavaScript expression until it yields a non-empty string.
func waitFor(t *testing.T, tab *Tab, expr string) string {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		if v, err := TryEval[string](tab, expr); err == nil && v != "" {
			return v
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s stayed empty", expr)
		}
		tab.sleep(pollInterval)
	}
}

// withoutPeer is the page without the wasm peer, as before the lead's
// wasm/ lands or when its build failed.
func withoutPeer() fs.FS {
	return hidePaths{web.FS(), []string{"dist/peerlan.wasm", "dist/wasm_exec.js"}}
}

// TestBrowserGuestBoots boots the guest in a real Chromium tab to its shell,
// runs commands on its serial console, and checks that without a wasm peer
// the page says the network is unavailable while the guest keeps working.
func TestBrowserGuestBoots(t *testing.T) {
	VerifyNoLeaks(t)
	RequireChromium(t)
	RequireGuestImage(t)
	base := ServePage(t, withoutPeer())
	b := StartBrowser(t)
	tab := b.OpenTab(t, "guest", base+"/?room="+uniqueRoom("boot"), true)

	st := tab.WaitShell()
	t.Logf("timings (ms since navigation): %v", st.Timings)

	m := tab.Command("uname -a", regexp.MustCompile(`(?m)^Linux (\S+) (\d+\.\d+\S*) .*$`), CommandTimeout)
	t.Logf("guest: %s", m[0])

	// The page's network state is settled long before the guest boots.
	st = tab.State()
	if st.Net.State != "unavailable" {
		t.Errorf("network state %q (%s), want unavailable without a wasm peer", st.Net.State, st.Net.Error)
	}
	if !strings.Contains(st.Net.Error, "peerlan.wasm") {
		t.Errorf("network error %q does not name the missing dist/peerlan.wasm", st.Net.Error)
	}
	alerts := Eval[string](tab, `document.getElementById("alerts").textContent`)
	if !strings.Contains(alerts, "No network") {
		t.Errorf("the page does not tell the user there is no network; alerts: %q", alerts)
	}
	if st.Frames.ToLan != 0 || st.Frames.FromLan != 0 {
		t.Errorf("frames bridged without a lan: %+v", st.Frames)
	}

	// The NIC exists in the guest with the MAC the page shows.
	mac := tab.Command("cat /sys/class/net/eth0/address", regexp.MustCompile(`(?m)^([0-9a-f]{2}(?::[0-9a-f]{2}){5})$`), CommandTimeout)[1]
	if st.MAC == "" || !strings.EqualFold(mac, st.MAC) {
		t.Errorf("guest eth0 MAC %s, page says %q", mac, st.MAC)
	}
	if shown := Eval[string](tab, `document.getElementById("net-mac").textContent`); !strings.EqualFold(shown, mac) {
		t.Errorf("network panel shows MAC %q, want %s", shown, mac)
	}
	// With no lan the guest's DHCP discovers are counted as dropped.
	if st := tab.State(); st.Frames.Dropped == 0 {
		t.Errorf("no guest frame reached the bridge (dropped 0): is the NIC wired to net0-send?")
	}

	// The shell still computes: the output, not the echo, must match.
	tab.Command("echo $((6*7))ok", regexp.MustCompile(`(?m)^42ok$`), CommandTimeout)
}

// TestBrowserHiddenTabKeepsRunning hides the guest's tab the way a desktop
// browser does (another tab of the same window becomes active) and checks
// that the guest keeps its clock and keeps answering its console although
// Chromium throttles the hidden page's timers.
//
// v86 survives this because it schedules its emulation slices through a
// dedicated Worker (timers in workers are not throttled) whose messages wake
// the page. What does stop it is page freezing (Page.setWebLifecycleState
// "frozen"), which Chrome applies only to CPU-heavy tabs hidden for 5 minutes
// under Energy Saver, and not to pages with an open RTCDataChannel.
func TestBrowserHiddenTabKeepsRunning(t *testing.T) {
	VerifyNoLeaks(t)
	RequireChromium(t)
	RequireGuestImage(t)
	base := ServePage(t, withoutPeer())
	// Intensive wake-up throttling (main-thread timers of a hidden page wake
	// once a minute) normally starts after 5 minutes hidden; here it starts
	// after 5 seconds, waking every 20 s, so the test sees the worst case
	// quickly. (Both parameters must be given for Chromium to apply them.)
	b := StartBrowser(t, chromedp.Flag("enable-features", "IntensiveWakeUpThrottling:grace_period_seconds/5/duration_between_wake_ups_seconds/20"))
	tab := b.OpenTab(t, "hidden", base+"/?room="+uniqueRoom("hidden"), false)
	tab.WaitShell()

	// A page timer that would tick 10 times a second when visible.
	Eval[chromedp.Void](tab, `window.__probeTicks = 0; setInterval(() => window.__probeTicks++, 100)`)

	b.OpenTab(t, "cover", "about:blank", false).Activate()
	if vis := Eval[string](tab, `document.visibilityState`); vis != "hidden" {
		t.Fatalf("guest tab is %q after another tab became active; the test would prove nothing", vis)
	}
	tab.sleep(8 * time.Second) // past the grace period

	ticks0 := Eval[int](tab, `window.__probeTicks`)
	guest0, wall0 := guestUptime(t, tab)

	// Console input is answered and a guest timer fires on time. `read -t`
	// (a poll timeout on a FIFO nobody writes) rather than `sleep`, which
	// needs nanosleep and so the kernel's 32-bit time syscalls.
	start := time.Now()
	tab.Command("mkfifo /tmp/never 2>/dev/null; read -t 10 x <> /tmp/never; echo waited$((1+1))",
		regexp.MustCompile(`(?m)^waited2$`), CommandTimeout)
	waited := time.Since(start)

	guest1, wall1 := guestUptime(t, tab)
	ticks := Eval[int](tab, `window.__probeTicks`) - ticks0
	wall := wall1.Sub(wall0).Seconds()
	guestElapsed := guest1 - guest0
	t.Logf("hidden for %.1fs: page timer ticked %d times (%d when visible), guest clock advanced %.2fs, a 10s guest timeout took %v",
		wall, ticks, int(wall*10), guestElapsed, waited.Round(100*time.Millisecond))

	if vis := Eval[string](tab, `document.visibilityState`); vis != "hidden" {
		t.Fatalf("guest tab became %q during the test", vis)
	}
	// Proof that the tab really is backgrounded: its timers are throttled.
	if limit := int(wall * 10 / 2); ticks > limit {
		t.Errorf("a 100 ms page timer ticked %d times in %.1fs hidden: Chromium did not throttle the tab, so this test does not show a background tab", ticks, wall)
	}
	if waited < 10*time.Second || waited > 25*time.Second {
		t.Errorf("a 10 s timeout in the hidden guest took %v", waited)
	}
	if diff := guestElapsed - wall; diff < -max(2, wall/5) || diff > max(2, wall/5) {
		t.Errorf("guest clock advanced %.2fs while %.1fs passed: the guest does not keep time in a hidden tab", guestElapsed, wall)
	}
}

// guestUptime reads the guest's uptime clock (seconds, 10 ms resolution) and
// the wall clock at the same moment, within the console's polling delay.
func guestUptime(t *testing.T, tab *Tab) (float64, time.Time) {
	t.Helper()
	m := tab.Command("echo up:$(cut -d' ' -f1 /proc/uptime):", regexp.MustCompile(`(?m)^up:([0-9.]+):$`), CommandTimeout)
	now := time.Now()
	var s float64
	if _, err := fmt.Sscan(m[1], &s); err != nil {
		t.Fatalf("guest uptime %q: %v", m[1], err)
	}
	return s, now
}
