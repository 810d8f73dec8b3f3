// Package wsrelay is the baseline peerlan is measured against: a WebSocket
// relay of the kind every browser-VM network used before (v86's relay_url
// protocol, as spoken by websockproxy, go-websockproxy and node-relay). Each
// client sends and receives Ethernet frames as binary WebSocket messages, one
// frame per message, and the relay is a learning switch between clients.
//
// It exists for benchmarks only: to be a fair baseline it is built to be
// fast (no throttle, buffered reads, a writer goroutine per client so that a
// slow client costs the others nothing), not to be deployed. It has no
// authentication and no limits beyond a bounded queue per client.
package wsrelay

import (
	"errors"
	"io"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"

	"github.com/gorilla/websocket"

	"github.com/peerlan/peerlan/peer/ether"
)

// maxFrame bounds a message the relay forwards; larger ones are dropped.
const maxFrame = 1518

// queueLen is each client's bounded send queue, in frames; a full queue
// drops the newest frame, as a congested switch port would.
const queueLen = 512

// Server is the relay: an http.Handler that upgrades every request to a
// WebSocket client of one shared learning switch.
type Server struct {
	log      *slog.Logger
	upgrader websocket.Upgrader

	mu      sync.Mutex
	clients map[*client]struct{}
	macs    map[ether.MAC]*client

	// Frames forwarded and dropped (queue full or oversize), for reports.
	Forwarded, Dropped atomic.Uint64
}

// NewServer returns a relay with no clients.
func NewServer(log *slog.Logger) *Server {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Server{
		log:      log,
		upgrader: websocket.Upgrader{ReadBufferSize: 64 << 10, WriteBufferSize: 64 << 10, CheckOrigin: func(*http.Request) bool { return true }},
		clients:  map[*client]struct{}{},
		macs:     map[ether.MAC]*client{},
	}
}

type client struct {
	conn *websocket.Conn
	out  chan []byte
}

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	conn, err := s.upgrader.Upgrade(w, r, nil)
	if err != nil {
		return
	}
	c := &client{conn: conn, out: make(chan []byte, queueLen)}
	s.mu.Lock()
	s.clients[c] = struct{}{}
	s.mu.Unlock()
	s.log.Info("client connected", "addr", r.RemoteAddr)
	go s.writeLoop(c)
	s.readLoop(c)
	s.mu.Lock()
	delete(s.clients, c)
	for m, owner := range s.macs {
		if owner == c {
			delete(s.macs, m)
		}
	}
	s.mu.Unlock()
	close(c.out)
	conn.Close()
	s.log.Info("client gone", "addr", r.RemoteAddr)
}

func (s *Server) readLoop(c *client) {
	buf := make([]byte, 64<<10)
	for {
		typ, rd, err := c.conn.NextReader()
		if err != nil {
			return
		}
		n, err := io.ReadFull(rd, buf)
		if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
			err = nil
		}
		if err != nil || typ != websocket.BinaryMessage {
			continue
		}
		if n < ether.HeaderLen || n > maxFrame {
			s.Dropped.Add(1)
			continue
		}
		s.forward(c, buf[:n])
	}
}

// forward learns the frame's source and queues a copy for every client it
// goes to: the learned owner of its destination, or all others.
func (s *Server) forward(from *client, frame []byte) {
	e := ether.Ethernet(frame)
	src, dst := e.Src(), e.Dst()
	s.mu.Lock()
	if !src.IsGroup() && s.macs[src] != from {
		s.macs[src] = from
	}
	var targets []*client
	if to, ok := s.macs[dst]; ok && !dst.IsGroup() {
		if to != from {
			targets = append(targets, to)
		}
	} else {
		for c := range s.clients {
			if c != from {
				targets = append(targets, c)
			}
		}
	}
	s.mu.Unlock()
	for _, to := range targets {
		b := make([]byte, len(frame))
		copy(b, frame)
		select {
		case to.out <- b:
			s.Forwarded.Add(1)
		default:
			s.Dropped.Add(1)
		}
	}
}

func (s *Server) writeLoop(c *client) {
	for b := range c.out {
		if err := c.conn.WriteMessage(websocket.BinaryMessage, b); err != nil {
			c.conn.Close()
			for range c.out {
			}
			return
		}
	}
}
