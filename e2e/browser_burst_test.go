//go:build linux

package e2e

import (
	"net/netip"
	"strconv"
	"testing"
	"time"
)

// burstJoinJS joins the room of the test in a page without an emulator and
// counts the frames of the test's EtherType that arrive.
func burstJoinJS(ws, room string) string {
	return `(async () => {
		globalThis.lan = await peerlan.join({signal: ` + jsString(ws) + `, room: ` + jsString(room) + `, logLevel: "warn"});
		globalThis.burstGot = 0;
		lan.onframe = (f) => { if (f.length === 1514 && f[12] === 0x88 && f[13] === 0xb5) burstGot++; };
		return (await lan.status()).ip;
	})()`
}

// burstSendJS sends n full-size frames (1514 bytes, unicast to a MAC nobody
// has, so flooded to the link) with lan.send in one JavaScript task, as a
// guest's NIC hands over a TCP window, and returns how many send queued.
func burstSendJS(n int) string {
	return `(() => {
		const f = new Uint8Array(1514);
		f.set([2, 0, 0, 0, 0, 0x99, 2, 0, 0, 0, 0, 0x42, 0x88, 0xb5]);
		let queued = 0;
		for (let i = 0; i < ` + strconv.Itoa(n) + `; i++) {
			f[14] = i;
			if (lan.send(f)) queued++;
		}
		return queued;
	})()`
}

// TestBrowserLANBurst is issue 12's proof that a burst on an idle link is
// not dropped: 64 full frames sent in one JavaScript task (more than four
// times what fits under the data channel's 16 KiB high-water mark, and
// bufferedAmount only falls between tasks) all reach the other peer. A cap
// on bufferedAmount alone passed about 11 of them.
// linkBarePeers opens a page with the wasm peer and no guest in each of two
// browsers, joins both to a fresh room (burstJoinJS) and waits for their
// link. ips are the peers' addresses, x's first.
func linkBarePeers(tb testing.TB, sig *SignalServer, roomPrefix string) (x, y *Tab, ips [2]netip.Addr) {
	tb.Helper()
	x = StartBrowser(tb).OpenTab(tb, "X", sig.Base+"/healthz", true)
	y = StartBrowser(tb).OpenTab(tb, "Y", sig.Base+"/healthz", true)
	room := uniqueRoom(roomPrefix)
	for i, tab := range []*Tab{x, y} {
		Eval[string](tab, lanLoadPeerJS)
		ips[i] = netip.MustParseAddr(Eval[string](tab, burstJoinJS(sig.WS, room)))
	}
	lanWaitLink(tb, x, ips[1], lanJoinTimeout)
	lanWaitLink(tb, y, ips[0], lanJoinTimeout)
	return x, y, ips
}

func TestBrowserLANBurst(t *testing.T) {
	VerifyNoLeaks(t)
	RequireChromium(t)
	x, y, ips := linkBarePeers(t, lanServer(t), "burst")

	const burst = 64
	var drops uint64
	for round := range 3 {
		before := Eval[int](y, `burstGot`)
		if q := Eval[int](x, burstSendJS(burst)); q != burst {
			t.Fatalf("round %d: lan.send queued %d of %d frames", round, q, burst)
		}
		deadline := time.Now().Add(10 * time.Second)
		got := 0
		for {
			got = Eval[int](y, `burstGot`) - before
			if got >= burst || time.Now().After(deadline) {
				break
			}
			y.sleep(50 * time.Millisecond)
		}
		l, _ := LinkTo(lanStatus(t, x), ips[1])
		t.Logf("round %d: %d of %d frames arrived; X's link: tx %d frames, drops %d", round, got, burst, l.TxFrames, l.Drops)
		if got != burst {
			t.Errorf("round %d: %d of %d frames of a burst on an idle link arrived", round, got, burst)
		}
		if l.Drops != drops {
			t.Errorf("round %d: X's link counted %d drops", round, l.Drops-drops)
		}
		drops = l.Drops
		y.sleep(200 * time.Millisecond) // idle again
	}
	for _, tab := range []*Tab{x, y} {
		Eval[bool](tab, `lan.leave().then(() => true)`)
	}
}
