//go:build !js

// Package nativertc is the data channel transport between two native peers:
// the same protocols as a WebRTC data channel (ICE, DTLS 1.2, SCTP, one
// pre-negotiated channel), assembled from pion's ice, dtls, sctp and
// datachannel packages instead of pion/webrtc's PeerConnection, so that it
// can send SCTP packets larger than the 1,200 bytes pion/webrtc fixes.
//
// Why: a native peer's throughput is bound by the number of SCTP packets it
// handles (DTLS records, chunks, SACKs, system calls), not by bytes. pion
// reads SCTP packets of up to 8 KiB, so two native peers whose path carries
// such packets can move a 64 KiB super-frame in 9 packets instead of 55.
// Whether the path carries them is found out per session by a probe (see
// probe.go): a path that drops IP fragments, or a TURN relay, keeps the
// standard size.
//
// A session is one attempt at a link. Both sides create one; the offerer is
// ICE-controlling and the DTLS server, the answerer the DTLS client (as a
// WebRTC answer's "a=setup:active"). Each side tells the other its Params in
// the offer or answer, and its ICE candidates as they are gathered. Start
// runs ICE, then DTLS (the remote certificate must match the fingerprint in
// its Params), then the probe, then SCTP and the channel, and reports the
// channel through OnOpen. Failures and ICE state changes are reported
// through OnState; the owner closes the session and may start another.
package nativertc

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/pion/datachannel"
	"github.com/pion/dtls/v3"
	"github.com/pion/dtls/v3/pkg/crypto/selfsign"
	dtlsnet "github.com/pion/dtls/v3/pkg/net"
	"github.com/pion/ice/v4"
	"github.com/pion/logging"
	"github.com/pion/sctp"
	"github.com/pion/stun/v3"
	"github.com/pion/transport/v4"
)

// StandardPacketSize is the SCTP packet size of pion/webrtc (and about what
// browsers send): it fits a 1280-byte IPv6 path with DTLS, UDP and a TURN
// channel header around it.
const StandardPacketSize = 1200

// DefaultMaxPacket is the largest SCTP packet a session reads and offers to
// send. pion's ICE and DTLS layers read datagrams of at most 8,192 bytes; a
// DTLS record adds up to 65 bytes (CBC suites; 37 with AES-GCM) and a TURN
// channel 4, and a round figure leaves room for both.
const DefaultMaxPacket = 8000

// maxMessageSize is the largest message either side sends, as pion/webrtc
// announces in SDP ("a=max-message-size:262144").
const maxMessageSize = 256 << 10

// Config is how a session connects. The zero value gathers host candidates
// on every interface but loopback, with pion's timeouts.
type Config struct {
	// Controlling is true for the offerer.
	Controlling bool
	// Certificate identifies this side in DTLS; see NewCertificate.
	Certificate tls.Certificate
	// Net replaces the host's network stack (tests: a pion vnet).
	Net transport.Net
	// InterfaceFilter, when set, keeps only the interfaces it accepts.
	InterfaceFilter func(name string) bool
	// IncludeLoopback gathers loopback candidates too.
	IncludeLoopback bool
	// PortMin and PortMax bound the local UDP ports (both or neither).
	PortMin, PortMax uint16
	// URLs are STUN and TURN servers, with TURN credentials in the URIs.
	URLs []*stun.URI
	// RelayOnly gathers relay candidates only.
	RelayOnly bool
	// DisconnectedTimeout, FailedTimeout and KeepaliveInterval are ICE's;
	// zero keeps pion's defaults.
	DisconnectedTimeout, FailedTimeout, KeepaliveInterval time.Duration
	// SCTPReceiveBuffer is the SCTP receive window; 0 keeps pion's.
	SCTPReceiveBuffer uint32
	// MaxPacket is the largest SCTP packet this side reads and would send:
	// 0 means DefaultMaxPacket; StandardPacketSize or less turns the larger
	// packets off (no probe, standard size both ways).
	MaxPacket uint32
	// Label names the data channel.
	Label string
	// Log receives the session's own messages; nil discards them.
	Log *slog.Logger
	// LoggerFactory receives pion's; nil uses pion's default (errors to stderr).
	LoggerFactory logging.LoggerFactory
}

// ErrICEFailed is what OnState reports when ICE found no working path.
var ErrICEFailed = errors.New("nativertc: ICE failed: no working path")

var (
	errStarted      = errors.New("nativertc: session already started")
	errClosed       = errors.New("nativertc: session closed")
	errCertificate  = errors.New("nativertc: remote certificate does not match its fingerprint")
	errRelayedLarge = errors.New("nativertc: the path moved to a TURN relay, which cannot carry this session's large packets")
)

// State is what OnState reports.
type State int

const (
	StateConnected    State = iota + 1 // ICE found a path (again)
	StateDisconnected                  // ICE lost the path; it may recover
	StateFailed                        // the session cannot carry frames; close it
)

func (s State) String() string {
	switch s {
	case StateConnected:
		return "connected"
	case StateDisconnected:
		return "disconnected"
	case StateFailed:
		return "failed"
	}
	return fmt.Sprintf("State(%d)", int(s))
}

// Session is one attempt at a link. Its methods are safe for concurrent
// use; callbacks run on the session's goroutines and must not block.
type Session struct {
	cfg   Config
	agent *ice.Agent
	log   *slog.Logger

	ctx    context.Context // ends with Close
	cancel context.CancelFunc

	gathered chan struct{} // closed when candidate gathering is complete

	mu         sync.Mutex
	candidates []string // gathered so far
	onCand     func(string)
	onState    func(State, error)
	onOpen     func(*Channel)
	started    bool
	closed     bool
	failed     bool
	dtls       *dtls.Conn
	assoc      *sctp.Association
	channel    *Channel
	packetSize uint32 // SCTP packets this side sends; 0 until chosen

	wg sync.WaitGroup // the connect goroutine
}

// NewCertificate makes a self-signed ECDSA P-256 certificate for DTLS. A
// peer may use one for all its sessions: each side checks the other's
// against the fingerprint the signaling server passed on.
func NewCertificate() (tls.Certificate, error) {
	return selfsign.GenerateSelfSigned()
}

// Fingerprint returns cert's fingerprint as Params carry it.
func Fingerprint(cert tls.Certificate) string {
	if len(cert.Certificate) == 0 {
		return ""
	}
	return fingerprintOf(cert.Certificate[0])
}

func fingerprintOf(der []byte) string {
	sum := sha256.Sum256(der)
	const hex = "0123456789ABCDEF"
	var b strings.Builder
	b.WriteString("sha-256 ")
	for i, c := range sum {
		if i > 0 {
			b.WriteByte(':')
		}
		b.WriteByte(hex[c>>4])
		b.WriteByte(hex[c&15])
	}
	return b.String()
}

// New creates a session and starts gathering candidates. Candidates
// gathered before OnCandidate is set are not reported to it, but
// LocalParams carries every candidate gathered so far.
func New(cfg Config) (*Session, error) {
	if len(cfg.Certificate.Certificate) == 0 {
		return nil, errors.New("nativertc: no certificate")
	}
	if cfg.MaxPacket == 0 {
		cfg.MaxPacket = DefaultMaxPacket
	}
	if cfg.MaxPacket > DefaultMaxPacket {
		cfg.MaxPacket = DefaultMaxPacket
	}
	if cfg.LoggerFactory == nil {
		cfg.LoggerFactory = logging.NewDefaultLoggerFactory()
	}
	log := cfg.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	ac := &ice.AgentConfig{
		Urls:             cfg.URLs,
		PortMin:          cfg.PortMin,
		PortMax:          cfg.PortMax,
		MulticastDNSMode: ice.MulticastDNSModeDisabled,
		NetworkTypes:     []ice.NetworkType{ice.NetworkTypeUDP4, ice.NetworkTypeUDP6},
		LoggerFactory:    cfg.LoggerFactory,
		Net:              cfg.Net,
		InterfaceFilter:  cfg.InterfaceFilter,
		IncludeLoopback:  cfg.IncludeLoopback,
	}
	// A check often arrives before the trickled candidate explaining it
	// (peer-reflexive); nominate a working pair at once, as the mesh's
	// pion/webrtc links do.
	zero := time.Duration(0)
	ac.PrflxAcceptanceMinWait = &zero
	if cfg.RelayOnly {
		ac.CandidateTypes = []ice.CandidateType{ice.CandidateTypeRelay}
		ac.RelayAcceptanceMinWait = &zero
	}
	if cfg.DisconnectedTimeout > 0 {
		ac.DisconnectedTimeout = &cfg.DisconnectedTimeout
	}
	if cfg.FailedTimeout > 0 {
		ac.FailedTimeout = &cfg.FailedTimeout
	}
	if cfg.KeepaliveInterval > 0 {
		ac.KeepaliveInterval = &cfg.KeepaliveInterval
	}
	agent, err := ice.NewAgent(ac)
	if err != nil {
		return nil, fmt.Errorf("nativertc: ICE agent: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Session{cfg: cfg, agent: agent, log: log, ctx: ctx, cancel: cancel, gathered: make(chan struct{})}
	if err := agent.OnCandidate(s.handleCandidate); err != nil {
		s.Close()
		return nil, fmt.Errorf("nativertc: %w", err)
	}
	if err := agent.OnConnectionStateChange(s.handleICEState); err != nil {
		s.Close()
		return nil, fmt.Errorf("nativertc: %w", err)
	}
	if err := agent.OnSelectedCandidatePairChange(s.handlePairChange); err != nil {
		s.Close()
		return nil, fmt.Errorf("nativertc: %w", err)
	}
	if err := agent.GatherCandidates(); err != nil {
		s.Close()
		return nil, fmt.Errorf("nativertc: gather candidates: %w", err)
	}
	return s, nil
}

// OnCandidate sets the function told of each local candidate gathered
// from now on ("candidate:…").
func (s *Session) OnCandidate(f func(candidate string)) {
	s.mu.Lock()
	s.onCand = f
	s.mu.Unlock()
}

// OnState sets the function told of the session's state; err says why
// with StateFailed.
func (s *Session) OnState(f func(State, error)) {
	s.mu.Lock()
	s.onState = f
	s.mu.Unlock()
}

// OnOpen sets the function given the channel once it is open.
func (s *Session) OnOpen(f func(*Channel)) {
	s.mu.Lock()
	s.onOpen = f
	s.mu.Unlock()
}

// Gathered is closed when this side has gathered all its candidates.
func (s *Session) Gathered() <-chan struct{} { return s.gathered }

// LocalParams returns this side's Params with the candidates gathered so far.
func (s *Session) LocalParams() (Params, error) {
	ufrag, pwd, err := s.agent.GetLocalUserCredentials()
	if err != nil {
		return Params{}, fmt.Errorf("nativertc: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	p := Params{Ufrag: ufrag, Pwd: pwd, Fingerprint: Fingerprint(s.cfg.Certificate), Candidates: append([]string(nil), s.candidates...)}
	if s.cfg.MaxPacket > StandardPacketSize {
		p.MaxPacket = s.cfg.MaxPacket
	}
	return p, nil
}

func (s *Session) handleCandidate(c ice.Candidate) {
	if c == nil {
		select {
		case <-s.gathered:
		default:
			close(s.gathered)
		}
		return
	}
	line := "candidate:" + c.Marshal()
	s.mu.Lock()
	s.candidates = append(s.candidates, line)
	f := s.onCand
	s.mu.Unlock()
	if f != nil {
		f(line)
	}
}

// AddRemoteCandidate adds a candidate the remote side trickled.
func (s *Session) AddRemoteCandidate(line string) error {
	if len(line) > maxCandidateLen {
		return fmt.Errorf("%w: candidate of %d bytes", errBadParams, len(line))
	}
	c, err := ice.UnmarshalCandidate(line)
	if err != nil {
		return fmt.Errorf("nativertc: remote candidate: %w", err)
	}
	return s.agent.AddRemoteCandidate(c)
}

// Start connects to the remote side described by remote, in the
// background; the outcome comes through OnOpen or OnState.
func (s *Session) Start(remote Params) error {
	if err := remote.Validate(); err != nil {
		return err
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return errClosed
	}
	if s.started {
		s.mu.Unlock()
		return errStarted
	}
	s.started = true
	s.mu.Unlock()
	for _, c := range remote.Candidates {
		if err := s.AddRemoteCandidate(c); err != nil {
			s.log.Debug("ignoring remote candidate", "err", err)
		}
	}
	s.wg.Add(1)
	go s.connect(remote)
	return nil
}

// connect runs ICE, DTLS, the probe and SCTP, then opens the channel.
func (s *Session) connect(remote Params) {
	defer s.wg.Done()
	ch, err := s.establish(remote)
	if err != nil {
		s.fail(err)
		return
	}
	s.mu.Lock()
	f := s.onOpen
	s.mu.Unlock()
	if f != nil {
		f(ch)
	}
}

func (s *Session) establish(remote Params) (*Channel, error) {
	var conn *ice.Conn
	var err error
	if s.cfg.Controlling {
		conn, err = s.agent.Dial(s.ctx, remote.Ufrag, remote.Pwd)
	} else {
		conn, err = s.agent.Accept(s.ctx, remote.Ufrag, remote.Pwd)
	}
	if err != nil {
		return nil, fmt.Errorf("nativertc: ICE: %w", err)
	}
	dc, err := s.handshake(conn, remote.Fingerprint)
	if err != nil {
		return nil, err
	}
	pc := newProbeConn(dc)
	size := uint32(StandardPacketSize)
	if s.cfg.MaxPacket > StandardPacketSize && remote.MaxPacket > StandardPacketSize && !s.relayed() {
		want := min(s.cfg.MaxPacket, remote.MaxPacket)
		if pc.probe(s.ctx, want, s.probeWait()) {
			size = want
		}
	}
	pc.endProbe()
	opts := []sctp.ClientOption{
		sctp.WithNetConn(pc),
		sctp.WithMTU(size),
		sctp.WithMaxMessageSize(maxMessageSize),
		sctp.WithEnableZeroChecksum(true),
		sctp.WithName("nativertc"),
		sctp.WithLoggerFactory(s.cfg.LoggerFactory),
	}
	if s.cfg.SCTPReceiveBuffer > 0 {
		opts = append(opts, sctp.WithMaxReceiveBufferSize(s.cfg.SCTPReceiveBuffer))
	}
	// pion's association handshake takes no context: Close closes the DTLS
	// connection under it, which ends it.
	assoc, err := sctp.ClientWithOptions(opts...)
	if err != nil {
		return nil, fmt.Errorf("nativertc: SCTP: %w", err)
	}
	s.mu.Lock()
	s.assoc, s.packetSize = assoc, size
	closed := s.closed
	s.mu.Unlock()
	if closed {
		_ = assoc.Close()
		return nil, errClosed
	}
	dch, err := datachannel.Dial(assoc, 0, &datachannel.Config{
		ChannelType:          datachannel.ChannelTypePartialReliableRexmitUnordered,
		ReliabilityParameter: 0,
		Negotiated:           true,
		Label:                s.cfg.Label,
		LoggerFactory:        s.cfg.LoggerFactory,
	})
	if err != nil {
		return nil, fmt.Errorf("nativertc: data channel: %w", err)
	}
	ch := &Channel{DataChannel: dch}
	s.mu.Lock()
	s.channel = ch
	s.mu.Unlock()
	s.log.Debug("session open", "packet_size", size, "remote_max_packet", remote.MaxPacket)
	return ch, nil
}

// handshake runs DTLS over conn and checks the remote certificate.
func (s *Session) handshake(conn *ice.Conn, fingerprint string) (*dtls.Conn, error) {
	verify := func(raw [][]byte, _ [][]*x509.Certificate) error {
		if len(raw) == 0 || fingerprintOf(raw[0]) != fingerprint {
			return errCertificate
		}
		return nil
	}
	cfg := &dtls.Config{
		Certificates:          []tls.Certificate{s.cfg.Certificate},
		InsecureSkipVerify:    true, // self-signed: the fingerprint is what is checked
		VerifyPeerCertificate: verify,
		ExtendedMasterSecret:  dtls.RequireExtendedMasterSecret,
		ClientAuth:            dtls.RequireAnyClientCert,
		LoggerFactory:         s.cfg.LoggerFactory,
	}
	var (
		dc  *dtls.Conn
		err error
	)
	pconn := dtlsnet.PacketConnFromConn(conn)
	if s.cfg.Controlling {
		dc, err = dtls.Server(pconn, conn.RemoteAddr(), cfg)
	} else {
		dc, err = dtls.Client(pconn, conn.RemoteAddr(), cfg)
	}
	if err == nil {
		s.mu.Lock()
		s.dtls = dc
		closed := s.closed
		s.mu.Unlock()
		if closed {
			_ = dc.Close()
			return nil, errClosed
		}
		err = dc.HandshakeContext(s.ctx)
	}
	if err != nil {
		return nil, fmt.Errorf("nativertc: DTLS: %w", err)
	}
	return dc, nil
}

// relayed reports whether the selected pair goes through a TURN relay,
// whose servers read datagrams of about 1,600 bytes at most.
func (s *Session) relayed() bool {
	p, err := s.agent.GetSelectedCandidatePair()
	if err != nil || p == nil {
		return true // unknown: do not risk it
	}
	return p.Local.Type() == ice.CandidateTypeRelay || p.Remote.Type() == ice.CandidateTypeRelay
}

// probeWait is how long the probe waits for its answer: a few round trips
// of the path ICE measured, within bounds.
func (s *Session) probeWait() time.Duration {
	const least, most = 100 * time.Millisecond, time.Second
	st, ok := s.agent.GetSelectedCandidatePairStats()
	if !ok || st.CurrentRoundTripTime <= 0 {
		return least
	}
	rtt := time.Duration(st.CurrentRoundTripTime * float64(time.Second))
	return min(max(4*rtt, least), most)
}

func (s *Session) handleICEState(st ice.ConnectionState) {
	switch st {
	case ice.ConnectionStateConnected:
		s.report(StateConnected, nil)
	case ice.ConnectionStateDisconnected:
		s.report(StateDisconnected, nil)
	case ice.ConnectionStateFailed:
		s.fail(ErrICEFailed)
	}
}

// handlePairChange fails a session that sends large packets once ICE moves
// it to a relayed pair, whose TURN server would truncate them; the mesh
// then starts a new session, which probes again.
func (s *Session) handlePairChange(local, remote ice.Candidate) {
	relayed := local.Type() == ice.CandidateTypeRelay || remote.Type() == ice.CandidateTypeRelay
	if relayed && s.PacketSize() > StandardPacketSize {
		s.fail(errRelayedLarge)
	}
}

// fail reports StateFailed once.
func (s *Session) fail(err error) {
	s.mu.Lock()
	if s.failed || s.closed {
		s.mu.Unlock()
		return
	}
	s.failed = true
	s.mu.Unlock()
	s.report(StateFailed, err)
}

func (s *Session) report(st State, err error) {
	s.mu.Lock()
	f, closed := s.onState, s.closed
	s.mu.Unlock()
	if f != nil && !closed {
		f(st, err)
	}
}

// PacketSize returns the size of the SCTP packets this side sends, once
// the association is up (0 before).
func (s *Session) PacketSize() uint32 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.packetSize
}

// SelectedPair returns the candidate types of the pair in use and its
// latest round-trip time; ok is false while there is none.
func (s *Session) SelectedPair() (local, remote string, rtt time.Duration, ok bool) {
	p, err := s.agent.GetSelectedCandidatePair()
	if err != nil || p == nil {
		return "", "", 0, false
	}
	if st, found := s.agent.GetSelectedCandidatePairStats(); found && st.CurrentRoundTripTime > 0 {
		rtt = time.Duration(st.CurrentRoundTripTime * float64(time.Second))
	}
	return p.Local.Type().String(), p.Remote.Type().String(), rtt, true
}

// Close ends the session: the channel, the association, DTLS and ICE. It
// waits for the session's goroutines.
func (s *Session) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	ch, assoc, dc := s.channel, s.assoc, s.dtls
	s.mu.Unlock()
	s.cancel()
	if ch != nil {
		_ = ch.Close()
	}
	if assoc != nil {
		_ = assoc.Close()
	}
	if dc != nil {
		_ = dc.Close()
	}
	err := s.agent.Close()
	s.wg.Wait()
	return err
}

// Channel is the session's open data channel: one message per Read or
// Write, unordered, never retransmitted.
type Channel struct {
	*datachannel.DataChannel
}
