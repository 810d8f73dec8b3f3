package peer

import (
	"fmt"

	"github.com/pion/webrtc/v4"
)

// session is one attempt at a link: the transport to one remote peer (ICE,
// DTLS, SCTP) and the pre-negotiated data channel on it. Two kinds exist:
// pcSession, pion/webrtc's PeerConnection (in the browser, the browser's),
// used on every link that has a browser on one end; and natively
// nativeSession (package nativertc), used between two native peers because
// it may send larger SCTP packets.
//
// Methods are called from the mesh's event loop only, except close. A
// session posts the link's events (evCandidate, evConnState, evChannelOpen)
// tagged with the peer and session number it was made for, so that events
// of a session that was replaced are dropped.
type session interface {
	// offer makes this side's offer (the offerer calls it once, first).
	offer() error
	// accept applies the remote offer n and makes the answer.
	accept(n *negotiation) error
	// answered applies the remote answer n to our offer.
	answered(n *negotiation) error
	// describe puts this side's offer or answer, with the candidates
	// gathered so far, into n; false if there is none yet.
	describe(n *negotiation) bool
	// addCandidate adds a candidate the remote trickled.
	addCandidate(c webrtc.ICECandidateInit) error
	// gathered is closed once this side has gathered its candidates.
	gathered() <-chan struct{}
	// port returns the switch port of the channel, after evChannelOpen.
	port(maxBuffered int) (*linkPort, error)
	// pair returns the selected candidate pair; errNoPair while there is none.
	pair() (pairInfo, error)
	// transport names the kind for logs and status, with the size of the
	// SCTP packets it sends once that is known.
	transport() string
	// close ends the session; it may block while pion's goroutines end.
	close()
}

// pcSession is a session on pion/webrtc's PeerConnection.
type pcSession struct {
	m  *Mesh
	pc *webrtc.PeerConnection
	dc *webrtc.DataChannel
}

// newPCSession creates the peer connection and the pre-negotiated channel
// of l's current session and wires their callbacks to the event loop.
func (m *Mesh) newPCSession(l *link) (*pcSession, error) {
	cfg := webrtc.Configuration{ICEServers: m.iceServersFor(l), ICETransportPolicy: webrtc.ICETransportPolicyAll}
	if m.cfg.Relay == RelayOnly {
		cfg.ICETransportPolicy = webrtc.ICETransportPolicyRelay
	}
	pc, err := m.api.NewPeerConnection(cfg)
	if err != nil {
		return nil, fmt.Errorf("new peer connection: %w", err)
	}
	dc, err := pc.CreateDataChannel(dataChannelLabel, dataChannelInit())
	if err != nil {
		_ = pc.Close()
		return nil, fmt.Errorf("create data channel: %w", err)
	}
	post := m.poster(l)
	pc.OnICECandidate(func(c *webrtc.ICECandidate) {
		if c != nil {
			init := c.ToJSON()
			post(linkEvent{kind: evCandidate, candidate: &init})
		}
	})
	pc.OnConnectionStateChange(func(s webrtc.PeerConnectionState) {
		post(linkEvent{kind: evConnState, state: s})
	})
	dc.OnOpen(func() { post(linkEvent{kind: evChannelOpen}) })
	return &pcSession{m: m, pc: pc, dc: dc}, nil
}

func (s *pcSession) offer() error {
	offer, err := s.pc.CreateOffer(nil)
	if err == nil {
		err = s.pc.SetLocalDescription(offer)
	}
	if err != nil {
		return fmt.Errorf("create offer: %w", err)
	}
	return nil
}

func (s *pcSession) accept(n *negotiation) error {
	if err := s.setRemote(webrtc.SDPTypeOffer, n); err != nil {
		return err
	}
	answer, err := s.pc.CreateAnswer(nil)
	if err == nil {
		err = s.pc.SetLocalDescription(answer)
	}
	if err != nil {
		return fmt.Errorf("create answer: %w", err)
	}
	return nil
}

func (s *pcSession) answered(n *negotiation) error { return s.setRemote(webrtc.SDPTypeAnswer, n) }

// setRemote applies n's SDP, an offer or an answer as typ says.
func (s *pcSession) setRemote(typ webrtc.SDPType, n *negotiation) error {
	if n.SDP == "" {
		return errNoSDP
	}
	if err := s.pc.SetRemoteDescription(webrtc.SessionDescription{Type: typ, SDP: s.m.filterSDP(n.SDP)}); err != nil {
		return fmt.Errorf("apply %s: %w", typ, err)
	}
	return nil
}

func (s *pcSession) describe(n *negotiation) bool {
	desc := s.pc.LocalDescription()
	if desc == nil {
		return false
	}
	n.SDP = desc.SDP
	return true
}

func (s *pcSession) addCandidate(c webrtc.ICECandidateInit) error { return s.pc.AddICECandidate(c) }

func (s *pcSession) gathered() <-chan struct{} { return webrtc.GatheringCompletePromise(s.pc) }

func (s *pcSession) port(maxBuffered int) (*linkPort, error) {
	return newPCLinkPort(s.dc, maxBuffered)
}

func (s *pcSession) pair() (pairInfo, error) { return selectedPair(s.pc) }

func (s *pcSession) transport() string { return "webrtc" }

func (s *pcSession) close() { _ = s.pc.Close() }

// poster returns a function that posts an event of l's current session.
func (m *Mesh) poster(l *link) func(linkEvent) {
	id, session := l.info.ID, l.session
	return func(ev linkEvent) {
		ev.peer, ev.session = id, session
		m.events.post(ev)
	}
}
