//go:build linux

package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"regexp"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pion/ice/v4"
	"github.com/pion/webrtc/v4"

	"github.com/peerlan/peerlan/peer"
)

// Macro benchmarks of the native mesh (issue 3). Each measurement is one run
// of real tools; run them with -benchtime 1x (scripts/bench.sh does). Every
// figure is reported beside its baseline measured in the same run:
//
//   - TCP throughput namespace to namespace over the mesh (iperf3) vs over a
//     veth pair (the physical ceiling) vs two raw pion peers exchanging
//     frame-sized messages on loopback (the transport ceiling);
//   - ping RTT over the mesh vs the veth;
//   - throughput at guest MTU 1500 (a frame spans two SCTP packets) vs
//     sctpOneFrameMTU (one frame, one SCTP packet).

// sctpOneFrameMTU is the largest IP MTU whose Ethernet frames fit one pion
// SCTP packet: pion sends SCTP packets of at most 1228 bytes, minus a 12-byte
// common header and a 16-byte DATA chunk header, minus 14 bytes of Ethernet.
const sctpOneFrameMTU = 1228 - 12 - 16 - 14

const benchSeconds = 5

func BenchmarkNativeMesh(b *testing.B) {
	RequireCommands(b, "ping", "iperf3", "udhcpc")
	veth := measureVeth(b)
	raw := measureRawPion(b, 1514, benchSeconds*time.Second)
	b.Logf("baselines: veth %.0f Mbit/s, rtt %.3f ms; raw pion %.0f Mbit/s", veth.mbps, veth.rttMs, raw)
	for _, mtu := range []int{1500, sctpOneFrameMTU} {
		b.Run(fmt.Sprintf("mtu=%d", mtu), func(b *testing.B) {
			mesh := measureMesh(b, mtu)
			b.ReportMetric(mesh.mbps, "mesh-Mbit/s")
			b.ReportMetric(veth.mbps, "veth-Mbit/s")
			b.ReportMetric(raw, "raw-pion-Mbit/s")
			b.ReportMetric(mesh.mbps/raw, "x-raw-pion")
			b.ReportMetric(mesh.mbps/veth.mbps, "x-veth")
			b.ReportMetric(mesh.rttMs, "mesh-rtt-ms")
			b.ReportMetric(veth.rttMs, "veth-rtt-ms")
			b.ReportMetric(mesh.rttMs-veth.rttMs, "added-rtt-ms")
		})
	}
}

type pathFigures struct {
	mbps  float64 // iperf3 TCP receiver rate, mean of both directions
	rttMs float64 // ping average
}

// measureVeth measures two namespaces joined by a veth pair.
func measureVeth(b *testing.B) pathFigures {
	a, c := NewNamespace(b, "veth-a"), NewNamespace(b, "veth-b")
	aAddr, cAddr := netip.MustParsePrefix("192.0.2.1/24"), netip.MustParsePrefix("192.0.2.2/24")
	VethPair(b, a, "eth0", aAddr, c, "eth0", cAddr)
	return measurePath(b, a, c, cAddr.Addr())
}

// measureMesh measures two bin/peer namespaces whose guests use mtu.
func measureMesh(b *testing.B, mtu int) pathFigures {
	sig := StartSignal(b)
	room := "bench-" + randomSuffix(4)
	nsA, nsB := NewNamespace(b, "mesh-a"), NewNamespace(b, "mesh-b")
	pa := StartPeer(b, sig, room, nsA, "-mtu", strconv.Itoa(mtu), "-log-level", "warn")
	pb := StartPeer(b, sig, room, nsB, "-mtu", strconv.Itoa(mtu), "-log-level", "warn")
	pa.WaitLinks(b, 1, 30*time.Second)
	pb.WaitLinks(b, 1, 30*time.Second)
	LeaseDHCP(b, nsA, pa.TAP)
	lb := LeaseDHCP(b, nsB, pb.TAP)
	if lb.MTU != mtu {
		b.Fatalf("lease MTU %d, want %d", lb.MTU, mtu)
	}
	f := measurePath(b, nsA, nsB, lb.Addr.Addr())
	for _, p := range []*NativePeer{pa, pb} {
		st := p.Status(b)
		b.Logf("%s drops: switch %d; links %+v", p.Name, st.Drops.Total(), st.Peers)
	}
	return f
}

var pingRTTRE = regexp.MustCompile(`= [\d.]+/([\d.]+)/`)

// measurePath runs iperf3 both ways and a ping series from a to the server
// address dst in c.
func measurePath(b *testing.B, a, c *Namespace, dst netip.Addr) pathFigures {
	b.Helper()
	srv := StartIperfServer(b, c, dst.String())
	var f pathFigures
	for _, reverse := range []bool{false, true} {
		f.mbps += RunIperf(b, a, dst.String(), benchSeconds, 1, reverse).Mbps / 2
	}
	out, err := a.Run("ping", "-q", "-c", "200", "-i", "0.005", dst.String())
	if err != nil {
		b.Fatal(err)
	}
	m := pingRTTRE.FindStringSubmatch(out)
	if m == nil {
		b.Fatalf("ping printed no RTT:\n%s", out)
	}
	f.rttMs, _ = strconv.ParseFloat(m[1], 64)
	srv.Stop(2 * time.Second)
	return f
}

// measureRawPion returns the rate in Mbit/s at which one pion peer receives
// frameSize-byte messages from another over loopback, on a data channel
// configured like the mesh's (pre-negotiated, unordered, no retransmits,
// detached), the sender keeping at most peer.DefaultMaxBuffered queued.
func measureRawPion(b *testing.B, frameSize int, d time.Duration) float64 {
	b.Helper()
	newPC := func() *webrtc.PeerConnection {
		var se webrtc.SettingEngine
		se.DetachDataChannels()
		se.SetICEMulticastDNSMode(ice.MulticastDNSModeDisabled)
		se.SetInterfaceFilter(func(n string) bool { return n == "lo" })
		se.SetIncludeLoopbackCandidate(true)
		pc, err := webrtc.NewAPI(webrtc.WithSettingEngine(se)).NewPeerConnection(webrtc.Configuration{})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { pc.Close() })
		return pc
	}
	pa, pb := newPC(), newPC()
	negotiated, id, zero, unordered := true, uint16(0), uint16(0), false
	opts := &webrtc.DataChannelInit{Negotiated: &negotiated, ID: &id, MaxRetransmits: &zero, Ordered: &unordered}
	dca, err := pa.CreateDataChannel("bench", opts)
	if err != nil {
		b.Fatal(err)
	}
	dcb, err := pb.CreateDataChannel("bench", opts)
	if err != nil {
		b.Fatal(err)
	}
	pa.OnICECandidate(func(c *webrtc.ICECandidate) {
		if c != nil {
			pb.AddICECandidate(c.ToJSON())
		}
	})
	pb.OnICECandidate(func(c *webrtc.ICECandidate) {
		if c != nil {
			pa.AddICECandidate(c.ToJSON())
		}
	})
	openA, openB := make(chan struct{}), make(chan struct{})
	dca.OnOpen(func() { close(openA) })
	dcb.OnOpen(func() { close(openB) })
	offer, _ := pa.CreateOffer(nil)
	pa.SetLocalDescription(offer)
	pb.SetRemoteDescription(offer)
	answer, _ := pb.CreateAnswer(nil)
	pb.SetLocalDescription(answer)
	pa.SetRemoteDescription(answer)
	for _, ch := range []chan struct{}{openA, openB} {
		select {
		case <-ch:
		case <-time.After(20 * time.Second):
			b.Fatal("raw pion data channel did not open")
		}
	}
	ra, err := dca.Detach()
	if err != nil {
		b.Fatal(err)
	}
	rb, err := dcb.Detach()
	if err != nil {
		b.Fatal(err)
	}
	var received atomic.Int64
	go func() {
		buf := make([]byte, 64<<10)
		for {
			n, err := rb.Read(buf)
			if err != nil {
				return
			}
			received.Add(int64(n))
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	frame := make([]byte, frameSize)
	low := make(chan struct{}, 1)
	dca.SetBufferedAmountLowThreshold(peer.DefaultMaxBuffered / 2)
	dca.OnBufferedAmountLow(func() {
		select {
		case low <- struct{}{}:
		default:
		}
	})
	start := time.Now()
	startBytes := received.Load()
	for ctx.Err() == nil {
		if dca.BufferedAmount() > peer.DefaultMaxBuffered {
			select {
			case <-low:
			case <-ctx.Done():
			case <-time.After(10 * time.Millisecond):
			}
			continue
		}
		if _, err := ra.Write(frame); err != nil {
			b.Fatal(err)
		}
	}
	got := received.Load() - startBytes
	return float64(got) * 8 / time.Since(start).Seconds() / 1e6
}
