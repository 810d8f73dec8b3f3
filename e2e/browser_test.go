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

	"github.com/peerlan/peerlan/web"
)

// uniqueRoom returns a room name no other test run uses.
func uniqueRoom(prefix string) string {
	return fmt.Sprintf("%s-%08x", prefix, rand.Uint32())
}

// withoutDir hides every file under dir from fsys, as if it had not been built.
type withoutDir struct {
	fs.FS
	dir string
}

func (w withoutDir) Open(name string) (fs.File, error) {
	if name == w.dir || strings.HasPrefix(name, w.dir+"/") {
		return nil, &fs.PathError{Op: "open", Path: name, Err: fs.ErrNotExist}
	}
	return w.FS.Open(name)
}

// TestBrowserPageWithoutGuest checks what the page does on its own, with no
// guest image served: the room link, the URL parameters, and a clear failure.
func TestBrowserPageWithoutGuest(t *testing.T) {
	RequireChromium(t)
	RequirePageAssets(t)
	base := ServePage(t, withoutDir{web.FS(), "dist/guest"})
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

// waitNet waits for peerlanPage.net.state to be want.
func waitNet(t *testing.T, tab *Tab, want string, timeout time.Duration) pageState {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		st := tab.State()
		if st.Net.State == want {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("network state %q (%s) after %v, want %q", st.Net.State, st.Net.Error, timeout, want)
		}
		tab.sleep(pollInterval)
	}
}
