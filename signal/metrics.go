package signal

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/peerlan/peerlan/signal/proto"
)

// Rejection reasons beyond the error codes, for peerlan_signal_rejections_total.
const (
	reasonSlowConsumer   = "slow-consumer"
	reasonOrigin         = "origin"
	reasonTooManyConns   = "too-many-connections"
	reasonJoinTimeout    = "join-timeout"
	reasonShuttingDown   = "shutting-down"
	typeLabelUndecodable = "invalid" // message type label for input that did not decode
)

// metrics are the server's Prometheus series, all prefixed peerlan_signal_.
type metrics struct {
	received      *prometheus.CounterVec // by type
	receivedBytes *prometheus.CounterVec
	sent          *prometheus.CounterVec
	sentBytes     *prometheus.CounterVec
	relayed       *prometheus.CounterVec // peer-to-peer messages passed on, by type
	relayedBytes  *prometheus.CounterVec
	joins         *prometheus.CounterVec // by role and kind (new, resume, reattach)
	rejections    *prometheus.CounterVec // by reason
	connections   prometheus.Gauge
	peers         prometheus.Gauge
	rooms         prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	counter := func(name, help string, labels ...string) *prometheus.CounterVec {
		return prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "peerlan", Subsystem: "signal", Name: name, Help: help}, labels)
	}
	gauge := func(name, help string) prometheus.Gauge {
		return prometheus.NewGauge(prometheus.GaugeOpts{Namespace: "peerlan", Subsystem: "signal", Name: name, Help: help})
	}
	m := &metrics{
		received:      counter("received_messages_total", "Messages received from peers, by type.", "type"),
		receivedBytes: counter("received_bytes_total", "Bytes of messages received from peers, by type.", "type"),
		sent:          counter("sent_messages_total", "Messages sent to peers, by type.", "type"),
		sentBytes:     counter("sent_bytes_total", "Bytes of messages sent to peers, by type.", "type"),
		relayed:       counter("relayed_messages_total", "Messages relayed from one peer to another, by type.", "type"),
		relayedBytes:  counter("relayed_bytes_total", "Bytes relayed from one peer to another, by type.", "type"),
		joins:         counter("joins_total", "Successful joins, by role and kind (new, resume, reattach).", "role", "kind"),
		rejections:    counter("rejections_total", "Refused or dropped input and closed connections, by reason.", "reason"),
		connections:   gauge("connections", "Open WebSocket connections."),
		peers:         gauge("peers", "Peers in rooms, including those within their resume grace period."),
		rooms:         gauge("rooms", "Rooms with at least one peer."),
	}
	for _, c := range []prometheus.Collector{m.received, m.receivedBytes, m.sent, m.sentBytes, m.relayed,
		m.relayedBytes, m.joins, m.rejections, m.connections, m.peers, m.rooms} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	// Pre-create the series tests and dashboards look for, so they read 0
	// rather than missing before the first event.
	for _, t := range []string{proto.TypeSignal} {
		m.relayed.WithLabelValues(t)
		m.relayedBytes.WithLabelValues(t)
	}
	return m, nil
}
