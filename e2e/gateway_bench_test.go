//go:build linux

package e2e

import "testing"

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
// Run with -benchtime 1x (scripts/bench.sh does); each iteration is four
// iperf3 runs of gwBenchSeconds.
func BenchmarkGatewayThroughput(b *testing.B) {
	RequireCommands(b, "iperf3")
	l := gwNewLab(b)
	l.startGateway("-allow", "10.86.0.1/32", "-status-every", "0")
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
	n := float64(b.N)
	up, down, veth, mesh = up/n, down/n, veth/n, mesh/n
	b.Logf("guest->internet %.0f Mbit/s, internet->guest %.0f Mbit/s; veth %.0f Mbit/s, mesh to .1 %.0f Mbit/s", up, down, veth, mesh)
	b.ReportMetric(up, "gateway-Mbit/s")
	b.ReportMetric(down, "gateway-down-Mbit/s")
	b.ReportMetric(veth, "veth-Mbit/s")
	b.ReportMetric(mesh, "mesh-Mbit/s")
	b.ReportMetric(up/veth, "x-veth")
	b.ReportMetric(up/mesh, "x-mesh")
}

// gwIperf runs one iperf3 TCP test from ns to addr and returns the
// receiver's rate in Mbit/s; reverse has the server send.
func gwIperf(b *testing.B, ns *Namespace, addr string, reverse bool) float64 {
	b.Helper()
	return RunIperf(b, ns, addr, gwBenchSeconds, 0, reverse).Mbps
}
