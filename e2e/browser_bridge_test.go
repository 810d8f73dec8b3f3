//go:build linux

package e2e

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"net"
	"net/netip"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

// scriptedLANJS stands in for the wasm peer (globalThis.peerlan) so the page's
// frame bridge can be driven from Go: frames the guest sends are kept (as hex)
// for the test to take, and the test delivers frames through lan.onframe. Its
// status() feeds the network panel: a gateway reached over the relay and a
// failed guest peer.
const scriptedLANJS = `(() => {
  const sent = [];
  const hex = (u8) => Array.from(u8, (b) => b.toString(16).padStart(2, "0")).join("");
  const lan = {
    onframe: null,
    send(frame) {
      if (!(frame instanceof Uint8Array)) throw new TypeError("lan.send wants a Uint8Array");
      const s = globalThis.__scriptedLAN;
      if (s.countOnly) { s.count++; return; } // benchmarks: no per-frame work
      if (sent.length < 4096) sent.push(hex(frame));
    },
    status() {
      return {
        id: "self", ip: "10.86.0.7", prefix: 24, gateway: "10.86.0.1", signal: "connected", error: "",
        peers: [
          {id: "gw", ip: "10.86.0.1", role: "gateway", state: "connected", path: "relay", rtt_ms: 12.4,
           rx_bytes: 2048, tx_bytes: 1024, rx_frames: 4, tx_frames: 2, drops: 0},
          {id: "p2", ip: "10.86.0.11", role: "guest", state: "failed", path: "", rtt_ms: null,
           rx_bytes: 0, tx_bytes: 0, rx_frames: 0, tx_frames: 0, drops: 0},
        ],
        drops: {"no-route": 3},
      };
    },
    async stats() { return this.status(); },
    leave() {},
  };
  globalThis.__scriptedLAN = {
    joined: null,
    countOnly: false,
    count: 0,
    deliverBytes(u8) { lan.onframe(u8); },
    take() { return sent.splice(0); },
    deliver(h) {
      lan.onframe(new Uint8Array(h.match(/../g).map((x) => parseInt(x, 16))));
    },
  };
  globalThis.peerlan = {
    async join(opts) { globalThis.__scriptedLAN.joined = opts; return lan; },
  };
})();`

// TestBrowserFrameBridge checks the page's frame bridge with each of v86's
// network cards: the guest pings a host that the test plays by answering the
// guest's ARP and ICMP frames, which travel net0-send → lan.send and
// lan.onframe → net0-receive. The wasm peer is replaced by a scripted lan, so
// the page, v86's NIC and the guest kernel are what is under test.
func TestBrowserFrameBridge(t *testing.T) {
	VerifyNoLeaks(t)
	RequireChromium(t)
	RequireGuestImage(t)
	base := ServePage(t, withoutPeer())
	b := StartBrowser(t)
	for _, nic := range []string{"virtio", "ne2k"} {
		t.Run(nic, func(t *testing.T) {
			room := uniqueRoom("bridge")
			tab := b.OpenTab(t, nic, "", true)
			tab.InitScript(scriptedLANJS)
			tab.Navigate(base + "/?room=" + room + "&relay=direct&token=t0k&nic=" + nic)
			st := tab.WaitShell()
			t.Logf("%s: timings (ms since navigation): %v", nic, st.Timings)

			type joinOpts struct{ Signal, Room, Token, Relay string }
			joined := Eval[joinOpts](tab, `globalThis.__scriptedLAN.joined`)
			if !strings.HasPrefix(joined.Signal, "ws://127.0.0.1:") || !strings.HasSuffix(joined.Signal, "/signal") ||
				joined.Room != room || joined.Token != "t0k" || joined.Relay != "direct" {
				t.Errorf("join options %+v, want same-origin ws:// /signal, room %s, token t0k, relay direct", joined, room)
			}
			checkPanel(t, tab)

			guestMAC := st.MAC
			host := &scriptedHost{mac: net.HardwareAddr{0x02, 0x00, 0x5e, 0x00, 0x00, 0x09}, ip: netip.MustParseAddr("10.86.0.9")}
			stop := host.serve(t, tab)
			tab.Command("ip addr add 10.86.0.7/24 dev eth0; ip link set eth0 up; echo addr$((1+1))",
				regexp.MustCompile(`(?m)^addr2$`), CommandTimeout)
			m := tab.Command("ping -c 3 -W 5 10.86.0.9",
				regexp.MustCompile(`(\d+) packets transmitted, (\d+) packets received`), CommandTimeout)
			answered := stop()
			if m[2] != "3" {
				t.Errorf("guest ping: %s; want 3 received", m[0])
			}
			if answered.echo < 3 || answered.arp < 1 {
				t.Errorf("scripted host answered %d ARP and %d echo requests, want ≥1 and ≥3", answered.arp, answered.echo)
			}
			if !strings.EqualFold(answered.guestMAC.String(), guestMAC) {
				t.Errorf("guest frames came from %s, the page reports MAC %s", answered.guestMAC, guestMAC)
			}
			if st := tab.State(); st.Frames.ToLan == 0 || st.Frames.FromLan < 4 {
				t.Errorf("bridge counters %+v after the ping", st.Frames)
			}
		})
	}
}

// checkPanel checks that the network panel shows the scripted lan's status.
func checkPanel(t *testing.T, tab *Tab) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		ip := Eval[string](tab, `document.getElementById("net-ip").textContent`)
		if strings.HasPrefix(ip, "10.86.0.7/24") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("network panel IP %q, want 10.86.0.7/24", ip)
		}
		tab.sleep(pollInterval)
	}
	rows := Eval[[][]string](tab, `Array.from(document.querySelectorAll("#peer-rows tr"), (tr) => Array.from(tr.cells, (c) => c.textContent))`)
	if len(rows) != 2 {
		t.Fatalf("peer table rows %q, want 2", rows)
	}
	gw := strings.Join(rows[0], "|")
	for _, want := range []string{"10.86.0.1", "gateway", "RELAY", "12 ms", "in 2.0 KiB", "out 1.0 KiB"} {
		if !strings.Contains(gw, want) {
			t.Errorf("gateway row %q lacks %q", gw, want)
		}
	}
	if n := Eval[int](tab, `document.querySelectorAll("#peer-rows td.relay").length`); n != 1 {
		t.Errorf("%d relay cells highlighted, want 1", n)
	}
	if failed := strings.Join(rows[1], "|"); !strings.Contains(failed, "unreachable (failed)") {
		t.Errorf("failed peer row %q does not say it is unreachable", failed)
	}
	if gw := Eval[string](tab, `document.getElementById("net-gateway").textContent`); !strings.HasPrefix(gw, "10.86.0.1 ") {
		t.Errorf("with a gateway peer in the room the panel's gateway reads %q", gw)
	}
	if sig := Eval[string](tab, `document.getElementById("net-signal").textContent`); sig != "connected" {
		t.Errorf("signaling shown as %q", sig)
	}
	alerts := Eval[string](tab, `document.getElementById("alerts").textContent`)
	if !strings.Contains(alerts, "10.86.0.11 (failed)") {
		t.Errorf("no alert for the failed peer; alerts: %q", alerts)
	}
	if drops := Eval[string](tab, `document.getElementById("net-drops").textContent`); !strings.Contains(drops, "no-route 3") {
		t.Errorf("drops shown as %q", drops)
	}
}

// scriptedHost answers ARP and ICMP echo requests for one address, taking the
// guest's frames from the scripted lan and delivering its answers to it.
type scriptedHost struct {
	mac net.HardwareAddr
	ip  netip.Addr
}

type hostAnswers struct {
	arp, echo int
	guestMAC  net.HardwareAddr
}

// serve answers frames until the returned stop func is called, which returns
// what was answered.
func (h *scriptedHost) serve(t *testing.T, tab *Tab) (stop func() hostAnswers) {
	done := make(chan struct{})
	result := make(chan hostAnswers, 1)
	go func() {
		var ans hostAnswers
		defer func() { result <- ans }()
		for {
			select {
			case <-done:
				return
			case <-time.After(20 * time.Millisecond):
			}
			frames, err := TryEval[[]string](tab, `globalThis.__scriptedLAN.take()`)
			if err != nil {
				t.Logf("scripted host: %v", err)
				return
			}
			for _, fh := range frames {
				frame, err := hex.DecodeString(fh)
				if err != nil {
					t.Logf("scripted host: bad frame hex: %v", err)
					return
				}
				reply, kind := h.answer(frame)
				if reply == nil {
					continue
				}
				ans.guestMAC = net.HardwareAddr(bytes.Clone(frame[6:12]))
				if kind == "arp" {
					ans.arp++
				} else {
					ans.echo++
				}
				if _, err := TryEval[bool](tab, `(globalThis.__scriptedLAN.deliver("`+hex.EncodeToString(reply)+`"), true)`); err != nil {
					t.Logf("scripted host: delivering: %v", err)
					return
				}
			}
		}
	}()
	var once sync.Once
	var ans hostAnswers
	stop = func() hostAnswers {
		once.Do(func() {
			close(done)
			ans = <-result
		})
		return ans
	}
	t.Cleanup(func() { stop() }) // a failed test must not leave it logging
	return stop
}

// answer returns the reply to an ARP request or ICMP echo request for h.ip,
// or nil for any other frame.
func (h *scriptedHost) answer(f []byte) ([]byte, string) {
	const ethLen = 14
	if len(f) < ethLen {
		return nil, ""
	}
	ip4 := h.ip.As4()
	switch binary.BigEndian.Uint16(f[12:14]) {
	case 0x0806: // ARP
		a := f[ethLen:]
		if len(a) < 28 || binary.BigEndian.Uint16(a[6:8]) != 1 || !bytes.Equal(a[24:28], ip4[:]) {
			return nil, ""
		}
		r := make([]byte, ethLen+28)
		copy(r[0:6], f[6:12])
		copy(r[6:12], h.mac)
		binary.BigEndian.PutUint16(r[12:14], 0x0806)
		ra := r[ethLen:]
		copy(ra[0:6], a[0:6]) // htype, ptype, hlen, plen
		binary.BigEndian.PutUint16(ra[6:8], 2)
		copy(ra[8:14], h.mac)
		copy(ra[14:18], ip4[:])
		copy(ra[18:28], a[8:18]) // the asker's MAC and IP
		return r, "arp"
	case 0x0800: // IPv4
		ip := f[ethLen:]
		if len(ip) < 20 || ip[0]>>4 != 4 {
			return nil, ""
		}
		ihl := int(ip[0]&0x0f) * 4
		total := int(binary.BigEndian.Uint16(ip[2:4]))
		if ip[9] != 1 || total > len(ip) || ihl < 20 || total < ihl+8 || !bytes.Equal(ip[16:20], ip4[:]) {
			return nil, ""
		}
		icmp := ip[ihl:total]
		if icmp[0] != 8 { // echo request
			return nil, ""
		}
		r := bytes.Clone(f[:ethLen+total])
		copy(r[0:6], f[6:12])
		copy(r[6:12], h.mac)
		rip := r[ethLen:]
		copy(rip[12:16], ip[16:20])
		copy(rip[16:20], ip[12:16])
		rip[8] = 64 // TTL
		binary.BigEndian.PutUint16(rip[10:12], 0)
		binary.BigEndian.PutUint16(rip[10:12], inetChecksum(rip[:ihl]))
		ricmp := rip[ihl:total]
		ricmp[0] = 0 // echo reply
		binary.BigEndian.PutUint16(ricmp[2:4], 0)
		binary.BigEndian.PutUint16(ricmp[2:4], inetChecksum(ricmp))
		return r, "echo"
	}
	return nil, ""
}

// inetChecksum is the Internet checksum (RFC 1071) of b.
func inetChecksum(b []byte) uint16 {
	var sum uint32
	for len(b) >= 2 {
		sum += uint32(binary.BigEndian.Uint16(b))
		b = b[2:]
	}
	if len(b) == 1 {
		sum += uint32(b[0]) << 8
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	return ^uint16(sum)
}

// TestBrowserTwoBrowsersWire boots a guest in each of two separate Chromium
// processes and joins their frame bridges with a wire that the test plays
// (every frame one page's lan sends is delivered to the other's), so the two
// v86 guests resolve each other with ARP and ping. With the wasm peer, WebRTC
// data channels take the place of this wire.
func TestBrowserTwoBrowsersWire(t *testing.T) {
	VerifyNoLeaks(t)
	RequireChromium(t)
	RequireGuestImage(t)
	base := ServePage(t, withoutPeer())
	room := uniqueRoom("wire")
	var tabs [2]*Tab
	for i, name := range []string{"a", "b"} {
		tab := StartBrowser(t).OpenTab(t, name, "", true)
		tab.InitScript(scriptedLANJS)
		tab.Navigate(base + "/?room=" + room)
		tabs[i] = tab
	}
	addrs := [2]string{"10.86.0.7", "10.86.0.8"}
	for i, tab := range tabs {
		tab.WaitShell()
		tab.Command("ip addr add "+addrs[i]+"/24 dev eth0; ip link set eth0 up; echo up$((1+1))",
			regexp.MustCompile(`(?m)^up2$`), CommandTimeout)
	}
	stop := joinByWire(t, tabs[0], tabs[1])
	m := tabs[0].Command("ping -c 3 -W 5 "+addrs[1],
		regexp.MustCompile(`(\d+) packets transmitted, (\d+) packets received`), CommandTimeout)
	aToB, bToA := stop()
	t.Logf("a → b %d frames, b → a %d frames; %s", aToB, bToA, m[0])
	if m[2] != "3" {
		t.Errorf("guest a pinging guest b: %s; want 3 received", m[0])
	}
	if aToB < 4 || bToA < 4 { // an ARP request and 3 echo requests; their answers
		t.Errorf("the wire carried %d frames a → b and %d b → a, want ≥4 each", aToB, bToA)
	}
}

// joinByWire carries frames between the scripted lans of two tabs until the
// returned stop func is called, which returns how many went each way.
func joinByWire(t *testing.T, a, b *Tab) (stop func() (aToB, bToA int)) {
	done := make(chan struct{})
	result := make(chan [2]int, 1)
	go func() {
		var n [2]int
		defer func() { result <- n }()
		ends := [2]*Tab{a, b}
		for {
			select {
			case <-done:
				return
			case <-time.After(10 * time.Millisecond):
			}
			for i, from := range ends {
				to := ends[1-i]
				frames, err := TryEval[[]string](from, `globalThis.__scriptedLAN.take()`)
				if err != nil {
					t.Logf("wire: taking from %s: %v", from.name, err)
					return
				}
				for _, f := range frames {
					if _, err := TryEval[bool](to, `(globalThis.__scriptedLAN.deliver("`+f+`"), true)`); err != nil {
						t.Logf("wire: delivering to %s: %v", to.name, err)
						return
					}
					n[i]++
				}
			}
		}
	}()
	var once sync.Once
	var n [2]int
	stop = func() (int, int) {
		once.Do(func() {
			close(done)
			n = <-result
		})
		return n[0], n[1]
	}
	t.Cleanup(func() { stop() })
	return stop
}
