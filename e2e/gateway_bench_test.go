//go:build linux

package e2e

import (
	"testing"
	"time"
)

// gwBenchSeconds is the length of one iperf3 run.
const gwBenchSeconds = 5

// BenchmarkGatewayThroughput measures TCP throughput (iperf3) from a guest
// to the internet host through bin/gateway, in TestGateway's namespaces,
// against two baselines measured in the same run:
//
//   - veth: the gateway host to the internet host over the uplink veth, the
//     physical ceiling of the last hop;
//   - mesh: the guest to the gateway's .1 over the mesh alone (opened with
//     -allow 10.86.0.1/32), so that x-mesh isolates what forwarding,
//     masquerade and the egress policy cost on top of the WebRTC link.
//
// Then the kernel gateway stops and bin/gateway -userspace (unprivileged)
// takes the room over, and the same two guest runs go through its userspace
// stack: userspace-x-kernel is its throughput against the kernel NAT's.
//
// Run with -benchtime 1x (scripts/bench.sh does); each iteration is four
// iperf3 runs of gwBenchSeconds, and two more with -userspace.
func BenchmarkGatewayThroughput(b *testing.B) {
	RequireCommands(b, "iperf3")
	l := gwNewLab(b)
	kernel := l.startGateway("-allow", "10.86.0.1/32", "-status-every", "0")
	l.startGuest("-log-level", "warn")
	LeaseDHCP(b, l.guest, l.guestTAP)

	StartIperfServer(b, l.inet, gwInetAddr)
	StartIperfServer(b, l.gw, "10.86.0.1")
	var up, down, veth, mesh float64
	for range b.N {
		veth += gwIperf(b, l.gw, gwInetAddr, false)
		mesh += gwIperf(b, l.guest, "10.86.0.1", false)
		up += gwIperf(b, l.guest, gwInetAddr, false)
		down += gwIperf(b, l.guest, gwInetAddr, true)
	}
	b.StopTimer()
	old := l.waitGatewayLink("", 10*time.Second).ID
	if err := kernel.Stop(20 * time.Second); err != nil {
		b.Fatalf("kernel gateway did not stop cleanly: %v", err)
	}
	l.startUserspaceGateway("-status-every", "0")
	l.waitGatewayLink(old, 60*time.Second)
	b.StartTimer()
	var usUp, usDown float64
	for range b.N {
		usUp += gwIperf(b, l.guest, gwInetAddr, false)
		usDown += gwIperf(b, l.guest, gwInetAddr, true)
	}
	n := float64(b.N)
	up, down, veth, mesh, usUp, usDown = up/n, down/n, veth/n, mesh/n, usUp/n, usDown/n
	b.Logf("guest->internet %.0f Mbit/s, internet->guest %.0f Mbit/s; veth %.0f Mbit/s, mesh to .1 %.0f Mbit/s", up, down, veth, mesh)
	b.ReportMetric(up, "gateway-Mbit/s")
	b.ReportMetric(down, "gateway-down-Mbit/s")
	b.ReportMetric(veth, "veth-Mbit/s")
	b.ReportMetric(mesh, "mesh-Mbit/s")
	b.ReportMetric(up/veth, "x-veth")
	b.ReportMetric(up/mesh, "x-mesh")
	b.Logf("userspace: guest->internet %.0f Mbit/s, internet->guest %.0f Mbit/s (%.2fx, %.2fx the kernel's)",
		usUp, usDown, usUp/up, usDown/down)
	b.ReportMetric(usUp, "userspace-Mbit/s")
	b.ReportMetric(usDown, "userspace-down-Mbit/s")
	b.ReportMetric(usUp/up, "userspace-x-kernel")
	b.ReportMetric(usDown/down, "userspace-down-x-kernel")
}

// gwIperf runs one iperf3 TCP test from ns to addr and returns the
// receiver's rate in Mbit/s; reverse has the server send.
func gwIperf(b *testing.B, ns *Namespace, addr string, reverse bool) float64 {
	b.Helper()
	return RunIperf(b, ns, addr, gwBenchSeconds, 0, reverse).Mbps
}
