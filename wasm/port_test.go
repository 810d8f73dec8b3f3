package main

import (
	"bytes"
	"errors"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/peerlan/peerlan/peer"
)

func fillFrom(src []byte) func([]byte) {
	return func(dst []byte) { copy(dst, src) }
}

// TestGuestPortCopiesOnSend: the emulator reuses its buffer after send
// returns, so what the switch reads must be the bytes at the time of Send.
func TestGuestPortCopiesOnSend(t *testing.T) {
	p := newGuestPort(func([]byte) error { return nil })
	defer p.Close()
	emu := []byte("frame-one-xxxxxxxx")
	if err := p.Send(len(emu), fillFrom(emu)); err != nil {
		t.Fatal(err)
	}
	copy(emu, "FRAME-TWO-YYYYYYYY") // the emulator reuses its buffer
	if err := p.Send(len(emu), fillFrom(emu)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, peer.MaxFrameSize)
	for _, want := range []string{"frame-one-xxxxxxxx", "FRAME-TWO-YYYYYYYY"} {
		n, err := p.Read(buf)
		if err != nil {
			t.Fatal(err)
		}
		if got := string(buf[:n]); got != want {
			t.Errorf("read %q, want %q", got, want)
		}
	}
	if st := p.stats(); st.FromGuest != 2 {
		t.Errorf("from_guest %d, want 2", st.FromGuest)
	}
}

// TestGuestPortDropsWhenFull: Send never blocks; beyond the queue it drops
// and counts, and the queued frames are still delivered in order.
func TestGuestPortDropsWhenFull(t *testing.T) {
	p := newGuestPort(func([]byte) error { return nil })
	defer p.Close()
	const extra = 10
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range guestQueueLen + extra {
			f := []byte{byte(i), byte(i >> 8), 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}
			err := p.Send(len(f), fillFrom(f))
			if i < guestQueueLen && err != nil {
				t.Errorf("send %d: %v", i, err)
			}
			if i >= guestQueueLen && !errors.Is(err, peer.ErrDropped) {
				t.Errorf("send %d into a full queue: %v, want peer.ErrDropped", i, err)
			}
		}
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Send blocked on a full queue")
	}
	if st := p.stats(); st.QueueFull != extra || st.FromGuest != guestQueueLen {
		t.Errorf("stats %+v, want %d queued and %d dropped", st, guestQueueLen, extra)
	}
	buf := make([]byte, peer.MaxFrameSize)
	for i := range guestQueueLen {
		n, err := p.Read(buf)
		if err != nil || n != 14 || int(buf[0])|int(buf[1])<<8 != i {
			t.Fatalf("read %d: n=%d err=%v first bytes %v", i, n, err, buf[:2])
		}
	}
}

func TestGuestPortFrameSizes(t *testing.T) {
	p := newGuestPort(func([]byte) error { return nil })
	defer p.Close()
	called := false
	for _, n := range []int{0, -1, peer.MaxFrameSize + 1} {
		err := p.Send(n, func([]byte) { called = true })
		if !errors.Is(err, errFrameSize) {
			t.Errorf("send of %d bytes: %v, want errFrameSize", n, err)
		}
	}
	if called {
		t.Error("fill was called for a frame that was refused")
	}
	maxFrame := bytes.Repeat([]byte{0xab}, peer.MaxFrameSize)
	if err := p.Send(len(maxFrame), fillFrom(maxFrame)); err != nil {
		t.Fatalf("a MaxFrameSize frame: %v", err)
	}
	// A reader with too small a buffer loses the frame (counted), never a
	// part of it.
	if err := p.Send(20, fillFrom(make([]byte, 20))); err != nil {
		t.Fatal(err)
	}
	small := make([]byte, 100)
	n, err := p.Read(small)
	if err != nil || n != 20 {
		t.Fatalf("read after an oversize frame: n=%d err=%v, want the 20-byte frame", n, err)
	}
	if st := p.stats(); st.BadSize != 4 {
		t.Errorf("dropped_bad_size %d, want 4", st.BadSize)
	}
}

func TestGuestPortWriteDelivers(t *testing.T) {
	var got [][]byte
	fail := false
	p := newGuestPort(func(b []byte) error {
		if fail {
			return errNoReceiver
		}
		got = append(got, append([]byte(nil), b...))
		return nil
	})
	defer p.Close()
	if n, err := p.Write([]byte("to-the-guest")); err != nil || n != 12 {
		t.Fatalf("write: n=%d err=%v", n, err)
	}
	fail = true
	if _, err := p.Write([]byte("nobody-listens")); !errors.Is(err, peer.ErrDropped) {
		t.Errorf("write without a receiver: %v, want peer.ErrDropped (not fatal to the port)", err)
	}
	if len(got) != 1 || string(got[0]) != "to-the-guest" {
		t.Errorf("delivered %q", got)
	}
	if st := p.stats(); st.ToGuest != 1 || st.Undelivered != 1 {
		t.Errorf("stats %+v, want 1 delivered and 1 undelivered", st)
	}
}

// TestGuestPortClose: Close unblocks a pending Read, and later calls return
// net.ErrClosed, as peer.Port's contract asks.
func TestGuestPortClose(t *testing.T) {
	p := newGuestPort(func([]byte) error { return nil })
	var wg sync.WaitGroup
	wg.Add(1)
	var readErr error
	go func() {
		defer wg.Done()
		_, readErr = p.Read(make([]byte, peer.MaxFrameSize))
	}()
	time.Sleep(20 * time.Millisecond)
	p.Close()
	p.Close() // more than once is fine
	wg.Wait()
	if !errors.Is(readErr, net.ErrClosed) {
		t.Errorf("pending Read after Close: %v, want net.ErrClosed", readErr)
	}
	f := make([]byte, 14)
	if err := p.Send(len(f), fillFrom(f)); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Send after Close: %v", err)
	}
	if _, err := p.Write(f); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Write after Close: %v", err)
	}
	if _, err := p.Read(f); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Read after Close: %v", err)
	}
}

// TestGuestPortConcurrent runs Send from several goroutines against one
// reader (go test -race): every frame is either read whole or counted.
func TestGuestPortConcurrent(t *testing.T) {
	p := newGuestPort(func([]byte) error { return nil })
	const senders, each = 4, 2000
	var wg sync.WaitGroup
	for s := range senders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			f := bytes.Repeat([]byte{byte(s)}, 60)
			for range each {
				_ = p.Send(len(f), fillFrom(f))
			}
		}()
	}
	read := make(chan int)
	go func() {
		buf := make([]byte, peer.MaxFrameSize)
		n := 0
		for {
			m, err := p.Read(buf)
			if err != nil {
				read <- n
				return
			}
			if m != 60 || !bytes.Equal(buf[:m], bytes.Repeat(buf[:1], 60)) {
				t.Errorf("torn frame: %v", buf[:m])
			}
			n++
		}
	}()
	wg.Wait()
	for len(p.queue) > 0 {
		time.Sleep(time.Millisecond)
	}
	p.Close()
	n := <-read
	st := p.stats()
	if uint64(n) != st.FromGuest || st.FromGuest+st.QueueFull != senders*each {
		t.Errorf("read %d frames, stats %+v: want read == from_guest and from_guest+dropped == %d", n, st, senders*each)
	}
}

// TestGuestPortSendBatch: frames laid end to end are queued one by one; bad
// lengths are counted, and one past the data ends the batch.
func TestGuestPortSendBatch(t *testing.T) {
	p := newGuestPort(func([]byte) error { return nil })
	defer p.Close()
	data := []byte("aaaaaaaaaaaaaabbbbbbbbbbbbbbbbcc")
	if n := p.SendBatch([]uint16{14, 16}, data); n != 2 {
		t.Fatalf("queued %d, want 2", n)
	}
	if n := p.SendBatch([]uint16{0, 2}, data[30:]); n != 1 {
		t.Fatalf("queued %d of an empty frame and a good one, want 1", n)
	}
	if n := p.SendBatch([]uint16{2, 3}, data[30:]); n != 1 {
		t.Fatalf("queued %d with a length past the data, want 1", n)
	}
	buf := make([]byte, peer.MaxFrameSize)
	for _, want := range []string{"aaaaaaaaaaaaaa", "bbbbbbbbbbbbbbbb", "cc", "cc"} {
		n, err := p.Read(buf)
		if err != nil {
			t.Fatal(err)
		}
		if got := string(buf[:n]); got != want {
			t.Errorf("read %q, want %q", got, want)
		}
	}
	if st := p.stats(); st.FromGuest != 4 || st.BadSize != 2 {
		t.Errorf("stats %+v, want 4 queued and 2 bad sizes", st)
	}
}
