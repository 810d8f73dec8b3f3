package peer_test

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/peerlan/peerlan/peer"
	"github.com/peerlan/peerlan/peer/ether"
	"github.com/peerlan/peerlan/peer/porttest"
)

// offloadPeer is a Mesh whose guest is an OffloadChannelPort.
type offloadPeer struct {
	*peer.Mesh
	guest *porttest.OffloadChannelPort
}

// runOffloadPeer runs an offloadPeer on loopback until the test ends.
func runOffloadPeer(t *testing.T, url string, disable bool, who string) offloadPeer {
	t.Helper()
	return runOffloadPeerWith(t, url, disable, &peer.TransportConfig{Interfaces: []string{"lo"}}, who)
}

// runOffloadPeerWith is runOffloadPeer with transport settings.
func runOffloadPeerWith(t *testing.T, url string, disable bool, tc *peer.TransportConfig, who string) offloadPeer {
	t.Helper()
	guest := porttest.NewOffloadChannelPort(256)
	m, err := peer.NewMesh(peer.MeshConfig{Signal: url, Room: "lab", Local: guest, DisableOffload: disable,
		Transport: tc, Logger: testLogger(t, who), StatusEvery: -1})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	waitFor(t, who+" to join", func() bool { return m.Status().IP.IsValid() })
	return offloadPeer{m, guest}
}

// TestMeshOffloadLinks: two native peers that both take offloaded frames
// negotiate it and carry a TCP super-frame between their guests as it is; a
// peer that declined it gets the same super-frame as checksummed segments.
func TestMeshOffloadLinks(t *testing.T) {
	srv := startSignal(t, "")
	a := runOffloadPeer(t, srv.url(), false, "a")
	b := runOffloadPeer(t, srv.url(), false, "b")
	c := runOffloadPeer(t, srv.url(), true, "c")
	waitFor(t, "links to open", func() bool {
		for _, p := range []offloadPeer{a, b, c} {
			open := 0
			for _, l := range p.Status().Peers {
				if l.State == "open" {
					open++
				}
			}
			if open != 2 {
				return false
			}
		}
		return true
	})
	for _, l := range a.Status().Peers {
		wantOffload := l.IP == b.Status().IP
		if l.Offload != wantOffload {
			t.Errorf("A's link to %v: offload %v, want %v", l.IP, l.Offload, wantOffload)
		}
	}

	data := make([]byte, 30*1448)
	for i := range data {
		data[i] = byte(i * 3)
	}
	super, o := porttest.TCPSuperFrame(ether.Broadcast, mac(0xa), a.Status().IP, b.Status().IP, data, 1448)
	a.guest.Inbound <- porttest.OffloadFrame{Frame: super, Offload: o}

	waitSuperFrame(t, b, super, o)
	deadline := time.After(waitTimeout)
	var carried []byte
	for len(carried) < len(data) {
		select {
		case f := <-c.guest.Outbound:
			if !f.Offload.IsZero() || len(f.Frame) > peer.MaxFrameSize {
				t.Fatalf("C got %d bytes with work %+v, want plain segments", len(f.Frame), f.Offload)
			}
			e := ether.Ethernet(f.Frame)
			if e.Type() == ether.TypeIPv4 && e.Src() == mac(0xa) {
				carried = append(carried, f.Frame[ether.HeaderLen+40:]...)
			}
		case <-deadline:
			t.Fatalf("C got %d of %d bytes in segments", len(carried), len(data))
		}
	}
	if !bytes.Equal(carried, data) {
		t.Fatal("C's segments do not carry the payload")
	}
}

// waitSuperFrame waits until to's guest gets super, byte for byte, with its
// work o; other frames (ARP, segments, other super-frames flooded to every
// peer) are skipped, so a changed super-frame fails by never arriving.
func waitSuperFrame(t *testing.T, to offloadPeer, super []byte, o ether.Offload) {
	t.Helper()
	deadline := time.After(waitTimeout)
	for {
		select {
		case f := <-to.guest.Outbound:
			if !bytes.Equal(f.Frame, super) {
				continue
			}
			if f.Offload != o {
				t.Fatalf("%v got the super-frame with work %+v, sent %+v", to.Status().IP, f.Offload, o)
			}
			return
		case <-deadline:
			t.Fatalf("the super-frame never reached %v unchanged", to.Status().IP)
		}
	}
}
