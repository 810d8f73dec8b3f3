package portfwd

import "github.com/prometheus/client_golang/prometheus"

// Metric label values for the direction of forwarded bytes.
const (
	DirectionToGuest   = "to_guest"
	DirectionFromGuest = "from_guest"
)

type metricDescs struct {
	accepted, refused, dialFailures, bytes, active *prometheus.Desc
}

func newMetricDescs() metricDescs {
	l := []string{"forward"}
	return metricDescs{
		accepted: prometheus.NewDesc("peerlan_gateway_forward_accepted_total",
			"TCP connections accepted or UDP sessions opened by a port forward.", l, nil),
		refused: prometheus.NewDesc("peerlan_gateway_forward_refused_total",
			"TCP connections closed at once or UDP datagrams dropped because the forward was at its limit.", l, nil),
		dialFailures: prometheus.NewDesc("peerlan_gateway_forward_dial_failures_total",
			"Dials to the forward's guest that failed.", l, nil),
		bytes: prometheus.NewDesc("peerlan_gateway_forward_bytes_total",
			"Payload bytes carried by a port forward, by direction.", []string{"forward", "direction"}, nil),
		active: prometheus.NewDesc("peerlan_gateway_forward_active",
			"Open TCP connections or UDP sessions of a port forward.", l, nil),
	}
}

// Describe implements prometheus.Collector.
func (f *Forwarder) Describe(ch chan<- *prometheus.Desc) {
	d := f.descs
	for _, x := range []*prometheus.Desc{d.accepted, d.refused, d.dialFailures, d.bytes, d.active} {
		ch <- x
	}
}

// Collect implements prometheus.Collector: one series per forward, labelled
// with the forward's flag form.
func (f *Forwarder) Collect(ch chan<- prometheus.Metric) {
	d := f.descs
	for _, s := range f.Stats() {
		name := s.Spec.String()
		counter := func(desc *prometheus.Desc, v uint64, labels ...string) {
			ch <- prometheus.MustNewConstMetric(desc, prometheus.CounterValue, float64(v), append([]string{name}, labels...)...)
		}
		counter(d.accepted, s.Accepted)
		counter(d.refused, s.Refused)
		counter(d.dialFailures, s.DialFailures)
		counter(d.bytes, s.BytesToGuest, DirectionToGuest)
		counter(d.bytes, s.BytesFromGuest, DirectionFromGuest)
		ch <- prometheus.MustNewConstMetric(d.active, prometheus.GaugeValue, float64(s.Active), name)
	}
}
