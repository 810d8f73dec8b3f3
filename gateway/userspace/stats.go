package userspace

import (
	"fmt"
	"strings"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/peerlan/peerlan/gateway"
)

// Stats counts the gateway's frames since New.
type Stats struct {
	// FromGuests counts frames the policy let into the stack (ARP, DNS and
	// ping on .1 included), with their Ethernet headers.
	FromGuests gateway.Traffic
	// ToGuests counts frames the stack queued toward the room.
	ToGuests gateway.Traffic
	// Drops counts dropped frames per reason (DropReasons); the TCP
	// forwarder's refusals count one per connection.
	Drops map[string]uint64
	// PendingConnects is the number of guest TCP connections waiting for
	// the host's connect now.
	PendingConnects int
}

// Stats returns a snapshot of the counters.
func (g *Gateway) Stats() Stats {
	s := Stats{
		FromGuests: gateway.Traffic{Packets: g.in.packets.Load(), Bytes: g.in.bytes.Load()},
		ToGuests:   gateway.Traffic{Packets: g.outTraffic.packets.Load(), Bytes: g.outTraffic.bytes.Load()},
		Drops:      make(map[string]uint64, len(DropReasons)),

		PendingConnects: g.tcp.pendingConnects(),
	}
	for i, r := range DropReasons {
		s.Drops[r] = g.drops[i].Load()
	}
	return s
}

// String renders the snapshot for a status line: traffic both ways and the
// non-zero drops.
func (s Stats) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "from guests %d pkts/%d B, to guests %d pkts/%d B, %d connects pending",
		s.FromGuests.Packets, s.FromGuests.Bytes, s.ToGuests.Packets, s.ToGuests.Bytes, s.PendingConnects)
	sep := ", drops "
	for _, r := range DropReasons {
		if n := s.Drops[r]; n > 0 {
			fmt.Fprintf(&b, "%s%s=%d", sep, r, n)
			sep = " "
		}
	}
	return b.String()
}

// Collector exposes the gateway's counters to Prometheus under kernel mode's
// metric names where they mean the same: peerlan_gateway_forwarded_* by
// direction (frames into and out of the stack here, not routed packets),
// peerlan_gateway_policy_drops_total by reason, and the DNS forwarder's.
type Collector struct {
	g                                        *Gateway
	bytes, packets, drops                    *prometheus.Desc
	dnsQueries, dnsFailures, dnsTrunc, dnsTC *prometheus.Desc
}

// NewCollector registers g's collector on reg.
func NewCollector(reg prometheus.Registerer, g *Gateway) (*Collector, error) {
	c := &Collector{
		g: g,
		bytes: prometheus.NewDesc("peerlan_gateway_forwarded_bytes_total",
			"Bytes of frames between the room and the userspace stack.", []string{"direction"}, nil),
		packets: prometheus.NewDesc("peerlan_gateway_forwarded_packets_total",
			"Frames between the room and the userspace stack.", []string{"direction"}, nil),
		drops: prometheus.NewDesc("peerlan_gateway_policy_drops_total",
			"Frames dropped by the userspace gateway, by reason.", []string{"reason"}, nil),
		dnsQueries: prometheus.NewDesc("peerlan_gateway_dns_queries_total",
			"DNS queries received on .1, by transport.", []string{"transport"}, nil),
		dnsFailures: prometheus.NewDesc("peerlan_gateway_dns_failures_total",
			"DNS queries answered with an error, by reason.", []string{"reason"}, nil),
		dnsTrunc: prometheus.NewDesc("peerlan_gateway_dns_truncated_total",
			"UDP DNS answers truncated to the client's size.", nil, nil),
		dnsTC: prometheus.NewDesc("peerlan_gateway_dns_upstream_tcp_retries_total",
			"Truncated upstream answers retried over TCP.", nil, nil),
	}
	if err := reg.Register(c); err != nil {
		return nil, fmt.Errorf("userspace gateway: registering metrics: %w", err)
	}
	return c, nil
}

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.bytes, c.packets, c.drops, c.dnsQueries, c.dnsFailures, c.dnsTrunc, c.dnsTC} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	s := c.g.Stats()
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	counter(c.bytes, s.FromGuests.Bytes, gateway.DirectionGuestToInternet)
	counter(c.bytes, s.ToGuests.Bytes, gateway.DirectionInternetToGuest)
	counter(c.packets, s.FromGuests.Packets, gateway.DirectionGuestToInternet)
	counter(c.packets, s.ToGuests.Packets, gateway.DirectionInternetToGuest)
	for _, r := range DropReasons {
		counter(c.drops, s.Drops[r], r)
	}
	d := c.g.dns.Stats()
	counter(c.dnsQueries, d.QueriesUDP, "udp")
	counter(c.dnsQueries, d.QueriesTCP, "tcp")
	for _, r := range gateway.DNSFailReasons {
		counter(c.dnsFailures, d.Failures[r], r)
	}
	counter(c.dnsTrunc, d.Truncated)
	counter(c.dnsTC, d.UpstreamTCPRetries)
}
