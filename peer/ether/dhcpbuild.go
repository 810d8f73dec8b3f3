package ether

import (
	"encoding/binary"
	"net/netip"
)

// DHCPMaxFrameLen bounds the frames DHCPBuilder writes: Ethernet header plus
// the 576-byte IP datagram every DHCP client must accept (RFC 2131 2), so a
// reply never depends on option 57. A buffer of this size always suffices.
const DHCPMaxFrameLen = HeaderLen + 576

// bootpMinLen is the smallest BOOTP message (RFC 951's 64-byte vendor
// area). Some old clients and relays drop anything shorter, so replies are
// padded up to it, as ISC dhcpd and dnsmasq do.
const bootpMinLen = 300

const (
	dhcpFrameOffIP   = HeaderLen
	dhcpFrameOffUDP  = dhcpFrameOffIP + IPv4MinHeaderLen
	dhcpFrameOffDHCP = dhcpFrameOffUDP + UDPHeaderLen
	dhcpFrameOffOpts = dhcpFrameOffDHCP + dhcpOffOptions
)

// DHCPReplyHeader is what a server decides about a reply; everything else
// in the fixed header comes from the request.
type DHCPReplyHeader struct {
	EthSrc, EthDst MAC
	IPSrc, IPDst   netip.Addr
	// DstPort is the UDP destination: DHCPClientPort, or DHCPServerPort for
	// a relay agent. Zero means DHCPClientPort.
	DstPort uint16
	// CIAddr, YIAddr and SIAddr fill the fields of the same name; the zero
	// Addr writes 0.0.0.0 (RFC 2131 table 3 says which are zero when).
	CIAddr, YIAddr, SIAddr netip.Addr
}

// DHCPBuilder writes a complete server reply (Ethernet, IPv4, UDP, DHCP)
// into a caller's buffer without allocating:
//
//	var b ether.DHCPBuilder
//	b.Start(out, req, hdr, ether.DHCPOffer)
//	b.AddAddr(ether.OptServerID, server)
//	...
//	n, err := b.Finish()
//
// Errors are sticky: a failed Add leaves the builder failed and Finish
// reports it, so callers check once. The frame never exceeds
// DHCPMaxFrameLen. The zero DHCPBuilder is ready for Start.
type DHCPBuilder struct {
	buf []byte // the frame, at most DHCPMaxFrameLen long
	n   int    // end of the options written so far
	src netip.Addr
	dst netip.Addr
	err error
}

// Start begins a reply of type t to the client message req: op BOOTREPLY,
// htype, hlen, xid, flags, giaddr and chaddr copied from req, hops, secs,
// sname and file zero, then the magic cookie and option 53. buf must not
// overlap req.
func (b *DHCPBuilder) Start(buf []byte, req DHCP, h DHCPReplyHeader, t DHCPMessageType) {
	*b = DHCPBuilder{buf: buf[:min(len(buf), DHCPMaxFrameLen)], src: h.IPSrc, dst: h.IPDst}
	if len(req) < DHCPMinLen {
		b.err = ErrShort
		return
	}
	if !h.IPSrc.Is4() || !h.IPDst.Is4() {
		b.err = ErrMalformed
		return
	}
	// Options, the end option and the padding must fit after the header.
	if len(b.buf) < dhcpFrameOffDHCP+bootpMinLen {
		b.err = ErrShort
		return
	}
	clear(b.buf[:dhcpFrameOffOpts])
	e := Ethernet(b.buf)
	e.SetDst(h.EthDst)
	e.SetSrc(h.EthSrc)
	e.SetType(TypeIPv4)

	u := UDP(b.buf[dhcpFrameOffUDP:])
	u.SetSrcPort(DHCPServerPort)
	port := h.DstPort
	if port == 0 {
		port = DHCPClientPort
	}
	u.SetDstPort(port)

	d := b.buf[dhcpFrameOffDHCP:]
	d[0] = BootReply
	d[1], d[2] = req.HType(), req.HLen()
	copy(d[4:8], req[4:8])     // xid
	copy(d[10:12], req[10:12]) // flags
	putAddr4(d[dhcpOffCIAddr:], h.CIAddr)
	putAddr4(d[dhcpOffYIAddr:], h.YIAddr)
	putAddr4(d[dhcpOffSIAddr:], h.SIAddr)
	copy(d[dhcpOffGIAddr:dhcpOffSName], req[dhcpOffGIAddr:dhcpOffSName]) // giaddr, chaddr
	binary.BigEndian.PutUint32(d[dhcpOffCookie:], DHCPCookie)
	b.n = dhcpFrameOffOpts
	b.AddByte(OptMessageType, uint8(t))
}

// AddOption appends option code with data (at most 255 bytes).
func (b *DHCPBuilder) AddOption(code uint8, data []byte) {
	if p := b.reserve(code, len(data)); p != nil {
		copy(p, data)
	}
}

// AddString appends option code with the bytes of s (at most 255).
func (b *DHCPBuilder) AddString(code uint8, s string) {
	if p := b.reserve(code, len(s)); p != nil {
		copy(p, s)
	}
}

// AddByte appends a one-byte option.
func (b *DHCPBuilder) AddByte(code uint8, v uint8) {
	if p := b.reserve(code, 1); p != nil {
		p[0] = v
	}
}

// AddUint16 appends a two-byte option (big endian).
func (b *DHCPBuilder) AddUint16(code uint8, v uint16) {
	if p := b.reserve(code, 2); p != nil {
		binary.BigEndian.PutUint16(p, v)
	}
}

// AddUint32 appends a four-byte option (big endian), e.g. a time in seconds.
func (b *DHCPBuilder) AddUint32(code uint8, v uint32) {
	if p := b.reserve(code, 4); p != nil {
		binary.BigEndian.PutUint32(p, v)
	}
}

// AddAddr appends an option holding one IPv4 address. An address that is
// not IPv4 fails the builder with ErrMalformed rather than sending 0.0.0.0.
func (b *DHCPBuilder) AddAddr(code uint8, a netip.Addr) {
	if !a.Is4() {
		b.fail(ErrMalformed)
		return
	}
	if p := b.reserve(code, 4); p != nil {
		putAddr4(p, a)
	}
}

// reserve appends the code and length of an option and returns the space
// for its data, or nil once the builder has failed. One byte always stays
// free for the End option.
func (b *DHCPBuilder) reserve(code uint8, l int) []byte {
	if b.err != nil {
		return nil
	}
	if l > 255 || code == OptPad || code == OptEnd {
		b.fail(ErrMalformed)
		return nil
	}
	if b.n+2+l+1 > len(b.buf) {
		b.fail(ErrShort)
		return nil
	}
	b.buf[b.n], b.buf[b.n+1] = code, uint8(l)
	p := b.buf[b.n+2 : b.n+2+l]
	b.n += 2 + l
	return p
}

func (b *DHCPBuilder) fail(err error) {
	if b.err == nil {
		b.err = err
	}
}

// Finish writes the End option, pads the message to the BOOTP minimum, fills
// in the lengths and checksums and returns the frame length.
func (b *DHCPBuilder) Finish() (int, error) {
	if b.err != nil {
		return 0, b.err
	}
	if b.buf == nil {
		return 0, ErrShort // Start was never called
	}
	b.buf[b.n] = OptEnd
	b.n++
	if end := dhcpFrameOffDHCP + bootpMinLen; b.n < end {
		clear(b.buf[b.n:end])
		b.n = end
	}
	putIPv4Header(b.buf[dhcpFrameOffIP:], b.n-dhcpFrameOffIP, ProtoUDP, b.src, b.dst)
	u := UDP(b.buf[dhcpFrameOffUDP:b.n])
	binary.BigEndian.PutUint16(u[4:6], uint16(len(u)))
	u.SetChecksum(0)
	u.SetChecksum(u.ComputeChecksum(b.src, b.dst))
	n := b.n
	b.buf, b.n = nil, 0 // one Finish per Start
	return n, nil
}
