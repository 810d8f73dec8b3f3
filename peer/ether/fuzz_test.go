package ether

import (
	"bytes"
	"net/netip"
	"testing"
)

// Fuzz targets for every parser. Seeds are the checked-in captures plus the
// frames the builders produce; invariants are checked on whatever parses.

func addFrameSeeds(f *testing.F) {
	disc := readHex(f, "udhcpc_discover.hex")
	f.Add(disc)
	f.Add(readHex(f, "arp_request.hex"))
	f.Add(readHex(f, "udhcpc_request_selecting.hex"))
	f.Add(readHex(f, "udhcpc_request_renewing.hex"))
	f.Add(readHex(f, "udhcpc_release.hex"))
	d, _ := ParseDHCP(disc[HeaderLen+IPv4MinHeaderLen+UDPHeaderLen:])
	out := make([]byte, DHCPMaxFrameLen)
	var b DHCPBuilder
	b.Start(out, d, DHCPReplyHeader{EthSrc: serviceMAC, EthDst: guestMAC, IPSrc: testServer, IPDst: testLease,
		YIAddr: testLease}, DHCPOffer)
	b.AddAddr(OptServerID, testServer)
	b.AddByte(OptOverload, 3)
	if n, err := b.Finish(); err == nil {
		f.Add(out[:n])
	}
}

// payloadAt returns frame[off:] or nil, so seeds can feed sub-parsers.
func payloadAt(frame []byte, off int) []byte {
	if len(frame) < off {
		return nil
	}
	return frame[off:]
}

func FuzzParseIPv4(f *testing.F) {
	addFrameSeeds(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		b = payloadAt(b, HeaderLen)
		ip, err := ParseIPv4(b)
		if err != nil {
			return
		}
		if len(ip) != ip.TotalLen() || ip.HeaderLen() < IPv4MinHeaderLen || ip.HeaderLen() > len(ip) ||
			len(ip.Payload()) != ip.TotalLen()-ip.HeaderLen() || len(ip.Options()) != ip.HeaderLen()-IPv4MinHeaderLen {
			t.Fatalf("inconsistent view: len %d tl %d hl %d", len(ip), ip.TotalLen(), ip.HeaderLen())
		}
		_, _, _, _ = ip.Src(), ip.Dst(), ip.IsFragment(), ip.FragmentOffset()
		c := append(IPv4(nil), ip...)
		c.SetChecksum(c.ComputeChecksum())
		if !c.ValidChecksum() {
			t.Fatal("computed checksum does not verify")
		}
		if c.Checksum() != ip.Checksum() && ip.ValidChecksum() {
			// Ones' complement has two zeros; a valid header's field may
			// be either, so only a mismatch other than 0/ffff is a bug.
			if !(c.Checksum() == 0 && ip.Checksum() == 0xffff || c.Checksum() == 0xffff && ip.Checksum() == 0) {
				t.Fatalf("valid field %#04x, computed %#04x", ip.Checksum(), c.Checksum())
			}
		}
	})
}

func FuzzParseUDP(f *testing.F) {
	addFrameSeeds(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		b = payloadAt(b, HeaderLen+IPv4MinHeaderLen)
		u, err := ParseUDP(b)
		if err != nil {
			return
		}
		if len(u) != u.Length() || len(u.Payload()) != u.Length()-UDPHeaderLen {
			t.Fatalf("inconsistent view: len %d length %d", len(u), u.Length())
		}
		src, dst := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("203.0.113.9")
		c := append(UDP(nil), u...)
		c.SetChecksum(c.ComputeChecksum(src, dst))
		if c.Checksum() == 0 || !c.ValidChecksum(src, dst) {
			t.Fatalf("computed checksum %#04x does not verify", c.Checksum())
		}
	})
}

func FuzzParseARP(f *testing.F) {
	addFrameSeeds(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := ParseEthernet(b)
		if err != nil {
			return
		}
		_, _, _ = e.Dst(), e.Src(), e.Type()
		a, err := ParseARP(e.Payload())
		if err != nil {
			return
		}
		out := make([]byte, ARPFrameLen)
		n, err := BuildARPReply(out, a, serviceMAC)
		if (err == nil) != (a.Op() == ARPRequest) {
			t.Fatalf("op %d: %v", a.Op(), err)
		}
		if err != nil {
			return
		}
		r, err := ParseARP(out[HeaderLen:n])
		if err != nil || r.TargetIP() != a.SenderIP() || r.SenderIP() != a.TargetIP() || r.TargetMAC() != a.SenderMAC() {
			t.Fatalf("reply does not answer the request: %v", err)
		}
	})
}

func FuzzParseDHCP(f *testing.F) {
	addFrameSeeds(f)
	f.Add(append(make([]byte, HeaderLen+IPv4MinHeaderLen+UDPHeaderLen), makeDHCP(
		[]byte{52, 1, 3, 53, 1, 3, 55, 2, 1, 3}, []byte{12, 1, 'f', 255}, []byte{55, 1, 26})...))
	f.Fuzz(func(t *testing.T, b []byte) {
		d, err := ParseDHCP(payloadAt(b, HeaderLen+IPv4MinHeaderLen+UDPHeaderLen))
		if err != nil {
			return
		}
		// Every option's data lies inside the message, and the walk ends
		// after at most one option per byte of the three areas.
		count := 0
		it := d.Options()
		for it.Next() {
			count++
			if count > len(d) {
				t.Fatal("option walk does not terminate")
			}
			data := it.Data()
			if len(data) > 0 && !inside(d, data) {
				t.Fatalf("option %d data outside the message", it.Code())
			}
		}
		_ = d.MessageType().String()
		_, _ = d.RequestedIP()
		_, _ = d.ServerID()
		_, _ = d.ParamRequestList()
		_, _ = d.ClientID()
		_, _ = d.Hostname()
		_, _ = d.MaxMessageSize()
		_ = d.Requests(OptInterfaceMTU)
		_, _ = d.ClientMAC()
		joined, _ := d.AppendOption(nil, OptParamRequestList)
		if first, ok := d.ParamRequestList(); ok && !bytes.HasPrefix(joined, first) {
			t.Fatal("AppendOption does not start with the first instance")
		}

		// Any parsable request can be answered, and the answer parses.
		out := make([]byte, DHCPMaxFrameLen)
		var bl DHCPBuilder
		bl.Start(out, d, DHCPReplyHeader{EthSrc: serviceMAC, EthDst: Broadcast, IPSrc: testServer,
			IPDst: testLease, CIAddr: d.CIAddr(), YIAddr: testLease}, DHCPAck)
		bl.AddAddr(OptServerID, testServer)
		n, err := bl.Finish()
		if err != nil {
			t.Fatal(err)
		}
		_, _, _, r := parseDHCPFrame(t, out[:n])
		if r.XID() != d.XID() || r.MessageType() != DHCPAck || !bytes.Equal(r.CHAddr(), d.CHAddr()) {
			t.Fatal("reply does not echo the request")
		}
	})
}

// inside reports whether s is a subslice of b.
func inside(b, s []byte) bool {
	for i := 0; i+len(s) <= len(b); i++ {
		if &b[i] == &s[0] {
			return true
		}
	}
	return false
}
