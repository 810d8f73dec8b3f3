package ether

import (
	"bytes"
	"errors"
	"net/netip"
	"slices"
	"testing"
)

func discoverDHCP(t *testing.T) DHCP {
	t.Helper()
	ip, err := ParseIPv4(discoverIPv4(t))
	if err != nil {
		t.Fatal(err)
	}
	u, err := ParseUDP(ip.Payload())
	if err != nil {
		t.Fatal(err)
	}
	d, err := ParseDHCP(u.Payload())
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// makeDHCP returns a BOOTREQUEST with the given options, file and sname.
func makeDHCP(opts, file, sname []byte) DHCP {
	d := make([]byte, DHCPMinLen+len(opts))
	d[0], d[1], d[2] = BootRequest, 1, 6
	copy(d[dhcpOffCHAddr:], guestMAC[:])
	copy(d[dhcpOffSName:dhcpOffFile], sname)
	copy(d[dhcpOffFile:dhcpOffCookie], file)
	d[236], d[237], d[238], d[239] = 99, 130, 83, 99
	copy(d[DHCPMinLen:], opts)
	return d
}

type opt struct {
	code uint8
	data string
}

func allOptions(d DHCP) ([]opt, error) {
	var got []opt
	it := d.Options()
	for it.Next() {
		got = append(got, opt{it.Code(), string(it.Data())})
	}
	return got, it.Err()
}

func TestDHCPDiscoverCapture(t *testing.T) {
	d := discoverDHCP(t)
	if d.Op() != BootRequest || d.HType() != 1 || d.HLen() != 6 || d.Hops() != 0 || d.Cookie() != DHCPCookie {
		t.Fatalf("op %d htype %d hlen %d hops %d", d.Op(), d.HType(), d.HLen(), d.Hops())
	}
	if d.XID() != 0xf420065c {
		t.Fatalf("xid %#x", d.XID())
	}
	if mac, ok := d.ClientMAC(); !ok || mac != guestMAC {
		t.Fatalf("client MAC %v %v", mac, ok)
	}
	if !bytes.Equal(d.CHAddr()[:6], guestMAC[:]) || len(d.CHAddr()) != 16 {
		t.Fatalf("chaddr %x", d.CHAddr())
	}
	if d.Broadcast() || d.Flags() != 0 || d.Secs() != 0 {
		t.Fatalf("flags %#x secs %d", d.Flags(), d.Secs())
	}
	zero := netip.IPv4Unspecified()
	if d.CIAddr() != zero || d.YIAddr() != zero || d.SIAddr() != zero || d.GIAddr() != zero {
		t.Fatal("addresses should be zero in a DISCOVER")
	}
	if len(d.SName()) != 64 || len(d.File()) != 128 {
		t.Fatal("sname/file sizes")
	}
	if d.MessageType() != DHCPDiscover || d.MessageType().String() != "DISCOVER" {
		t.Fatalf("type %v", d.MessageType())
	}
	if prl, ok := d.ParamRequestList(); !ok || !bytes.Equal(prl, []byte{1, 3, 6, 12, 15, 28, 42}) {
		t.Fatalf("parameter request list %v", prl)
	}
	if !d.Requests(OptRouter) || d.Requests(OptInterfaceMTU) {
		t.Fatal("Requests disagrees with option 55")
	}
	if h, ok := d.Hostname(); !ok || string(h) != "guest1" {
		t.Fatalf("hostname %q", h)
	}
	if id, ok := d.ClientID(); !ok || !bytes.Equal(id, append([]byte{1}, guestMAC[:]...)) {
		t.Fatalf("client id %x", id)
	}
	if m, ok := d.MaxMessageSize(); !ok || m != 576 {
		t.Fatalf("max message size %d", m)
	}
	if _, ok := d.RequestedIP(); ok {
		t.Fatal("requested IP in a plain DISCOVER")
	}
	if _, ok := d.ServerID(); ok {
		t.Fatal("server id in a DISCOVER")
	}
	got, err := allOptions(d)
	if err != nil {
		t.Fatal(err)
	}
	codes := make([]uint8, len(got))
	for i, o := range got {
		codes[i] = o.code
	}
	if !slices.Equal(codes, []uint8{53, 57, 55, 12, 60, 61}) {
		t.Fatalf("option order %v", codes)
	}
}

func TestDHCPOptionIterator(t *testing.T) {
	tests := []struct {
		name        string
		opts        []byte
		file, sname []byte
		want        []opt
		err         error
	}{
		{"pads and end", []byte{0, 0, 53, 1, 3, 0, 255, 12, 1, 'x'}, nil, nil, []opt{{53, "\x03"}}, nil},
		{"no end", []byte{53, 1, 1, 12, 2, 'h', 'i'}, nil, nil, []opt{{53, "\x01"}, {12, "hi"}}, nil},
		{"empty", nil, nil, nil, nil, nil},
		{"zero length", []byte{80, 0, 255}, nil, nil, []opt{{80, ""}}, nil},
		{"length past end", []byte{53, 1, 1, 12, 9, 'h'}, nil, nil, []opt{{53, "\x01"}}, ErrTruncated},
		{"code without length", []byte{53, 1, 1, 12}, nil, nil, []opt{{53, "\x01"}}, ErrTruncated},
		{
			"overload file", []byte{52, 1, 1, 53, 1, 3, 255},
			[]byte{12, 2, 'f', 'n', 255, 15, 1, 'x'}, []byte{15, 1, 'd', 255},
			[]opt{{52, "\x01"}, {53, "\x03"}, {12, "fn"}}, nil,
		},
		{
			"overload both, file before sname", []byte{52, 1, 3, 255},
			[]byte{12, 1, 'f', 255}, []byte{15, 1, 's', 255},
			[]opt{{52, "\x03"}, {12, "f"}, {15, "s"}}, nil,
		},
		{
			"overload sname only", []byte{52, 1, 2},
			[]byte{12, 1, 'f'}, []byte{15, 1, 's'},
			[]opt{{52, "\x02"}, {15, "s"}}, nil,
		},
		{
			// Option 52 inside an overloaded area must not add areas or loop.
			"overload in file ignored", []byte{52, 1, 1},
			[]byte{52, 1, 3, 12, 1, 'f'}, []byte{15, 1, 's'},
			[]opt{{52, "\x01"}, {52, "\x03"}, {12, "f"}}, nil,
		},
		{
			"second overload ignored", []byte{52, 1, 1, 52, 1, 2},
			nil, []byte{15, 1, 's'},
			[]opt{{52, "\x01"}, {52, "\x02"}}, nil,
		},
		{
			"overload with bad length ignored", []byte{52, 2, 3, 3},
			[]byte{12, 1, 'f'}, nil,
			[]opt{{52, "\x03\x03"}}, nil,
		},
		{
			// A file area with no End runs to its 128-byte boundary only.
			"option running past the file field", []byte{52, 1, 1},
			append(bytes.Repeat([]byte{0}, 125), 12, 9, 'x'), []byte{15, 1, 's'},
			[]opt{{52, "\x01"}}, ErrTruncated,
		},
	}
	for _, tt := range tests {
		got, err := allOptions(makeDHCP(tt.opts, tt.file, tt.sname))
		if !slices.Equal(got, tt.want) || !errors.Is(err, tt.err) || (tt.err == nil && err != nil) {
			t.Errorf("%s: got %v err %v, want %v err %v", tt.name, got, err, tt.want, tt.err)
		}
	}
}

func TestDHCPTypedGetters(t *testing.T) {
	d := makeDHCP([]byte{
		53, 1, 3,
		50, 4, 10, 0, 0, 7,
		54, 4, 10, 0, 0, 1,
		55, 2, 1, 3,
		55, 1, 26, // a second instance (RFC 3396 split)
		61, 3, 0, 'i', 'd',
		57, 3, 1, 2, 3, // wrong length
		255,
	}, nil, nil)
	if d.MessageType() != DHCPRequest {
		t.Fatalf("type %v", d.MessageType())
	}
	if a, ok := d.RequestedIP(); !ok || a != netip.MustParseAddr("10.0.0.7") {
		t.Fatalf("requested %v", a)
	}
	if a, ok := d.ServerID(); !ok || a != netip.MustParseAddr("10.0.0.1") {
		t.Fatalf("server id %v", a)
	}
	if prl, _ := d.ParamRequestList(); !bytes.Equal(prl, []byte{1, 3}) {
		t.Fatalf("first instance of 55: %v", prl)
	}
	if !d.Requests(OptInterfaceMTU) || d.Requests(OptDNS) {
		t.Fatal("Requests must look at every instance of 55")
	}
	joined, ok := d.AppendOption(make([]byte, 0, 8), OptParamRequestList)
	if !ok || !bytes.Equal(joined, []byte{1, 3, 26}) {
		t.Fatalf("joined 55: %v", joined)
	}
	if _, ok := d.AppendOption(nil, OptHostname); ok {
		t.Fatal("absent option reported present")
	}
	if _, ok := d.MaxMessageSize(); ok {
		t.Fatal("3-byte option 57 accepted")
	}
	if _, ok := d.Hostname(); ok {
		t.Fatal("no hostname expected")
	}
	bad := makeDHCP([]byte{53, 2, 1, 1, 50, 3, 1, 2, 3}, nil, nil)
	if bad.MessageType() != 0 {
		t.Fatal("2-byte option 53 accepted")
	}
	if _, ok := bad.RequestedIP(); ok {
		t.Fatal("3-byte option 50 accepted")
	}
	if DHCPMessageType(42).String() != "unknown" {
		t.Fatal("unknown type name")
	}
}

func TestParseDHCPErrors(t *testing.T) {
	d := makeDHCP(nil, nil, nil)
	if _, err := ParseDHCP(d[:DHCPMinLen-1]); !errors.Is(err, ErrShort) {
		t.Fatalf("short: %v", err)
	}
	d[239] = 0
	if _, err := ParseDHCP(d); !errors.Is(err, ErrMalformed) {
		t.Fatalf("BOOTP without cookie: %v", err)
	}
	nonEth := makeDHCP(nil, nil, nil)
	nonEth[1] = 6 // IEEE 802 token ring
	if _, ok := nonEth.ClientMAC(); ok {
		t.Fatal("non-Ethernet chaddr returned as a MAC")
	}
}

func TestDHCPCaptures(t *testing.T) {
	none := netip.Addr{}
	zero := netip.IPv4Unspecified()
	lease := netip.MustParseAddr("192.0.2.23")
	server := netip.MustParseAddr("192.0.2.1")
	tests := []struct {
		file               string
		ethDst             MAC
		ipSrc, ipDst       netip.Addr
		typ                DHCPMessageType
		ciaddr             netip.Addr
		requested, server  netip.Addr
		hasPRL, hasMaxSize bool
	}{
		{"udhcpc_discover.hex", Broadcast, zero, netip.MustParseAddr("255.255.255.255"), DHCPDiscover, zero, none, none, true, true},
		{"udhcpc_request_selecting.hex", Broadcast, zero, netip.MustParseAddr("255.255.255.255"), DHCPRequest, zero, lease, server, true, true},
		{"udhcpc_request_renewing.hex", serviceMAC, lease, server, DHCPRequest, lease, none, none, true, true},
		{"udhcpc_release.hex", serviceMAC, lease, server, DHCPRelease, lease, none, server, false, false},
	}
	for _, tt := range tests {
		frame := readHex(t, tt.file)
		e, err := ParseEthernet(frame)
		if err != nil || e.Dst() != tt.ethDst || e.Src() != guestMAC || e.Type() != TypeIPv4 {
			t.Fatalf("%s: ethernet %v -> %v: %v", tt.file, e.Src(), e.Dst(), err)
		}
		ip, err := ParseIPv4(e.Payload())
		if err != nil || !ip.ValidChecksum() || ip.Src() != tt.ipSrc || ip.Dst() != tt.ipDst {
			t.Fatalf("%s: ipv4 %v -> %v: %v", tt.file, ip.Src(), ip.Dst(), err)
		}
		u, err := ParseUDP(ip.Payload())
		if err != nil || !u.ValidChecksum(ip.Src(), ip.Dst()) || u.DstPort() != DHCPServerPort {
			t.Fatalf("%s: udp: %v", tt.file, err)
		}
		d, err := ParseDHCP(u.Payload())
		if err != nil {
			t.Fatalf("%s: %v", tt.file, err)
		}
		req, hasReq := d.RequestedIP()
		sid, hasSID := d.ServerID()
		_, hasPRL := d.ParamRequestList()
		_, hasMax := d.MaxMessageSize()
		if d.MessageType() != tt.typ || d.CIAddr() != tt.ciaddr || hasReq != tt.requested.IsValid() || (hasReq && req != tt.requested) ||
			hasSID != tt.server.IsValid() || (hasSID && sid != tt.server) || hasPRL != tt.hasPRL || hasMax != tt.hasMaxSize {
			t.Errorf("%s: type %v ciaddr %v requested %v/%v server %v/%v prl %v max %v", tt.file,
				d.MessageType(), d.CIAddr(), req, hasReq, sid, hasSID, hasPRL, hasMax)
		}
		if id, ok := d.ClientID(); !ok || !bytes.Equal(id[1:], guestMAC[:]) {
			t.Errorf("%s: client id %x", tt.file, id)
		}
	}
}
