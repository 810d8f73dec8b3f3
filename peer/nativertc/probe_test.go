//go:build !js

package nativertc

import (
	"context"
	"net"
	"os"
	"testing"
	"time"
)

// dgramEnd is one end of an in-memory datagram link that drops datagrams
// over maxSend bytes in the direction it sends, as a path that loses IP
// fragments would.
type dgramEnd struct {
	net.Conn // nil: only the methods below are used
	in       chan []byte
	out      chan []byte
	maxSend  int
	deadline chan struct{}
}

func dgramPair(maxAB, maxBA int) (*dgramEnd, *dgramEnd) {
	ab, ba := make(chan []byte, 64), make(chan []byte, 64)
	return &dgramEnd{in: ba, out: ab, maxSend: maxAB, deadline: make(chan struct{})},
		&dgramEnd{in: ab, out: ba, maxSend: maxBA, deadline: make(chan struct{})}
}

func (e *dgramEnd) Write(b []byte) (int, error) {
	if len(b) <= e.maxSend {
		e.out <- append([]byte(nil), b...)
	}
	return len(b), nil
}

func (e *dgramEnd) Read(b []byte) (int, error) {
	select {
	case d := <-e.in:
		return copy(b, d), nil
	case <-e.deadline:
		return 0, os.ErrDeadlineExceeded
	}
}

// SetReadDeadline supports what endProbe does: now ends a read, zero clears.
func (e *dgramEnd) SetReadDeadline(t time.Time) error {
	if t.IsZero() {
		e.deadline = make(chan struct{})
	} else {
		close(e.deadline)
	}
	return nil
}

func TestProbe(t *testing.T) {
	for _, tc := range []struct {
		name         string
		maxAB, maxBA int
		wantA, wantB bool
	}{
		{"both ways", 9000, 9000, true, true},
		{"only a to b", 9000, 1500, true, false},
		{"neither", 1500, 1500, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ea, eb := dgramPair(tc.maxAB, tc.maxBA)
			a, b := newProbeConn(ea), newProbeConn(eb)
			results := make(chan bool)
			go func() { results <- b.probe(context.Background(), 8000, 60*time.Millisecond) }()
			gotA := a.probe(context.Background(), 8000, 60*time.Millisecond)
			gotB := <-results
			if gotA != tc.wantA || gotB != tc.wantB {
				t.Errorf("a's probe %v, b's %v; want %v, %v", gotA, gotB, tc.wantA, tc.wantB)
			}
			a.endProbe()
			b.endProbe()
		})
	}
}

// After the probe, the records that arrived meanwhile come first, probes
// are still answered, and neither they nor acknowledgements reach SCTP.
func TestProbeConnRead(t *testing.T) {
	ea, eb := dgramPair(9000, 9000)
	a := newProbeConn(ea)
	eb.out <- []byte("sctp-1")
	acked := make(chan bool)
	go func() { acked <- a.probe(context.Background(), 4000, time.Second) }()
	// b's side: a packet of its own, then the answer to a's probe.
	buf := make([]byte, 8192)
	n, _ := eb.Read(buf)
	if !isProbe(buf[:n]) || buf[4] != probeRequest || n != 4000 {
		t.Fatalf("first datagram from a: %d bytes, not a 4000-byte probe", n)
	}
	eb.out <- []byte("sctp-2")
	var ack [probeHeaderLen]byte
	putProbeHeader(ack[:], probeAck, 4000)
	eb.out <- ack[:]
	if !<-acked {
		t.Fatal("probe not acknowledged")
	}
	a.endProbe()

	probe := make([]byte, 3000)
	putProbeHeader(probe, probeRequest, 3000)
	eb.out <- probe
	eb.out <- []byte("sctp-3")
	for _, want := range []string{"sctp-1", "sctp-2", "sctp-3"} {
		n, err := a.Read(buf)
		if err != nil || string(buf[:n]) != want {
			t.Fatalf("read %q, %v; want %q", buf[:n], err, want)
		}
	}
	n, _ = eb.Read(buf)
	if !isProbe(buf[:n]) || buf[4] != probeAck || n != probeHeaderLen {
		t.Fatalf("b's probe got %d bytes back, not an acknowledgement", n)
	}
}
