package peer

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"

	"github.com/peerlan/peerlan/peer/ether"
)

// LocalPort is the Port the switch attaches for the local guest. It wraps
// the guest's own port (a TAP device, the browser emulator's NIC) and puts
// the peer's local services in front of it:
//
//   - Read returns the guest's frames except datagrams to the DHCP server
//     port (UDP 67, whatever their destination MAC or IP, even unicast to
//     the gateway's MAC): the DHCPServer answers those straight back to the
//     guest, and they never reach the mesh.
//   - Write passes frames from the switch to the guest, except DHCP server
//     messages (UDP 67 to 68): the local service is the only DHCP server
//     the guest may hear, so a remote guest running one cannot hijack it.
//
// Writes to the guest come from two goroutines (the switch's, through
// Write, and the reader's, for DHCP replies), so LocalPort serialises them:
// the guest port still sees one writer at a time, as the Port contract
// promises it.
type LocalPort struct {
	guest Port
	dhcp  *DHCPServer // nil: no local services, frames pass unchanged
	log   *slog.Logger

	// reply holds the DHCP reply being sent; only Read uses it, and Read is
	// called by one goroutine at a time.
	reply [ether.DHCPMaxFrameLen]byte

	writeMu sync.Mutex // held around every guest.Write

	fromGuest     atomic.Uint64
	toGuest       atomic.Uint64
	dhcpConsumed  atomic.Uint64
	dhcpReplies   atomic.Uint64
	replyDrops    atomic.Uint64
	serverBlocked atomic.Uint64
	announced     atomic.Uint64
}

var _ OffloadPort = (*LocalPort)(nil)

// LocalPortStats counts a LocalPort's traffic.
type LocalPortStats struct {
	FromGuest uint64 // frames handed from the guest to the switch
	ToGuest   uint64 // frames written to the guest, DHCP replies included
	// DHCPConsumed counts datagrams to the DHCP server port kept off the
	// mesh; DHCPReplies the replies the guest port accepted, ReplyDrops
	// those it refused (congested or closed).
	DHCPConsumed uint64
	DHCPReplies  uint64
	ReplyDrops   uint64
	// ServerBlocked counts DHCP server messages from the mesh not delivered.
	ServerBlocked uint64
	// Announced counts gratuitous ARPs sent to the mesh for the guest, one
	// after each DHCP ACK.
	Announced uint64
	// DHCP has the service's counters by message type (zero without one).
	DHCP DHCPStats
}

// NewLocalPort wraps guest. svc may be nil for a guest without local
// services (then every frame passes both ways); log may be nil. The
// LocalPort owns guest from now on: Close closes it.
func NewLocalPort(guest Port, svc *DHCPServer, log *slog.Logger) *LocalPort {
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return &LocalPort{guest: guest, dhcp: svc, log: log.With("component", "localport")}
}

// Read returns the next frame from the guest that is meant for the switch,
// answering DHCP on the way. Errors from the guest are returned unchanged.
func (p *LocalPort) Read(b []byte) (int, error) {
	for {
		n, err := p.guest.Read(b)
		if err != nil {
			return n, err
		}
		if m, ok := p.serve(b, n); ok {
			return m, nil
		}
	}
}

// Offloads reports whether the guest's port carries offloaded frames (see
// OffloadPort); LocalPort then carries them too.
func (p *LocalPort) Offloads() bool {
	op, ok := p.guest.(OffloadPort)
	return ok && op.Offloads()
}

// ReadOffload is Read for a guest port that carries offloaded frames. A
// datagram to the DHCP server port gets its checksum finished before the
// service looks at it; other frames pass with their work.
func (p *LocalPort) ReadOffload(b []byte) (int, ether.Offload, error) {
	op, ok := p.guest.(OffloadPort)
	if !ok {
		n, err := p.Read(b)
		return n, ether.Offload{}, err
	}
	for {
		n, o, err := op.ReadOffload(b)
		if err != nil {
			return n, o, err
		}
		if p.dhcp != nil && o.GSO == ether.GSONone && isForDHCPServer(b[:n]) {
			if o.NeedsCsum {
				if o.Check(b[:n]) != nil {
					continue
				}
				ether.FinishChecksum(b[:n], o)
			}
			o = ether.Offload{}
		}
		if m, ok := p.serve(b, n); ok {
			return m, o, nil
		}
	}
}

// serve puts the local services in front of the guest's frame b[:n]. It
// returns the length of what goes on to the switch in b (the frame itself,
// or a gratuitous ARP for the guest after a DHCP ACK) and true, or false
// when the frame was the service's alone.
func (p *LocalPort) serve(b []byte, n int) (int, bool) {
	if p.dhcp == nil {
		p.fromGuest.Add(1)
		return n, true
	}
	rn, handled := p.dhcp.Handle(b[:n], p.reply[:])
	if !handled {
		p.fromGuest.Add(1)
		return n, true
	}
	p.dhcpConsumed.Add(1)
	if rn > 0 {
		p.sendReply(p.reply[:rn])
		if mac, addr, ok := ackedAddress(p.reply[:rn]); ok {
			if an, err := ether.BuildGratuitousARP(b, mac, addr); err == nil {
				p.announced.Add(1)
				return an, true
			}
		}
	}
	return 0, false
}

// ackedAddress returns the client and address of a DHCP ACK frame. After
// each ACK Read hands the switch a gratuitous ARP on the guest's behalf, so
// that hosts on the mesh that still hold another MAC address for it (the
// guest restarted, or its peer resumed its id and address with a new TAP)
// update their neighbour entry at once instead of when it goes stale.
func ackedAddress(frame []byte) (ether.MAC, netip.Addr, bool) {
	e, err := ether.ParseEthernet(frame)
	if err != nil || e.Type() != ether.TypeIPv4 {
		return ether.MAC{}, netip.Addr{}, false
	}
	ip, err := ether.ParseIPv4(e.Payload())
	if err != nil || ip.Protocol() != ether.ProtoUDP {
		return ether.MAC{}, netip.Addr{}, false
	}
	u, err := ether.ParseUDP(ip.Payload())
	if err != nil {
		return ether.MAC{}, netip.Addr{}, false
	}
	d, err := ether.ParseDHCP(u.Payload())
	if err != nil || d.MessageType() != ether.DHCPAck {
		return ether.MAC{}, netip.Addr{}, false
	}
	mac, ok := d.ClientMAC()
	addr := d.YIAddr()
	if !ok || !addr.Is4() || addr.IsUnspecified() {
		return ether.MAC{}, netip.Addr{}, false
	}
	return mac, addr, true
}

// AnswerHeld answers the DHCP message the guest sent while the service had
// no address, if any (see DHCPServer.TakeHeld). The mesh calls it right after
// the room gives the service its address, so that a guest that asked first
// is not left waiting for its DHCP client to ask again. Safe to call
// concurrently with Read and Write.
func (p *LocalPort) AnswerHeld() {
	if p.dhcp == nil {
		return
	}
	var msg [MaxFrameSize]byte
	n := p.dhcp.TakeHeld(msg[:])
	if n == 0 {
		return
	}
	var reply [ether.DHCPMaxFrameLen]byte // p.reply is Read's
	if rn, handled := p.dhcp.Handle(msg[:n], reply[:]); handled && rn > 0 {
		p.sendReply(reply[:rn])
	}
}

func (p *LocalPort) sendReply(frame []byte) {
	p.writeMu.Lock()
	_, err := p.guest.Write(frame)
	p.writeMu.Unlock()
	if err != nil {
		// Dropped (the guest is not keeping up) or closed (the next Read
		// reports it): the guest's DHCP client retransmits either way.
		p.replyDrops.Add(1)
		if !errors.Is(err, ErrDropped) && !errors.Is(err, net.ErrClosed) {
			p.log.Warn("DHCP reply not delivered to the guest", "err", err)
		}
		return
	}
	p.dhcpReplies.Add(1)
	p.toGuest.Add(1)
}

// Write gives one frame from the switch to the guest. A DHCP server message
// is filtered: it is reported written, but the guest never sees it.
func (p *LocalPort) Write(b []byte) (int, error) {
	return p.WriteOffload(b, ether.Offload{})
}

// WriteOffload is Write for a frame with offload work left, which only a
// guest port that carries offloaded frames is given (see Offloads).
func (p *LocalPort) WriteOffload(b []byte, o ether.Offload) (int, error) {
	if p.dhcp != nil && o.GSO == ether.GSONone && isDHCPServerMessage(b) {
		n := p.serverBlocked.Add(1)
		if n == 1 && p.log.Enabled(context.Background(), slog.LevelInfo) {
			e := ether.Ethernet(b)
			p.log.Info("blocked a DHCP server message from the mesh; only the local service serves this guest",
				"src", e.Src())
		}
		return len(b), nil
	}
	p.writeMu.Lock()
	var (
		n   int
		err error
	)
	if o.IsZero() {
		n, err = p.guest.Write(b)
	} else if op, ok := p.guest.(OffloadPort); ok {
		n, err = op.WriteOffload(b, o)
	} else {
		err = errNotOffloading
	}
	p.writeMu.Unlock()
	if err == nil {
		p.toGuest.Add(1)
	}
	return n, err
}

var errNotOffloading = errors.New("peer: offloaded frame for a guest port that does not carry them")

// Close closes the guest's port, which unblocks Read and Write.
func (p *LocalPort) Close() error { return p.guest.Close() }

// Stats returns a snapshot of the counters.
func (p *LocalPort) Stats() LocalPortStats {
	s := LocalPortStats{
		FromGuest:     p.fromGuest.Load(),
		ToGuest:       p.toGuest.Load(),
		DHCPConsumed:  p.dhcpConsumed.Load(),
		DHCPReplies:   p.dhcpReplies.Load(),
		ReplyDrops:    p.replyDrops.Load(),
		ServerBlocked: p.serverBlocked.Load(),
		Announced:     p.announced.Load(),
	}
	if p.dhcp != nil {
		s.DHCP = p.dhcp.Stats()
	}
	return s
}

// isForDHCPServer reports whether frame is a UDP datagram to port 67 (an
// unfragmented one, or the first fragment), whatever its checksum.
func isForDHCPServer(frame []byte) bool {
	u, ok := udpOf(frame)
	return ok && len(u) >= 4 && uint16(u[2])<<8|uint16(u[3]) == ether.DHCPServerPort
}

// udpOf returns the UDP header and payload of an IPv4 frame's first
// fragment.
func udpOf(frame []byte) ([]byte, bool) {
	e, err := ether.ParseEthernet(frame)
	if err != nil || e.Type() != ether.TypeIPv4 {
		return nil, false
	}
	ip, err := ether.ParseIPv4(e.Payload())
	if err != nil || ip.Protocol() != ether.ProtoUDP || ip.FragmentOffset() != 0 {
		return nil, false
	}
	return ip.Payload(), true
}

// isDHCPServerMessage reports whether frame is a UDP datagram from port 67
// to port 68 (an unfragmented one, or the first fragment).
func isDHCPServerMessage(frame []byte) bool {
	u, ok := udpOf(frame)
	return ok && len(u) >= 4 &&
		uint16(u[0])<<8|uint16(u[1]) == ether.DHCPServerPort &&
		uint16(u[2])<<8|uint16(u[3]) == ether.DHCPClientPort
}
