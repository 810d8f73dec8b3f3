//go:build !js

package peer

import (
	"crypto/tls"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/pion/stun/v3"
	"github.com/pion/transport/v4"
	"github.com/pion/webrtc/v4"

	"github.com/peerlan/peerlan/peer/nativertc"
)

// nativeTransport makes nativeSessions: what every native session of a
// mesh shares.
type nativeTransport struct {
	cert      tls.Certificate
	net       transport.Net
	tc        TransportConfig
	maxPacket uint32 // largest SCTP packet sent and read; StandardPacketSize when off
}

func newNativeTransport(tc *TransportConfig) (*nativeTransport, error) {
	if tc == nil {
		tc = &TransportConfig{}
	}
	cert, err := nativertc.NewCertificate()
	if err != nil {
		return nil, fmt.Errorf("peer: DTLS certificate: %w", err)
	}
	t := &nativeTransport{cert: cert, net: tc.Net, tc: *tc, maxPacket: nativertc.DefaultMaxPacket}
	if t.net == nil {
		if n, err := newBufferedNet(); err == nil {
			t.net = n
		}
	}
	if tc.StandardPackets {
		t.maxPacket = nativertc.StandardPacketSize
	}
	return t, nil
}

// offersNative reports whether this side offers a native session to a
// peer of the given kind: to native peers, unless StandardPackets.
func (t *nativeTransport) offersNative() bool { return !t.tc.StandardPackets }

// nativeSession is a session on package nativertc.
type nativeSession struct {
	m       *Mesh
	s       *nativertc.Session
	offerer bool
	ch      *nativertc.Channel // set by the OnOpen callback, then chReady closed
	chReady chan struct{}
}

// newNativeSession starts gathering for l's current session.
func (m *Mesh) newNativeSession(l *link, offerer bool) (session, error) {
	t := m.native
	urls, err := stunURIs(m.iceServersFor(l))
	if err != nil {
		return nil, err
	}
	cfg := nativertc.Config{
		Controlling:         offerer,
		Certificate:         t.cert,
		Net:                 t.net,
		IncludeLoopback:     t.tc.IncludeLoopback || slices.Contains(t.tc.Interfaces, "lo"),
		PortMin:             t.tc.UDPPortMin,
		PortMax:             t.tc.UDPPortMax,
		URLs:                urls,
		RelayOnly:           m.cfg.Relay == RelayOnly,
		DisconnectedTimeout: iceDisconnectedTimeout,
		FailedTimeout:       iceFailedTimeout,
		KeepaliveInterval:   iceKeepaliveInterval,
		SCTPReceiveBuffer:   t.tc.SCTPReceiveBuffer,
		MaxPacket:           t.maxPacket,
		Label:               dataChannelLabel,
		Log:                 m.log.With("peer", l.info.ID),
	}
	if cfg.SCTPReceiveBuffer == 0 {
		cfg.SCTPReceiveBuffer = DefaultSCTPReceiveBuffer
	}
	if len(t.tc.Interfaces) > 0 {
		names := slices.Clone(t.tc.Interfaces)
		cfg.InterfaceFilter = func(name string) bool { return slices.Contains(names, name) }
	}
	s, err := nativertc.New(cfg)
	if err != nil {
		return nil, err
	}
	ns := &nativeSession{m: m, s: s, offerer: offerer, chReady: make(chan struct{})}
	post := m.poster(l)
	s.OnCandidate(func(c string) {
		post(linkEvent{kind: evCandidate, candidate: &webrtc.ICECandidateInit{Candidate: c}})
	})
	s.OnState(func(st nativertc.State, err error) {
		if errors.Is(err, nativertc.ErrICEFailed) {
			err = nil // the mesh says why in its own words (relay policy)
		}
		ev := linkEvent{kind: evConnState, err: err}
		switch st {
		case nativertc.StateConnected:
			ev.state = webrtc.PeerConnectionStateConnected
		case nativertc.StateDisconnected:
			ev.state = webrtc.PeerConnectionStateDisconnected
		default:
			ev.state = webrtc.PeerConnectionStateFailed
		}
		post(ev)
	})
	s.OnOpen(func(ch *nativertc.Channel) {
		ns.ch = ch
		close(ns.chReady)
		post(linkEvent{kind: evChannelOpen})
	})
	return ns, nil
}

// stunURIs turns ICE server settings into the URIs pion's ICE agent takes,
// with TURN credentials in them.
func stunURIs(servers []webrtc.ICEServer) ([]*stun.URI, error) {
	var out []*stun.URI
	for _, s := range servers {
		for _, raw := range s.URLs {
			u, err := stun.ParseURI(raw)
			if err != nil {
				return nil, fmt.Errorf("ICE server %q: %w", raw, err)
			}
			if u.Scheme == stun.SchemeTypeTURN || u.Scheme == stun.SchemeTypeTURNS {
				u.Username = s.Username
				if c, ok := s.Credential.(string); ok {
					u.Password = c
				}
			}
			out = append(out, u)
		}
	}
	return out, nil
}

func (s *nativeSession) offer() error { return nil } // gathering started in newNativeSession

func (s *nativeSession) accept(n *negotiation) error { return s.start(n) }

func (s *nativeSession) answered(n *negotiation) error { return s.start(n) }

func (s *nativeSession) start(n *negotiation) error {
	if n.Native == nil {
		return errNoNativeParams
	}
	remote := *n.Native
	remote.Candidates = s.m.filterCandidates(remote.Candidates)
	if err := s.s.Start(remote); err != nil {
		return fmt.Errorf("start native session: %w", err)
	}
	return nil
}

func (s *nativeSession) describe(n *negotiation) bool {
	p, err := s.s.LocalParams()
	if err != nil {
		return false
	}
	p.Candidates = s.m.filterCandidates(p.Candidates)
	n.Native = &p
	return true
}

func (s *nativeSession) addCandidate(c webrtc.ICECandidateInit) error {
	return s.s.AddRemoteCandidate(c.Candidate)
}

func (s *nativeSession) gathered() <-chan struct{} { return s.s.Gathered() }

func (s *nativeSession) port(maxBuffered int) (*linkPort, error) {
	select {
	case <-s.chReady:
		return newLinkPort(s.ch, maxBuffered), nil
	default:
		return nil, errNoChannel
	}
}

func (s *nativeSession) pair() (pairInfo, error) {
	local, remote, rtt, ok := s.s.SelectedPair()
	if !ok {
		return pairInfo{}, errNoPair
	}
	return pairInfo{local: local, remote: remote, rtt: rtt}, nil
}

func (s *nativeSession) transport() string {
	if n := s.s.PacketSize(); n != 0 {
		return fmt.Sprintf("native/%d", n)
	}
	return "native"
}

func (s *nativeSession) close() { _ = s.s.Close() }

// ICE timing shared by both kinds of native sessions (see newWebRTCAPI).
const (
	iceDisconnectedTimeout = 4 * time.Second
	iceFailedTimeout       = 12 * time.Second
	iceKeepaliveInterval   = 2 * time.Second
)
