package porttest

import (
	"encoding/binary"
	"net"
	"net/netip"

	"github.com/peerlan/peerlan/peer"
	"github.com/peerlan/peerlan/peer/ether"
)

var _ peer.OffloadPort = (*OffloadChannelPort)(nil)

// OffloadFrame is a frame with the offload work it still needs.
type OffloadFrame struct {
	Frame   []byte
	Offload ether.Offload
}

// OffloadChannelPort is ChannelPort for offloaded frames: a peer.OffloadPort
// whose ReadOffload returns what a test sends on Inbound and whose Write and
// WriteOffload copy onto Outbound. Plain Read and Write carry frames with no
// work, as the contract allows.
type OffloadChannelPort struct {
	Inbound  chan OffloadFrame
	Outbound chan OffloadFrame
	closer
}

// NewOffloadChannelPort returns a port whose channels buffer depth frames.
func NewOffloadChannelPort(depth int) *OffloadChannelPort {
	return &OffloadChannelPort{
		Inbound:  make(chan OffloadFrame, depth),
		Outbound: make(chan OffloadFrame, depth),
		closer:   newCloser(),
	}
}

// Offloads reports true.
func (p *OffloadChannelPort) Offloads() bool { return true }

// ReadOffload returns the next frame sent on Inbound and its work.
func (p *OffloadChannelPort) ReadOffload(b []byte) (int, ether.Offload, error) {
	for {
		if p.isClosed() {
			return 0, ether.Offload{}, net.ErrClosed
		}
		select {
		case f := <-p.Inbound:
			if len(f.Frame) > len(b) {
				continue
			}
			return copy(b, f.Frame), f.Offload, nil
		case <-p.closed:
			return 0, ether.Offload{}, net.ErrClosed
		}
	}
}

// Read is ReadOffload for a caller that takes no offloaded frames.
func (p *OffloadChannelPort) Read(b []byte) (int, error) {
	n, _, err := p.ReadOffload(b)
	return n, err
}

// WriteOffload copies b and o onto Outbound, or drops them if it is full.
func (p *OffloadChannelPort) WriteOffload(b []byte, o ether.Offload) (int, error) {
	if p.isClosed() {
		return 0, net.ErrClosed
	}
	select {
	case p.Outbound <- OffloadFrame{Frame: append([]byte(nil), b...), Offload: o}:
		return len(b), nil
	default:
		return 0, peer.ErrDropped
	}
}

// Write is WriteOffload with no work.
func (p *OffloadChannelPort) Write(b []byte) (int, error) { return p.WriteOffload(b, ether.Offload{}) }

// Close unblocks ReadOffload; later calls return net.ErrClosed.
func (p *OffloadChannelPort) Close() error {
	p.close()
	return nil
}

// TCPSuperFrame builds an IPv4 TCP super-frame from src (srcIP) to dst (dstIP) carrying
// payload in segments of mss bytes, as a TAP with TSO hands it over: one set
// of headers for the whole payload and the TCP checksum left partial.
func TCPSuperFrame(dst, src ether.MAC, srcIP, dstIP netip.Addr, payload []byte, mss int) ([]byte, ether.Offload) {
	const l3, l4, hdrLen = ether.HeaderLen, ether.HeaderLen + 20, ether.HeaderLen + 40
	f := make([]byte, hdrLen+len(payload))
	e := ether.Ethernet(f)
	e.SetDst(dst)
	e.SetSrc(src)
	e.SetType(ether.TypeIPv4)
	ip := f[l3:]
	ip[0], ip[6], ip[8], ip[9] = 0x45, 0x40, 64, ether.ProtoTCP
	binary.BigEndian.PutUint16(ip[2:], uint16(len(f)-l3))
	s4, d4 := srcIP.As4(), dstIP.As4()
	copy(ip[12:16], s4[:])
	copy(ip[16:20], d4[:])
	binary.BigEndian.PutUint16(ip[10:], ^ether.Checksum(ip[:20], 0))
	tcp := f[l4:]
	binary.BigEndian.PutUint16(tcp[0:], 40000)
	binary.BigEndian.PutUint16(tcp[2:], 5201)
	binary.BigEndian.PutUint32(tcp[4:], 1000)
	tcp[12], tcp[13] = 5<<4, 0x18 // ACK, PSH
	binary.BigEndian.PutUint16(tcp[14:], 1000)
	copy(f[hdrLen:], payload)
	// The partial checksum: the pseudo-header, as the kernel leaves it.
	var ph [12]byte
	copy(ph[:8], ip[12:20])
	ph[9] = ether.ProtoTCP
	binary.BigEndian.PutUint16(ph[10:], uint16(len(f)-l4))
	binary.BigEndian.PutUint16(tcp[16:], ether.Checksum(ph[:], 0))
	return f, ether.Offload{NeedsCsum: true, GSO: ether.GSOTCPv4, HdrLen: hdrLen, GSOSize: uint16(mss),
		CsumStart: l4, CsumOffset: 16}
}
