package porttest_test

import (
	"bytes"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/peerlan/peerlan/peer"
	"github.com/peerlan/peerlan/peer/porttest"
)

const waitTimeout = 10 * time.Second

// TestContract: every port unblocks a pending Read on Close, tolerates a
// second Close, and then fails Read and Write with net.ErrClosed.
func TestContract(t *testing.T) {
	a, _ := porttest.NewPipe()
	ports := map[string]peer.Port{
		"channel":   porttest.NewChannelPort(1),
		"pipe":      a,
		"freezable": porttest.NewFreezable(porttest.NewChannelPort(1)),
		"sink":      porttest.NewSink(),
	}
	for name, p := range ports {
		t.Run(name, func(t *testing.T) {
			done := make(chan error, 1)
			go func() {
				_, err := p.Read(make([]byte, peer.MaxFrameSize))
				done <- err
			}()
			select {
			case err := <-done:
				t.Fatalf("Read returned before Close: %v", err)
			case <-time.After(10 * time.Millisecond):
			}
			if err := p.Close(); err != nil {
				t.Fatal(err)
			}
			if err := p.Close(); err != nil {
				t.Fatalf("second Close: %v", err)
			}
			select {
			case err := <-done:
				if !errors.Is(err, net.ErrClosed) {
					t.Errorf("Read after Close = %v, want net.ErrClosed", err)
				}
			case <-time.After(waitTimeout):
				t.Fatal("Close did not unblock Read")
			}
			if _, err := p.Write(make([]byte, 20)); !errors.Is(err, net.ErrClosed) {
				t.Errorf("Write after Close = %v, want net.ErrClosed", err)
			}
		})
	}
}

func TestChannelPort(t *testing.T) {
	p := porttest.NewChannelPort(2)
	defer p.Close()
	in := []byte("frame-in")
	p.Inbound <- []byte("this frame is too long for the buffer")
	p.Inbound <- in
	buf := make([]byte, 10)
	n, err := p.Read(buf)
	if err != nil || !bytes.Equal(buf[:n], in) {
		t.Fatalf("Read = %q, %v; want %q (the long frame dropped, not split)", buf[:n], err, in)
	}
	out := []byte("frame-out")
	if _, err := p.Write(out); err != nil {
		t.Fatal(err)
	}
	out[0] = 'X' // Write must have copied
	if got := <-p.Outbound; string(got) != "frame-out" {
		t.Fatalf("Outbound got %q", got)
	}
	p.Write([]byte("1"))
	p.Write([]byte("2"))
	if _, err := p.Write([]byte("3")); !errors.Is(err, peer.ErrDropped) {
		t.Fatalf("Write to a full Outbound = %v, want ErrDropped", err)
	}
	if p.Dropped() != 2 {
		t.Errorf("Dropped = %d, want 2", p.Dropped())
	}
}

func TestPipe(t *testing.T) {
	a, b := porttest.NewPipe()
	defer b.Close()
	for _, f := range []string{"one", "two"} {
		if _, err := a.Write([]byte(f)); err != nil {
			t.Fatal(err)
		}
	}
	buf := make([]byte, 100)
	n, _ := b.Read(buf)
	if string(buf[:n]) != "one" {
		t.Fatalf("b read %q, want one", buf[:n])
	}
	if _, err := b.Write([]byte("back")); err != nil {
		t.Fatal(err)
	}
	if n, _ := a.Read(buf); string(buf[:n]) != "back" {
		t.Fatalf("a read %q, want back", buf[:n])
	}
	// Closing a: b still gets what a sent, then EOF; b's Writes fail.
	a.Close()
	if n, err := b.Read(buf); err != nil || string(buf[:n]) != "two" {
		t.Fatalf("b read %q, %v after a closed; want two", buf[:n], err)
	}
	if _, err := b.Read(buf); !errors.Is(err, io.EOF) {
		t.Fatalf("b read after drain = %v, want io.EOF", err)
	}
	if _, err := b.Write([]byte("x")); !errors.Is(err, io.ErrClosedPipe) {
		t.Fatalf("b write to closed peer = %v, want io.ErrClosedPipe", err)
	}
	// A full pipe drops rather than blocks.
	c, d := porttest.NewPipe()
	defer c.Close()
	defer d.Close()
	for range porttest.PipeDepth {
		if _, err := c.Write([]byte("f")); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := c.Write([]byte("f")); !errors.Is(err, peer.ErrDropped) || c.Dropped() != 1 {
		t.Fatalf("write to a full pipe = %v (dropped %d), want ErrDropped", err, c.Dropped())
	}
}

func TestFreezable(t *testing.T) {
	inner := porttest.NewChannelPort(4)
	f := porttest.NewFreezable(inner)
	defer f.Close()

	f.Freeze()
	done := make(chan error, 1)
	go func() {
		_, err := f.Write([]byte("held"))
		done <- err
	}()
	select {
	case <-f.Blocked():
	case <-time.After(waitTimeout):
		t.Fatal("Write did not block on the freeze")
	}
	if f.Stuck() != 1 || len(inner.Outbound) != 0 {
		t.Fatalf("stuck %d, delivered %d; want 1 and 0", f.Stuck(), len(inner.Outbound))
	}
	f.Unfreeze()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if got := <-inner.Outbound; string(got) != "held" {
		t.Fatalf("delivered %q", got)
	}
	// Reads pass through while frozen.
	f.Freeze()
	inner.Inbound <- []byte("in")
	buf := make([]byte, 10)
	if n, err := f.Read(buf); err != nil || string(buf[:n]) != "in" {
		t.Fatalf("Read while frozen = %q, %v", buf[:n], err)
	}
	// Close releases a frozen Write with net.ErrClosed.
	go func() {
		_, err := f.Write([]byte("never"))
		done <- err
	}()
	<-f.Blocked()
	f.Close()
	if err := <-done; !errors.Is(err, net.ErrClosed) {
		t.Fatalf("frozen Write after Close = %v, want net.ErrClosed", err)
	}
	if f.Stuck() != 0 {
		t.Errorf("stuck = %d after Close", f.Stuck())
	}
}

func TestSinkAllocatesNothing(t *testing.T) {
	s := porttest.NewSink()
	defer s.Close()
	frame := make([]byte, 1500)
	if n := testing.AllocsPerRun(100, func() { s.Write(frame) }); n != 0 {
		t.Errorf("Sink.Write allocates %v times", n)
	}
	if s.Frames() != 101 || s.Bytes() != 101*1500 {
		t.Errorf("sink counted %d frames, %d bytes", s.Frames(), s.Bytes())
	}
}
