//go:build linux

package e2e

import (
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"net"
	"net/netip"
	"regexp"
	"strings"
	"testing"
)

// echoBenchJS drives ICMP echo requests into the guest through the page's
// bridge (lan.onframe → net0-receive) and counts the replies the guest sends
// back (net0-send → lan.send), keeping at most `window` requests outstanding
// so that the emulated NIC's receive ring is not simply overrun. Requests
// that get no reply within 500 ms are counted as lost and their window slots
// freed. It runs entirely in the page: the number is what v86, the guest
// kernel and the bridge can turn around, before any network.
const echoBenchJS = `(async (frameHex, n, window) => {
  const L = globalThis.__scriptedLAN;
  const frame = new Uint8Array(frameHex.match(/../g).map((x) => parseInt(x, 16)));
  const ch = new MessageChannel();
  const yieldTask = () => new Promise((r) => { ch.port1.onmessage = r; ch.port2.postMessage(0); });
  L.countOnly = true;
  L.count = 0;
  let sent = 0, lost = 0, seen = 0, seenAt = performance.now();
  const t0 = performance.now();
  while (L.count + lost < n) {
    while (sent < n && sent - L.count - lost < window) { L.deliverBytes(frame); sent++; }
    await yieldTask();
    const now = performance.now();
    if (L.count !== seen) { seen = L.count; seenAt = now; }
    else if (now - seenAt > 500) { lost = sent - L.count; seenAt = now; }
    if (now - t0 > 120000) break;
  }
  const ms = performance.now() - t0;
  L.countOnly = false;
  return {ms, replies: L.count, lost, sent};
})`

// BenchmarkBrowserBridgeEcho measures how many ICMP echo round trips per
// second a guest turns around through the page's frame bridge, per v86 NIC
// model, with 1400-byte payloads.
func BenchmarkBrowserBridgeEcho(b *testing.B) {
	RequireChromium(b)
	RequireGuestImage(b)
	base := ServePage(b, withoutPeer())
	br := StartBrowser(b)
	for _, nic := range []string{"virtio", "ne2k"} {
		b.Run(nic, func(b *testing.B) {
			tab := br.OpenTab(b, nic, "", true)
			tab.InitScript(scriptedLANJS)
			tab.Navigate(base + "/?room=" + uniqueRoom("bench") + "&nic=" + nic)
			st := tab.WaitShell()
			host := net.HardwareAddr{0x02, 0x00, 0x5e, 0x00, 0x00, 0x09}
			tab.Command("killall udhcpc; ip addr add 10.86.0.7/24 dev eth0; ip link set eth0 up; arp -s 10.86.0.9 "+
				host.String()+"; echo ok$((1+1))", regexp.MustCompile(`(?m)^ok2$`), CommandTimeout)
			guest, err := net.ParseMAC(st.MAC)
			if err != nil {
				b.Fatalf("page MAC %q: %v", st.MAC, err)
			}
			const payload = 1400
			frame := echoRequest(guest, host, netip.MustParseAddr("10.86.0.9"), netip.MustParseAddr("10.86.0.7"), payload)
			type result struct {
				MS                  float64
				Replies, Lost, Sent int
			}
			const perOp = 2000
			var total result
			b.ResetTimer()
			for range b.N {
				r := Eval[result](tab, fmt.Sprintf("%s(%q, %d, %d)", strings.TrimSpace(echoBenchJS), hex.EncodeToString(frame), perOp, 32))
				total.MS += r.MS
				total.Replies += r.Replies
				total.Lost += r.Lost
				total.Sent += r.Sent
			}
			b.StopTimer()
			if total.Replies == 0 {
				b.Fatalf("the guest answered none of %d echo requests", total.Sent)
			}
			perSec := float64(total.Replies) / (total.MS / 1000)
			b.ReportMetric(perSec, "echoes/s")
			b.ReportMetric(perSec*float64(2*len(frame))/1e6, "MB/s")
			b.ReportMetric(float64(total.Lost)/float64(total.Sent)*100, "%lost")
		})
	}
}

// echoRequest builds an Ethernet frame with an ICMP echo request.
func echoRequest(dst, src net.HardwareAddr, from, to netip.Addr, payload int) []byte {
	f := make([]byte, 14+20+8+payload)
	copy(f[0:6], dst)
	copy(f[6:12], src)
	binary.BigEndian.PutUint16(f[12:14], 0x0800)
	ip := f[14:]
	ip[0] = 0x45
	binary.BigEndian.PutUint16(ip[2:4], uint16(20+8+payload))
	ip[8] = 64
	ip[9] = 1
	from4, to4 := from.As4(), to.As4()
	copy(ip[12:16], from4[:])
	copy(ip[16:20], to4[:])
	binary.BigEndian.PutUint16(ip[10:12], inetChecksum(ip[:20]))
	icmp := ip[20:]
	icmp[0] = 8
	binary.BigEndian.PutUint16(icmp[4:6], 0x7065) // identifier
	binary.BigEndian.PutUint16(icmp[6:8], 1)
	for i := range payload {
		icmp[8+i] = byte(i)
	}
	binary.BigEndian.PutUint16(icmp[2:4], inetChecksum(icmp))
	return f
}

// bootRuns is how many fresh tabs BenchmarkBrowserGuestBoot boots per NIC
// model and iteration; it reports their median.
const bootRuns = 3

// BenchmarkBrowserGuestBoot measures how long a fresh tab takes from
// navigation to the guest's "peerlan guest ready" (files served from
// loopback, so download time is nearly nil), per NIC model: the median of
// bootRuns boots for each phase.
func BenchmarkBrowserGuestBoot(b *testing.B) {
	RequireChromium(b)
	RequireGuestImage(b)
	base := ServePage(b, withoutPeer())
	br := StartBrowser(b)
	for _, nic := range []string{"virtio", "ne2k"} {
		b.Run(nic, func(b *testing.B) {
			var ready, started, loaded []float64
			for range b.N * bootRuns {
				tab := br.OpenTab(b, nic, base+"/?room="+uniqueRoom("boot")+"&nic="+nic, true)
				st := tab.WaitPhase("ready", BootTimeout)
				tab.Close() // a running guest would slow the next boot
				ready = append(ready, float64(st.Timings["guestReady"]))
				started = append(started, float64(st.Timings["emulatorStarted"]))
				loaded = append(loaded, float64(st.Timings["imagesLoaded"]))
			}
			b.Logf("%s: ms to ready %v", nic, ready)
			b.ReportMetric(median(ready), "ms-to-ready")
			b.ReportMetric(median(started), "ms-to-emulator")
			b.ReportMetric(median(loaded), "ms-to-images")
		})
	}
}
