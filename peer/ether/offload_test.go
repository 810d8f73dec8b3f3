package ether

import (
	"bytes"
	"encoding/binary"
	"testing"
)

// superFrame builds a TCP super-frame as a TSO-capable TAP hands it over:
// headers for the whole payload, the TCP checksum field holding the
// pseudo-header sum (partial), flags as given.
func superFrame(tb testing.TB, v6 bool, payload []byte, flags byte) ([]byte, Offload) {
	tb.Helper()
	eth := make([]byte, HeaderLen)
	copy(eth[0:6], guestMAC[:])
	copy(eth[6:12], serviceMAC[:])
	var ip []byte
	gso := GSOTCPv4
	if v6 {
		gso = GSOTCPv6
		binary.BigEndian.PutUint16(eth[12:], TypeIPv6)
		ip = make([]byte, ipv6HeaderLen)
		ip[0] = 0x60
		binary.BigEndian.PutUint16(ip[4:], uint16(32+len(payload)))
		ip[6], ip[7] = ProtoTCP, 64
		copy(ip[8:24], []byte{0x20, 0x01, 0x0d, 0xb8, 15: 1})
		copy(ip[24:40], []byte{0x20, 0x01, 0x0d, 0xb8, 15: 2})
	} else {
		binary.BigEndian.PutUint16(eth[12:], TypeIPv4)
		ip = make([]byte, IPv4MinHeaderLen)
		ip[0] = 0x45
		binary.BigEndian.PutUint16(ip[2:], uint16(20+32+len(payload)))
		binary.BigEndian.PutUint16(ip[4:], 0xfffe) // the ID wraps during segmentation
		ip[6] = 0x40                               // DF
		ip[8], ip[9] = 64, ProtoTCP
		copy(ip[12:16], []byte{192, 0, 2, 1})
		copy(ip[16:20], []byte{192, 0, 2, 2})
	}
	tcp := make([]byte, 32) // with 12 bytes of options (timestamps)
	binary.BigEndian.PutUint16(tcp[0:], 40000)
	binary.BigEndian.PutUint16(tcp[2:], 5201)
	binary.BigEndian.PutUint32(tcp[4:], 0xfffff000) // the sequence wraps too
	binary.BigEndian.PutUint32(tcp[8:], 77)
	tcp[12] = 8 << 4
	tcp[13] = flags
	binary.BigEndian.PutUint16(tcp[14:], 500)
	tcp[20], tcp[21], tcp[22], tcp[23] = 1, 1, 8, 10
	f := append(append(append(eth, ip...), tcp...), payload...)
	l4 := HeaderLen + len(ip)
	// The partial checksum: the pseudo-header with the whole length.
	binary.BigEndian.PutUint16(f[l4+16:], fold(tcpPseudoSum(f[HeaderLen:], v6, len(f)-l4)))
	mss := uint16(1500 - len(ip) - 32) // MTU 1500, TCP timestamps
	return f, Offload{NeedsCsum: true, GSO: gso, HdrLen: uint16(l4 + 32), GSOSize: mss,
		CsumStart: uint16(l4), CsumOffset: 16}
}

func testPayload(n int) []byte {
	p := make([]byte, n)
	for i := range p {
		p[i] = byte(i*7 + i>>8)
	}
	return p
}

func TestSegmenterCutsLikeTSO(t *testing.T) {
	for _, v6 := range []bool{false, true} {
		mss := 1448
		if v6 {
			mss = 1428
		}
		payload := testPayload(10*mss + 100)
		const fin, psh, ack, cwr = 0x01, 0x08, 0x10, 0x80
		frame, o := superFrame(t, v6, payload, fin|psh|ack|cwr)
		var s Segmenter
		if err := s.Reset(frame, o); err != nil {
			t.Fatalf("v6=%v: Reset: %v", v6, err)
		}
		var got []byte
		buf := make([]byte, MaxFrameLen)
		segs := 0
		for n := s.Next(buf); n > 0; n = s.Next(buf) {
			seg := buf[:n]
			if n > MaxFrameLen {
				t.Fatalf("segment of %d bytes", n)
			}
			e := Ethernet(seg)
			l4 := HeaderLen + IPv4MinHeaderLen
			if v6 {
				l4 = HeaderLen + ipv6HeaderLen
				if pl := int(binary.BigEndian.Uint16(seg[HeaderLen+4:])); pl != n-l4 {
					t.Fatalf("segment %d: IPv6 payload length %d, want %d", segs, pl, n-l4)
				}
			} else {
				ip, err := ParseIPv4(e.Payload())
				if err != nil || ip.TotalLen() != n-HeaderLen {
					t.Fatalf("segment %d: IPv4 %v, total length %d, want %d", segs, err, ip.TotalLen(), n-HeaderLen)
				}
				if Checksum(ip[:20], 0) != 0xffff {
					t.Fatalf("segment %d: bad IPv4 header checksum", segs)
				}
				if id := ip.ID(); id != uint16(0xfffe+segs) {
					t.Fatalf("segment %d: IPv4 ID %#x, want %#x", segs, id, uint16(0xfffe+segs))
				}
			}
			tcp := seg[l4:]
			if fold(sum(tcp, tcpPseudoSum(seg[HeaderLen:], v6, len(tcp)))) != 0xffff {
				t.Fatalf("segment %d: bad TCP checksum", segs)
			}
			if seq := binary.BigEndian.Uint32(tcp[4:]); seq != 0xfffff000+uint32(len(got)) {
				t.Fatalf("segment %d: seq %#x, want %#x", segs, seq, 0xfffff000+uint32(len(got)))
			}
			last := len(got)+len(tcp[32:]) == len(payload)
			wantFlags := byte(ack)
			if last {
				wantFlags |= fin | psh
			}
			if segs == 0 {
				wantFlags |= cwr
			}
			if tcp[13] != wantFlags {
				t.Fatalf("segment %d: flags %#x, want %#x", segs, tcp[13], wantFlags)
			}
			if !last && len(tcp[32:]) != mss {
				t.Fatalf("segment %d: %d payload bytes, want %d", segs, len(tcp[32:]), mss)
			}
			got = append(got, tcp[32:]...)
			segs++
		}
		if segs != 11 || !bytes.Equal(got, payload) {
			t.Fatalf("v6=%v: %d segments, payload equal %v; want 11 segments carrying the payload", v6, segs, bytes.Equal(got, payload))
		}
	}
}

func TestOffloadHeaderRoundTrip(t *testing.T) {
	o := Offload{NeedsCsum: true, DataValid: true, GSO: GSOTCPv6, ECN: true, HdrLen: 86, GSOSize: 1428, CsumStart: 54, CsumOffset: 16}
	b := make([]byte, VirtioNetHdrLen)
	o.Put(b)
	want := []byte{3, 0x84, 86, 0, 0x94, 0x05, 54, 0, 16, 0}
	if !bytes.Equal(b, want) {
		t.Fatalf("Put = % x, want % x", b, want)
	}
	got, err := ParseOffload(b)
	if err != nil || got != o {
		t.Fatalf("ParseOffload = %+v, %v; want %+v", got, err, o)
	}
	for _, bad := range [][]byte{
		{4, 0, 0, 0, 0, 0, 0, 0, 0, 0},    // unknown flag
		{0, 3, 0, 0, 0, 0, 0, 0, 0, 0},    // UDP fragmentation offload
		{0, 5, 0, 0, 0, 0, 0, 0, 0, 0},    // UDP segmentation offload
		{0, 0, 0, 0, 0, 0, 0, 0, 0},       // short
		{1, 0x80, 0, 0, 0, 0, 0, 0, 0, 0}, // ECN on GSONone is fine, so this parses
	} {
		_, err := ParseOffload(bad)
		if len(bad) == VirtioNetHdrLen && bad[1] == 0x80 {
			if err != nil {
				t.Errorf("ParseOffload(% x) = %v, want ok", bad, err)
			}
			continue
		}
		if err == nil {
			t.Errorf("ParseOffload(% x) accepted", bad)
		}
	}
}

func TestOffloadCheckRefusesWhatCannotBeDone(t *testing.T) {
	frame, o := superFrame(t, false, testPayload(3000), 0x10)
	if err := o.Check(frame); err != nil {
		t.Fatalf("good super-frame refused: %v", err)
	}
	cases := map[string]func(o *Offload, f []byte) []byte{
		"checksum past the end":   func(o *Offload, f []byte) []byte { o.CsumOffset = uint16(len(f)); return f },
		"checksum in Ethernet":    func(o *Offload, f []byte) []byte { o.CsumStart = 4; return f },
		"GSO without checksum":    func(o *Offload, f []byte) []byte { o.NeedsCsum = false; return f },
		"tiny segments":           func(o *Offload, f []byte) []byte { o.GSOSize = 64; return f },
		"segments over a frame":   func(o *Offload, f []byte) []byte { o.GSOSize = 1500; return f },
		"wrong IP version":        func(o *Offload, f []byte) []byte { o.GSO = GSOTCPv6; return f },
		"not TCP":                 func(o *Offload, f []byte) []byte { f[HeaderLen+9] = ProtoUDP; return f },
		"no payload":              func(o *Offload, f []byte) []byte { return f[:HeaderLen+20+32] },
		"plain frame over 1518":   func(o *Offload, f []byte) []byte { o.GSO = GSONone; return f },
		"fragment":                func(o *Offload, f []byte) []byte { f[HeaderLen+6] = 0x20; return f },
		"TCP header past end":     func(o *Offload, f []byte) []byte { return f[:HeaderLen+20+10] },
		"TCP data offset too big": func(o *Offload, f []byte) []byte { f[HeaderLen+20+12] = 0xf0; return f[:HeaderLen+20+60] },
		"checksum not TCP's":      func(o *Offload, f []byte) []byte { o.CsumOffset = 6; return f },
		"checksum after TCP":      func(o *Offload, f []byte) []byte { o.CsumStart += 4; return f },
		"header past the end":     func(o *Offload, f []byte) []byte { o.HdrLen = uint16(len(f) + 1); return f },
	}
	for name, mutate := range cases {
		f := append([]byte(nil), frame...)
		oo := o
		f = mutate(&oo, f)
		if err := oo.Check(f); err == nil {
			t.Errorf("%s: Check accepted", name)
		}
		var s Segmenter
		if err := s.Reset(f, oo); err == nil && oo.GSO != GSONone {
			t.Errorf("%s: Segmenter accepted", name)
		}
	}
}

func TestFinishChecksum(t *testing.T) {
	// A UDP datagram whose checksum field holds the pseudo-header sum, as a
	// checksum-offloading TAP hands it over.
	frame := make([]byte, HeaderLen+IPv4MinHeaderLen+UDPHeaderLen+5)
	binary.BigEndian.PutUint16(frame[12:], TypeIPv4)
	ip := frame[HeaderLen:]
	ip[0], ip[9] = 0x45, ProtoUDP
	binary.BigEndian.PutUint16(ip[2:], uint16(len(ip)))
	copy(ip[12:], []byte{192, 0, 2, 1, 192, 0, 2, 2})
	u := UDP(ip[IPv4MinHeaderLen:])
	binary.BigEndian.PutUint16(u[0:], 1234)
	binary.BigEndian.PutUint16(u[2:], 53)
	binary.BigEndian.PutUint16(u[4:], uint16(len(u)))
	copy(u[8:], "hello")
	src, dst := IPv4(ip).Src(), IPv4(ip).Dst()
	binary.BigEndian.PutUint16(u[6:], fold(pseudoHeaderSum(src, dst, ProtoUDP, len(u))))
	o := Offload{NeedsCsum: true, CsumStart: HeaderLen + IPv4MinHeaderLen, CsumOffset: 6}
	if err := o.Check(frame); err != nil {
		t.Fatal(err)
	}
	FinishChecksum(frame, o)
	if u.Checksum() != u.ComputeChecksum(src, dst) || !u.ValidChecksum(src, dst) {
		t.Fatalf("checksum %#x, want %#x", u.Checksum(), u.ComputeChecksum(src, dst))
	}
}

func TestSegmenterAllocatesNothing(t *testing.T) {
	frame, o := superFrame(t, false, testPayload(20000), 0x18)
	buf := make([]byte, MaxFrameLen)
	var s Segmenter
	allocs := testing.AllocsPerRun(100, func() {
		if s.Reset(frame, o) != nil {
			t.Fatal("Reset failed")
		}
		for s.Next(buf) > 0 {
		}
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per super-frame", allocs)
	}
}

func BenchmarkSegment64K(b *testing.B) {
	frame, o := superFrame(b, false, testPayload(44*1448), 0x18)
	buf := make([]byte, MaxFrameLen)
	b.SetBytes(int64(len(frame)))
	var s Segmenter
	for b.Loop() {
		s.Reset(frame, o)
		for s.Next(buf) > 0 {
		}
	}
}

func FuzzOffload(f *testing.F) {
	frame, o := superFrame(f, false, testPayload(4000), 0x19)
	hdr := make([]byte, VirtioNetHdrLen)
	o.Put(hdr)
	f.Add(append(hdr, frame...))
	frame, o = superFrame(f, true, testPayload(1000), 0x10)
	o.Put(hdr)
	f.Add(append(hdr, frame...))
	f.Fuzz(func(t *testing.T, b []byte) {
		o, err := ParseOffload(b)
		if err != nil {
			return
		}
		frame := b[VirtioNetHdrLen:]
		if o.Check(frame) != nil {
			return
		}
		if o.NeedsCsum && o.GSO == GSONone {
			FinishChecksum(append([]byte(nil), frame...), o)
		}
		var s Segmenter
		if o.GSO == GSONone || s.Reset(frame, o) != nil {
			return
		}
		buf := make([]byte, MaxFrameLen)
		total, segs := 0, 0
		for n := s.Next(buf); n > 0; n = s.Next(buf) {
			if n > MaxFrameLen {
				t.Fatalf("segment of %d bytes", n)
			}
			total += n - s.lay.payload
			segs++
		}
		if total != len(frame)-s.lay.payload {
			t.Fatalf("segments carry %d payload bytes, want %d", total, len(frame)-s.lay.payload)
		}
	})
}
