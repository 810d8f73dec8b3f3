//go:build linux

package e2e

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestNativePeerFirstJoin: a first join that cannot work ends bin/peer at
// once with a message that says why (a wrong path, a web page instead of
// the endpoint, a missing or refused token), and a token kept out of the
// process list (-token-file, $PEERLAN_TOKEN) joins a room that needs one.
func TestNativePeerFirstJoin(t *testing.T) {
	sig := StartSignal(t, "-token-rooms", "locked-*")
	ns := NewNamespace(t, "cli")
	addr := strings.TrimPrefix(sig.Base, "http://")
	bad := filepath.Join(t.TempDir(), "bad-token")
	if err := os.WriteFile(bad, []byte("not-a-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		args []string
		want string
	}{
		{"wrong path", []string{"-signal", "ws://" + addr + "/nope", "-room", "r"}, "no signaling endpoint at this path"},
		{"web page", []string{"-signal", "ws://" + addr + "/", "-room", "r"}, "without upgrading to a WebSocket"},
		{"no token", []string{"-signal", sig.WS, "-room", "locked-1"}, "token"},
		{"refused token", []string{"-signal", sig.WS, "-room", "locked-1", "-token-file", bad}, "token"},
	} {
		t.Run(c.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			args := append([]string{"-tap", "pl" + randomSuffix(3), "-netns", ns.Name, "-ice-interfaces", "lo"}, c.args...)
			start := time.Now()
			out, err := exec.CommandContext(ctx, Binary(t, "peer"), args...).CombinedOutput()
			took := time.Since(start)
			var ee *exec.ExitError
			if ctx.Err() != nil || err == nil || !errors.As(err, &ee) || ee.ExitCode() != 1 {
				t.Fatalf("bin/peer %v: %v after %v, want exit status 1 at once:\n%s", c.args, err, took, out)
			}
			if !strings.Contains(string(out), c.want) {
				t.Fatalf("bin/peer %v said nothing about %q:\n%s", c.args, c.want, out)
			}
			if took > 3*time.Second {
				t.Errorf("bin/peer took %v to give up", took)
			}
			t.Logf("%s: exit 1 after %v", c.name, took.Round(time.Millisecond))
		})
	}

	tok := sig.Token(t, "-room", "locked-2")
	file := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(file, []byte(tok+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	a := StartPeer(t, sig, "locked-2", NewNamespace(t, "cli-a"), "-token-file", file)
	t.Setenv("PEERLAN_TOKEN", tok) // inherited by the next bin/peer
	b := StartPeer(t, sig, "locked-2", NewNamespace(t, "cli-b"))
	a.WaitLinks(t, 1, 30*time.Second)
	b.WaitLinks(t, 1, 30*time.Second)
	for _, p := range []*NativePeer{a, b} {
		if strings.Contains(strings.Join(p.cmd.Args, " "), tok) {
			t.Errorf("%s has the token on its command line", p.Name)
		}
	}
}
