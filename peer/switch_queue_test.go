package peer

import (
	"sync/atomic"
	"testing"

	"github.com/peerlan/peerlan/peer/ether"
)

// TestFrameQueueBoundsSuperFrames: a queue nobody drains keeps at most
// maxQueuedSupers super-frames, dropping (and counting) the oldest frames
// for newer ones, and a taken batch hands each super-frame back whole.
func TestFrameQueueBoundsSuperFrames(t *testing.T) {
	var dropped atomic.Uint64
	q := newFrameQueue(64, &dropped)
	super := make([]byte, 30000)
	o := ether.Offload{NeedsCsum: true, GSO: ether.GSOTCPv4, GSOSize: 1448, CsumStart: 34, CsumOffset: 16}
	small := make([]byte, 100)
	q.push(small, ether.Offload{})
	for i := range maxQueuedSupers + 4 {
		super[0] = byte(i)
		q.push(super, o)
	}
	if got := q.pending.supers; got != maxQueuedSupers {
		t.Fatalf("%d super-frames pending, want %d", got, maxQueuedSupers)
	}
	// The small frame went first (oldest), then the four oldest supers.
	if d := dropped.Load(); d != 5 {
		t.Fatalf("dropped %d, want 5", d)
	}
	batch := newFrameRing(64)
	if !q.take(&batch) {
		t.Fatal("take failed")
	}
	if batch.count != maxQueuedSupers {
		t.Fatalf("batch of %d, want %d", batch.count, maxQueuedSupers)
	}
	for i := range batch.count {
		s := batch.at(i)
		f := s.frame()
		if len(f) != len(super) || f[0] != byte(i+4) || s.off != o {
			t.Fatalf("frame %d: %d bytes, first byte %d, work %+v", i, len(f), f[0], s.off)
		}
		s.release()
		if s.big != nil {
			t.Fatal("release kept the buffer")
		}
	}
}
