package peer

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"time"

	"github.com/pion/webrtc/v4"

	"github.com/peerlan/peerlan/peer/ether"
	"github.com/peerlan/peerlan/signal/proto"
	"github.com/peerlan/peerlan/signal/signalclient"
)

// RelayPolicy says whether links may go through a TURN relay.
type RelayPolicy string

// Relay policies.
const (
	// RelayAll tries direct paths first and falls back to a relay.
	RelayAll RelayPolicy = "all"
	// RelayOnly forces every link through a relay: peers do not learn each
	// other's IP addresses (and tests can exercise the relay).
	RelayOnly RelayPolicy = "relay"
	// RelayNever never uses a relay, neither ours nor the remote peer's: a
	// link that has no direct path fails (with a clear status).
	RelayNever RelayPolicy = "direct"
)

// ParseRelayPolicy parses "all", "relay" or "direct"; "" means RelayAll.
func ParseRelayPolicy(s string) (RelayPolicy, error) {
	switch RelayPolicy(s) {
	case "", RelayAll:
		return RelayAll, nil
	case RelayOnly, RelayNever:
		return RelayPolicy(s), nil
	}
	return "", fmt.Errorf("peer: relay policy %q: want all, relay or direct", s)
}

// Defaults of MeshConfig.
const (
	// DefaultGuestMTU is the interface MTU the local DHCP service hands the
	// guest. See docs/benchmarks.md for the measurement behind it.
	DefaultGuestMTU = 1500
	// DefaultMaxBuffered caps a link's data channel send buffer natively.
	DefaultMaxBuffered = 1 << 20
	// BrowserMaxBuffered is the high-water mark in the browser, where frames
	// above it wait in a bounded queue of the link for bufferedamountlow:
	// larger buffers freeze Chrome's data channels for seconds under load.
	BrowserMaxBuffered = 16 << 10
)

// MeshConfig configures a Mesh. Zero fields take the documented defaults.
type MeshConfig struct {
	// Signal is the ws:// or wss:// URL of the signaling endpoint, or
	// several instances' URLs separated by commas (signalclient.Config.URL:
	// the client fails over between them). Required.
	Signal string
	// Room to join. Required.
	Room string
	// Token is the room's join token, or its gateway token for RoleGateway.
	Token string
	// Role is proto.RoleGuest (default) or proto.RoleGateway.
	Role proto.Role
	// Resume is a resume token saved from an earlier run (ResumeToken), so
	// that a restarted peer keeps its id and address. Optional.
	Resume string
	// Relay is the relay policy; default RelayAll.
	Relay RelayPolicy

	// Local is this peer's guest: a TAP device or the browser emulator's NIC.
	// The Mesh owns it from NewMesh on and closes it when Run returns.
	Local Port
	// DisableDHCP turns off the local DHCP service (the gateway's TAP has its
	// address configured statically).
	DisableDHCP bool
	// GuestMTU is the MTU offered to the guest by DHCP; default
	// DefaultGuestMTU.
	GuestMTU int

	// MaxBuffered caps each link's send buffer in bytes. Above it a frame
	// waits until the buffer drains: natively the link's writer waits for
	// the buffered-amount-low event and drops the frame (counted) only
	// after 100 ms without drain; in the browser it queues, up to a bound.
	// Default DefaultMaxBuffered natively, BrowserMaxBuffered in the browser.
	MaxBuffered int
	// ICEServers are used in addition to those the signaling server hands out.
	ICEServers []webrtc.ICEServer
	// DisableOffload keeps every link to plain frames even when both peers
	// could carry offloaded ones (see OffloadPort); for measurements and
	// interoperability checks.
	DisableOffload bool
	// Transport holds native-only WebRTC settings (network, interfaces,
	// SCTP tuning); nil selects defaults. Ignored in the browser.
	Transport *TransportConfig

	// Switch configures the learning switch; its Logger defaults to ours.
	Switch SwitchConfig
	// Logger receives the mesh's logs; default slog.Default().
	Logger *slog.Logger
	// StatusEvery is the period of the status line in the logs; default
	// 30 s, negative disables it.
	StatusEvery time.Duration
}

// Mesh is one peer of a room: a learning switch with the local guest on one
// port and a WebRTC data channel to every other peer on the others. It joins
// the room through the signaling server and keeps every link up: the
// newcomer offers to the peers already there (DESIGN.md invariant 5), failed
// links are renegotiated without user action, and links keep carrying frames
// while the signaling server is away.
//
// All link state is owned by one goroutine (Run's event loop); pion's
// callbacks only post events to it.
type Mesh struct {
	cfg    MeshConfig
	log    *slog.Logger
	sw     *Switch
	local  *LocalPort
	dhcp   *DHCPServer
	client *signalclient.Client
	api    *webrtcAPI
	native *nativeTransport // sessions to other native peers; nil in the browser
	events *eventQueue
	closes sync.WaitGroup // pion connections being closed in the background

	// Owned by the event loop.
	links       map[proto.PeerID]*link
	members     map[proto.PeerID]proto.PeerInfo
	iceServers  []webrtc.ICEServer
	signalState string

	// mu guards the status snapshot that Status reads.
	mu     sync.Mutex
	status MeshStatus
}

// NewMesh validates cfg and prepares a Mesh; Run joins the room.
func NewMesh(cfg MeshConfig) (*Mesh, error) {
	if cfg.Local == nil {
		return nil, errors.New("peer: MeshConfig.Local is required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Role == "" {
		cfg.Role = proto.RoleGuest
	}
	relay, err := ParseRelayPolicy(string(cfg.Relay))
	if err != nil {
		return nil, err
	}
	cfg.Relay = relay
	if cfg.GuestMTU == 0 {
		cfg.GuestMTU = DefaultGuestMTU
	}
	if cfg.MaxBuffered == 0 {
		cfg.MaxBuffered = defaultMaxBuffered
	}
	if cfg.MaxBuffered < 2*MaxFrameSize {
		return nil, fmt.Errorf("peer: MaxBuffered %d is below two frames", cfg.MaxBuffered)
	}
	if cfg.StatusEvery == 0 {
		cfg.StatusEvery = 30 * time.Second
	}
	client, err := signalclient.New(signalclient.Config{
		URL: cfg.Signal, Room: cfg.Room, Role: cfg.Role, Token: cfg.Token, Resume: cfg.Resume, Logger: cfg.Logger,
	})
	if err != nil {
		return nil, err
	}
	if cfg.Switch.Logger == nil {
		cfg.Switch.Logger = cfg.Logger
	}
	sw, err := NewSwitch(cfg.Switch)
	if err != nil {
		return nil, err
	}
	api, err := newWebRTCAPI(cfg.Transport, relay)
	if err != nil {
		sw.Close()
		return nil, err
	}
	native, err := newNativeTransport(cfg.Transport)
	if err != nil {
		sw.Close()
		return nil, err
	}
	m := &Mesh{
		cfg:         cfg,
		log:         cfg.Logger,
		sw:          sw,
		client:      client,
		api:         api,
		native:      native,
		events:      newEventQueue(),
		links:       make(map[proto.PeerID]*link),
		members:     make(map[proto.PeerID]proto.PeerInfo),
		signalState: "connecting",
	}
	if !cfg.DisableDHCP {
		m.dhcp, err = NewDHCPServer(DHCPConfig{ServiceMAC: randomLocalMAC(), MTU: cfg.GuestMTU, Logger: cfg.Logger})
		if err != nil {
			sw.Close()
			return nil, err
		}
	}
	m.local = NewLocalPort(cfg.Local, m.dhcp, cfg.Logger)
	m.status = MeshStatus{Room: cfg.Room, Role: cfg.Role, Relay: cfg.Relay, Signal: m.signalState}
	return m, nil
}

// randomLocalMAC returns a random locally administered unicast MAC.
func randomLocalMAC() ether.MAC {
	var m ether.MAC
	_, _ = rand.Read(m[:])
	m[0] = m[0]&0xfc | 0x02
	return m
}

// localPortName is the switch port name of the guest.
const localPortName = "local"

// Run joins the room and runs the mesh until ctx is done (then it leaves the
// room, closes every link and the local port, and returns nil) or until the
// signaling server refuses the join for good (then it returns that error).
func (m *Mesh) Run(ctx context.Context) error {
	if err := m.sw.AddPort(localPortName, PortKindLocal, m.local); err != nil {
		return err
	}
	cctx, cancel := context.WithCancel(ctx)
	clientDone := make(chan error, 1)
	go func() { clientDone <- m.client.Run(cctx) }()

	defer m.shutdown(cancel, clientDone)

	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	var statusTick <-chan time.Time
	if m.cfg.StatusEvery > 0 {
		t := time.NewTicker(m.cfg.StatusEvery)
		defer t.Stop()
		statusTick = t.C
	}
	m.log.Info("joining room", "room", m.cfg.Room, "signal", m.cfg.Signal, "role", m.cfg.Role, "relay", m.cfg.Relay)
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-clientDone:
			clientDone <- err // for shutdown
			if ctx.Err() != nil {
				return nil
			}
			m.setError(err)
			return err
		case ev := <-m.client.Events():
			m.onSignal(ev)
		case <-m.events.ready():
			for _, ev := range m.events.drain() {
				m.onLinkEvent(ev)
			}
		case now := <-tick.C:
			m.onTick(now)
		case <-statusTick:
			m.logStatus()
		}
		m.publishStatus()
	}
}

func (m *Mesh) shutdown(cancel context.CancelFunc, clientDone chan error) {
	cancel() // leaves the room
	<-clientDone
	for id, l := range m.links {
		m.closeLink(l, "shutting down")
		delete(m.links, id)
	}
	m.sw.Close() // closes the local port and any link port left
	m.closes.Wait()
	m.mu.Lock()
	m.status.Signal = "closed"
	m.status.Peers = nil
	m.mu.Unlock()
	m.log.Info("left room", "room", m.cfg.Room)
}

// Switch returns the mesh's switch, for inspection.
func (m *Mesh) Switch() *Switch { return m.sw }

// onSignal handles one event from the signaling client.
func (m *Mesh) onSignal(ev signalclient.Event) {
	switch e := ev.(type) {
	case *proto.Welcome:
		m.onWelcome(e)
	case *proto.ICEServers:
		m.setICEServers(e.ICEServers)
		m.log.Debug("signaling server refreshed the ICE servers", "servers", len(e.ICEServers))
	case *proto.PeerJoined:
		m.members[e.Peer.ID] = e.Peer
		if l := m.links[e.Peer.ID]; l != nil {
			// A peer that resumed after a server restart: keep an open link,
			// and heal one that is down now rather than after its backoff.
			m.updateInfo(l, e.Peer)
			if l.state == linkFailed || l.state == linkWaiting {
				l.backoff, l.retryAt = 0, time.Now()
			}
			return
		}
		// The newcomer offers; wait for it.
		m.links[e.Peer.ID] = m.newLink(e.Peer, false)
	case *proto.PeerLeft:
		delete(m.members, e.ID)
		if l := m.links[e.ID]; l != nil {
			m.closeLink(l, "peer left the room")
			delete(m.links, e.ID)
		}
	case *proto.Signal:
		m.onNegotiation(e.From, e.Data)
	case *signalclient.Disconnected:
		m.signalState = "reconnecting"
		open := 0
		for _, l := range m.links {
			if l.state == linkOpen {
				open++
			}
		}
		if open > 0 {
			m.log.Warn("signaling server unreachable; open links keep running", "links", open, "err", e.Err)
		} else {
			m.log.Warn("signaling server unreachable; retrying", "err", e.Err)
		}
	case *proto.Error:
		m.log.Warn("signaling server reported an error", "code", e.Code, "msg", e.Message)
	}
}

// updateInfo takes the server's latest word on l's peer. An open link whose
// peer now has another address or role is renegotiated, so that its port's
// L3Guard checks what the server assigned.
func (m *Mesh) updateInfo(l *link, p proto.PeerInfo) {
	changed := l.info.IP != p.IP || l.info.Role != p.Role
	l.info = p
	if changed && l.state == linkOpen {
		m.failLink(l, fmt.Sprintf("the server now gives the peer address %v, role %v", p.IP, p.Role))
	}
}

// setICEServers takes the signaling server's ICE servers (with their TURN
// credentials) for sessions negotiated from now on, plus the configured
// ones. Open links keep the servers they were negotiated with.
func (m *Mesh) setICEServers(servers []proto.ICEServer) {
	// A new slice: peer connections keep the one they were created with.
	next := make([]webrtc.ICEServer, 0, len(servers)+len(m.cfg.ICEServers))
	for _, s := range servers {
		next = append(next, webrtc.ICEServer{URLs: s.URLs, Username: s.Username, Credential: s.Credential})
	}
	m.iceServers = append(next, m.cfg.ICEServers...)
}

func (m *Mesh) onWelcome(w *proto.Welcome) {
	m.signalState = "connected"
	m.mu.Lock()
	oldID := m.status.ID
	m.status.ID, m.status.IP, m.status.Prefix, m.status.Gateway, m.status.Error = w.ID, w.IP, w.Prefix, w.Gateway, ""
	m.status.SignalURL = m.client.URL()
	m.mu.Unlock()
	if oldID != "" && oldID != w.ID {
		// Our identity was not resumed (the server lost its secret): the
		// others know us by the old id, so start over as a newcomer.
		m.log.Warn("signaling server gave us a new identity; renegotiating every link", "old", oldID, "new", w.ID)
		for id, l := range m.links {
			m.closeLink(l, "identity changed")
			delete(m.links, id)
		}
	}
	if m.dhcp != nil {
		lease := netip.PrefixFrom(w.IP, w.Prefix.Bits())
		if err := m.dhcp.SetLease(lease); err != nil {
			m.log.Error("local DHCP service refused the room's address", "lease", lease, "err", err)
		} else {
			m.local.AnswerHeld()
		}
	}
	m.setICEServers(w.ICEServers)

	present := make(map[proto.PeerID]bool, len(w.Peers))
	clear(m.members)
	for _, p := range w.Peers {
		present[p.ID] = true
		m.members[p.ID] = p
		l := m.links[p.ID]
		switch {
		case l == nil:
			// We are the newcomer to this peer: we offer.
			l = m.newLink(p, true)
			m.links[p.ID] = l
			m.startOffer(l)
		case l.state == linkOpen:
			m.updateInfo(l, p) // survived the outage
		case l.offerer:
			m.startOffer(l) // our negotiation may have been lost while we were away
		default:
			l.backoff, l.retryAt = 0, time.Now() // ask for an offer at the next tick
		}
	}
	for id, l := range m.links {
		if !present[id] && l.state != linkOpen {
			m.closeLink(l, "peer not in the room")
			delete(m.links, id)
		}
	}
}

// onTick heals links that are down (offering again, or asking the remote to)
// and times out stuck negotiations and long ICE disconnections.
func (m *Mesh) onTick(now time.Time) {
	for _, l := range m.links {
		switch {
		case l.state == linkConnecting && l.sess != nil && now.Sub(l.started) > negotiationTimeout:
			if l.offerer && !l.remoteSet && l.native {
				// No answer at all: a peer too old for native offers
				// ignores them. Offer it an SDP from now on.
				l.noNative = true
			}
			m.failLink(l, fmt.Sprintf("no connection after %v", negotiationTimeout))
		case l.state == linkOpen && now.Sub(l.pairAt) > pairRefreshEvery:
			m.refreshPair(l)
		case (l.state == linkOpen || l.state == linkConnecting) && !l.disconnectedAt.IsZero() && now.Sub(l.disconnectedAt) > disconnectLimit:
			// Browsers give up on a disconnected session only after half a
			// minute; a new one over a fresh path is quicker.
			m.failLink(l, fmt.Sprintf("ICE disconnected for %v", disconnectLimit))
		case (l.state == linkFailed || l.state == linkWaiting) && !l.retryAt.IsZero() && now.After(l.retryAt) && m.signalState == "connected":
			if _, ok := m.members[l.info.ID]; !ok {
				continue
			}
			if l.offerer {
				m.startOffer(l)
			} else {
				m.askRestart(l)
			}
		}
	}
}

func (m *Mesh) setError(err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.status.Error = err.Error()
	m.status.Signal = "closed"
}

// negotiationTimeout bounds how long a session may take to open: it is the
// last resort when a negotiation message was lost (the signaling server
// drops messages to a peer it holds for its resume grace). ICE through a
// relay opens in a few seconds; it is longer than native ICE's own failure
// timer (12 s of checks), whose reason ("no direct path") is the clearer.
const negotiationTimeout = 20 * time.Second

// pairRefreshEvery is how often an open link's path and RTT are re-read.
const pairRefreshEvery = 2 * time.Second

// maxRetryBackoff caps the delay between renegotiations of a failed link
// (and between an answerer's restart requests): a link heals at most this
// long after both peers are back. Each attempt costs a peer connection and
// a few signaling messages.
const maxRetryBackoff = 4 * time.Second

// restartAskAfter is how long an answerer waits for an offer before asking
// for one, and restartHold how long an offerer lets its offer travel before
// a restart request supersedes it.
const (
	restartAskAfter = time.Second
	restartHold     = 2 * time.Second
)

// disconnectLimit is how long a link may stay ICE-disconnected before it is
// renegotiated.
const disconnectLimit = 3 * time.Second
