package ether

import (
	"net/netip"
	"testing"
)

// sink keeps results alive so the compiler cannot drop the work measured.
var sink struct {
	mac   MAC
	addr  netip.Addr
	u16   uint16
	n     int
	ok    bool
	bytes []byte
}

func TestZeroAllocForwardingPath(t *testing.T) {
	frame := readHex(t, "udhcpc_discover.hex")
	arpFrame := readHex(t, "arp_request.hex")
	allocs := testing.AllocsPerRun(100, func() {
		e, err := ParseEthernet(frame)
		if err != nil {
			t.Fatal(err)
		}
		sink.mac = e.Dst()
		sink.ok = e.Src().IsGroup() || e.Dst().IsBroadcast()
		sink.u16 = e.Type()
		ip, err := ParseIPv4(e.Payload())
		if err != nil {
			t.Fatal(err)
		}
		sink.addr = ip.Src()
		sink.addr = ip.Dst()
		sink.ok = ip.IsFragment() || ip.ValidChecksum()
		sink.u16 = uint16(ip.Protocol())
		u, err := ParseUDP(ip.Payload())
		if err != nil {
			t.Fatal(err)
		}
		sink.u16 = u.DstPort() + u.SrcPort()
		sink.ok = u.ValidChecksum(ip.Src(), ip.Dst())
		sink.bytes = u.Payload()

		ae, _ := ParseEthernet(arpFrame)
		a, err := ParseARP(ae.Payload())
		if err != nil {
			t.Fatal(err)
		}
		sink.mac = a.SenderMAC()
		sink.addr = a.TargetIP()
		sink.u16 = a.Op()
	})
	if allocs != 0 {
		t.Fatalf("forwarding-path accessors allocate %.1f times per frame", allocs)
	}
}

func TestZeroAllocDHCP(t *testing.T) {
	frame := readHex(t, "udhcpc_discover.hex")
	d, err := ParseDHCP(frame[HeaderLen+IPv4MinHeaderLen+UDPHeaderLen:])
	if err != nil {
		t.Fatal(err)
	}
	out := make([]byte, DHCPMaxFrameLen)
	arpOut := make([]byte, ARPFrameLen)
	arpReq, _ := ParseARP(readHex(t, "arp_request.hex")[HeaderLen:])
	mask := netip.MustParseAddr("255.255.255.0")
	allocs := testing.AllocsPerRun(100, func() {
		sink.ok = d.MessageType() == DHCPDiscover
		sink.addr, sink.ok = d.RequestedIP()
		sink.addr, sink.ok = d.ServerID()
		sink.bytes, sink.ok = d.ParamRequestList()
		sink.bytes, sink.ok = d.ClientID()
		sink.bytes, sink.ok = d.Hostname()
		sink.ok = d.Requests(OptInterfaceMTU)
		sink.mac, sink.ok = d.ClientMAC()
		sink.addr = d.CIAddr()

		var b DHCPBuilder
		b.Start(out, d, DHCPReplyHeader{EthSrc: serviceMAC, EthDst: Broadcast, IPSrc: testServer,
			IPDst: netip.AddrFrom4([4]byte{255, 255, 255, 255}), YIAddr: testLease}, DHCPAck)
		b.AddAddr(OptServerID, testServer)
		b.AddUint32(OptLeaseTime, 43200)
		b.AddAddr(OptSubnetMask, mask)
		b.AddUint16(OptInterfaceMTU, 1400)
		b.AddString(OptMessage, "a message longer than thirty-two bytes")
		n, err := b.Finish()
		if err != nil {
			t.Fatal(err)
		}
		sink.n = n
		sink.n, _ = BuildARPReply(arpOut, arpReq, serviceMAC)
	})
	if allocs != 0 {
		t.Fatalf("DHCP getters and reply builders allocate %.1f times", allocs)
	}
}

func BenchmarkChecksum1500(b *testing.B) {
	buf := make([]byte, 1500)
	for i := range buf {
		buf[i] = byte(i)
	}
	b.SetBytes(int64(len(buf)))
	for b.Loop() {
		sink.u16 = Checksum(buf, 0)
	}
}

func BenchmarkParseFrame(b *testing.B) {
	frame := readHex(b, "udhcpc_discover.hex")
	for b.Loop() {
		e, _ := ParseEthernet(frame)
		ip, _ := ParseIPv4(e.Payload())
		u, _ := ParseUDP(ip.Payload())
		sink.u16 = u.DstPort()
	}
}

func BenchmarkBuildDHCPReply(b *testing.B) {
	frame := readHex(b, "udhcpc_discover.hex")
	d, _ := ParseDHCP(frame[HeaderLen+IPv4MinHeaderLen+UDPHeaderLen:])
	out := make([]byte, DHCPMaxFrameLen)
	for b.Loop() {
		var bl DHCPBuilder
		bl.Start(out, d, DHCPReplyHeader{EthSrc: serviceMAC, EthDst: Broadcast, IPSrc: testServer,
			IPDst: netip.AddrFrom4([4]byte{255, 255, 255, 255}), YIAddr: testLease}, DHCPAck)
		bl.AddAddr(OptServerID, testServer)
		bl.AddUint32(OptLeaseTime, 43200)
		sink.n, _ = bl.Finish()
	}
}
