package main

import (
	"errors"
	"net"
	"sync"
	"sync/atomic"

	"github.com/peerlan/peerlan/peer"
)

// guestQueueLen bounds the frames the guest sent that the switch has not read
// yet. The switch reads continuously, so the queue fills only when the Go
// side is starved (a busy tab); then frames are dropped, as a full NIC ring
// would drop them.
const guestQueueLen = 256

var (
	errNoReceiver = errors.New("peerlan: lan.onframe is not a function; frame dropped")
	errFrameSize  = errors.New("peerlan: frame size out of range; frame dropped")
)

// guestPort is the mesh's local peer.Port for a guest that lives in
// JavaScript (any emulator that produces and consumes Ethernet frames).
//
//   - Frames from the guest arrive through Send, called from JavaScript's
//     lan.send: Send copies the frame into a buffer of the port's own (the
//     caller's bytes may be a view into a buffer the emulator reuses) and
//     queues it without blocking; when the queue is full the frame is
//     dropped and counted. Read hands queued frames to the switch.
//   - Frames for the guest go through Write, which calls deliver (in the
//     browser: lan.onframe) synchronously. deliver must not retain its
//     argument and must not block; an error from it drops the frame.
//
// The port obeys peer.Port's contract; Send may be called concurrently with
// everything else.
type guestPort struct {
	deliver func(frame []byte) error
	queue   chan *frameBuf
	done    chan struct{}
	once    sync.Once
	bufs    sync.Pool // *frameBuf

	fromGuest   atomic.Uint64 // frames queued by Send
	toGuest     atomic.Uint64 // frames deliver accepted
	queueFull   atomic.Uint64 // Send drops: the queue was full
	badSize     atomic.Uint64 // Send drops: empty or longer than peer.MaxFrameSize
	undelivered atomic.Uint64 // Write drops: deliver failed (no onframe, or it threw)
}

// frameBuf is one queued frame; the array keeps buffers a fixed size, so
// that the pool never holds a short one.
type frameBuf struct {
	n int
	b [peer.MaxFrameSize]byte
}

var _ peer.Port = (*guestPort)(nil)

func newGuestPort(deliver func([]byte) error) *guestPort {
	return &guestPort{
		deliver: deliver,
		queue:   make(chan *frameBuf, guestQueueLen),
		done:    make(chan struct{}),
		bufs:    sync.Pool{New: func() any { return new(frameBuf) }},
	}
}

// Send queues one frame from the guest. fill must copy the frame's n bytes
// into dst (len(dst) == n); Send calls it at most once, before it returns.
// Send never blocks. It returns nil when the frame was queued,
// peer.ErrDropped when the queue was full, errFrameSize for an empty or
// oversize frame (both counted), or net.ErrClosed after Close.
func (p *guestPort) Send(n int, fill func(dst []byte)) error {
	if p.closed() {
		return net.ErrClosed
	}
	if n <= 0 || n > peer.MaxFrameSize {
		p.badSize.Add(1)
		return errFrameSize
	}
	if len(p.queue) == cap(p.queue) {
		// Checked before copying so a flood costs no copies; a racing Send
		// that fills the last slot is caught below.
		p.queueFull.Add(1)
		return peer.ErrDropped
	}
	f := p.bufs.Get().(*frameBuf)
	f.n = n
	fill(f.b[:n])
	select {
	case p.queue <- f:
		p.fromGuest.Add(1)
		return nil
	default:
		p.bufs.Put(f)
		p.queueFull.Add(1)
		return peer.ErrDropped
	}
}

// SendBatch queues the frames laid end to end in data, len(lens[i]) bytes
// each, as Send would one by one, and returns how many it queued. A length
// that Send refuses (zero, over peer.MaxFrameSize) skips that frame; one
// past the end of data ends the batch. Both are counted as bad sizes.
func (p *guestPort) SendBatch(lens []uint16, data []byte) int {
	queued, off := 0, 0
	for _, l := range lens {
		n := int(l)
		if n > len(data)-off {
			p.badSize.Add(1)
			break
		}
		frame := data[off : off+n]
		off += n
		if p.Send(n, func(dst []byte) { copy(dst, frame) }) == nil {
			queued++
		}
	}
	return queued
}

// Read implements peer.Port: it returns the next queued frame.
func (p *guestPort) Read(b []byte) (int, error) {
	for {
		select {
		case f := <-p.queue:
			n := f.n
			if n > len(b) {
				p.bufs.Put(f)
				p.badSize.Add(1)
				continue
			}
			copy(b, f.b[:n])
			p.bufs.Put(f)
			return n, nil
		case <-p.done:
			return 0, net.ErrClosed
		}
	}
}

// Write implements peer.Port: it hands the frame to the guest.
func (p *guestPort) Write(b []byte) (int, error) {
	if p.closed() {
		return 0, net.ErrClosed
	}
	if err := p.deliver(b); err != nil {
		p.undelivered.Add(1)
		return 0, peer.ErrDropped
	}
	p.toGuest.Add(1)
	return len(b), nil
}

// Close implements peer.Port. Frames still queued are discarded.
func (p *guestPort) Close() error {
	p.once.Do(func() { close(p.done) })
	return nil
}

func (p *guestPort) closed() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// guestPortStats is the port's part of lan.status(), under "guest".
type guestPortStats struct {
	FromGuest   uint64 `json:"from_guest"`
	ToGuest     uint64 `json:"to_guest"`
	QueueFull   uint64 `json:"dropped_queue_full"`
	BadSize     uint64 `json:"dropped_bad_size"`
	Undelivered uint64 `json:"dropped_undelivered"`
}

func (p *guestPort) stats() guestPortStats {
	return guestPortStats{
		FromGuest: p.fromGuest.Load(), ToGuest: p.toGuest.Load(),
		QueueFull: p.queueFull.Load(), BadSize: p.badSize.Load(), Undelivered: p.undelivered.Load(),
	}
}
