package peer

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/pion/webrtc/v4"

	"github.com/peerlan/peerlan/peer/nativertc"
)

// Negotiation payloads travel as the opaque "data" of signal messages (see
// package signal). Every payload names the session it belongs to: a session
// is one RTCPeerConnection between two peers, identified by a random number
// the offerer picks. A new session (after a failure, a restart or glare)
// supersedes the old one; payloads of other sessions are ignored.
//
//	{"kind":"offer","session":3735928559,"sdp":"v=0\r\n…"}
//	{"kind":"answer","session":3735928559,"sdp":"v=0\r\n…"}
//	{"kind":"candidate","session":3735928559,"candidate":{"candidate":"candidate:1 1 udp …","sdpMid":"0","sdpMLineIndex":0}}
//
// An answerer whose link is down asks the offerer for a new session, naming
// the last session it had (0 for none); the offerer then offers again unless
// an offer of its own is already on its way:
//
//	{"kind":"restart","session":3735928559}
//
// A peer whose relay policy is direct adds "direct":true to its offers and
// answers; the other side then uses no TURN server on that link (offering
// again without one if its offer had), so that the link cannot end up
// relayed through the other side's relayed candidate.
//
// Between two native peers the offerer may offer a native session
// (package nativertc: the same ICE, DTLS and SCTP without SDP, sending SCTP
// packets of up to 8,000 bytes where the path carries them) instead of an
// SDP; the answer is then native too. Its "native" object carries the ICE
// credentials, the DTLS certificate's fingerprint, the largest SCTP packet
// the side reads, and the candidates gathered so far; later candidates
// trickle as above (only "candidate" set):
//
//	{"kind":"offer","session":7,"native":{"ufrag":"…","pwd":"…","fingerprint":"sha-256 AB:…","maxPacket":8000,"candidates":["candidate:…"]},"offload":true}
//
// A peer that cannot take a native offer ignores it; the offerer then offers
// an SDP after its negotiation timeout.
//
// The data channel itself is pre-negotiated (DESIGN.md invariant 3): both
// sides create channel id 0, label "peerlan", unordered, maxRetransmits 0, so
// no in-band open handshake delays it. Each message on it is exactly one
// Ethernet frame, with no header of ours.
//
// Offload (native peers; a departure from invariant 3 recorded in
// docs/architecture.md): a peer that takes offloaded frames adds
// "offload":true to its offers, and an answerer that takes them too answers
// "offload":true. On such a session, and only there, every message is the
// 10-byte virtio-net header (ether.Offload) followed by the frame, which may
// be a TCP super-frame of up to 64 KiB that the receiver hands to its TAP
// as it is, or segments for a guest that cannot take it. A browser never
// offers it, so its links keep one plain frame per message.

const (
	kindOffer     = "offer"
	kindAnswer    = "answer"
	kindCandidate = "candidate"
	kindRestart   = "restart"
)

// negotiation is one payload.
type negotiation struct {
	Kind      string                   `json:"kind"`
	Session   uint32                   `json:"session"`
	SDP       string                   `json:"sdp,omitempty"`
	Candidate *webrtc.ICECandidateInit `json:"candidate,omitempty"`
	Native    *nativertc.Params        `json:"native,omitempty"`  // offer, answer: a native session instead of an SDP
	Direct    bool                     `json:"direct,omitempty"`  // offer, answer: the sender's policy is direct
	Offload   bool                     `json:"offload,omitempty"` // offer, answer: the sender takes offloaded frames
}

// maxSDPLen bounds an SDP we will parse; the signaling server bounds whole
// messages too, but a peer should not depend on the server's limits.
const maxSDPLen = 32 << 10

var (
	errBadNegotiation = errors.New("peer: malformed negotiation payload")
	errNoSDP          = errors.New("peer: the remote sent native parameters where an SDP was expected")
	errNoNativeParams = errors.New("peer: the remote sent an SDP where native parameters were expected")
	errNoChannel      = errors.New("peer: data channel not open")
)

func decodeNegotiation(b []byte) (*negotiation, error) {
	var n negotiation
	if err := json.Unmarshal(b, &n); err != nil {
		return nil, fmt.Errorf("%w: %v", errBadNegotiation, err)
	}
	switch n.Kind {
	case kindOffer, kindAnswer:
		if n.Native != nil {
			if n.SDP != "" {
				return nil, fmt.Errorf("%w: %s with both sdp and native", errBadNegotiation, n.Kind)
			}
			if err := n.Native.Validate(); err != nil {
				return nil, fmt.Errorf("%w: %v", errBadNegotiation, err)
			}
			break
		}
		if n.SDP == "" || len(n.SDP) > maxSDPLen {
			return nil, fmt.Errorf("%w: %s without a usable sdp", errBadNegotiation, n.Kind)
		}
	case kindCandidate:
		if n.Candidate == nil {
			return nil, fmt.Errorf("%w: candidate missing", errBadNegotiation)
		}
	case kindRestart:
		return &n, nil // session 0: the requester had none
	default:
		return nil, fmt.Errorf("%w: unknown kind %.20q", errBadNegotiation, n.Kind)
	}
	if n.Session == 0 {
		return nil, fmt.Errorf("%w: no session", errBadNegotiation)
	}
	return &n, nil
}

// dataChannelInit is the pre-negotiated channel both sides create.
func dataChannelInit() *webrtc.DataChannelInit {
	ordered := false
	retransmits := uint16(0)
	negotiated := true
	id := uint16(0)
	return &webrtc.DataChannelInit{Ordered: &ordered, MaxRetransmits: &retransmits, Negotiated: &negotiated, ID: &id}
}

const dataChannelLabel = "peerlan"

// isRelayCandidate reports whether an ICE candidate line is a TURN relay
// candidate ("... typ relay ...").
func isRelayCandidate(line string) bool {
	f := strings.Fields(line)
	for i := 0; i+1 < len(f); i++ {
		if f[i] == "typ" {
			return f[i+1] == "relay"
		}
	}
	return false
}

// filterCandidates drops relay candidates for the direct policy, as
// stripRelayCandidates does from an SDP.
func (m *Mesh) filterCandidates(lines []string) []string {
	if m.cfg.Relay != RelayNever {
		return lines
	}
	out := make([]string, 0, len(lines))
	for _, l := range lines {
		if !isRelayCandidate(l) {
			out = append(out, l)
		}
	}
	return out
}

// stripRelayCandidates removes relay candidates from an SDP, for the direct
// policy: a path through the remote side's TURN server is a relay too.
func stripRelayCandidates(sdp string) string {
	if !strings.Contains(sdp, "typ relay") {
		return sdp
	}
	lines := strings.SplitAfter(sdp, "\n")
	out := lines[:0]
	for _, l := range lines {
		if strings.HasPrefix(l, "a=candidate:") && isRelayCandidate(l) {
			continue
		}
		out = append(out, l)
	}
	return strings.Join(out, "")
}
