package gateway

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metric label values for the traffic direction.
const (
	DirectionGuestToInternet = "guest_to_internet"
	DirectionInternetToGuest = "internet_to_guest"
)

const (
	// counterCacheTTL lets concurrent or rapid scrapes share one nft run.
	counterCacheTTL = time.Second
	counterReadTime = 5 * time.Second
)

var errNoHost = errors.New("gateway: metrics need a Host")

// Metrics exposes a gateway's counters to Prometheus and as a status line.
// The nftables counters are read with `nft -j list counters` when scraped
// (at most once a second); the DNS counters live in the forwarder.
type Metrics struct {
	host *Host
	dns  *DNSForwarder // may be nil

	readErrors atomic.Uint64

	mu     sync.Mutex // guards the cached snapshot
	last   Counters
	lastAt time.Time
	lastOK bool

	bytes, packets, flows, drops, readErrs   *prometheus.Desc
	dnsQueries, dnsFailures, dnsTrunc, dnsTC *prometheus.Desc
}

// NewMetrics registers the gateway's collector on reg. dns may be nil when
// the gateway runs without the forwarder.
func NewMetrics(reg prometheus.Registerer, host *Host, dns *DNSForwarder) (*Metrics, error) {
	if host == nil {
		return nil, errNoHost
	}
	m := &Metrics{
		host: host,
		dns:  dns,
		bytes: prometheus.NewDesc("peerlan_gateway_forwarded_bytes_total",
			"Bytes forwarded between the room and the uplink.", []string{"direction"}, nil),
		packets: prometheus.NewDesc("peerlan_gateway_forwarded_packets_total",
			"Packets forwarded between the room and the uplink.", []string{"direction"}, nil),
		flows: prometheus.NewDesc("peerlan_gateway_flows_total",
			"New connections by direction; internet_to_guest ones are all refused (-forward proxies on the host; nothing is routed in).", []string{"direction"}, nil),
		drops: prometheus.NewDesc("peerlan_gateway_policy_drops_total",
			"Packets from or to the room dropped by the gateway's policy, by reason.", []string{"reason"}, nil),
		readErrs: prometheus.NewDesc("peerlan_gateway_counter_read_errors_total",
			"Failed reads of the nftables counters.", nil, nil),
		dnsQueries: prometheus.NewDesc("peerlan_gateway_dns_queries_total",
			"DNS queries received from the room.", []string{"transport"}, nil),
		dnsFailures: prometheus.NewDesc("peerlan_gateway_dns_failures_total",
			"DNS queries answered with an error, by reason.", []string{"reason"}, nil),
		dnsTrunc: prometheus.NewDesc("peerlan_gateway_dns_truncated_total",
			"UDP answers truncated to the client's size (TC bit set).", nil, nil),
		dnsTC: prometheus.NewDesc("peerlan_gateway_dns_upstream_tcp_retries_total",
			"Truncated upstream UDP answers retried over TCP.", nil, nil),
	}
	if err := reg.Register(m); err != nil {
		return nil, fmt.Errorf("gateway: registering metrics: %w", err)
	}
	return m, nil
}

// Describe implements prometheus.Collector.
func (m *Metrics) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{m.bytes, m.packets, m.flows, m.drops, m.readErrs} {
		ch <- d
	}
	if m.dns != nil {
		for _, d := range []*prometheus.Desc{m.dnsQueries, m.dnsFailures, m.dnsTrunc, m.dnsTC} {
			ch <- d
		}
	}
}

// Collect implements prometheus.Collector. When nft cannot be read the
// traffic metrics are left out of that scrape and the error counter grows.
func (m *Metrics) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), counterReadTime)
	defer cancel()
	if c, err := m.counters(ctx); err == nil {
		counter := func(d *prometheus.Desc, v uint64, label string) {
			ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), label)
		}
		counter(m.bytes, c.GuestToInternet.Bytes, DirectionGuestToInternet)
		counter(m.bytes, c.InternetToGuest.Bytes, DirectionInternetToGuest)
		counter(m.packets, c.GuestToInternet.Packets, DirectionGuestToInternet)
		counter(m.packets, c.InternetToGuest.Packets, DirectionInternetToGuest)
		counter(m.flows, c.FlowsGuestToInternet, DirectionGuestToInternet)
		counter(m.flows, c.FlowsInternetToGuest, DirectionInternetToGuest)
		for _, r := range DropReasons {
			counter(m.drops, c.Drops[r], r)
		}
	}
	ch <- prometheus.MustNewConstMetric(m.readErrs, prometheus.CounterValue, float64(m.readErrors.Load()))
	if m.dns == nil {
		return
	}
	s := m.dns.Stats()
	ch <- prometheus.MustNewConstMetric(m.dnsQueries, prometheus.CounterValue, float64(s.QueriesUDP), "udp")
	ch <- prometheus.MustNewConstMetric(m.dnsQueries, prometheus.CounterValue, float64(s.QueriesTCP), "tcp")
	for _, r := range DNSFailReasons {
		ch <- prometheus.MustNewConstMetric(m.dnsFailures, prometheus.CounterValue, float64(s.Failures[r]), r)
	}
	ch <- prometheus.MustNewConstMetric(m.dnsTrunc, prometheus.CounterValue, float64(s.Truncated))
	ch <- prometheus.MustNewConstMetric(m.dnsTC, prometheus.CounterValue, float64(s.UpstreamTCPRetries))
}

// counters returns a snapshot no older than counterCacheTTL.
func (m *Metrics) counters(ctx context.Context) (Counters, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.lastOK && time.Since(m.lastAt) < counterCacheTTL {
		return m.last, nil
	}
	c, err := m.host.Counters(ctx)
	if err != nil {
		m.readErrors.Add(1)
		m.lastOK = false
		return Counters{}, err
	}
	m.last, m.lastAt, m.lastOK = c, time.Now(), true
	return c, nil
}

// Status renders one line for a periodic log entry, e.g.
//
//	room 10.86.0.0/24 on tap0 via eth0: out 1.2MiB/900 pkts, in 9.8MiB/7100 pkts,
//	flows 12 out/0 in, drops private=3 metadata=1; dns 40 udp/1 tcp, 0 failed
func (m *Metrics) Status(ctx context.Context) string {
	var b strings.Builder
	fmt.Fprintf(&b, "room %v on %s via %s: ", m.host.Subnet(), m.host.LAN(), m.host.Uplink())
	if c, err := m.counters(ctx); err != nil {
		fmt.Fprintf(&b, "counters unavailable (%v)", err)
	} else {
		b.WriteString(c.String())
	}
	if m.dns != nil {
		s := m.dns.Stats()
		var failed uint64
		for _, n := range s.Failures {
			failed += n
		}
		fmt.Fprintf(&b, "; dns %d udp/%d tcp, %d failed", s.QueriesUDP, s.QueriesTCP, failed)
	}
	return b.String()
}
