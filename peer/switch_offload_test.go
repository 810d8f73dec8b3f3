package peer_test

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"testing"
	"time"

	"github.com/peerlan/peerlan/peer"
	"github.com/peerlan/peerlan/peer/ether"
	"github.com/peerlan/peerlan/peer/porttest"
)

// Addresses of the switch tests' super-frames (no guard checks them).
var (
	testSrcIP = netip.MustParseAddr("192.0.2.1")
	testDstIP = netip.MustParseAddr("192.0.2.2")
)

func addOffloadPort(t *testing.T, sw *peer.Switch, name string, kind peer.PortKind) *porttest.OffloadChannelPort {
	t.Helper()
	p := porttest.NewOffloadChannelPort(1024)
	if err := sw.AddPort(name, kind, p); err != nil {
		t.Fatalf("AddPort(%q): %v", name, err)
	}
	return p
}

func recvOffload(t *testing.T, p *porttest.OffloadChannelPort, what string) porttest.OffloadFrame {
	t.Helper()
	select {
	case f := <-p.Outbound:
		return f
	case <-time.After(waitTimeout):
		t.Fatalf("%s: no frame within %v", what, waitTimeout)
		return porttest.OffloadFrame{}
	}
}

// TestSwitchOffloadedFrames: a TCP super-frame from an offload port goes as
// it is to another offload port and is cut into checksummed segments for a
// plain port; a frame with only a checksum left gets it finished for the
// plain port; a super-frame whose header does not fit it is dropped.
func TestSwitchOffloadedFrames(t *testing.T) {
	sw := newSwitch(t, peer.SwitchConfig{})
	tap := addOffloadPort(t, sw, "local", peer.PortKindLocal)
	fast := addOffloadPort(t, sw, "peer:fast", peer.PortKindLink)
	plain := addPort(t, sw, "peer:browser", peer.PortKindLink)

	data := make([]byte, 20*1448+7)
	for i := range data {
		data[i] = byte(i)
	}
	super, o := porttest.TCPSuperFrame(ether.Broadcast, mac(1), testSrcIP, testDstIP, data, 1448)
	tap.Inbound <- porttest.OffloadFrame{Frame: super, Offload: o}

	got := recvOffload(t, fast, "offload link")
	if !bytes.Equal(got.Frame, super) || got.Offload != o {
		t.Fatalf("offload link got %d bytes with %+v, want the super-frame as it is", len(got.Frame), got.Offload)
	}
	var carried []byte
	for i := range 21 {
		seg := recv(t, plain, "plain link")
		if len(seg) > peer.MaxFrameSize {
			t.Fatalf("segment %d: %d bytes", i, len(seg))
		}
		ip := seg[ether.HeaderLen:]
		tcp := ip[20:]
		var ph [12]byte
		copy(ph[:8], ip[12:20])
		ph[9] = ether.ProtoTCP
		binary.BigEndian.PutUint16(ph[10:], uint16(len(tcp)))
		if ether.Checksum(tcp, ether.Checksum(ph[:], 0)) != 0xffff || ether.Checksum(ip[:20], 0) != 0xffff {
			t.Fatalf("segment %d: bad checksum", i)
		}
		carried = append(carried, tcp[20:]...)
	}
	if !bytes.Equal(carried, data) {
		t.Fatalf("segments carry %d bytes, not the payload", len(carried))
	}
	if ps := portStats(t, sw, "peer:browser"); ps.TxFrames != 21 {
		t.Errorf("plain link: %d frames sent, want 21 segments", ps.TxFrames)
	}

	// Only a checksum to finish: the first segment's headers with its
	// checksum reset to the partial (pseudo-header) sum.
	small, so := porttest.TCPSuperFrame(ether.Broadcast, mac(1), testSrcIP, testDstIP, data[:100], 1448)
	so.GSO, so.GSOSize = ether.GSONone, 0
	tap.Inbound <- porttest.OffloadFrame{Frame: small, Offload: so}
	if f := recvOffload(t, fast, "offload link"); f.Offload != so {
		t.Fatalf("offload link got work %+v, want %+v", f.Offload, so)
	}
	fin := recv(t, plain, "plain link, checksum")
	tcp := fin[ether.HeaderLen+20:]
	var ph [12]byte
	copy(ph[:8], fin[ether.HeaderLen+12:])
	ph[9] = ether.ProtoTCP
	binary.BigEndian.PutUint16(ph[10:], uint16(len(tcp)))
	if ether.Checksum(tcp, ether.Checksum(ph[:], 0)) != 0xffff {
		t.Fatal("plain link got an unfinished checksum")
	}

	// A header that lies about the frame is dropped on ingress.
	bad := o
	bad.CsumOffset = uint16(len(super))
	fast.Inbound <- porttest.OffloadFrame{Frame: super, Offload: bad}
	marker := frame(ether.Broadcast, mac(2), "marker")
	fast.Inbound <- porttest.OffloadFrame{Frame: marker}
	if f := recvOffload(t, tap, "local after a bad offload"); !bytes.Equal(f.Frame, marker) {
		t.Fatalf("local got %d bytes before the marker", len(f.Frame))
	}
	if d := portStats(t, sw, "peer:fast").Drops[peer.DropBadOffload]; d != 1 {
		t.Errorf("bad-offload drops = %d, want 1", d)
	}
	// A plain port may not send a frame over MaxFrameSize at all.
	plain.Inbound <- super
	plain.Inbound <- frame(ether.Broadcast, mac(3), "marker2")
	if f := recvOffload(t, tap, "local after an oversize frame"); payload(f.Frame) != "marker2" {
		t.Fatalf("local got %d bytes before the marker", len(f.Frame))
	}
	if d := portStats(t, sw, "peer:browser").Drops[peer.DropOversize]; d != 1 {
		t.Errorf("oversize drops = %d, want 1", d)
	}
}
