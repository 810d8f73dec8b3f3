package ether

import (
	"encoding/binary"
	"errors"
)

// Offload says what work a frame still needs before it may go on a wire: a
// partial checksum to complete and, for a TCP super-frame, segmentation into
// segments of at most GSOSize payload bytes. It carries the fields of the
// Linux virtio-net header (struct virtio_net_hdr), which a TAP device opened
// with IFF_VNET_HDR puts in front of every frame and which peerlan's offload
// links put in front of every message.
//
// Wire layout (VirtioNetHdrLen bytes, little-endian; the legacy virtio
// header as Linux TAP devices speak it on little-endian hosts):
//
//	 0        1          2         4          6            8             10
//	+--------+----------+---------+----------+------------+-------------+
//	| flags  | gso_type | hdr_len | gso_size | csum_start | csum_offset |
//	+--------+----------+---------+----------+------------+-------------+
//
// The zero Offload is a complete frame: nothing left to do.
type Offload struct {
	// NeedsCsum: the 16-bit ones' complement sum of frame[CsumStart:] goes
	// into frame[CsumStart+CsumOffset:], whose current value is the partial
	// (pseudo-header) sum (VIRTIO_NET_HDR_F_NEEDS_CSUM).
	NeedsCsum bool
	// DataValid: the sender already verified the frame's checksums
	// (VIRTIO_NET_HDR_F_DATA_VALID); a hint the receiver may trust or not.
	DataValid bool
	// GSO is the segmentation the frame needs; GSONone for a plain frame.
	GSO GSOType
	// ECN: the super-frame's TCP segments use ECN (VIRTIO_NET_HDR_GSO_ECN).
	ECN bool
	// HdrLen is the sender's count of header bytes (Ethernet, IP, TCP) in
	// front of the payload. A hint: Segmenter derives the headers itself.
	HdrLen uint16
	// GSOSize is the payload size of each segment but the last.
	GSOSize uint16
	// CsumStart and CsumOffset place the checksum (see NeedsCsum).
	CsumStart, CsumOffset uint16
}

// GSOType is the kind of segmentation offload a super-frame needs.
type GSOType uint8

// GSO types peerlan carries (VIRTIO_NET_HDR_GSO_*). UDP fragmentation
// offload and UDP segmentation are not offered to the kernel, so never seen.
const (
	GSONone  GSOType = 0
	GSOTCPv4 GSOType = 1
	GSOTCPv6 GSOType = 4
)

// VirtioNetHdrLen is the length of struct virtio_net_hdr.
const VirtioNetHdrLen = 10

// MaxFrameLen is the largest Ethernet frame (without FCS) on a wire: a
// 1500-byte payload, a 14-byte header and one 802.1Q tag.
const MaxFrameLen = 1518

// MaxOffloadFrameSize is the largest frame an Offload may describe: an
// IP datagram of the largest total length (65535) in an Ethernet frame with
// one 802.1Q tag.
const MaxOffloadFrameSize = 65535 + 18

// MinGSOSize bounds the segment size of super-frames peerlan accepts, so
// that a super-frame cuts into at most a few hundred segments (TCP's own
// minimum MSS on Linux is 48 bytes, but no real path uses less than this).
const MinGSOSize = 256

const (
	flagNeedsCsum = 1
	flagDataValid = 2
	gsoECN        = 0x80
)

// ErrBadOffload reports an offload header that is malformed or does not fit
// its frame.
var ErrBadOffload = errors.New("ether: bad offload header")

// IsZero reports whether o asks for no work.
func (o Offload) IsZero() bool { return !o.NeedsCsum && o.GSO == GSONone }

// ParseOffload decodes a virtio-net header from the start of b. It checks
// only the header itself; Check relates it to a frame.
func ParseOffload(b []byte) (Offload, error) {
	if len(b) < VirtioNetHdrLen {
		return Offload{}, ErrShort
	}
	flags, gso := b[0], b[1]
	if flags&^(flagNeedsCsum|flagDataValid) != 0 {
		return Offload{}, ErrBadOffload
	}
	o := Offload{
		NeedsCsum:  flags&flagNeedsCsum != 0,
		DataValid:  flags&flagDataValid != 0,
		GSO:        GSOType(gso &^ gsoECN),
		ECN:        gso&gsoECN != 0,
		HdrLen:     binary.LittleEndian.Uint16(b[2:]),
		GSOSize:    binary.LittleEndian.Uint16(b[4:]),
		CsumStart:  binary.LittleEndian.Uint16(b[6:]),
		CsumOffset: binary.LittleEndian.Uint16(b[8:]),
	}
	switch o.GSO {
	case GSONone, GSOTCPv4, GSOTCPv6:
	default:
		return Offload{}, ErrBadOffload
	}
	return o, nil
}

// Put encodes o into b[:VirtioNetHdrLen].
func (o Offload) Put(b []byte) {
	_ = b[VirtioNetHdrLen-1]
	var flags byte
	if o.NeedsCsum {
		flags |= flagNeedsCsum
	}
	if o.DataValid {
		flags |= flagDataValid
	}
	gso := byte(o.GSO)
	if o.ECN {
		gso |= gsoECN
	}
	b[0], b[1] = flags, gso
	binary.LittleEndian.PutUint16(b[2:], o.HdrLen)
	binary.LittleEndian.PutUint16(b[4:], o.GSOSize)
	binary.LittleEndian.PutUint16(b[6:], o.CsumStart)
	binary.LittleEndian.PutUint16(b[8:], o.CsumOffset)
}

// Check reports whether o is work that can be done on frame: a checksum
// field inside the frame after the Ethernet header, and for GSO a TCP
// super-frame of the stated IP version whose segments fit MaxFrameLen. A
// frame from an untrusted sender must pass Check before anything relies on
// its offload header; it allocates nothing.
func (o Offload) Check(frame []byte) error {
	if len(frame) > MaxOffloadFrameSize || (o.GSO == GSONone && len(frame) > MaxFrameLen) {
		return ErrBadOffload
	}
	if o.NeedsCsum {
		at := int(o.CsumStart) + int(o.CsumOffset)
		if int(o.CsumStart) < HeaderLen || at+2 > len(frame) {
			return ErrBadOffload
		}
	}
	if o.GSO == GSONone {
		return nil
	}
	if !o.NeedsCsum || int(o.HdrLen) > len(frame) {
		return ErrBadOffload // TSO always leaves the TCP checksum to be done
	}
	lay, err := parseTCPSuper(frame, o)
	if err != nil {
		return err
	}
	// The checksum to finish is the TCP one: a kernel handed anything else
	// would checksum the wrong bytes of every segment.
	if int(o.CsumStart) != lay.l4 || o.CsumOffset != 16 {
		return ErrBadOffload
	}
	return nil
}

// tcpSuper is the layout of a TCP super-frame.
type tcpSuper struct {
	l3, l4, payload int // offsets of the IP header, TCP header, payload
	v6              bool
}

func parseTCPSuper(frame []byte, o Offload) (tcpSuper, error) {
	var s tcpSuper
	if len(frame) < HeaderLen {
		return s, ErrBadOffload
	}
	s.l3 = HeaderLen
	etype := binary.BigEndian.Uint16(frame[12:])
	if etype == TypeVLAN {
		if len(frame) < HeaderLen+4 {
			return s, ErrBadOffload
		}
		s.l3 += 4
		etype = binary.BigEndian.Uint16(frame[16:])
	}
	ip := frame[s.l3:]
	switch {
	case o.GSO == GSOTCPv4 && etype == TypeIPv4:
		if len(ip) < IPv4MinHeaderLen || ip[0]>>4 != 4 || ip[9] != ProtoTCP {
			return s, ErrBadOffload
		}
		hl := int(ip[0]&0x0f) * 4
		if hl < IPv4MinHeaderLen || len(ip) < hl || IPv4(ip).IsFragment() {
			return s, ErrBadOffload
		}
		s.l4 = s.l3 + hl
	case o.GSO == GSOTCPv6 && etype == TypeIPv6:
		// Extension headers are not segmented: Linux's TSO output
		// carries TCP right after the fixed header.
		if len(ip) < ipv6HeaderLen || ip[0]>>4 != 6 || ip[6] != ProtoTCP {
			return s, ErrBadOffload
		}
		s.l4 = s.l3 + ipv6HeaderLen
		s.v6 = true
	default:
		return s, ErrBadOffload
	}
	if len(frame) < s.l4+tcpMinHeaderLen {
		return s, ErrBadOffload
	}
	thl := int(frame[s.l4+12]>>4) * 4
	s.payload = s.l4 + thl
	if thl < tcpMinHeaderLen || s.payload >= len(frame) {
		return s, ErrBadOffload
	}
	if o.GSOSize < MinGSOSize || s.payload+int(o.GSOSize) > MaxFrameLen {
		return s, ErrBadOffload
	}
	return s, nil
}

// Header lengths the offload code needs beyond the IPv4 view.
const (
	ipv6HeaderLen   = 40
	tcpMinHeaderLen = 20
)

// FinishChecksum completes a NeedsCsum frame in place (see Offload). The
// caller has checked o against frame.
func FinishChecksum(frame []byte, o Offload) {
	at := int(o.CsumStart) + int(o.CsumOffset)
	c := ^Checksum(frame[o.CsumStart:], 0)
	if c == 0 {
		c = 0xffff // the same value in ones' complement, and UDP's "no checksum" is 0
	}
	binary.BigEndian.PutUint16(frame[at:], c)
}

// Segmenter cuts a TCP super-frame into the frames a wire carries, as the
// kernel's GSO would: each segment gets the headers with its own lengths,
// IPv4 identification, sequence number and checksums; FIN and PSH stay on
// the last segment and CWR on the first. It allocates nothing.
//
//	var s ether.Segmenter
//	if err := s.Reset(frame, o); err != nil { ... }
//	for n := s.Next(buf); n > 0; n = s.Next(buf) { send(buf[:n]) }
type Segmenter struct {
	frame []byte
	o     Offload
	lay   tcpSuper
	off   int // payload bytes already emitted
	i     int // segments already emitted
}

// Reset starts cutting frame as o describes; o.GSO must not be GSONone. It
// checks o (see Check) and reports ErrBadOffload when it cannot be done.
func (s *Segmenter) Reset(frame []byte, o Offload) error {
	if o.GSO == GSONone {
		return ErrBadOffload
	}
	if err := o.Check(frame); err != nil {
		return err
	}
	lay, err := parseTCPSuper(frame, o)
	if err != nil {
		return err
	}
	*s = Segmenter{frame: frame, o: o, lay: lay}
	return nil
}

// Next writes the next segment into dst, which must hold MaxFrameLen
// bytes, and returns its length, or 0 when every segment has been written.
func (s *Segmenter) Next(dst []byte) int {
	payload := s.frame[s.lay.payload:]
	if s.off >= len(payload) {
		return 0
	}
	seg := payload[s.off:min(s.off+int(s.o.GSOSize), len(payload))]
	last := s.off+len(seg) == len(payload)
	hdr := s.frame[:s.lay.payload]
	n := copy(dst, hdr)
	n += copy(dst[n:], seg)
	out := dst[:n]

	ip, tcp := out[s.lay.l3:], out[s.lay.l4:]
	tcpLen := n - s.lay.l4
	if s.lay.v6 {
		binary.BigEndian.PutUint16(ip[4:], uint16(n-s.lay.l3-ipv6HeaderLen))
	} else {
		binary.BigEndian.PutUint16(ip[2:], uint16(n-s.lay.l3))
		binary.BigEndian.PutUint16(ip[4:], binary.BigEndian.Uint16(hdr[s.lay.l3+4:])+uint16(s.i))
		ip[10], ip[11] = 0, 0
		hl := int(ip[0]&0x0f) * 4
		binary.BigEndian.PutUint16(ip[10:], ^Checksum(ip[:hl], 0))
	}
	seq := binary.BigEndian.Uint32(hdr[s.lay.l4+4:]) + uint32(s.off)
	binary.BigEndian.PutUint32(tcp[4:], seq)
	const fin, psh, cwr = 0x01, 0x08, 0x80
	if !last {
		tcp[13] &^= fin | psh
	}
	if s.i > 0 {
		tcp[13] &^= cwr
	}
	tcp[16], tcp[17] = 0, 0
	binary.BigEndian.PutUint16(tcp[16:], ^fold(sum(tcp, tcpPseudoSum(ip, s.lay.v6, tcpLen))))

	s.off += len(seg)
	s.i++
	return n
}

// tcpPseudoSum is the TCP pseudo-header's contribution to the checksum.
func tcpPseudoSum(ip []byte, v6 bool, tcpLen int) uint64 {
	if v6 {
		return sum(ip[8:40], uint64(ProtoTCP)+uint64(tcpLen))
	}
	return sum(ip[12:20], uint64(ProtoTCP)+uint64(tcpLen))
}
