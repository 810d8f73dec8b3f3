//go:build linux

package gateway

import (
	"context"
	"errors"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// fakeHost is a Host whose nft is testdata/fake-nft, which prints a captured
// counter listing; the namespace tests scrape the real thing.
func fakeHost(t *testing.T) *Host {
	t.Helper()
	path, err := filepath.Abs("testdata/fake-nft")
	if err != nil {
		t.Fatal(err)
	}
	n, err := lookupNft(path)
	if err != nil {
		t.Fatal(err)
	}
	return &Host{
		cfg:    HostConfig{LAN: "tap0", Subnet: DefaultSubnet},
		nft:    n,
		table:  tableName("tap0"),
		uplink: "eth0",
	}
}

// gather returns "name{label=value}" -> value for one registry.
func gather(t *testing.T, reg *prometheus.Registry) map[string]float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		if !strings.HasPrefix(mf.GetName(), "peerlan_gateway_") {
			t.Errorf("metric %s lacks the peerlan_gateway_ prefix", mf.GetName())
		}
		for _, m := range mf.GetMetric() {
			key := mf.GetName()
			for _, l := range m.GetLabel() {
				key += "{" + l.GetName() + "=" + l.GetValue() + "}"
			}
			out[key] = value(m)
		}
	}
	return out
}

func value(m *dto.Metric) float64 {
	if c := m.GetCounter(); c != nil {
		return c.GetValue()
	}
	return m.GetGauge().GetValue()
}

func TestMetricsFromNftCounters(t *testing.T) {
	up := startUpstream(t, zoneHandler(1))
	fwd := startForwarder(t, DNSConfig{Upstreams: []netip.AddrPort{up.addr}})
	q := new(dns.Msg).SetQuestion("www.example.test.", dns.TypeA)
	if _, _, err := (&dns.Client{}).Exchange(q, fwd.Addr().String()); err != nil {
		t.Fatal(err)
	}

	reg := prometheus.NewRegistry()
	m, err := NewMetrics(reg, fakeHost(t), fwd)
	if err != nil {
		t.Fatal(err)
	}
	got := gather(t, reg)
	for key, want := range map[string]float64{
		"peerlan_gateway_forwarded_bytes_total{direction=guest_to_internet}":   794,
		"peerlan_gateway_forwarded_packets_total{direction=guest_to_internet}": 12,
		"peerlan_gateway_forwarded_bytes_total{direction=internet_to_guest}":   0,
		"peerlan_gateway_flows_total{direction=internet_to_guest}":             0,
		"peerlan_gateway_policy_drops_total{reason=metadata}":                  3,
		"peerlan_gateway_policy_drops_total{reason=private}":                   0,
		"peerlan_gateway_counter_read_errors_total":                            0,
		"peerlan_gateway_dns_queries_total{transport=udp}":                     1,
		"peerlan_gateway_dns_failures_total{reason=timeout}":                   0,
	} {
		if v, ok := got[key]; !ok || v != want {
			t.Errorf("%s = %v (present %v), want %v", key, v, ok, want)
		}
	}
	if n := len(DropReasons); countPrefix(got, "peerlan_gateway_policy_drops_total") != n {
		t.Errorf("want all %d drop reasons exported", n)
	}
	status := m.Status(context.Background())
	want := "room 10.86.0.0/24 on tap0 via eth0: out 794B/12 pkts, in 0B/0 pkts, flows 0 out/0 in, drops metadata=3; dns 1 udp/0 tcp, 0 failed"
	if status != want {
		t.Errorf("Status() = %q\nwant       %q", status, want)
	}

	// A second registration of the same collector is refused, not a panic.
	if _, err := NewMetrics(reg, fakeHost(t), fwd); err == nil {
		t.Error("duplicate registration accepted")
	}
}

func TestMetricsNftFailure(t *testing.T) {
	t.Setenv("FAKE_NFT_FAIL", "1")
	reg := prometheus.NewRegistry()
	m, err := NewMetrics(reg, fakeHost(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	got := gather(t, reg)
	if got["peerlan_gateway_counter_read_errors_total"] != 1 {
		t.Errorf("read errors = %v, want 1", got["peerlan_gateway_counter_read_errors_total"])
	}
	if countPrefix(got, "peerlan_gateway_forwarded_bytes_total") != 0 {
		t.Error("traffic metrics exported although nft failed")
	}
	if countPrefix(got, "peerlan_gateway_dns_") != 0 {
		t.Error("DNS metrics exported without a forwarder")
	}
	if s := m.Status(context.Background()); !strings.Contains(s, "counters unavailable") || !strings.Contains(s, "Operation not permitted") {
		t.Errorf("Status() = %q, want the nft error", s)
	}
	if _, err := NewMetrics(reg, nil, nil); !errors.Is(err, errNoHost) {
		t.Errorf("nil host: err = %v", err)
	}
}

func countPrefix(m map[string]float64, prefix string) int {
	n := 0
	for k := range m {
		if strings.HasPrefix(k, prefix) {
			n++
		}
	}
	return n
}
