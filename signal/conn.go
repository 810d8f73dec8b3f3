package signal

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"path"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	"golang.org/x/time/rate"

	"github.com/peerlan/peerlan/signal/proto"
)

// closeTimeout bounds how long a closing connection may take to flush.
const closeTimeout = time.Second

// conn is one peer's WebSocket. Its reader goroutine (started by the HTTP
// handler, which then returns) owns all protocol state, and hands each message
// to a short-lived goroutine, so that its own stack stays small. A writer goroutine
// runs only while there is something to write: it drains the send queue and
// ends, and the last one sends the close frame. Pings come from a timer. An
// idle peer thus costs one goroutine, not two.
//
// State: connected → (join) → joined → closed. close() may be called from any
// goroutine, once or more; the first code and reason win.
type conn struct {
	s       *Server
	ws      *websocket.Conn                // set once by attach, before the writer starts
	wsClose atomic.Pointer[websocket.Conn] // ws, for close() from other goroutines
	// logp is the connection's logger, which gains room and peer at join
	// while other goroutines (the Hub's deliveries, the writer) log.
	logp    atomic.Pointer[slog.Logger]
	limiter *rate.Limiter

	// The send queue: at most Config.SendQueue messages, allocated as they
	// come (an idle peer, the usual case, holds none) and released once
	// written.
	qmu      sync.Mutex
	q        []outMsg
	attached bool // ws is set: a writer may start
	writing  bool // a writer runs; stays set once the last one finished the socket
	closing  bool // close was called: nothing more is queued

	// ping sends a WebSocket ping every KeepaliveInterval; stopped by close.
	ping atomic.Pointer[time.Timer]

	closeOnce sync.Once
	done      chan struct{} // closed by close()
	closeCode int           // written before done is closed
	closeText string

	joined atomic.Bool // set once the peer has joined; gates keepalive extensions

	// iceRefresh re-sends fresh ICE servers every Config.ICERefresh once
	// joined; stopped by close.
	iceRefresh atomic.Pointer[time.Timer]

	// The reader's state (its own, or its handler's while it waits for it).
	lastRateError time.Time
	leaving       bool // the peer said leave, or closed cleanly: no resume grace

	// room and id name the member once joined; set by the reader before
	// the Hub may call the conn, read by the reader only.
	room string
	id   proto.PeerID
	// evicted is set when the Hub took the member away (Sink.Evict).
	evicted atomic.Bool

	// The Hub may deliver events while Join is still returning; they wait
	// here until the welcome is queued, so the welcome always comes first.
	welcomeMu sync.Mutex
	welcomed  bool
	early     []outMsg // at most SendQueue
}

type outMsg struct {
	typ string
	b   []byte
}

func newConn(s *Server, remote string) *conn {
	c := &conn{
		s:       s,
		limiter: rate.NewLimiter(rate.Limit(s.cfg.MessagesPerSecond), s.cfg.Burst),
		done:    make(chan struct{}),
	}
	c.logp.Store(s.log.With("remote", remote))
	return c
}

func (c *conn) log() *slog.Logger { return c.logp.Load() }

// attach sets the upgraded socket; from now on a writer may run.
func (c *conn) attach(ws *websocket.Conn) {
	c.ws = ws
	c.wsClose.Store(ws)
	select {
	case <-c.done: // closed while upgrading
		_ = ws.NetConn().SetDeadline(time.Now().Add(closeTimeout))
	default:
	}
	c.qmu.Lock()
	c.attached = true
	c.unlockAndStartWriter()
	c.startPing()
}

// unlockAndStartWriter, called with qmu held, releases it and starts a
// writer if one should run now (attached, something to do, none running).
func (c *conn) unlockAndStartWriter() {
	start := c.attached && !c.writing && (len(c.q) > 0 || c.closing)
	if start {
		c.writing = true
	}
	c.qmu.Unlock()
	if start {
		go c.writeLoop()
	}
}

// close starts closing the connection with a WebSocket close code. It never
// blocks: the writer flushes what is queued, sends the close frame and closes
// the socket within closeTimeout.
func (c *conn) close(code int, text string) {
	c.closeOnce.Do(func() {
		c.closeCode, c.closeText = code, text
		close(c.done)
		if t := c.iceRefresh.Load(); t != nil {
			t.Stop()
		}
		if t := c.ping.Load(); t != nil {
			t.Stop()
		}
		if ws := c.wsClose.Load(); ws != nil {
			// Unblock a writer stuck on a slow reader and the reader itself.
			_ = ws.NetConn().SetDeadline(time.Now().Add(closeTimeout))
		}
		// A writer flushes the queue and closes the socket: the running
		// one, or one started here (by attach, when not attached yet).
		c.qmu.Lock()
		c.closing = true
		c.unlockAndStartWriter()
	})
}

// sendEncoded queues an encoded message. A peer whose queue is full is a slow
// reader: it is disconnected rather than allowed to hold up anyone else.
// Safe from any goroutine; never blocks.
func (c *conn) sendEncoded(typ string, b []byte) {
	select {
	case <-c.done:
		return
	default:
	}
	c.qmu.Lock()
	if c.closing {
		c.qmu.Unlock()
		return
	}
	if len(c.q) >= c.s.cfg.SendQueue {
		c.qmu.Unlock()
		c.s.m.rejections.WithLabelValues(reasonSlowConsumer).Inc()
		c.log().Warn("disconnecting slow reader: send queue full", "queue", c.s.cfg.SendQueue)
		c.close(websocket.CloseTryAgainLater, "slow reader: send queue full")
		return
	}
	c.q = append(c.q, outMsg{typ, b})
	c.unlockAndStartWriter()
}

// Deliver implements Sink.
func (c *conn) Deliver(typ string, b []byte) {
	c.welcomeMu.Lock()
	if !c.welcomed {
		if len(c.early) < c.s.cfg.SendQueue {
			c.early = append(c.early, outMsg{typ, b})
			c.welcomeMu.Unlock()
			return
		}
		c.welcomeMu.Unlock()
		c.s.m.rejections.WithLabelValues(reasonSlowConsumer).Inc()
		c.close(websocket.CloseTryAgainLater, "slow reader: send queue full")
		return
	}
	c.welcomeMu.Unlock()
	c.sendEncoded(typ, b)
}

// sendWelcome queues the welcome and then what the Hub delivered before it.
func (c *conn) sendWelcome(w *proto.Welcome) {
	c.welcomeMu.Lock()
	defer c.welcomeMu.Unlock()
	c.sendMsg(w)
	for _, m := range c.early {
		c.sendEncoded(m.typ, m.b)
	}
	c.early = nil
	c.welcomed = true
}

// Evict implements Sink.
func (c *conn) Evict(why error) {
	c.evicted.Store(true)
	if errors.Is(why, ErrReplaced) {
		c.log().Info("connection replaced by a resumed one")
		c.close(websocket.ClosePolicyViolation, "replaced by a newer connection")
		return
	}
	c.log().Warn("the room directory lost this peer; closing so it resumes", "why", why)
	c.close(websocket.CloseGoingAway, "server lost the room; resume")
}

func (c *conn) sendMsg(m any) {
	b, err := proto.Encode(m)
	if err != nil {
		c.log().Error("encode", "err", err)
		return
	}
	c.sendEncoded(proto.TypeOf(m), b)
}

// fail reports an error to the peer; fatal errors also close the connection.
// Called by the reader (or its handler) only.
func (c *conn) fail(code proto.ErrorCode, fatal bool, format string, args ...any) {
	c.s.m.rejections.WithLabelValues(string(code)).Inc()
	msg := fmt.Sprintf(format, args...)
	c.log().Debug("refused message", "code", code, "fatal", fatal, "msg", msg)
	c.sendMsg(&proto.Error{Code: code, Message: msg, Fatal: fatal})
	if fatal {
		// A peer thrown out for a protocol violation gets no resume grace.
		c.leaving = true
		c.close(websocket.ClosePolicyViolation, string(code))
	}
}

// writeLoop writes what is queued and ends when the queue is empty, unless
// the connection is closing: then it sends the close frame, closes the socket
// (which ends the reader) and releases the writer's WaitGroup entry. One runs
// at a time (c.writing).
func (c *conn) writeLoop() {
	for {
		c.qmu.Lock()
		if c.closing && c.closeCode == websocket.CloseAbnormalClosure {
			c.q = nil // the socket failed: nothing more gets through
		}
		if len(c.q) == 0 {
			if !c.closing {
				c.writing = false
				c.qmu.Unlock()
				return
			}
			c.qmu.Unlock()
			c.finish()
			c.s.wg.Done()
			return
		}
		m := c.q[0]
		c.q[0] = outMsg{}
		c.q = c.q[1:]
		if len(c.q) == 0 {
			c.q = nil // an idle peer holds no queue
		}
		c.qmu.Unlock()
		if !c.write(m) {
			c.close(websocket.CloseAbnormalClosure, "write failed") // a no-op when closing already
			c.qmu.Lock()
			c.q = nil
			c.qmu.Unlock()
		}
	}
}

// startPing pings the peer every KeepaliveInterval until the connection
// closes; a ping that cannot be written closes it. WriteControl may be called
// concurrently with a writer.
func (c *conn) startPing() {
	c.repeat(&c.ping, c.s.cfg.KeepaliveInterval, func() bool {
		if err := c.ws.WriteControl(websocket.PingMessage, nil, time.Now().Add(c.s.cfg.WriteTimeout)); err != nil {
			c.close(websocket.CloseAbnormalClosure, "ping failed")
			return false
		}
		return true
	})
}

// repeat runs f every interval, on a timer kept in slot for close to stop,
// until the connection closes or f returns false.
func (c *conn) repeat(slot *atomic.Pointer[time.Timer], every time.Duration, f func() bool) {
	// Armed only once stored, so the callback always finds it.
	t := time.AfterFunc(math.MaxInt64, func() {
		select {
		case <-c.done:
			return
		default:
		}
		if f() {
			slot.Load().Reset(every)
		}
	})
	slot.Store(t)
	t.Reset(every)
	select {
	case <-c.done: // closed before the timer was stored: close could not stop it
		t.Stop()
	default:
	}
}

func (c *conn) write(m outMsg) bool {
	_ = c.ws.SetWriteDeadline(time.Now().Add(c.s.cfg.WriteTimeout))
	if err := c.ws.WriteMessage(websocket.TextMessage, m.b); err != nil {
		c.log().Debug("write failed", "err", err)
		return false
	}
	c.s.m.sent.WithLabelValues(m.typ).Inc()
	c.s.m.sentBytes.WithLabelValues(m.typ).Add(float64(len(m.b)))
	return true
}

// finish sends the close frame and closes the socket, which ends the reader.
func (c *conn) finish() {
	if c.closeCode != websocket.CloseAbnormalClosure {
		_ = c.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(c.closeCode, c.closeText), time.Now().Add(closeTimeout))
	}
	_ = c.ws.Close()
}

func (c *conn) readLoop() {
	defer c.s.dropConn(c)
	cfg := &c.s.cfg
	_ = c.ws.SetReadDeadline(time.Now().Add(cfg.JoinTimeout))
	c.ws.SetPongHandler(func(string) error {
		if !c.joined.Load() {
			return nil // answering pings does not excuse a peer from joining
		}
		return c.ws.SetReadDeadline(time.Now().Add(cfg.KeepaliveTimeout))
	})
	for {
		mt, r, err := c.ws.NextReader()
		if err != nil {
			c.noteReadError(err)
			c.close(websocket.CloseNormalClosure, "")
			return
		}
		if mt == websocket.BinaryMessage {
			c.countReceived(typeLabelUndecodable, 0)
			c.fail(proto.CodeBinary, true, "binary messages are not accepted: the signaling server never carries frames")
			return
		}
		// Read at most one byte more than allowed, to tell "too large" apart.
		b, err := io.ReadAll(io.LimitReader(r, int64(cfg.MaxMessageBytes)+1))
		if err != nil {
			c.noteReadError(err)
			c.close(websocket.CloseNormalClosure, "")
			return
		}
		if len(b) > cfg.MaxMessageBytes {
			c.countReceived(typeLabelUndecodable, len(b))
			c.fail(proto.CodeTooLarge, true, "message exceeds %d bytes", cfg.MaxMessageBytes)
			return
		}
		if !c.limiter.Allow() {
			c.countReceived(typeLabelUndecodable, len(b))
			c.s.m.rejections.WithLabelValues(string(proto.CodeRateLimited)).Inc()
			if now := time.Now(); now.Sub(c.lastRateError) >= time.Second {
				c.lastRateError = now
				c.sendMsg(&proto.Error{Code: proto.CodeRateLimited, Message: fmt.Sprintf("over %g messages per second; message dropped", cfg.MessagesPerSecond)})
			}
			continue
		}
		// Handled on a goroutine of its own, which the reader waits for:
		// decoding and joining (the Hub, NATS requests, logging) need a deep
		// stack, which the reader would keep for the life of the connection
		// (the runtime halves an idle goroutine's stack only at a GC, and
		// only while a quarter of it is in use), while a finished
		// goroutine's stack is freed for reuse. One at a time: the reader's
		// state passes between them by the go statement and handled.
		handled := make(chan struct{})
		go func() {
			defer close(handled)
			c.handle(b)
		}()
		<-handled
		if c.joined.Load() {
			_ = c.ws.SetReadDeadline(time.Now().Add(cfg.KeepaliveTimeout))
		}
		select {
		case <-c.done:
			return
		default:
		}
	}
}

func (c *conn) noteReadError(err error) {
	var ce *websocket.CloseError
	if errors.As(err, &ce) && (ce.Code == websocket.CloseNormalClosure || ce.Code == websocket.CloseGoingAway) {
		// A clean close (a tab closing, a client stopping) is a leave; a
		// dropped connection gets the resume grace period.
		c.leaving = true
		return
	}
	if !c.joined.Load() {
		select {
		case <-c.done:
		default:
			if ne, ok := err.(interface{ Timeout() bool }); ok && ne.Timeout() {
				c.s.m.rejections.WithLabelValues(reasonJoinTimeout).Inc()
			}
		}
	}
	c.log().Debug("connection ended", "err", err)
}

func (c *conn) countReceived(typ string, n int) {
	c.s.m.received.WithLabelValues(typ).Inc()
	c.s.m.receivedBytes.WithLabelValues(typ).Add(float64(n))
}

func (c *conn) handle(b []byte) {
	msg, err := proto.Decode(b)
	if err != nil {
		c.countReceived(typeLabelUndecodable, len(b))
		var e *proto.Error
		if errors.As(err, &e) {
			c.fail(e.Code, false, "%s", e.Message)
		}
		return
	}
	typ := proto.TypeOf(msg)
	c.countReceived(typ, len(b))
	joined := c.joined.Load()
	switch m := msg.(type) {
	case *proto.Join:
		if joined {
			c.fail(proto.CodeAlreadyJoined, false, "this connection has already joined a room")
			return
		}
		c.join(m)
	case *proto.Signal:
		if !joined {
			c.fail(proto.CodeNotJoined, false, "join a room first")
			return
		}
		c.relay(m, len(b))
	case *proto.Leave:
		if !joined {
			c.fail(proto.CodeNotJoined, false, "join a room first")
			return
		}
		c.leaving = true
		c.close(websocket.CloseNormalClosure, "left")
	default:
		c.fail(proto.CodeUnknownType, false, "peers may not send %q messages", typ)
	}
}

// join admits the peer to a room: checks, identity, address, welcome, and the
// announcement to the others.
func (c *conn) join(j *proto.Join) {
	s := c.s
	cfg := &s.cfg
	now := cfg.Now()
	if j.V != proto.ProtocolVersion {
		c.fail(proto.CodeBadVersion, true, "protocol version %d is not supported; this server speaks %d", j.V, proto.ProtocolVersion)
		return
	}
	if !proto.ValidRoomName(j.Room) {
		c.fail(proto.CodeBadRoom, true, "room names are 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit")
		return
	}
	if j.Role == "" {
		j.Role = proto.RoleGuest
	}
	if !j.Role.Valid() {
		c.fail(proto.CodeBadRole, true, "role must be %q or %q", proto.RoleGuest, proto.RoleGateway)
		return
	}
	if j.Kind != "" && !j.Kind.Valid() {
		c.log().Debug("unknown peer kind in join; shown as unknown", "kind", fmt.Sprintf("%.16q", j.Kind))
		j.Kind = ""
	}
	switch {
	case j.Role == proto.RoleGateway:
		if !c.checkToken(j.Token, TokenGateway, j.Room, now, "the gateway role needs the room's gateway token") {
			return
		}
	case s.roomNeedsToken(j.Room):
		if !c.checkToken(j.Token, TokenJoin, j.Room, now, "room %q needs a join token", j.Room) {
			return
		}
	}
	var resume *Claims
	if j.Resume != "" {
		cl, err := s.signer.Verify(j.Resume, TokenResume, j.Room, now)
		switch {
		case err != nil:
			c.log().Info("resume token not honoured; joining afresh", "room", j.Room, "err", err)
		case cl.Role != j.Role:
			c.log().Info("resume token is for another role; joining afresh", "room", j.Room)
		default:
			resume = &cl
		}
	}

	s.mu.Lock()
	closed := s.closed
	s.mu.Unlock()
	if closed {
		c.fail(proto.CodeShuttingDown, true, "the server is shutting down")
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), cfg.WriteTimeout)
	j2, err := s.hub.Join(ctx, JoinRequest{Room: j.Room, Role: j.Role, Kind: j.Kind, Resume: resume}, c)
	cancel()
	if err != nil {
		c.failJoin(err, j.Room)
		return
	}
	c.room, c.id = j.Room, j2.ID
	c.joined.Store(true)
	c.logp.Store(c.log().With("room", j.Room, "peer", j2.ID))
	s.m.joins.WithLabelValues(string(j.Role), j2.How).Inc()
	c.log().Info("peer joined", "role", j.Role, "ip", j2.IP, "kind", j2.How)

	w := &proto.Welcome{
		V:       proto.ProtocolVersion,
		ID:      j2.ID,
		Room:    j.Room,
		Role:    j.Role,
		IP:      j2.IP,
		Prefix:  cfg.Subnet,
		Gateway: GatewayAddr(cfg.Subnet),
		Peers:   j2.Peers,
		Limits:  s.limits,
		Resume: s.signer.Mint(Claims{Kind: TokenResume, Room: j.Room, ID: j2.ID, Role: j.Role, IP: j2.IP,
			Expires: now.Add(cfg.ResumeTTL).Unix()}),
	}
	if cfg.ICEServers != nil {
		w.ICEServers = cfg.ICEServers(j.Room, j2.ID)
	}
	c.sendWelcome(w)
	if cfg.ICEServers != nil && cfg.ICERefresh > 0 {
		c.startICERefresh(j.Room, j2.ID)
	}
}

// failJoin reports a refused join; every refusal ends the session.
func (c *conn) failJoin(err error, room string) {
	cfg := &c.s.cfg
	switch {
	case errors.Is(err, ErrClosed):
		c.fail(proto.CodeShuttingDown, true, "the server is shutting down")
	case errors.Is(err, ErrTooManyRooms):
		c.fail(proto.CodeTooManyRooms, true, "the server holds its maximum of %d rooms", cfg.MaxRooms)
	case errors.Is(err, ErrRoomFull):
		c.fail(proto.CodeRoomFull, true, "room %q is full (%d peers)", room, c.s.limits.MaxPeersPerRoom)
	case errors.Is(err, ErrNoAddress):
		c.fail(proto.CodeRoomFull, true, "room %q has no free address", room)
	case errors.Is(err, ErrGatewayTaken):
		c.fail(proto.CodeGatewayTaken, true, "room %q already has a gateway", room)
	default:
		c.log().Error("join failed: room directory", "room", room, "err", err)
		// Not fatal for the peer: it may retry, here or elsewhere.
		c.sendMsg(&proto.Error{Code: proto.CodeShuttingDown, Message: "the room directory is unavailable; try again"})
		c.close(websocket.CloseTryAgainLater, "room directory unavailable")
	}
}

// startICERefresh sends the peer fresh ICE servers every ICERefresh until
// the connection closes. A resumed peer gets a new connection, a new welcome
// and a new timer.
func (c *conn) startICERefresh(room string, id proto.PeerID) {
	c.repeat(&c.iceRefresh, c.s.cfg.ICERefresh, func() bool {
		c.sendMsg(&proto.ICEServers{ICEServers: c.s.cfg.ICEServers(room, id)})
		return true
	})
}

func (c *conn) checkToken(tok string, kind TokenKind, room string, now time.Time, missing string, args ...any) bool {
	if tok == "" {
		c.fail(proto.CodeTokenRequired, true, missing, args...)
		return false
	}
	if _, err := c.s.signer.Verify(tok, kind, room, now); err != nil {
		c.fail(tokenErrorCode(err), true, "%v", err)
		return false
	}
	return true
}

func (s *Server) roomNeedsToken(room string) bool {
	for _, p := range s.cfg.TokenRooms {
		if ok, _ := path.Match(p, room); ok {
			return true
		}
	}
	return false
}

// relay passes a signal on to a peer of the sender's room.
func (c *conn) relay(sig *proto.Signal, n int) {
	if sig.To == "" || len(sig.Data) == 0 || string(sig.Data) == "null" {
		c.fail(proto.CodeBadSignal, false, "a signal needs \"to\" and \"data\"")
		return
	}
	if c.evicted.Load() {
		return // replaced or lost concurrently
	}
	if sig.To == c.id {
		c.fail(proto.CodeBadSignal, false, "a peer cannot signal itself")
		return
	}
	b, err := proto.Encode(&proto.Signal{From: c.id, Data: sig.Data})
	if err != nil {
		c.log().Error("encode", "err", err)
		return
	}
	if err := c.s.hub.Signal(c.room, c.id, sig.To, b); err != nil {
		if errors.Is(err, ErrUnknownPeer) {
			c.fail(proto.CodeUnknownPeer, false, "no reachable peer %.40q in this room", sig.To)
		} else {
			c.log().Warn("signal not relayed", "err", err)
		}
		return
	}
	c.s.m.relayed.WithLabelValues(proto.TypeSignal).Inc()
	c.s.m.relayedBytes.WithLabelValues(proto.TypeSignal).Add(float64(len(b)))
}
