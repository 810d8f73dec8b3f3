//go:build !js

package peer

import (
	"errors"
	"fmt"

	"slices"
	"time"

	"github.com/pion/ice/v4"
	"github.com/pion/transport/v4"
	"github.com/pion/webrtc/v4"
)

const defaultMaxBuffered = DefaultMaxBuffered

// TransportConfig holds native WebRTC settings. The zero value gathers host
// candidates on every interface but loopback.
type TransportConfig struct {
	// Net replaces the host's network stack, e.g. with a pion/transport vnet
	// in tests. Nil uses the real network.
	Net transport.Net
	// Interfaces, when set, limits host candidates to these interface names.
	Interfaces []string
	// IncludeLoopback gathers loopback candidates too (single-host labs).
	IncludeLoopback bool
	// UDPPortMin and UDPPortMax bound the local UDP ports ICE uses (both or
	// neither).
	UDPPortMin, UDPPortMax uint16
	// SCTPReceiveBuffer is the SCTP receive window in bytes; 0 means
	// DefaultSCTPReceiveBuffer.
	SCTPReceiveBuffer uint32
	// StandardPackets offers links to other native peers over pion/webrtc,
	// as to browsers, so they send 1,200-byte SCTP packets; by default they
	// go over package nativertc, which sends packets of up to 8,000 bytes
	// where the path carries them. A native offer from another peer is
	// still answered, with standard packets. For measurements.
	StandardPackets bool
	// Tune, when set, may adjust the setting engine last (benchmarks).
	Tune func(*webrtc.SettingEngine)
}

// DefaultSCTPReceiveBuffer is the SCTP receive window of native peers.
const DefaultSCTPReceiveBuffer = 4 << 20

type webrtcAPI = webrtc.API

func newWebRTCAPI(tc *TransportConfig, relay RelayPolicy) (*webrtcAPI, error) {
	if tc == nil {
		tc = &TransportConfig{}
	}
	var se webrtc.SettingEngine
	// Frames go through detached channels: no callback goroutine, no copy.
	se.DetachDataChannels()
	// No multicast DNS: nothing leaves the host as multicast, and candidates
	// carry plain addresses (peers learn them anyway when they connect).
	se.SetICEMulticastDNSMode(ice.MulticastDNSModeDisabled)
	// Notice a dead path within seconds; declare it failed soon after, so the
	// offerer renegotiates instead of waiting out pion's 25 s default.
	se.SetICETimeouts(iceDisconnectedTimeout, iceFailedTimeout, iceKeepaliveInterval)
	// A check often arrives before the trickled candidate that explains it,
	// so the pair is peer-reflexive; pion would wait a second before
	// nominating it (measured: 1 join in 10 took 1.01 s instead of 6 ms).
	// A working pair is what we want; a better one can follow on restart.
	se.SetPrflxAcceptanceMinWait(0)
	if relay == RelayOnly {
		// pion checks a relay pair for 2 s before accepting it, so that a
		// direct pair can win; with policy relay there is none to wait for
		// (measured: 2.1 s from start to an open relayed link).
		se.SetRelayAcceptanceMinWait(0)
	}
	if tc.Net != nil {
		se.SetNet(tc.Net)
	} else if n, err := newBufferedNet(); err == nil {
		se.SetNet(n)
	}
	if len(tc.Interfaces) > 0 {
		names := slices.Clone(tc.Interfaces)
		se.SetInterfaceFilter(func(name string) bool { return slices.Contains(names, name) })
	}
	se.SetIncludeLoopbackCandidate(tc.IncludeLoopback || slices.Contains(tc.Interfaces, "lo"))
	if tc.UDPPortMin != 0 || tc.UDPPortMax != 0 {
		if err := se.SetEphemeralUDPPortRange(tc.UDPPortMin, tc.UDPPortMax); err != nil {
			return nil, fmt.Errorf("peer: UDP port range: %w", err)
		}
	}
	// Measured with iperf3 between two bin/peer namespaces on loopback, A/B
	// in one run: a 4 MiB window plus zero checksums lifted TCP from about
	// 160 to 210-240 Mbit/s (each alone did not). DTLS already authenticates every
	// packet, so the CRC32c is redundant (RFC 9653); it is used only when the
	// other side offers it too.
	se.EnableSCTPZeroChecksum(true)
	rcv := tc.SCTPReceiveBuffer
	if rcv == 0 {
		rcv = DefaultSCTPReceiveBuffer
	}
	se.SetSCTPMaxReceiveBufferSize(rcv)
	if tc.Tune != nil {
		tc.Tune(&se)
	}
	return webrtc.NewAPI(webrtc.WithSettingEngine(se)), nil
}

var errNoPair = errors.New("peer: no selected candidate pair yet")

// selectedPair reads the selected candidate pair and its round-trip time.
func selectedPair(pc *webrtc.PeerConnection) (pairInfo, error) {
	sctp := pc.SCTP()
	if sctp == nil || sctp.Transport() == nil || sctp.Transport().ICETransport() == nil {
		return pairInfo{}, errNoPair
	}
	pair, err := sctp.Transport().ICETransport().GetSelectedCandidatePair()
	if err != nil || pair == nil {
		return pairInfo{}, errNoPair
	}
	p := pairInfo{local: pair.Local.Typ.String(), remote: pair.Remote.Typ.String()}
	for _, s := range pc.GetStats() {
		cp, ok := s.(webrtc.ICECandidatePairStats)
		if !ok || !cp.Nominated || cp.State != webrtc.StatsICECandidatePairStateSucceeded {
			continue
		}
		if cp.CurrentRoundTripTime > 0 {
			p.rtt = time.Duration(cp.CurrentRoundTripTime * float64(time.Second))
		}
	}
	return p, nil
}
