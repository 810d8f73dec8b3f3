package ether

import (
	"errors"
	"net/netip"
	"testing"
)

var (
	testServer = netip.MustParseAddr("10.77.0.1")
	testLease  = netip.MustParseAddr("10.77.0.23")
)

// parseDHCPFrame walks a whole frame down to its DHCP message, checking
// both checksums on the way.
func parseDHCPFrame(t *testing.T, frame []byte) (Ethernet, IPv4, UDP, DHCP) {
	t.Helper()
	e, err := ParseEthernet(frame)
	if err != nil || e.Type() != TypeIPv4 {
		t.Fatalf("ethernet: %v type %#04x", err, e.Type())
	}
	ip, err := ParseIPv4(e.Payload())
	if err != nil || ip.Protocol() != ProtoUDP || !ip.ValidChecksum() {
		t.Fatalf("ipv4: %v valid checksum %v", err, err == nil && ip.ValidChecksum())
	}
	u, err := ParseUDP(ip.Payload())
	if err != nil || len(u) != len(ip.Payload()) || u.Checksum() == 0 || !u.ValidChecksum(ip.Src(), ip.Dst()) {
		t.Fatalf("udp: %v", err)
	}
	d, err := ParseDHCP(u.Payload())
	if err != nil {
		t.Fatalf("dhcp: %v", err)
	}
	return e, ip, u, d
}

func buildOffer(b *DHCPBuilder, out []byte, req DHCP) (int, error) {
	b.Start(out, req, DHCPReplyHeader{
		EthSrc: serviceMAC, EthDst: guestMAC,
		IPSrc: testServer, IPDst: testLease,
		YIAddr: testLease,
	}, DHCPOffer)
	b.AddAddr(OptServerID, testServer)
	b.AddUint32(OptLeaseTime, 43200)
	b.AddAddr(OptSubnetMask, netip.MustParseAddr("255.255.255.0"))
	b.AddAddr(OptRouter, testServer)
	b.AddUint16(OptInterfaceMTU, 1400)
	return b.Finish()
}

func TestDHCPBuilderOffer(t *testing.T) {
	req := discoverDHCP(t)
	out := make([]byte, DHCPMaxFrameLen)
	for i := range out {
		out[i] = 0xa5 // stale bytes must not leak into the reply
	}
	var b DHCPBuilder
	n, err := buildOffer(&b, out, req)
	if err != nil {
		t.Fatal(err)
	}
	if n != HeaderLen+IPv4MinHeaderLen+UDPHeaderLen+bootpMinLen {
		t.Fatalf("frame %d bytes, want padding to the BOOTP minimum", n)
	}
	e, ip, u, d := parseDHCPFrame(t, out[:n])
	if e.Src() != serviceMAC || e.Dst() != guestMAC {
		t.Fatalf("ethernet %v -> %v", e.Src(), e.Dst())
	}
	if ip.Src() != testServer || ip.Dst() != testLease || ip.TTL() != 64 || ip.IsFragment() {
		t.Fatalf("ip %v -> %v ttl %d", ip.Src(), ip.Dst(), ip.TTL())
	}
	if u.SrcPort() != DHCPServerPort || u.DstPort() != DHCPClientPort {
		t.Fatalf("ports %d -> %d", u.SrcPort(), u.DstPort())
	}
	if d.Op() != BootReply || d.XID() != req.XID() || d.Flags() != req.Flags() || d.Hops() != 0 || d.Secs() != 0 {
		t.Fatalf("op %d xid %#x flags %#x", d.Op(), d.XID(), d.Flags())
	}
	if mac, _ := d.ClientMAC(); mac != guestMAC {
		t.Fatalf("chaddr %v", mac)
	}
	if d.YIAddr() != testLease || d.CIAddr() != netip.IPv4Unspecified() || d.GIAddr() != netip.IPv4Unspecified() {
		t.Fatalf("yiaddr %v ciaddr %v", d.YIAddr(), d.CIAddr())
	}
	for _, b := range append(d.SName(), d.File()...) {
		if b != 0 {
			t.Fatal("sname/file not zeroed")
		}
	}
	if d.MessageType() != DHCPOffer {
		t.Fatalf("type %v", d.MessageType())
	}
	if sid, _ := d.ServerID(); sid != testServer {
		t.Fatalf("server id %v", sid)
	}
	got, err := allOptions(d)
	if err != nil {
		t.Fatal(err)
	}
	want := []opt{
		{OptMessageType, "\x02"}, {OptServerID, "\x0a\x4d\x00\x01"}, {OptLeaseTime, "\x00\x00\xa8\xc0"},
		{OptSubnetMask, "\xff\xff\xff\x00"}, {OptRouter, "\x0a\x4d\x00\x01"}, {OptInterfaceMTU, "\x05\x78"},
	}
	if len(got) != len(want) {
		t.Fatalf("options %v", got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("option %d: %v, want %v", i, got[i], want[i])
		}
	}

	// The builder is reusable: a second reply into the same buffer.
	b.Start(out, req, DHCPReplyHeader{EthSrc: serviceMAC, EthDst: Broadcast, IPSrc: testServer,
		IPDst: netip.AddrFrom4([4]byte{255, 255, 255, 255})}, DHCPNak)
	b.AddString(OptMessage, "wrong address")
	n, err = b.Finish()
	if err != nil {
		t.Fatal(err)
	}
	_, _, _, d = parseDHCPFrame(t, out[:n])
	if m, _ := d.Option(OptMessage); d.MessageType() != DHCPNak || string(m) != "wrong address" || d.YIAddr() != netip.IPv4Unspecified() {
		t.Fatalf("NAK type %v message %q yiaddr %v", d.MessageType(), m, d.YIAddr())
	}
}

func TestDHCPBuilderRelayPortAndLongReply(t *testing.T) {
	req := discoverDHCP(t)
	out := make([]byte, 2048)
	var b DHCPBuilder
	b.Start(out, req, DHCPReplyHeader{EthSrc: serviceMAC, EthDst: guestMAC, IPSrc: testServer,
		IPDst: netip.MustParseAddr("10.77.0.254"), DstPort: DHCPServerPort}, DHCPAck)
	// 2+255 + 2+40 + End leaves the frame just under DHCPMaxFrameLen.
	b.AddOption(224, make([]byte, 255))
	b.AddOption(224, make([]byte, 40))
	n, err := b.Finish()
	if err != nil {
		t.Fatal(err)
	}
	if n > DHCPMaxFrameLen {
		t.Fatalf("frame %d bytes exceeds %d", n, DHCPMaxFrameLen)
	}
	_, _, u, d := parseDHCPFrame(t, out[:n])
	if u.DstPort() != DHCPServerPort {
		t.Fatalf("dst port %d", u.DstPort())
	}
	if got, _ := d.AppendOption(nil, 224); len(got) != 295 {
		t.Fatalf("options lost: %d bytes", len(got))
	}
}

func TestDHCPBuilderErrors(t *testing.T) {
	req := discoverDHCP(t)
	hdr := DHCPReplyHeader{EthSrc: serviceMAC, EthDst: guestMAC, IPSrc: testServer, IPDst: testLease}
	tests := []struct {
		name string
		run  func(b *DHCPBuilder)
		want error
	}{
		{"buffer below minimum", func(b *DHCPBuilder) { b.Start(make([]byte, 341), req, hdr, DHCPOffer) }, ErrShort},
		{"request too short", func(b *DHCPBuilder) { b.Start(make([]byte, 600), req[:239], hdr, DHCPOffer) }, ErrShort},
		{"IPv6 source", func(b *DHCPBuilder) {
			h := hdr
			h.IPSrc = netip.MustParseAddr("2001:db8::1")
			b.Start(make([]byte, 600), req, h, DHCPOffer)
		}, ErrMalformed},
		{"zero destination", func(b *DHCPBuilder) {
			h := hdr
			h.IPDst = netip.Addr{}
			b.Start(make([]byte, 600), req, h, DHCPOffer)
		}, ErrMalformed},
		{"option over 255", func(b *DHCPBuilder) {
			b.Start(make([]byte, 600), req, hdr, DHCPOffer)
			b.AddOption(224, make([]byte, 256))
			b.AddUint32(OptLeaseTime, 1) // sticky: no effect after the failure
		}, ErrMalformed},
		{"pad code", func(b *DHCPBuilder) {
			b.Start(make([]byte, 600), req, hdr, DHCPOffer)
			b.AddByte(OptPad, 0)
		}, ErrMalformed},
		{"IPv6 option", func(b *DHCPBuilder) {
			b.Start(make([]byte, 600), req, hdr, DHCPOffer)
			b.AddAddr(OptRouter, netip.MustParseAddr("2001:db8::1"))
		}, ErrMalformed},
		{"options overflow the buffer", func(b *DHCPBuilder) {
			b.Start(make([]byte, 400), req, hdr, DHCPOffer)
			for range 10 {
				b.AddOption(224, make([]byte, 20))
			}
		}, ErrShort},
		{"options overflow 576 bytes", func(b *DHCPBuilder) {
			b.Start(make([]byte, 4096), req, hdr, DHCPOffer)
			for range 2 {
				b.AddOption(224, make([]byte, 255))
			}
		}, ErrShort},
		{"finish without start", func(*DHCPBuilder) {}, ErrShort},
	}
	for _, tt := range tests {
		var b DHCPBuilder
		tt.run(&b)
		if n, err := b.Finish(); n != 0 || !errors.Is(err, tt.want) {
			t.Errorf("%s: n %d err %v, want %v", tt.name, n, err, tt.want)
		}
	}
	// Finish twice: the second has nothing to finish.
	var b DHCPBuilder
	b.Start(make([]byte, 600), req, hdr, DHCPOffer)
	if _, err := b.Finish(); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Finish(); !errors.Is(err, ErrShort) {
		t.Fatalf("second Finish: %v", err)
	}
}
