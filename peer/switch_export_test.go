package peer

import "github.com/peerlan/peerlan/peer/ether"

// Hooks for the black-box tests in package peer_test (which must be external
// to import peer/porttest).

// ForwardForTest runs the forwarding path once for frame as if the named
// port had just read it.
func (s *Switch) ForwardForTest(port string, frame []byte) {
	s.forward(s.ports.Load().byName[port], frame, ether.Offload{})
}

// SweepForTest runs the janitor's sweep of expired MACs now.
func (s *Switch) SweepForTest() { s.sweep() }

// SampleClockForTest makes the MAC table see the current time of the
// injected clock now rather than at the janitor's next tick.
func (s *Switch) SampleClockForTest() { s.sampleClock() }

// WarmQueuesForTest allocates every queue slot's buffer now, as a queue that
// once ran full has, so that allocation tests see the steady state. Call it
// before any traffic.
func (s *Switch) WarmQueuesForTest() {
	for _, sp := range s.ports.Load().all {
		sp.q.warm(&sp.batch)
	}
}
