// Package porttest provides in-memory peer.Ports for tests, in the spirit of
// wireguard-go's tun/tuntest and conn/bindtest:
//
//   - ChannelPort: a port a test drives directly through its Inbound and
//     Outbound channels.
//   - NewPipe: two ports wired back to back, like net.Pipe for frames.
//   - Freezable: wraps any port so that its Write can be frozen, to prove
//     that a stuck port stalls nobody else.
//   - Sink: a port that counts and discards what it is given without
//     allocating, for benchmarks and allocation checks.
//
// Every port here obeys the peer.Port contract: one frame per call, Write
// never retains its buffer, Close unblocks pending calls and later calls
// return net.ErrClosed.
package porttest

import (
	"io"
	"net"
	"sync"
	"sync/atomic"

	"github.com/peerlan/peerlan/peer"
)

var (
	_ peer.Port = (*ChannelPort)(nil)
	_ peer.Port = (*PipePort)(nil)
	_ peer.Port = (*Freezable)(nil)
	_ peer.Port = (*Sink)(nil)
)

// closer is the shared Close machinery: a channel closed exactly once.
type closer struct {
	once   sync.Once
	closed chan struct{}
}

func newCloser() closer { return closer{closed: make(chan struct{})} }

func (c *closer) close() { c.once.Do(func() { close(c.closed) }) }

// Closed is closed once the port's Close has been called.
func (c *closer) Closed() <-chan struct{} { return c.closed }

func (c *closer) isClosed() bool {
	select {
	case <-c.closed:
		return true
	default:
		return false
	}
}

// ChannelPort is a Port whose traffic a test drives directly: frames sent on
// Inbound are returned by Read (test → switch), and every frame passed to
// Write is copied onto Outbound (switch → test).
//
// Write never blocks: when Outbound is full the frame is dropped, counted in
// Dropped, and Write returns peer.ErrDropped, as the Port contract asks of a
// congested port. Read drops (and counts) a frame longer than its buffer.
type ChannelPort struct {
	Inbound  chan []byte
	Outbound chan []byte

	dropped atomic.Uint64
	closer
}

// NewChannelPort returns a ChannelPort whose channels buffer depth frames
// each (depth 0 makes them unbuffered).
func NewChannelPort(depth int) *ChannelPort {
	return &ChannelPort{
		Inbound:  make(chan []byte, depth),
		Outbound: make(chan []byte, depth),
		closer:   newCloser(),
	}
}

// Read returns the next frame sent on Inbound.
func (p *ChannelPort) Read(b []byte) (int, error) {
	for {
		if p.isClosed() {
			return 0, net.ErrClosed
		}
		select {
		case f := <-p.Inbound:
			if len(f) > len(b) {
				p.dropped.Add(1)
				continue
			}
			return copy(b, f), nil
		case <-p.closed:
			return 0, net.ErrClosed
		}
	}
}

// Write copies b onto Outbound, or drops it if Outbound is full.
func (p *ChannelPort) Write(b []byte) (int, error) {
	if p.isClosed() {
		return 0, net.ErrClosed
	}
	f := append([]byte(nil), b...)
	select {
	case p.Outbound <- f:
		return len(b), nil
	default:
		p.dropped.Add(1)
		return 0, peer.ErrDropped
	}
}

// Close unblocks Read and makes later calls return net.ErrClosed. The
// channels stay open so a test can still drain Outbound.
func (p *ChannelPort) Close() error {
	p.close()
	return nil
}

// Dropped returns how many frames the port dropped (Outbound full, or an
// Inbound frame longer than Read's buffer).
func (p *ChannelPort) Dropped() uint64 { return p.dropped.Load() }

// PipeDepth is how many frames each direction of a pipe buffers before
// Write starts dropping.
const PipeDepth = 256

// pipeHalf is one direction of a pipe: frames and the closing of the end
// that writes them.
type pipeHalf struct {
	frames chan []byte
	writer *closer // closed when the writing end is closed
}

// PipePort is one end of a pipe made by NewPipe.
type PipePort struct {
	rx, tx  pipeHalf
	dropped atomic.Uint64
	closer
}

// NewPipe returns two ports wired back to back: a frame written to a is read
// from b and vice versa. Each direction buffers PipeDepth frames; beyond that
// Write drops the frame and returns peer.ErrDropped. Closing one end makes
// the other end's Read return io.EOF (once the frames already sent to it are
// read) and its Write return io.ErrClosedPipe, as a remote that went away.
func NewPipe() (a, b *PipePort) {
	a = &PipePort{closer: newCloser()}
	b = &PipePort{closer: newCloser()}
	ab := pipeHalf{frames: make(chan []byte, PipeDepth), writer: &a.closer}
	ba := pipeHalf{frames: make(chan []byte, PipeDepth), writer: &b.closer}
	a.tx, b.rx = ab, ab
	b.tx, a.rx = ba, ba
	return a, b
}

// Read returns the next frame written to the other end.
func (p *PipePort) Read(b []byte) (int, error) {
	for {
		if p.isClosed() {
			return 0, net.ErrClosed
		}
		select {
		case f := <-p.rx.frames:
			if len(f) > len(b) {
				p.dropped.Add(1)
				continue
			}
			return copy(b, f), nil
		case <-p.closed:
			return 0, net.ErrClosed
		case <-p.rx.writer.closed:
			// The other end is gone; hand out what it sent before.
			select {
			case f := <-p.rx.frames:
				if len(f) > len(b) {
					p.dropped.Add(1)
					continue
				}
				return copy(b, f), nil
			default:
				return 0, io.EOF
			}
		}
	}
}

// Write sends a copy of b to the other end.
func (p *PipePort) Write(b []byte) (int, error) {
	if p.isClosed() {
		return 0, net.ErrClosed
	}
	if p.peerClosed() {
		return 0, io.ErrClosedPipe
	}
	f := append([]byte(nil), b...)
	select {
	case p.tx.frames <- f:
		return len(b), nil
	default:
		p.dropped.Add(1)
		return 0, peer.ErrDropped
	}
}

// peerClosed reports whether the other end has been closed: its closer is
// the writer of our rx direction.
func (p *PipePort) peerClosed() bool { return p.rx.writer.isClosed() }

// Close closes this end. The other end sees io.EOF.
func (p *PipePort) Close() error {
	p.close()
	return nil
}

// Dropped returns how many frames this end dropped on Write (the other end
// not reading fast enough) or on Read (a frame longer than the buffer).
func (p *PipePort) Dropped() uint64 { return p.dropped.Load() }

// Freezable wraps a Port so that a test can freeze its Write: while frozen,
// Write blocks until Unfreeze or Close, as a wedged device or a peer that
// stopped reading would. Read passes through untouched.
type Freezable struct {
	peer.Port

	mu sync.Mutex
	// thaw is non-nil while frozen and is closed by Unfreeze. Guarded by mu.
	thaw chan struct{}

	blocked chan struct{} // one token each time a Write starts waiting
	stuck   atomic.Int64  // Writes currently waiting on the freeze
	closer
}

// NewFreezable wraps p; it starts unfrozen.
func NewFreezable(p peer.Port) *Freezable {
	return &Freezable{Port: p, blocked: make(chan struct{}, 1), closer: newCloser()}
}

// Freeze makes subsequent Writes block.
func (f *Freezable) Freeze() {
	f.mu.Lock()
	if f.thaw == nil {
		f.thaw = make(chan struct{})
	}
	f.mu.Unlock()
}

// Unfreeze releases blocked Writes and lets later ones through.
func (f *Freezable) Unfreeze() {
	f.mu.Lock()
	if f.thaw != nil {
		close(f.thaw)
		f.thaw = nil
	}
	f.mu.Unlock()
}

// Blocked receives a value when a Write has started waiting on the freeze,
// so a test knows the writer is stuck rather than merely slow.
func (f *Freezable) Blocked() <-chan struct{} { return f.blocked }

// Stuck returns how many Writes are waiting on the freeze right now.
func (f *Freezable) Stuck() int { return int(f.stuck.Load()) }

// Write blocks while the port is frozen, then writes to the wrapped port.
func (f *Freezable) Write(b []byte) (int, error) {
	if f.isClosed() {
		return 0, net.ErrClosed
	}
	f.mu.Lock()
	thaw := f.thaw
	f.mu.Unlock()
	if thaw != nil {
		f.stuck.Add(1)
		select {
		case f.blocked <- struct{}{}:
		default:
		}
		select {
		case <-thaw:
			f.stuck.Add(-1)
		case <-f.closed:
			f.stuck.Add(-1)
			return 0, net.ErrClosed
		}
	}
	return f.Port.Write(b)
}

// Close releases blocked Writes with net.ErrClosed and closes the wrapped port.
func (f *Freezable) Close() error {
	f.close()
	return f.Port.Close()
}

// Sink is a Port that never delivers a frame and counts every frame written
// to it, without allocating. Read blocks until Close.
type Sink struct {
	frames, bytes atomic.Uint64
	closer
}

// NewSink returns an open Sink.
func NewSink() *Sink { return &Sink{closer: newCloser()} }

// Read blocks until Close, then returns net.ErrClosed.
func (s *Sink) Read([]byte) (int, error) {
	<-s.closed
	return 0, net.ErrClosed
}

// Write counts b and discards it.
func (s *Sink) Write(b []byte) (int, error) {
	if s.isClosed() {
		return 0, net.ErrClosed
	}
	s.frames.Add(1)
	s.bytes.Add(uint64(len(b)))
	return len(b), nil
}

// Close makes Read and Write return net.ErrClosed.
func (s *Sink) Close() error {
	s.close()
	return nil
}

// Frames returns how many frames were written.
func (s *Sink) Frames() uint64 { return s.frames.Load() }

// Bytes returns how many bytes were written.
func (s *Sink) Bytes() uint64 { return s.bytes.Load() }
