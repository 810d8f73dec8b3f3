package relay

import (
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// Refusal reasons, the "reason" label of peerlan_turn_refusals_total. Address
// refusals use "permission-" + the AddrClass.
const (
	ReasonAuth            = "auth"             // bad, expired or malformed credential, wrong realm
	ReasonQuota           = "quota"            // MaxAllocationsPerUser reached
	ReasonPermissionQuota = "permission-quota" // MaxPermissionsPerAllocation reached
)

// Drop reasons, the "reason" label of peerlan_turn_dropped_packets_total.
const (
	dropNoPermission = "no-permission" // a peer sent to a relayed address without a permission for it
	dropOwnPort      = "own-address"   // a client sent to the relay's own address outside the relay ports
	dropRefusedPeer  = "refused-peer"  // a write to a refused address got past the permission check
	dropInboxFull    = "inbox-full"    // a datagram for an allocation whose inbox was full (its client reads too slowly)
	dropSendFailed   = "send-failed"   // a datagram handed to another allocation could not be sent to its client
)

// Relayed byte directions, the "direction" label.
const (
	dirClientToPeer = "client-to-peer"
	dirPeerToClient = "peer-to-client"
)

type metrics struct {
	allocations      prometheus.Gauge
	allocationsTotal prometheus.Counter
	lifetimeExceeded prometheus.Counter
	bytes            *prometheus.CounterVec
	packets          *prometheus.CounterVec
	refusals         *prometheus.CounterVec
	drops            *prometheus.CounterVec

	// Hot-path children, resolved once.
	bytesOut, bytesIn                                 prometheus.Counter
	packetsOut, packetsIn                             prometheus.Counter
	dropNoPerm, dropOwn, dropPeer, dropFull, dropSend prometheus.Counter

	reg        prometheus.Registerer
	registered []prometheus.Collector
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		allocations: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "peerlan_turn_allocations",
			Help: "TURN allocations that exist now.",
		}),
		allocationsTotal: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "peerlan_turn_allocations_total",
			Help: "TURN allocations created.",
		}),
		lifetimeExceeded: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "peerlan_turn_allocation_lifetime_exceeded_total",
			Help: "TURN allocations closed because they reached the maximum allocation lifetime.",
		}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "peerlan_turn_relayed_bytes_total",
			Help: "Payload bytes relayed, by direction.",
		}, []string{"direction"}),
		packets: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "peerlan_turn_relayed_packets_total",
			Help: "Datagrams relayed, by direction.",
		}, []string{"direction"}),
		refusals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "peerlan_turn_refusals_total",
			Help: "Requests refused, by reason (auth, quota, permission-quota, permission-<address class>).",
		}, []string{"reason"}),
		drops: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "peerlan_turn_dropped_packets_total",
			Help: "Datagrams the relay did not forward, by reason.",
		}, []string{"reason"}),
		reg: reg,
	}
	m.bytesOut = m.bytes.WithLabelValues(dirClientToPeer)
	m.bytesIn = m.bytes.WithLabelValues(dirPeerToClient)
	m.packetsOut = m.packets.WithLabelValues(dirClientToPeer)
	m.packetsIn = m.packets.WithLabelValues(dirPeerToClient)
	m.dropNoPerm = m.drops.WithLabelValues(dropNoPermission)
	m.dropOwn = m.drops.WithLabelValues(dropOwnPort)
	m.dropPeer = m.drops.WithLabelValues(dropRefusedPeer)
	m.dropFull = m.drops.WithLabelValues(dropInboxFull)
	m.dropSend = m.drops.WithLabelValues(dropSendFailed)
	for _, r := range []string{ReasonAuth, ReasonQuota, ReasonPermissionQuota} {
		m.refusals.WithLabelValues(r)
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{
		m.allocations, m.allocationsTotal, m.lifetimeExceeded, m.bytes, m.packets, m.refusals, m.drops,
	} {
		if err := reg.Register(c); err != nil {
			m.unregister()
			return nil, fmt.Errorf("%w: %w", errMetrics, err)
		}
		m.registered = append(m.registered, c)
	}
	return m, nil
}

var errMetrics = errors.New("relay: registering metrics")

// unregister lets a later Server register on the same Registerer.
func (m *metrics) unregister() {
	for _, c := range m.registered {
		m.reg.Unregister(c)
	}
	m.registered = nil
}

// clientToPeer counts a datagram of n payload bytes relayed from a client.
func (m *metrics) clientToPeer(n int) {
	m.bytesOut.Add(float64(n))
	m.packetsOut.Inc()
}

// peerToClient counts a datagram of n payload bytes relayed to a client.
func (m *metrics) peerToClient(n int) {
	m.bytesIn.Add(float64(n))
	m.packetsIn.Inc()
}
