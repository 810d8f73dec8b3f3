package peer

import (
	"runtime"
	"sync"
	"sync/atomic"

	"github.com/peerlan/peerlan/peer/ether"
)

// writerSpins is how many times a writer that found its queue empty yields
// (runtime.Gosched) before it parks. A stream of frames then rarely parks
// and wakes it, which costs more than the frames themselves: flooding to 8
// links took 780 ns per frame without spinning and 530 ns with 5 to 200
// spins, a one-frame ping 550 ns against 460 ns (BenchmarkSwitchFlood8Links,
// BenchmarkSwitchPingLocalToLink). The cost is a microsecond or so of CPU
// each time a port goes idle.
const writerSpins = 8

// frameSlot holds one queued frame. A slot's buffer is allocated the first
// time the slot is used and kept, so a queue costs memory for as deep as it
// has ever been, and queueing a frame in a warm queue is a copy and never an
// allocation; a super-frame borrows a buffer from the switch's pool for as
// long as it is queued.
type frameSlot struct {
	n   int
	off ether.Offload // work the frame still needs; zero for a plain frame
	big *superBuf     // the frame's bytes when it is a super-frame, else nil
	buf *[MaxFrameSize]byte
}

func (s *frameSlot) frame() []byte {
	if s.big != nil {
		return s.big[:s.n]
	}
	return s.buf[:s.n]
}

// release returns the slot's super-frame buffer, if any, to the pool.
func (s *frameSlot) release() {
	if s.big != nil {
		superBufs.Put(s.big)
		s.big = nil
	}
}

// superBuf holds one super-frame.
type superBuf [MaxOffloadFrameSize]byte

// superBufs recycles super-frame buffers across the switch's queues, so that
// the forwarding path allocates nothing in the steady state and a queue
// costs memory for super-frames only while it holds them.
var superBufs = sync.Pool{New: func() any { return new(superBuf) }}

// maxQueuedSupers bounds the super-frames one queue holds pending (and so
// its memory: 16 × 64 KiB, as much data as 700 full frames). A push beyond
// it drops the oldest frames, as a full queue does.
const maxQueuedSupers = 64

// frameRing is a fixed ring of slots; its head and count say which are full,
// and supers how many of those hold super-frames.
type frameRing struct {
	slots               []frameSlot
	head, count, supers int
}

func newFrameRing(n int) frameRing { return frameRing{slots: make([]frameSlot, n)} }

// at returns the i-th queued slot, counting from the oldest.
func (r *frameRing) at(i int) *frameSlot {
	j := r.head + i
	if j >= len(r.slots) {
		j -= len(r.slots)
	}
	return &r.slots[j]
}

// frameQueue is the bounded transmit queue of one switch port: many
// producers (the readers of the other ports) and one consumer (the port's
// writer goroutine).
//
// It is double-buffered. Producers copy frames into the pending ring; the
// writer swaps the whole pending ring for its own empty one in O(1) and then
// writes the batch with no lock held, so a slow Write never holds a lock a
// producer needs and a busy writer takes the lock once per batch, not once
// per frame. When the pending ring is full a producer overwrites the oldest
// pending frame (drop oldest): fresh frames matter more on a LAN, and a
// frozen port thereby costs its producers one short critical section, never a
// wait. Frames the writer already took are not dropped, so a port holds at
// most twice its queue length.
type frameQueue struct {
	// wake carries at most one token: sent by whoever clears waiting.
	wake chan struct{}
	// dropped counts frames discarded to make room. It is incremented
	// under mu, so that once close returns no drop goes uncounted by
	// whoever reads it afterwards.
	dropped *atomic.Uint64

	// nonEmpty is pending.count > 0, set and cleared under mu, so that a
	// spinning writer can poll it without taking the lock. Only the
	// empty-to-non-empty push writes it, not every push.
	nonEmpty atomic.Bool

	mu sync.Mutex
	// Guarded by mu:
	pending frameRing
	waiting bool // the writer is, or is about to be, blocked on wake
	closed  bool
}

func newFrameQueue(n int, dropped *atomic.Uint64) *frameQueue {
	return &frameQueue{wake: make(chan struct{}, 1), dropped: dropped, pending: newFrameRing(n)}
}

// push copies frame, with the work o it still needs, into the queue,
// discarding (and counting) the oldest pending frames if the queue is full
// or holds maxQueuedSupers super-frames already. It does nothing once the
// queue is closed. frame must be at most MaxFrameSize long, or
// MaxOffloadFrameSize for an offloaded frame.
func (q *frameQueue) push(frame []byte, o ether.Offload) {
	super := len(frame) > MaxFrameSize
	var big *superBuf
	if super {
		big = superBufs.Get().(*superBuf) // outside the lock: it may allocate
	}
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		if big != nil {
			superBufs.Put(big)
		}
		return
	}
	r := &q.pending
	for r.count == len(r.slots) || (super && r.supers >= maxQueuedSupers) {
		old := r.at(0)
		if old.big != nil {
			r.supers--
			old.release()
		}
		r.head++
		if r.head == len(r.slots) {
			r.head = 0
		}
		r.count--
		q.dropped.Add(1)
	}
	s := r.at(r.count)
	s.off = o
	if super {
		s.big = big
		s.n = copy(big[:], frame)
		r.supers++
	} else {
		if s.buf == nil {
			s.buf = new([MaxFrameSize]byte)
		}
		s.n = copy(s.buf[:], frame)
	}
	r.count++
	if r.count == 1 {
		q.nonEmpty.Store(true)
	}
	wake := q.waiting
	q.waiting = false
	q.mu.Unlock()
	if wake {
		q.wake <- struct{}{} // cannot block: one token per waiting=true
	}
}

// take blocks until frames are pending, then swaps them into batch, whose
// previous contents must have been consumed (and their slots released). It returns false once the queue
// is closed; frames still pending then are abandoned.
func (q *frameQueue) take(batch *frameRing) bool {
	q.mu.Lock()
	for q.pending.count == 0 && !q.closed {
		q.mu.Unlock()
		for i := 0; i < writerSpins && !q.nonEmpty.Load(); i++ {
			runtime.Gosched()
		}
		q.mu.Lock()
		if q.pending.count > 0 || q.closed {
			break
		}
		q.waiting = true
		q.mu.Unlock()
		<-q.wake
		q.mu.Lock()
	}
	if q.closed {
		q.mu.Unlock()
		return false
	}
	*batch, q.pending = q.pending, frameRing{slots: batch.slots}
	q.nonEmpty.Store(false)
	q.mu.Unlock()
	return true
}

// close wakes the writer and makes push a no-op.
func (q *frameQueue) close() {
	q.mu.Lock()
	q.closed = true
	wake := q.waiting
	q.waiting = false
	q.mu.Unlock()
	if wake {
		q.wake <- struct{}{}
	}
}

// warm allocates the buffer of every slot of both rings, so that no later
// push allocates (for allocation tests).
func (q *frameQueue) warm(batch *frameRing) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for _, r := range []*frameRing{&q.pending, batch} {
		for i := range r.slots {
			if r.slots[i].buf == nil {
				r.slots[i].buf = new([MaxFrameSize]byte)
			}
		}
	}
}

// isClosed reports whether close was called.
func (q *frameQueue) isClosed() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.closed
}

// len returns the number of pending frames (not counting a batch being written).
func (q *frameQueue) len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.pending.count
}
