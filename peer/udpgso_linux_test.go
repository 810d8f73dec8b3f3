package peer

import (
	"bytes"
	"net"
	"testing"
	"time"
)

func gsoPair(t *testing.T) (*gsoConn, *gsoConn) {
	t.Helper()
	listen := func() *gsoConn {
		c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		g := newGSOConn(c)
		t.Cleanup(func() { g.Close() })
		return g
	}
	return listen(), listen()
}

// TestGSOConnCarriesRuns: a run of full-size datagrams ended by a short one
// arrives as the same datagrams in order, read one per call, and the
// receiver got them coalesced (so the sender sent them segmented); small
// datagrams and a lone full-size one (sent by the flusher) arrive too.
func TestGSOConnCarriesRuns(t *testing.T) {
	a, b := gsoPair(t)
	dst := b.LocalAddr().(*net.UDPAddr)
	var sent [][]byte
	for i := range 40 {
		d := bytes.Repeat([]byte{byte(i)}, 1228)
		sent = append(sent, d)
	}
	sent = append(sent, bytes.Repeat([]byte{0xee}, 300))  // the tail
	sent = append(sent, []byte("small, at once"))         // a SACK-sized one
	sent = append(sent, bytes.Repeat([]byte{0xaa}, 1228)) // alone: the flusher sends it
	for _, d := range sent {
		if n, err := a.WriteTo(d, dst); err != nil || n != len(d) {
			t.Fatalf("WriteTo: %d, %v", n, err)
		}
	}
	b.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 2048)
	coalesced := false
	for i, want := range sent {
		n, from, err := b.ReadFrom(buf)
		if err != nil {
			t.Fatalf("datagram %d: %v", i, err)
		}
		if !bytes.Equal(buf[:n], want) {
			t.Fatalf("datagram %d: %d bytes starting %x, want %d starting %x", i, n, buf[:1], len(want), want[:1])
		}
		if from.String() != a.LocalAddr().String() {
			t.Fatalf("datagram %d from %v", i, from)
		}
		if b.rmu.seg > 0 && b.rmu.seg < b.rmu.end {
			coalesced = true
		}
	}
	if b.rmu.groOn && !coalesced {
		t.Error("receive coalescing is on, yet every read was one datagram: the run was not segmented")
	}
	if a.noGSO.Load() {
		t.Log("the kernel refused UDP_SEGMENT; datagrams went one by one")
	}
}

// TestGSOConnOrder: datagrams to two destinations interleaved keep their
// order per destination.
func TestGSOConnOrder(t *testing.T) {
	a, b := gsoPair(t)
	_, c := gsoPair(t)
	for i := range 10 {
		for _, to := range []*gsoConn{b, c} {
			a.WriteTo(bytes.Repeat([]byte{byte(i)}, 1228), to.LocalAddr())
		}
	}
	a.WriteTo([]byte("end"), b.LocalAddr())
	a.WriteTo([]byte("end"), c.LocalAddr())
	buf := make([]byte, 2048)
	for _, r := range []*gsoConn{b, c} {
		r.SetReadDeadline(time.Now().Add(5 * time.Second))
		for i := range 10 {
			n, _, err := r.ReadFrom(buf)
			if err != nil || n != 1228 || buf[0] != byte(i) {
				t.Fatalf("datagram %d: %d bytes, first %d, %v", i, n, buf[0], err)
			}
		}
		if n, _, err := r.ReadFrom(buf); err != nil || string(buf[:n]) != "end" {
			t.Fatalf("last datagram %q, %v", buf[:n], err)
		}
	}
}

// TestGSOConnAboveMTU: datagrams larger than the path's MTU (the larger
// SCTP packets of package nativertc on an Ethernet path) cannot go out as
// a segmented run, which the kernel refuses with EMSGSIZE; each must still
// arrive, sent alone and fragmented by the kernel. Runs in a network
// namespace of its own whose loopback has an Ethernet MTU.
func TestGSOConnAboveMTU(t *testing.T) {
	inSmallMTUNamespace(t, 1500, func() {
		a, b := gsoPair(t)
		dst := b.LocalAddr().(*net.UDPAddr)
		var sent [][]byte
		for i := range 6 {
			sent = append(sent, bytes.Repeat([]byte{byte(i)}, 4000))
		}
		sent = append(sent, bytes.Repeat([]byte{0xee}, 1000)) // ends the run
		sent = append(sent, bytes.Repeat([]byte{0xaa}, 4000)) // known too large: sent at once
		for _, d := range sent {
			if n, err := a.WriteTo(d, dst); err != nil || n != len(d) {
				t.Errorf("WriteTo: %d, %v", n, err)
				return
			}
		}
		b.SetReadDeadline(time.Now().Add(5 * time.Second))
		buf := make([]byte, 8192)
		for i, want := range sent {
			n, _, err := b.ReadFrom(buf)
			if err != nil {
				t.Errorf("datagram %d of %d: %v", i, len(sent), err)
				return
			}
			if !bytes.Equal(buf[:n], want) {
				t.Errorf("datagram %d: %d bytes starting %x, want %d starting %x", i, n, buf[:1], len(want), want[:1])
				return
			}
		}
		if a.noGSO.Load() {
			t.Error("segmented sends turned off for good; only runs above the MTU should be")
		}
	})
}
