//go:build linux

package e2e

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/peerlan/peerlan/signal/relay"
	"github.com/peerlan/peerlan/signal/relay/relaytest"
)

// relayBenchSeconds is the length of each iperf3 run through a relay, and
// relayBenchRounds how many times each direction is measured per relay.
const (
	relayBenchSeconds = 5
	relayBenchRounds  = 2
)

// BenchmarkRelayTURN (issue 6) measures relayed TCP throughput between two
// native peers (bin/peer with policy relay, iperf3 between their
// namespaces) through bin/signal's embedded TURN relay, against two peers
// set up the same way whose bin/signal hands out Debian's coturn turnserver
// instead, started on loopback with the same TURN REST secret (bin/signal
// mints credentials for it with -ice and -turn-secret-file). Both set-ups
// run side by side and iperf3 alternates between them, so that load from
// elsewhere on the machine hits both alike. It also reports the time from
// starting a pair of peers to an open relayed link. Each figure comes from
// one run of real tools (-benchtime 1x).
//
//	Mbit/s, coturn-Mbit/s, x-coturn   iperf3 receiver rate, mean over directions and rounds (goal x-coturn >= 1)
//	connect-ms, coturn-connect-ms     peers started to both links open through the relay
//	open-ms, coturn-open-ms           the links' own session start to open data channel
//
// pion's ICE agent accepts a relay pair only after checking for 2 s (its
// relay acceptance minimum wait, so that direct pairs can win); bin/peer
// sets it to zero under policy relay, where no direct pair can exist, which
// took connect-ms from about 2100 to about 200.
func BenchmarkRelayTURN(b *testing.B) {
	RequireCommands(b, "iperf3", "udhcpc", "turnserver")
	var raw [24]byte
	rand.Read(raw[:])
	secret := hex.EncodeToString(raw[:])
	secretFile := filepath.Join(b.TempDir(), "turn-secret")
	if err := os.WriteFile(secretFile, []byte(secret+"\n"), 0o600); err != nil {
		b.Fatal(err)
	}

	c := relaytest.StartCoturn(b, []byte(secret), relay.DefaultRealm, 50400, 50599)
	coturnSig := StartSignal(b, "-ice", "turn:"+c.Addr+"?transport=udp", "-turn-secret-file", secretFile)
	coturn := relayStartPair(b, coturnSig, "rbc", "-log-level", "warn")
	turn := fmt.Sprintf("127.0.0.1:%d", relayFreeUDPPort(b))
	embeddedSig := StartSignal(b, "-turn-udp", turn, "-turn-ports", "50600-50799", "-turn-secret-file", secretFile)
	embedded := relayStartPair(b, embeddedSig, "rbe", "-log-level", "warn")
	for _, p := range []*relayPair{coturn, embedded} {
		p.relayCheckPaths(b)
		p.relayIperfServer(b)
	}

	var coturnMbps, embeddedMbps, coturnBytes, embeddedBytes float64
	var coturnCPU, embeddedCPU time.Duration
	n := float64(2 * relayBenchRounds)
	for round := range relayBenchRounds {
		for _, reverse := range []bool{false, true} {
			cpu0 := relayCPUTime(b, c.Pid())
			rc := coturn.relayIperf(b, relayBenchSeconds, reverse)
			cpu1 := relayCPUTime(b, c.Pid())
			cpu2 := relayCPUTime(b, embeddedSig.cmd.Process.Pid)
			re := embedded.relayIperf(b, relayBenchSeconds, reverse)
			cpu3 := relayCPUTime(b, embeddedSig.cmd.Process.Pid)
			b.Logf("round %d reverse=%v: coturn %.1f Mbit/s (relay CPU %v), embedded %.1f Mbit/s (relay CPU %v)",
				round, reverse, rc.Mbps, cpu1-cpu0, re.Mbps, cpu3-cpu2)
			coturnMbps += rc.Mbps / n
			embeddedMbps += re.Mbps / n
			coturnCPU += cpu1 - cpu0
			embeddedCPU += cpu3 - cpu2
			coturnBytes += rc.Bytes
			embeddedBytes += re.Bytes
		}
	}
	for _, p := range []*relayPair{coturn, embedded} {
		p.relayCheckPaths(b) // still relayed after the load
	}
	if embeddedSig.Metrics(b).Sum("peerlan_turn_relayed_bytes_total") == 0 {
		b.Fatal("the embedded relay counted no relayed bytes")
	}
	if coturnSig.Metrics(b).Sum("peerlan_turn_relayed_bytes_total") != 0 {
		b.Fatal("the coturn leg's bin/signal relayed bytes itself")
	}
	b.ReportMetric(embeddedMbps, "Mbit/s")
	b.ReportMetric(coturnMbps, "coturn-Mbit/s")
	b.ReportMetric(embeddedMbps/coturnMbps, "x-coturn")
	b.ReportMetric(float64(embedded.connect.Microseconds())/1000, "connect-ms")
	b.ReportMetric(float64(coturn.connect.Microseconds())/1000, "coturn-connect-ms")
	b.ReportMetric(embedded.openMillis, "open-ms")
	b.ReportMetric(coturn.openMillis, "coturn-open-ms")
	// The relay's own CPU time per megabyte of iperf3 payload (the relay
	// process only; with the 2 cores shared by peers, iperf3 and relay,
	// a relay's CPU cost also lowers what the peers get).
	b.ReportMetric(float64(embeddedCPU.Microseconds())/(embeddedBytes/1e6), "relay-cpu-us/MB")
	b.ReportMetric(float64(coturnCPU.Microseconds())/(coturnBytes/1e6), "coturn-cpu-us/MB")
}

// relayCPUTime is the user and system CPU time process pid has used, from
// /proc/PID/stat (fields 14 and 15, in clock ticks of 1/100 s on Linux).
func relayCPUTime(b *testing.B, pid int) time.Duration {
	b.Helper()
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		b.Fatal(err)
	}
	// The command name (field 2) may hold spaces; fields after it follow
	// its closing parenthesis.
	s := string(raw)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		b.Fatalf("parse /proc/%d/stat: %q", pid, s)
	}
	return time.Duration(utime+stime) * 10 * time.Millisecond
}
