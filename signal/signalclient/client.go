package signalclient

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"github.com/peerlan/peerlan/signal/proto"
)

// ErrNotConnected is returned by Client.Send while the client has no joined
// connection (connecting, or reconnecting after the server went away).
var ErrNotConnected = errors.New("signal: not connected to the signaling server")

var errBinaryFromServer = errors.New("signal: server sent a binary message")

// Config configures a Client. Zero fields take the documented defaults.
type Config struct {
	// URL is the ws:// or wss:// address of the signaling endpoint, or the
	// addresses of several instances of one cluster separated by commas
	// (ParseURLs), which Run tries in turn. Set URL or URLs.
	URL string
	// URLs lists the endpoints one by one instead of URL; at most MaxURLs.
	URLs  []string
	Room  string     // required
	Role  proto.Role // default proto.RoleGuest
	Token string     // join token, or gateway token for proto.RoleGateway
	// Resume is a resume token from an earlier run's welcome (ResumeToken).
	// The first join presents it, so a restarted peer gets its id and address
	// back while the server still holds them, replacing a connection of the
	// earlier run that the server has not yet noticed dead. A token the
	// server does not honour (expired, other room or role) means a fresh join.
	Resume string

	// MinBackoff is the wait after a welcomed session ends and after the
	// first round of failed attempts (see Run); default 250 ms.
	MinBackoff time.Duration
	MaxBackoff time.Duration // cap of the doubling wait between failed rounds; default 10 s
	// ReadTimeout is the silence (no message, no ping) after which the server
	// is presumed gone and the client reconnects, until a welcome announces
	// the server's ping period; from then on it is two periods and a second
	// (11 s against the default 5 s), so that a peer whose address changed
	// rejoins, and heals its links, soon. Default 30 s. Not used in the
	// browser, whose WebSocket reports dead connections itself.
	ReadTimeout time.Duration
	Logger      *slog.Logger // default slog.Default()
}

// Event is what a Client reports through Events: *proto.Welcome (after every
// successful (re)join), *proto.ICEServers, *proto.PeerJoined,
// *proto.PeerLeft, *proto.Signal, *proto.Error (a non-fatal error the server
// reported) or *Disconnected.
type Event any

// Disconnected reports that the connection to the server was lost, or that
// a round of attempts (one per URL) failed; the client is reconnecting.
// Existing peer-to-peer links are unaffected.
type Disconnected struct {
	Err error
}

// Client is a peer's connection to the signaling server. Run keeps it joined:
// it reconnects with exponential backoff and resumes its identity, so the
// peer keeps its id and address across server outages.
type Client struct {
	cfg    Config
	urls   []string // validated Config.URL or Config.URLs, in order
	log    *slog.Logger
	events chan Event
	native nativeDial // dial options of native clients only (dial.go)

	mu     sync.Mutex
	conn   wsConn // joined connection, or nil
	server string // URL of conn, or ""
	resume string
	id     proto.PeerID
}

// New validates cfg and returns a Client; call Run to connect.
func New(cfg Config) (*Client, error) {
	var urls []string
	switch {
	case cfg.URL != "" && len(cfg.URLs) > 0:
		return nil, errors.New("signal: set the server URL or URLs, not both")
	case len(cfg.URLs) > 0:
		urls = slices.Clone(cfg.URLs)
		if err := checkURLs(urls); err != nil {
			return nil, err
		}
	default:
		var err error
		if urls, err = ParseURLs(cfg.URL); err != nil {
			return nil, err
		}
	}
	if !proto.ValidRoomName(cfg.Room) {
		return nil, fmt.Errorf("signal: room %q: names are 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit", cfg.Room)
	}
	if cfg.Role == "" {
		cfg.Role = proto.RoleGuest
	}
	if !cfg.Role.Valid() {
		return nil, fmt.Errorf("signal: role %q must be %q or %q", cfg.Role, proto.RoleGuest, proto.RoleGateway)
	}
	if cfg.MinBackoff <= 0 {
		cfg.MinBackoff = 250 * time.Millisecond
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = 10 * time.Second
	}
	if cfg.ReadTimeout <= 0 {
		cfg.ReadTimeout = 30 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Client{cfg: cfg, urls: urls, log: cfg.Logger, events: make(chan Event, 256), resume: cfg.Resume}, nil
}

// URL returns the URL of the server the client is joined to, or "" while it
// is not joined.
func (c *Client) URL() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.server
}

// ResumeToken returns the resume token of the last welcome (or
// Config.Resume before the first). It is a credential: whoever holds
// it may take this peer's identity in its room until it expires.
func (c *Client) ResumeToken() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.resume
}

// Events returns the channel of events. Read it steadily: the client stops
// reading from the server while it is full.
func (c *Client) Events() <-chan Event { return c.events }

// ID returns the identity the server issued, or "" before the first welcome.
func (c *Client) ID() proto.PeerID {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.id
}

// Send relays data to peer to. It returns ErrNotConnected while the client is
// not joined; signals are not queued across reconnects, because the mesh
// redoes its negotiation when links need it.
func (c *Client) Send(to proto.PeerID, data json.RawMessage) error {
	b, err := proto.Encode(&proto.Signal{To: to, Data: data})
	if err != nil {
		return err
	}
	c.mu.Lock()
	conn := c.conn
	c.mu.Unlock()
	if conn == nil {
		return ErrNotConnected
	}
	return conn.Write(b)
}

// Run connects, joins and keeps the client joined until ctx is done, when it
// leaves the room and returns ctx.Err().
//
// With several URLs, Run stays on the server that welcomed it for as long as
// that session lasts. When a session ends or an attempt fails, it moves on to
// the next URL of the list (after the last, the first), offering its resume
// token to whichever server it reaches: instances of one cluster share the
// token secret, and one that does not hold the peer joins it afresh. A failed
// attempt moves on at once; only when every URL has failed once since the
// last welcome or wait (a full round) does Run wait its backoff, jittered and
// doubling from MinBackoff to MaxBackoff, so a dead instance costs one failed
// dial (refused at once, or the 10 s handshake timeout of a host that does
// not answer), not a backoff. After a welcomed session ends, Run waits MinBackoff
// (jittered) and starts its backoff anew, so that a server which welcomes
// and drops the client at once cannot make it spin. It emits Disconnected
// when a welcomed session ends and when a round fails, not for each URL of a
// round.
//
// It returns early with a *proto.Error when a server refuses the join for a
// reason that retrying cannot fix (a bad token, a wrong role, ...): the
// instances share one configuration, so no other URL is tried. A URL that
// answers plain HTTP before it ever led to a welcome (a wrong path: 404, or
// 200 from a web page) is dropped from the rotation with a warning; when
// every URL is dropped, Run returns the *HandshakeError (with several URLs,
// all of them, joined).
func (c *Client) Run(ctx context.Context) error {
	n := len(c.urls)
	welcomed := make([]bool, n) // the URL has led to a welcome during this Run
	wrong := make([]error, n)   // why the URL was dropped, or nil
	live := n
	failed := 0 // failed attempts since the last welcome or wait
	backoff := c.cfg.MinBackoff
	i := 0
	for {
		url := c.urls[i]
		joined, err := c.session(ctx, url)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		var se *proto.Error
		if errors.As(err, &se) && permanent(se) {
			return se
		}
		welcomed[i] = welcomed[i] || joined
		// A URL that never led to a welcome and answers plain HTTP is the
		// wrong one; after a welcome, the same answer is more likely a proxy
		// or deployment in flux, worth waiting out.
		var he *HandshakeError
		if !welcomed[i] && errors.As(err, &he) && he.wrongEndpoint() {
			wrong[i] = he
			if live--; live == 0 {
				if n == 1 {
					return he
				}
				return fmt.Errorf("signal: none of the %d server URLs is a signaling endpoint:\n%w", n, errors.Join(wrong...))
			}
			c.log.Warn("dropping a server URL that is not a signaling endpoint", "server", url, "err", err, "left", live)
		} else if !joined {
			failed++
		}
		next := c.nextLive(i, wrong)
		var wait time.Duration
		switch {
		case joined:
			failed, backoff, wait = 0, c.cfg.MinBackoff, c.cfg.MinBackoff
		case failed >= live:
			failed, wait = 0, backoff
			backoff = min(2*backoff, c.cfg.MaxBackoff)
		}
		if wait == 0 {
			if wrong[i] == nil {
				c.log.Warn("signaling server unreachable; trying the next", "server", url, "err", err, "next", c.urls[next])
			}
			i = next
			continue
		}
		i = next
		// Full jitter keeps a crowd of peers from reconnecting in lockstep
		// after a server restart.
		wait = wait/2 + rand.N(wait/2+1)
		c.log.Warn("signaling connection lost; reconnecting", "server", url, "err", err, "next", c.urls[i], "in", wait.Round(time.Millisecond))
		if !c.emit(ctx, &Disconnected{Err: err}) {
			return ctx.Err()
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
}

// nextLive returns the index of the URL after i that is not dropped,
// wrapping around (i itself when it is the only one left).
func (c *Client) nextLive(i int, wrong []error) int {
	for k := 1; k <= len(c.urls); k++ {
		if j := (i + k) % len(c.urls); wrong[j] == nil {
			return j
		}
	}
	return i
}

// session runs one connection: join, then events until it breaks. joined
// reports whether the server welcomed us.
func (c *Client) session(ctx context.Context, url string) (joined bool, err error) {
	conn, err := dial(ctx, url, c.cfg.ReadTimeout, c.native)
	if err != nil {
		return false, err
	}
	c.mu.Lock()
	resume := c.resume
	c.mu.Unlock()
	j, _ := proto.Encode(&proto.Join{V: proto.ProtocolVersion, Room: c.cfg.Room, Role: c.cfg.Role, Token: c.cfg.Token, Resume: resume, Kind: clientKind})
	if err := conn.Write(j); err != nil {
		conn.Close()
		return false, err
	}
	stop := context.AfterFunc(ctx, func() {
		// Leave for good: the server releases our id and address at once.
		if b, err := proto.Encode(&proto.Leave{}); err == nil {
			_ = conn.Write(b)
		}
		conn.Close()
	})
	defer func() {
		stop()
		c.mu.Lock()
		if c.conn == conn {
			c.conn, c.server = nil, ""
		}
		c.mu.Unlock()
		conn.Close()
	}()
	for {
		b, err := conn.Read()
		if err != nil {
			return joined, err
		}
		msg, err := proto.Decode(b)
		if err != nil {
			c.log.Warn("ignoring undecodable message from server", "err", err)
			continue
		}
		switch m := msg.(type) {
		case *proto.Welcome:
			joined = true
			c.mu.Lock()
			c.conn, c.server, c.resume, c.id = conn, url, m.Resume, m.ID
			c.mu.Unlock()
			if ka := time.Duration(m.Limits.KeepaliveMillis) * time.Millisecond; ka > 0 {
				// Two missed pings and a second: a dead path is noticed in
				// seconds, whatever period the server runs with.
				if s, ok := conn.(interface{ setReadTimeout(time.Duration) }); ok {
					s.setReadTimeout(2*ka + time.Second)
				}
			}
			c.log.Info("joined room", "server", url, "room", m.Room, "id", m.ID, "ip", m.IP, "peers", len(m.Peers))
		case *proto.Error:
			if m.Fatal {
				return joined, m
			}
			c.log.Debug("server reported an error", "code", m.Code, "msg", m.Message)
		}
		if !c.emit(ctx, msg) {
			return joined, ctx.Err()
		}
	}
}

func (c *Client) emit(ctx context.Context, ev Event) bool {
	select {
	case c.events <- ev:
		return true
	case <-ctx.Done():
		return false
	}
}

// wsConn is a text-message WebSocket: gorilla natively, the browser's
// WebSocket under js/wasm.
type wsConn interface {
	// Read returns the next text message; a binary message is an error.
	Read() ([]byte, error)
	// Write sends one text message. Safe for concurrent use.
	Write([]byte) error
	// Close closes the connection with a normal closure. Idempotent.
	Close()
}

// permanent reports whether retrying the same join cannot succeed. A full
// room or a taken gateway role may free up (a crashed gateway's grace period
// ends), so those are retried with backoff.
func permanent(e *proto.Error) bool {
	switch e.Code {
	case proto.CodeBadVersion, proto.CodeBadRoom, proto.CodeBadRole, proto.CodeTokenRequired, proto.CodeTokenInvalid,
		proto.CodeTokenExpired, proto.CodeTokenWrongRoom, proto.CodeBinary, proto.CodeTooLarge:
		return true
	}
	return false
}
