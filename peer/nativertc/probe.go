//go:build !js

package nativertc

import (
	"context"
	"encoding/binary"
	"net"
	"sync"
	"time"
)

// The packet-size probe. Before its SCTP association starts, each side that
// would send packets larger than StandardPacketSize sends a probe of that
// size over DTLS and waits for the other side's acknowledgement; only then
// does it use the size, otherwise it keeps the standard one. Each side
// decides for its own direction: a path may carry large datagrams one way
// only. On a network whose MTU is below the size, the kernel sends such a
// datagram as IP fragments, which a LAN carries but some middleboxes drop;
// the probe finds out which.
//
// A probe and its acknowledgement are DTLS records that no SCTP packet can
// be: an SCTP packet starts with its source port, never 0.
//
//	probe: 0x00 0x00 'p' 'l' 0x01 size:uint32 padding…   (size bytes in all)
//	ack:   0x00 0x00 'p' 'l' 0x02 size:uint32            (the probe's size)
//
// Both sides answer probes for the whole session, so a side still probing
// gets its answer from one whose association already runs.
const (
	probeHeaderLen = 9
	probeRequest   = 1
	probeAck       = 2
	// maxHeld bounds the records kept while probing (the other side's
	// first SCTP packets); SCTP retransmits what is dropped.
	maxHeld = 64
)

func isProbe(b []byte) bool {
	return len(b) >= probeHeaderLen && b[0] == 0 && b[1] == 0 && b[2] == 'p' && b[3] == 'l'
}

func putProbeHeader(b []byte, kind byte, size uint32) {
	b[0], b[1], b[2], b[3], b[4] = 0, 0, 'p', 'l', kind
	binary.BigEndian.PutUint32(b[5:9], size)
}

// probeConn is the connection under the SCTP association: the DTLS
// connection with probes and their acknowledgements taken out of the read
// stream and answered.
type probeConn struct {
	net.Conn

	acks chan uint32 // sizes acknowledged, while a probe waits

	mu      sync.Mutex
	held    [][]byte      // records read while probing, for SCTP
	probing chan struct{} // closed when the probe phase's reader has stopped; nil if none ran
}

func newProbeConn(c net.Conn) *probeConn {
	return &probeConn{Conn: c, acks: make(chan uint32, 4)}
}

// probe sends a probe of size bytes and reports whether it was acknowledged
// within wait, sending it again twice meanwhile. While it runs, it reads the
// connection itself, keeping what is not a probe for SCTP.
func (c *probeConn) probe(ctx context.Context, size uint32, wait time.Duration) bool {
	done := make(chan struct{})
	c.mu.Lock()
	c.probing = done
	c.mu.Unlock()
	go c.readWhileProbing(done)

	msg := make([]byte, size)
	putProbeHeader(msg, probeRequest, size)
	deadline := time.NewTimer(wait)
	defer deadline.Stop()
	resend := time.NewTicker(wait / 3)
	defer resend.Stop()
	send := func() bool { _, err := c.Conn.Write(msg); return err == nil }
	if !send() {
		return false
	}
	for {
		select {
		case got := <-c.acks:
			if got == size {
				return true
			}
		case <-resend.C:
			if !send() {
				return false
			}
		case <-deadline.C:
			return false
		case <-ctx.Done():
			return false
		}
	}
}

// readWhileProbing reads records until the read deadline endProbe sets.
func (c *probeConn) readWhileProbing(done chan struct{}) {
	defer close(done)
	buf := make([]byte, 8192)
	for {
		n, err := c.Conn.Read(buf)
		if err != nil {
			return
		}
		if c.handleProbe(buf[:n]) {
			continue
		}
		c.mu.Lock()
		if len(c.held) < maxHeld {
			c.held = append(c.held, append([]byte(nil), buf[:n]...))
		}
		c.mu.Unlock()
	}
}

// endProbe stops the probe phase's reader, if one ran, so that SCTP reads
// the connection from here on.
func (c *probeConn) endProbe() {
	c.mu.Lock()
	done := c.probing
	c.mu.Unlock()
	if done == nil {
		return
	}
	_ = c.Conn.SetReadDeadline(time.Now())
	<-done
	_ = c.Conn.SetReadDeadline(time.Time{})
}

// handleProbe answers a probe, passes on an acknowledgement, and reports
// whether b was either.
func (c *probeConn) handleProbe(b []byte) bool {
	if !isProbe(b) {
		return false
	}
	switch b[4] {
	case probeRequest:
		var ack [probeHeaderLen]byte
		putProbeHeader(ack[:], probeAck, uint32(len(b)))
		_, _ = c.Conn.Write(ack[:])
	case probeAck:
		select {
		case c.acks <- binary.BigEndian.Uint32(b[5:9]):
		default:
		}
	}
	return true
}

// Read returns the next record that is not a probe: first those held
// while probing.
func (c *probeConn) Read(b []byte) (int, error) {
	c.mu.Lock()
	if len(c.held) > 0 {
		r := c.held[0]
		c.held = c.held[1:]
		c.mu.Unlock()
		return copy(b, r), nil
	}
	c.mu.Unlock()
	for {
		n, err := c.Conn.Read(b)
		if err != nil || !c.handleProbe(b[:n]) {
			return n, err
		}
	}
}
