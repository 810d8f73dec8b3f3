//go:build linux

package gateway

import (
	"encoding/json"
	"os/exec"
	"syscall"
	"testing"
	"time"
)

// BenchmarkThroughput measures TCP throughput with iperf3 through the
// gateway (guest -> forward + masquerade + policy -> internet) against one
// plain veth hop (internet -> gateway namespace). Each iteration is a 2 s
// iperf3 run; run with -benchtime 3x for a steadier figure:
//
//	go test -run '^$' -bench Throughput -benchtime 3x ./gateway/
func BenchmarkThroughput(b *testing.B) {
	requireNetns(b)
	requireTools(b, "iperf3")
	tb := newTestbed(b)
	gw := startHelper(b, tb.gw, "gateway", tb.gatewayConfig(), nil)
	gw.waitReady()
	b.Cleanup(func() { gw.stop(syscall.SIGTERM) })

	b.Run("direct_veth", func(b *testing.B) {
		iperf(b, tb.gw, gwUplinkAddr, tb.inet)
	})
	b.Run("through_gateway", func(b *testing.B) {
		iperf(b, tb.inet, webAddr, tb.guest)
	})
}

// iperf runs b.N iperf3 tests from client to a one-off server in serverNS.
func iperf(b *testing.B, serverNS *netns, addr string, client *netns) {
	var total float64
	for range b.N {
		srv := exec.Command("ip", "netns", "exec", serverNS.name, "iperf3", "-s", "-1", "-B", addr)
		if err := srv.Start(); err != nil {
			b.Fatal(err)
		}
		var out string
		var err error
		for range 50 { // the server needs a moment to listen
			if out, err = client.run("iperf3", "-c", addr, "-t", "2", "-J"); err == nil {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		srv.Process.Kill()
		srv.Wait()
		if err != nil {
			b.Fatalf("iperf3: %v\n%s", err, out)
		}
		var res struct {
			End struct {
				SumReceived struct {
					BitsPerSecond float64 `json:"bits_per_second"`
				} `json:"sum_received"`
			} `json:"end"`
		}
		if err := json.Unmarshal([]byte(out), &res); err != nil {
			b.Fatalf("iperf3 output: %v", err)
		}
		total += res.End.SumReceived.BitsPerSecond
	}
	b.ReportMetric(total/float64(b.N)/1e6, "Mbit/s")
}
