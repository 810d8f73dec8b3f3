package userspace

import (
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"

	"github.com/peerlan/peerlan/peer/ether"
)

// gsoMaxSize is the largest TCP packet (IP header included) the stack
// builds when offloading: an IPv4 datagram's largest total length, less
// the IP header.
const gsoMaxSize = 65535 - header.IPv4MinimumSize

// link is the stack's link endpoint: the Ethernet layer between the stack
// and the Gateway's queue toward the switch. Frames from the room come in
// through deliver (Gateway.Write); every frame the stack sends goes to
// Gateway.send with its Ethernet header in place and, when offloading, the
// work left on it (a partial TCP checksum, segmentation of a super-frame).
//
// Incoming checksums are not verified (CapabilityRXChecksumOffload): frames
// come from the room's switch, and a guest that lies about its own
// checksums harms only its own flows.
type link struct {
	g       *Gateway
	mtu     uint32
	mac     tcpip.LinkAddress
	offload bool // declare host GSO: the stack hands over super-frames

	dispatcher stack.NetworkDispatcher // set by Attach before any traffic
}

var (
	_ stack.LinkEndpoint = (*link)(nil)
	_ stack.GSOEndpoint  = (*link)(nil)
)

func (l *link) MTU() uint32                             { return l.mtu }
func (l *link) SetMTU(mtu uint32)                       { l.mtu = mtu }
func (l *link) MaxHeaderLength() uint16                 { return header.EthernetMinimumSize }
func (l *link) LinkAddress() tcpip.LinkAddress          { return l.mac }
func (l *link) SetLinkAddress(a tcpip.LinkAddress)      { l.mac = a }
func (l *link) Attach(d stack.NetworkDispatcher)        { l.dispatcher = d }
func (l *link) IsAttached() bool                        { return l.dispatcher != nil }
func (l *link) Wait()                                   {}
func (l *link) ARPHardwareType() header.ARPHardwareType { return header.ARPHardwareEther }
func (l *link) AddHeader(*stack.PacketBuffer)           {}
func (l *link) ParseHeader(*stack.PacketBuffer) bool    { return true }
func (l *link) Close()                                  {}
func (l *link) SetOnCloseAction(func())                 {}

func (l *link) Capabilities() stack.LinkEndpointCapabilities {
	return stack.CapabilityResolutionRequired | stack.CapabilityRXChecksumOffload
}

// GSOMaxSize and SupportedGSO make the stack's TCP hand over super-frames
// with a partial checksum when offloading, as it does to a TAP opened with
// virtio-net headers.
func (l *link) GSOMaxSize() uint32 {
	if !l.offload {
		return 0
	}
	return gsoMaxSize
}

func (l *link) SupportedGSO() stack.SupportedGSO {
	if !l.offload {
		return stack.GSONotSupported
	}
	return stack.HostGSOSupported
}

// deliver hands the stack an IP packet or ARP message from the room.
func (l *link) deliver(proto tcpip.NetworkProtocolNumber, pkt *stack.PacketBuffer) {
	if d := l.dispatcher; d != nil {
		d.DeliverNetworkPacket(proto, pkt)
	}
}

// WritePackets puts an Ethernet header on each packet and queues it; it
// never blocks (a full queue drops, counted by send).
func (l *link) WritePackets(pkts stack.PacketBufferList) (int, tcpip.Error) {
	n := 0
	for _, pkt := range pkts.AsSlice() {
		src := l.mac
		if r := pkt.EgressRoute; r.LocalLinkAddress != "" {
			src = r.LocalLinkAddress
		}
		eth := header.Ethernet(pkt.LinkHeader().Push(header.EthernetMinimumSize))
		eth.Encode(&header.EthernetFields{Type: pkt.NetworkProtocolNumber, SrcAddr: src, DstAddr: pkt.EgressRoute.RemoteLinkAddress})
		l.g.send(pkt, l.work(pkt))
		n++
	}
	return n, nil
}

// work is the offload left on pkt, in the virtio-net terms of
// ether.Offload.
func (l *link) work(pkt *stack.PacketBuffer) ether.Offload {
	gso := pkt.GSOOptions
	if !l.offload || gso.Type == stack.GSONone {
		return ether.Offload{}
	}
	var o ether.Offload
	if gso.NeedsCsum {
		o.NeedsCsum = true
		o.CsumStart = header.EthernetMinimumSize + gso.L3HdrLen
		o.CsumOffset = gso.CsumOffset
	}
	if gso.Type == stack.GSOTCPv4 && pkt.Data().Size() > int(gso.MSS) {
		o.GSO = ether.GSOTCPv4
		o.GSOSize = gso.MSS
		o.HdrLen = uint16(pkt.HeaderSize())
	}
	return o
}

func (l *link) WriteRawPacket(*stack.PacketBuffer) tcpip.Error { return &tcpip.ErrNotSupported{} }
