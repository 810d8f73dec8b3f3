package nativertc

import (
	"errors"
	"fmt"
	"strings"
)

// Params is what one side tells the other in its offer or answer.
type Params struct {
	Ufrag string `json:"ufrag"`
	Pwd   string `json:"pwd"`
	// Fingerprint is the SHA-256 of the side's DTLS certificate, as in SDP:
	// "sha-256 AB:CD:…".
	Fingerprint string `json:"fingerprint"`
	// MaxPacket is the largest SCTP packet the side reads; it answers
	// probes up to that size. 0: standard packets only.
	MaxPacket uint32 `json:"maxPacket,omitempty"`
	// Candidates gathered before the offer or answer went out (as in SDP,
	// "candidate:…"); later ones trickle.
	Candidates []string `json:"candidates,omitempty"`
}

var errBadParams = errors.New("nativertc: bad remote parameters")

// Limits on Params from the remote side.
const (
	maxCredential   = 256
	maxCandidates   = 64
	maxCandidateLen = 512
)

// Validate checks p's sizes and shape.
func (p *Params) Validate() error {
	switch {
	case p.Ufrag == "" || p.Pwd == "" || len(p.Ufrag) > maxCredential || len(p.Pwd) > maxCredential:
		return fmt.Errorf("%w: ICE credentials", errBadParams)
	case !strings.HasPrefix(p.Fingerprint, "sha-256 ") || len(p.Fingerprint) != len("sha-256 ")+32*3-1:
		return fmt.Errorf("%w: fingerprint", errBadParams)
	case len(p.Candidates) > maxCandidates:
		return fmt.Errorf("%w: %d candidates", errBadParams, len(p.Candidates))
	}
	for _, c := range p.Candidates {
		if len(c) > maxCandidateLen {
			return fmt.Errorf("%w: candidate of %d bytes", errBadParams, len(c))
		}
	}
	return nil
}
