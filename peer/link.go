package peer

import (
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/pion/webrtc/v4"

	"github.com/peerlan/peerlan/signal/proto"
)

// linkState is where a link to a remote peer stands.
//
//	waiting ──offer received──► connecting ──data channel open──► open
//	   ▲                          │   ▲                              │
//	   │                          ▼   │ (offerer: retry, backoff)    │
//	   └──────────────────────  failed ◄─── ICE failed, channel closed
//
// Either side heals a link that is down: the offerer offers again, and an
// answerer whose link stays waiting or failed asks the remote to offer
// (kindRestart, with backoff), because only one side may offer at a time
// and the remote may not know the link is down: after a peer vanished past
// its resume grace, the others dropped their links while its own still
// looked open, and nobody offered.
type linkState string

const (
	linkWaiting    linkState = "waiting"    // answerer, no offer yet
	linkConnecting linkState = "connecting" // a session is negotiating
	linkOpen       linkState = "open"       // the data channel carries frames
	linkFailed     linkState = "failed"     // no session; the offerer retries
)

// link is this peer's view of one remote peer. Owned by the event loop.
type link struct {
	info    proto.PeerInfo
	offerer bool          // we offer (we joined after them), also on renegotiation
	session uint32        // current session, 0 for none
	sess    session       // the current session's transport, nil for none
	native  bool          // sess is a native session (package nativertc)
	port    *meshLinkPort // attached to the switch while open

	// noNative: a native offer of ours went unanswered (a peer too old to
	// take one), so we offer an SDP from now on.
	noNative bool

	remoteSet bool                      // remote description applied
	described bool                      // our offer or answer went out
	pending   []webrtc.ICECandidateInit // candidates that came before it

	// offload: both peers said they take offloaded frames in this session's
	// offer and answer, so its channel carries them (see linkPort).
	offload bool

	// remoteDirect: the remote peer's policy is direct (its last offer or
	// answer said so), so this side uses no TURN on the link either.
	// Otherwise our relayed candidate could reach the remote as a
	// peer-reflexive one and carry the link through a relay after all.
	remoteDirect bool

	state          linkState
	started        time.Time     // when the current session began
	openedIn       time.Duration // how long the last session took to open
	backoff        time.Duration
	retryAt        time.Time // when the offerer offers again, or the answerer asks it to
	lastSession    uint32    // the session before the current one (restart requests name it)
	disconnectedAt time.Time // when ICE reported disconnected; zero while connected
	lastError      string
	pair           pairInfo  // selected candidate pair, refreshed while open
	pairAt         time.Time // when pair was last requested
}

// growBackoff doubles l's backoff, from floor up to maxRetryBackoff, and
// schedules the next attempt after it.
func (l *link) growBackoff(floor time.Duration) {
	l.backoff = min(max(2*l.backoff, floor), maxRetryBackoff)
	l.retryAt = time.Now().Add(l.backoff)
}

// maxPendingCandidates bounds candidates buffered before the remote
// description; a well-behaved peer sends a handful.
const maxPendingCandidates = 64

func (m *Mesh) newLink(info proto.PeerInfo, offerer bool) *link {
	l := &link{info: info, offerer: offerer, state: linkWaiting}
	if !offerer {
		// The newcomer's offer normally comes within milliseconds; if it does
		// not, the newcomer may believe an old link of ours still stands.
		l.retryAt = time.Now().Add(restartAskAfter)
	}
	return l
}

func portName(id proto.PeerID) string { return "peer:" + string(id) }

// newSession returns a random non-zero session number.
func newSession() uint32 {
	for {
		if s := rand.Uint32(); s != 0 {
			return s
		}
	}
}

// startOffer begins a new session as the offerer.
func (m *Mesh) startOffer(l *link) {
	m.teardownSession(l)
	l.offerer = true
	l.session = newSession()
	l.state = linkConnecting
	l.started = time.Now()
	l.retryAt = time.Time{}
	native := m.native.offersNative() && l.info.Kind == proto.KindNative && !l.noNative
	if err := m.openSession(l, native, true); err != nil {
		m.failLink(l, err.Error())
		return
	}
	if err := l.sess.offer(); err != nil {
		m.failLink(l, err.Error())
		return
	}
	m.log.Debug("offering", "peer", l.info.ID, "session", l.session, "transport", l.sess.transport())
	l.offload = false // until the answer says the remote takes them too
	m.describeWhenGathered(l)
}

// gatherWait bounds how long an offer or answer waits for this side's ICE
// candidates before it goes out without the ones still being gathered
// (which then trickle). Host candidates take a millisecond or two; a STUN
// or TURN server may take much longer and should not hold the link up.
const gatherWait = 10 * time.Millisecond

// describeWhenGathered sends l's local description, offer or answer, once
// ICE has gathered its candidates or gatherWait has passed, so that the
// description carries them. Trickled instead, a host candidate often came
// after the other side's first connectivity check, which then found only a
// peer-reflexive pair; pion nominates such a pair only at its next check
// tick, 200 ms later, and one link in five took 200 ms instead of 5 ms to
// open (first pings were lost to ARP's one-second retry meanwhile).
func (m *Mesh) describeWhenGathered(l *link) {
	l.described = false
	gathered := l.sess.gathered()
	id, session := l.info.ID, l.session
	go func() {
		t := time.NewTimer(gatherWait)
		defer t.Stop()
		select {
		case <-gathered:
		case <-t.C:
		}
		m.events.post(linkEvent{peer: id, session: session, kind: evDescribe})
	}()
}

// describe sends l's local description with the candidates gathered so
// far; candidates gathered later trickle.
func (m *Mesh) describe(l *link) {
	if l.sess == nil || l.described {
		return
	}
	n := &negotiation{Kind: kindOffer, Session: l.session, Direct: m.cfg.Relay == RelayNever}
	if !l.sess.describe(n) {
		return
	}
	l.described = true
	if l.offerer {
		n.Offload = m.offloads()
	} else {
		n.Kind, n.Offload = kindAnswer, l.offload
	}
	m.sendNegotiation(l, n)
}

// openSession creates l's current session, a native one or a
// PeerConnection, as the offerer or the answerer.
func (m *Mesh) openSession(l *link, native, offerer bool) error {
	var (
		sess session
		err  error
	)
	if native {
		sess, err = m.newNativeSession(l, offerer)
	} else {
		sess, err = m.newPCSession(l)
	}
	if err != nil {
		return err
	}
	l.sess, l.native = sess, native
	return nil
}

// iceServersFor returns the ICE servers l may use: no TURN when either
// side's policy is direct.
func (m *Mesh) iceServersFor(l *link) []webrtc.ICEServer {
	if m.cfg.Relay != RelayNever && !l.remoteDirect {
		return m.iceServers
	}
	// Direct only: keep STUN (it finds direct server-reflexive paths), drop TURN.
	var out []webrtc.ICEServer
	for _, s := range m.iceServers {
		var urls []string
		for _, u := range s.URLs {
			if len(u) >= 5 && (u[:5] == "stun:" || (len(u) >= 6 && u[:6] == "stuns:")) {
				urls = append(urls, u)
			}
		}
		if len(urls) > 0 {
			out = append(out, webrtc.ICEServer{URLs: urls})
		}
	}
	return out
}

func (m *Mesh) sendNegotiation(l *link, n *negotiation) {
	b, err := json.Marshal(n)
	if err != nil {
		m.log.Error("encode negotiation", "err", err)
		return
	}
	if err := m.client.Send(l.info.ID, b); err != nil {
		// Lost: the offerer renegotiates once the server is back (onWelcome)
		// or when the session times out.
		m.log.Debug("negotiation not sent", "peer", l.info.ID, "kind", n.Kind, "err", err)
	}
}

// onNegotiation handles a payload from a remote peer.
func (m *Mesh) onNegotiation(from proto.PeerID, data []byte) {
	n, err := decodeNegotiation(data)
	if err != nil {
		m.log.Warn("ignoring negotiation", "peer", from, "err", err)
		return
	}
	l := m.links[from]
	switch n.Kind {
	case kindOffer:
		if l == nil {
			info, ok := m.members[from]
			if !ok {
				info = proto.PeerInfo{ID: from}
			}
			l = m.newLink(info, false)
			m.links[from] = l
		}
		m.onOffer(l, n)
	case kindRestart:
		m.onRestartRequest(l, from)
	case kindAnswer:
		if l == nil || !l.offerer || n.Session != l.session || l.remoteSet || l.sess == nil {
			return // stale
		}
		if n.Direct != l.remoteDirect {
			l.remoteDirect = n.Direct
			if n.Direct && m.cfg.Relay == RelayAll {
				// Our offer came with TURN; offer again without.
				m.log.Debug("peer allows direct paths only; offering again without TURN", "peer", l.info.ID)
				m.startOffer(l)
				return
			}
		}
		l.offload = n.Offload && m.offloads()
		if err := l.sess.answered(n); err != nil {
			m.failLink(l, err.Error())
			return
		}
		l.remoteSet = true
		m.flushCandidates(l)
	case kindCandidate:
		if l == nil || n.Session != l.session || l.sess == nil {
			return
		}
		if m.cfg.Relay == RelayNever && isRelayCandidate(n.Candidate.Candidate) {
			return
		}
		if !l.remoteSet {
			if len(l.pending) < maxPendingCandidates {
				l.pending = append(l.pending, *n.Candidate)
			}
			return
		}
		if err := l.sess.addCandidate(*n.Candidate); err != nil {
			m.log.Debug("bad remote candidate", "peer", l.info.ID, "err", err)
		}
	}
}

// onRestartRequest handles a remote peer's request that we offer a new
// session: its side of the link is down. Our own view does not matter (an
// open link here may be one the remote dropped long ago), except that an
// offer of ours already on its way answers the request.
func (m *Mesh) onRestartRequest(l *link, from proto.PeerID) {
	info, member := m.members[from]
	if !member {
		return // it left; a stale request
	}
	if l == nil {
		l = m.newLink(info, true)
		m.links[from] = l
	}
	if l.state == linkConnecting && l.offerer && time.Since(l.started) < restartHold {
		return
	}
	m.log.Info("peer asked for a new session; offering", "peer", from, "state", l.state)
	m.startOffer(l)
}

// askRestart asks the remote peer to offer a new session, and schedules the
// next request in case this one goes unanswered.
func (m *Mesh) askRestart(l *link) {
	l.growBackoff(restartAskAfter)
	m.log.Debug("asking peer to offer a new session", "peer", l.info.ID, "state", l.state, "next_in", l.backoff)
	m.sendNegotiation(l, &negotiation{Kind: kindRestart, Session: l.lastSession})
}

func (m *Mesh) onOffer(l *link, n *negotiation) {
	if n.Session == l.session && l.sess != nil {
		return // duplicate
	}
	native := n.Native != nil
	if native && m.native == nil {
		m.log.Warn("ignoring a native offer: a browser peer takes SDP offers only", "peer", l.info.ID)
		return
	}
	if l.offerer && l.state == linkConnecting {
		// Glare: both sides offered. The peer with the greater id wins, so
		// exactly one of the two offers survives.
		if m.ownID() > l.info.ID {
			// Send ours again: the remote offered, so it may never have got
			// it (an offer to a peer the server held for its resume grace
			// is dropped), and then both sides would wait until the
			// negotiation timeout.
			m.log.Debug("glare: keeping our offer and sending it again", "peer", l.info.ID)
			if l.described {
				l.described = false
				m.describe(l)
			}
			return
		}
		m.log.Debug("glare: taking their offer", "peer", l.info.ID)
	}
	m.teardownSession(l)
	l.offerer = false
	l.remoteDirect = n.Direct
	l.offload = n.Offload && m.offloads()
	l.session = n.Session
	l.state = linkConnecting
	l.started = time.Now()
	l.retryAt = time.Time{}
	if err := m.openSession(l, native, false); err != nil {
		m.failLink(l, err.Error())
		return
	}
	if err := l.sess.accept(n); err != nil {
		m.failLink(l, err.Error())
		return
	}
	l.remoteSet = true
	m.describeWhenGathered(l)
}

func (m *Mesh) filterSDP(sdp string) string {
	if m.cfg.Relay == RelayNever {
		return stripRelayCandidates(sdp)
	}
	return sdp
}

func (m *Mesh) flushCandidates(l *link) {
	for _, c := range l.pending {
		if err := l.sess.addCandidate(c); err != nil {
			m.log.Debug("bad remote candidate", "peer", l.info.ID, "err", err)
		}
	}
	l.pending = nil
}

func (m *Mesh) ownID() proto.PeerID {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.status.ID
}

// onLinkEvent handles an event posted by pion's callbacks or a link port.
func (m *Mesh) onLinkEvent(ev linkEvent) {
	l := m.links[ev.peer]
	if ev.kind == evStats {
		if l != nil && ev.session == l.session {
			l.pair = ev.pair
		}
		return
	}
	if l == nil || ev.session != l.session || l.sess == nil {
		return // an event of a session that is gone
	}
	switch ev.kind {
	case evDescribe:
		m.describe(l)
	case evCandidate:
		if m.cfg.Relay == RelayNever && isRelayCandidate(ev.candidate.Candidate) {
			return
		}
		if !l.described {
			return // the description carries it
		}
		m.sendNegotiation(l, &negotiation{Kind: kindCandidate, Session: l.session, Candidate: ev.candidate})
	case evConnState:
		switch ev.state {
		case webrtc.PeerConnectionStateConnected:
			l.disconnectedAt = time.Time{}
			m.refreshPair(l)
		case webrtc.PeerConnectionStateDisconnected:
			l.disconnectedAt = time.Now()
			m.log.Warn("link disconnected; waiting for ICE to recover", "peer", l.info.ID, "for_at_most", disconnectLimit)
		case webrtc.PeerConnectionStateFailed:
			why := "ICE failed: no working path"
			if m.cfg.Relay == RelayNever {
				why = "ICE failed: no direct path (relay policy: direct)"
			}
			if ev.err != nil {
				why = ev.err.Error()
			}
			m.failLink(l, why)
		}
	case evChannelOpen:
		if l.state == linkOpen {
			return
		}
		lp, err := l.sess.port(m.cfg.MaxBuffered)
		if err != nil {
			m.failLink(l, err.Error())
			return
		}
		setOffload(lp, l.offload)
		l.port = &meshLinkPort{linkPort: lp, onEnd: func(err error) {
			m.events.post(linkEvent{peer: ev.peer, session: ev.session, kind: evPortEnded, err: err})
		}}
		guard := L3Guard{Addr: l.info.IP, Gateway: l.info.Role == proto.RoleGateway}
		if err := m.sw.AddGuardedLink(portName(l.info.ID), l.port, guard); err != nil {
			l.port = nil
			m.failLink(l, fmt.Sprintf("attach to switch: %v", err))
			return
		}
		l.state = linkOpen
		l.openedIn = time.Since(l.started)
		l.backoff = 0
		l.lastError = ""
		m.refreshPair(l)
		m.log.Info("link open", "peer", l.info.ID, "ip", l.info.IP, "role", l.info.Role,
			"offerer", l.offerer, "offload", l.offload, "transport", l.sess.transport(), "took", l.openedIn.Round(time.Millisecond))
	case evPortEnded:
		if l.state == linkOpen {
			m.failLink(l, fmt.Sprintf("data channel closed: %v", ev.err))
		}
	}
}

// failLink ends l's session; the offerer retries with backoff.
func (m *Mesh) failLink(l *link, why string) {
	m.teardownSession(l)
	l.state = linkFailed
	l.lastError = why
	if l.offerer {
		l.growBackoff(500 * time.Millisecond)
	} else {
		// The offerer most likely saw the failure too and offers first.
		l.growBackoff(restartAskAfter)
	}
	m.log.Warn("link failed", "peer", l.info.ID, "why", why, "offerer", l.offerer, "retry_in", l.backoff)
}

// closeLink ends l for good.
func (m *Mesh) closeLink(l *link, why string) {
	m.teardownSession(l)
	l.state = linkFailed
	m.log.Info("link closed", "peer", l.info.ID, "why", why)
}

// teardownSession detaches and closes l's current session, if any.
func (m *Mesh) teardownSession(l *link) {
	if l.port != nil {
		_ = m.sw.RemovePort(portName(l.info.ID))
		l.port = nil
	}
	if sess := l.sess; sess != nil {
		// Closing waits for pion's goroutines; keep the event loop moving.
		m.closes.Add(1)
		go func() {
			defer m.closes.Done()
			sess.close()
		}()
	}
	l.sess = nil
	l.remoteSet = false
	l.pending = nil
	l.pair = pairInfo{}
	if l.session != 0 {
		l.lastSession = l.session
	}
	l.session = 0
	l.disconnectedAt = time.Time{}
}

// pairAttempts and pairRetry bound how long refreshPair waits for pion to
// report a selected pair.
const (
	pairAttempts = 5
	pairRetry    = 100 * time.Millisecond
)

// refreshPair looks up the selected candidate pair in the background.
func (m *Mesh) refreshPair(l *link) {
	sess, id, session := l.sess, l.info.ID, l.session
	if sess == nil {
		return
	}
	l.pairAt = time.Now()
	go func() {
		// Right after the channel opens, pion may not report the selected
		// pair yet; try a few times rather than show no path for a whole
		// refresh period.
		for range pairAttempts {
			p, err := sess.pair()
			if err == nil {
				m.events.post(linkEvent{peer: id, session: session, kind: evStats, pair: p})
				return
			}
			if !errors.Is(err, errNoPair) {
				return
			}
			time.Sleep(pairRetry)
		}
	}()
}

// offloads reports whether this peer takes offloaded frames on its links.
func (m *Mesh) offloads() bool { return offloadSupported && !m.cfg.DisableOffload }

// meshLinkPort reports the end of a link port to the mesh.
type meshLinkPort struct {
	*linkPort
	onEnd func(error)
	once  sync.Once
}

func (p *meshLinkPort) Read(b []byte) (int, error) {
	n, err := p.linkPort.Read(b)
	if err != nil && !errors.Is(err, ErrDropped) {
		p.once.Do(func() { p.onEnd(err) })
	}
	return n, err
}

// Events from pion callbacks and link ports to the event loop.
type linkEventKind uint8

const (
	evCandidate linkEventKind = iota + 1
	evDescribe
	evConnState
	evChannelOpen
	evPortEnded
	evStats
)

type linkEvent struct {
	peer      proto.PeerID
	session   uint32
	kind      linkEventKind
	candidate *webrtc.ICECandidateInit
	state     webrtc.PeerConnectionState
	err       error
	pair      pairInfo
}

// eventQueue is an unbounded FIFO that pion's callbacks post to without ever
// blocking: a blocked callback could deadlock a PeerConnection.Close that the
// event loop is waiting on. Events are few (states, candidates), so growth is
// bounded in practice by the number of sessions.
type eventQueue struct {
	mu     sync.Mutex
	events []linkEvent
	notify chan struct{}
}

func newEventQueue() *eventQueue { return &eventQueue{notify: make(chan struct{}, 1)} }

func (q *eventQueue) post(ev linkEvent) {
	q.mu.Lock()
	q.events = append(q.events, ev)
	q.mu.Unlock()
	select {
	case q.notify <- struct{}{}:
	default:
	}
}

func (q *eventQueue) ready() <-chan struct{} { return q.notify }

func (q *eventQueue) drain() []linkEvent {
	q.mu.Lock()
	defer q.mu.Unlock()
	evs := q.events
	q.events = nil
	return evs
}
