//go:build linux

package e2e

import (
	"net/netip"
	"syscall"
	"testing"
	"time"
)

// healBound is issue 13's bound: a link that is down comes back within it
// once both of its peers are joined again.
const healBound = 10 * time.Second

// TestNativeLinksHealAfterSleep is issue 13's report replayed with real
// processes: three bin/peer in a room, one stopped with SIGSTOP (a laptop
// asleep) until the server has announced it gone, then continued. Every
// link, whichever side offered on it, and the guests' pings must come back
// within healBound of the sleeper rejoining. The middle peer offers to the
// first and answers the last, so its sleep covers both roles; then the
// first (an answerer on every link) and the last (an offerer on every link)
// sleep in turn.
func TestNativeLinksHealAfterSleep(t *testing.T) {
	RequireCommands(t, "ping", "udhcpc")
	// Short keepalive and grace, so that a few seconds' sleep outlasts both.
	sig := StartSignal(t, "-keepalive", "250ms", "-keepalive-timeout", "1s", "-resume-grace", "1s")
	room := "heal-" + randomSuffix(4)
	var peers []*NativePeer
	var addrs []netip.Addr
	for i, name := range []string{"heal-a", "heal-b", "heal-c"} {
		p := StartPeer(t, sig, room, NewNamespace(t, name))
		p.WaitLinks(t, i, 30*time.Second) // joined in order: the later ones offer
		peers = append(peers, p)
	}
	for _, p := range peers {
		p.WaitLinks(t, len(peers)-1, 30*time.Second)
		addrs = append(addrs, LeaseDHCP(t, p.NS, p.TAP).Addr.Addr())
	}
	pingAll := func(deadline time.Time) {
		t.Helper()
		for i, p := range peers {
			for j, dst := range addrs {
				if i != j && !pingUntil(p.NS, dst, deadline) {
					t.Fatalf("%s cannot ping %s by the deadline; statuses:\n%+v\n%+v\n%+v", p.Name, dst,
						peers[0].Status(t), peers[1].Status(t), peers[2].Status(t))
				}
			}
		}
	}
	pingAll(time.Now().Add(10 * time.Second))

	for _, i := range []int{1, 0, 2} {
		sleeper := peers[i]
		sleeper.Signal(syscall.SIGSTOP)
		slept := time.Now()
		for j, p := range peers {
			if j == i {
				continue
			}
			waitCond(t, 15*time.Second, p.Name+" to hear that "+sleeper.Name+" left", func() bool {
				_, linked := LinkTo(p.Status(t), addrs[i])
				return !linked
			})
		}
		sleeper.Signal(syscall.SIGCONT)
		t.Logf("%s slept %v, past its resume grace", sleeper.Name, time.Since(slept).Round(time.Millisecond))
		waitCond(t, 15*time.Second, sleeper.Name+" to rejoin", func() bool { return sleeper.Status(t).Signal == "connected" })
		rejoined := time.Now()
		pingAll(rejoined.Add(healBound))
		t.Logf("every guest pings every other %v after %s rejoined", time.Since(rejoined).Round(time.Millisecond), sleeper.Name)
		for _, p := range peers {
			if st := p.Status(t); len(st.Peers) != len(peers)-1 {
				t.Errorf("%s has %d links after healing, want %d: %+v", p.Name, len(st.Peers), len(peers)-1, st.Peers)
			}
		}
	}
}

// pingUntil sends single pings from ns to dst until one is answered (true)
// or the deadline passes (false).
func pingUntil(ns *Namespace, dst netip.Addr, deadline time.Time) bool {
	for time.Now().Before(deadline) {
		if _, err := ns.Run("ping", "-c", "1", "-W", "1", dst.String()); err == nil {
			return true
		}
	}
	return false
}

// waitCond polls cond every 50 ms until it holds, failing the test after
// timeout.
func waitCond(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
