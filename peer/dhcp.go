package peer

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/peerlan/peerlan/peer/ether"
)

// The local DHCP service.
//
// Every peer answers its own guest's DHCP, so any guest OS with a DHCP
// client configures itself with the address the signaling server assigned
// to this peer, with or without a gateway in the room. The service sits in
// front of the guest's port (see LocalPort): the guest's DHCP messages are
// answered straight back and never reach the mesh.
//
// One peer has one address. The service binds it to the first client
// hardware address that asks and ignores DHCP from any other (logging each
// such address once, and further ones at most once a minute). A bridge with
// several guests behind one peer must give the others static addresses;
// DHCPINFORM from them is still answered with the room's router, DNS and
// mask. The binding lapses when the lease expires without a renewal or when
// the client releases it, so a guest that comes back with a new MAC gets
// the address again after at most one lease time.
//
// Binding state (guarded by DHCPServer.mu):
//
//	unbound ──DISCOVER/REQUEST from M──► bound to M until now+hold (OFFER)
//	bound M ──ACK──────────────────────► bound to M until now+LeaseTime
//	bound M ──RELEASE from M, expiry───► unbound
//
// When the peer's address changes (SetLease), the bound guest's requests for
// the old address are NAKed, which sends it back to DISCOVER; it notices at
// its next renewal (T1, half the lease time) or reboot. There is no way to
// push the change earlier: FORCERENEW (RFC 3203) needs authentication that
// common clients lack.
//
// Relayed messages (giaddr set) are not served: a relayed client lives on
// another subnet, and the one address this service hands out belongs to the
// room's subnet where the guest is attached directly. VLAN-tagged frames are
// not inspected and pass through as ordinary frames.

// DHCPDefaultLeaseTime is the lease time when DHCPConfig.LeaseTime is zero.
const DHCPDefaultLeaseTime = 12 * time.Hour

const (
	dhcpMinLeaseTime = 10 * time.Second
	dhcpMaxLeaseTime = 365 * 24 * time.Hour
	// dhcpOfferHold is how long an OFFER reserves the binding for a client
	// that has not yet sent its REQUEST.
	dhcpOfferHold = time.Minute
	// dhcpHeldMaxAge is how long a message that arrived before the service
	// had an address is worth answering when the address comes (see
	// TakeHeld); a DHCP client retransmits within seconds anyway.
	dhcpHeldMaxAge = 10 * time.Second
	// dhcpMaxStrangers bounds the set of other clients logged individually;
	// past it, one summary line per dhcpStrangerLogEvery at most.
	dhcpMaxStrangers       = 16
	dhcpStrangerLogEvery   = time.Minute
	dhcpMinMTU, dhcpMaxMTU = 68, 1500
	dhcpMinPrefixBits      = 8
	dhcpMaxPrefixBits      = 30
)

var (
	errDHCPServiceMAC = errors.New("peer: DHCP service MAC must be a locally administered unicast address")
	errDHCPLease      = errors.New("peer: DHCP lease must be an IPv4 host address in a /8 to /30 room prefix, other than the room's .1")
	errDHCPLeaseTime  = errors.New("peer: DHCP lease time must be between 10s and 365 days")
	errDHCPMTU        = errors.New("peer: DHCP interface MTU must be 0 (omit) or 68 to 1500")
)

// DHCPConfig configures a DHCPServer.
type DHCPConfig struct {
	// Lease is the guest's address with the length of the room's prefix,
	// e.g. 10.77.0.23/24, as the signaling server assigned it. The room's
	// .1 (first host address) is the router, DNS server and server
	// identifier. The zero Prefix starts the service without an address:
	// it swallows the guest's DHCP but stays silent until SetLease.
	Lease netip.Prefix

	// ServiceMAC is the Ethernet source of every reply: a fixed, locally
	// administered unicast address belonging to this peer's services, never
	// the guest's. Required.
	ServiceMAC ether.MAC

	// LeaseTime defaults to DHCPDefaultLeaseTime (12 h); 10 s to 365 days.
	// Renewal (T1) is at 1/2 and rebinding (T2) at 7/8 of it (RFC 2131
	// 4.4.5).
	LeaseTime time.Duration

	// MTU is sent as the interface MTU option (26) when non-zero; 68 to
	// 1500, since a peerlan frame carries at most 1500 bytes of payload.
	MTU int

	// Logger receives binding changes, NAKs and warnings; debug level
	// shows every message. Nil discards.
	Logger *slog.Logger
}

// DHCPStats counts the service's messages. Received counts are by DHCP
// message type from the guest; sent counts by type to it.
type DHCPStats struct {
	Discovers uint64 // DHCPDISCOVER received
	Requests  uint64 // DHCPREQUEST received
	Declines  uint64 // DHCPDECLINE received: the guest found its address in use
	Releases  uint64 // DHCPRELEASE received
	Informs   uint64 // DHCPINFORM received

	Offers uint64 // DHCPOFFER sent
	Acks   uint64 // DHCPACK sent
	Naks   uint64 // DHCPNAK sent

	// Strangers counts messages from a client other than the bound one.
	Strangers uint64
	// Ignored counts well-formed messages left unanswered: relayed, of a
	// server-side or unknown type, a REQUEST for another server, or any
	// message while the service has no address.
	Ignored uint64
	// Malformed counts datagrams to the server port that were dropped as
	// unusable: bad checksums, fragments, truncated or non-Ethernet DHCP.
	Malformed uint64
}

type dhcpCounters struct {
	discovers, requests, declines, releases, informs atomic.Uint64
	offers, acks, naks                               atomic.Uint64
	strangers, ignored, malformed                    atomic.Uint64
}

// dhcpLease is everything derived from the peer's address.
type dhcpLease struct {
	prefix    netip.Prefix // the address with the room's prefix length
	addr      netip.Addr
	mask      netip.Addr
	router    netip.Addr // the room's .1: router, DNS and server identifier
	broadcast netip.Addr
}

func newDHCPLease(p netip.Prefix) (dhcpLease, error) {
	if !p.IsValid() {
		return dhcpLease{}, nil // no address yet
	}
	addr := p.Addr()
	if !addr.Is4() || p.Bits() < dhcpMinPrefixBits || p.Bits() > dhcpMaxPrefixBits {
		return dhcpLease{}, fmt.Errorf("%w: %v", errDHCPLease, p)
	}
	network := p.Masked().Addr()
	hostBits := uint32(1)<<(32-p.Bits()) - 1
	n4 := network.As4()
	l := dhcpLease{
		prefix:    p,
		addr:      addr,
		mask:      addrFromUint32(^hostBits),
		router:    network.Next(),
		broadcast: addrFromUint32(binary.BigEndian.Uint32(n4[:]) | hostBits),
	}
	if addr == network || addr == l.router || addr == l.broadcast {
		return dhcpLease{}, fmt.Errorf("%w: %v", errDHCPLease, p)
	}
	return l, nil
}

func addrFromUint32(v uint32) netip.Addr {
	var a [4]byte
	binary.BigEndian.PutUint32(a[:], v)
	return netip.AddrFrom4(a)
}

func (l *dhcpLease) valid() bool { return l.addr.IsValid() }

// DHCPServer answers the local guest's DHCP with this peer's one address.
// Handle is called for every frame the guest sends; SetLease, Lease and
// Stats may be called concurrently with it from any goroutine.
type DHCPServer struct {
	log        *slog.Logger
	serviceMAC ether.MAC
	leaseTime  time.Duration
	leaseSecs  uint32
	mtu        uint16
	now        func() time.Time // the clock, replaced by tests

	mu struct {
		sync.Mutex
		lease     dhcpLease
		client    ether.MAC // the bound client; zero when unbound
		expires   time.Time // when the binding lapses
		strangers map[ether.MAC]struct{}
		summaryAt time.Time // last summary line about further strangers
		// held is the guest's latest message that came while the service
		// had no address, heldN its length (0: none), heldAt its arrival.
		held   [MaxFrameSize]byte
		heldN  int
		heldAt time.Time
	}

	stats dhcpCounters
}

// NewDHCPServer validates cfg and returns a server.
func NewDHCPServer(cfg DHCPConfig) (*DHCPServer, error) {
	if cfg.ServiceMAC.IsGroup() || cfg.ServiceMAC.IsZero() || !cfg.ServiceMAC.IsLocal() {
		return nil, fmt.Errorf("%w: %v", errDHCPServiceMAC, cfg.ServiceMAC)
	}
	lt := cfg.LeaseTime
	if lt == 0 {
		lt = DHCPDefaultLeaseTime
	}
	if lt < dhcpMinLeaseTime || lt > dhcpMaxLeaseTime {
		return nil, fmt.Errorf("%w: %v", errDHCPLeaseTime, cfg.LeaseTime)
	}
	if cfg.MTU != 0 && (cfg.MTU < dhcpMinMTU || cfg.MTU > dhcpMaxMTU) {
		return nil, fmt.Errorf("%w: %d", errDHCPMTU, cfg.MTU)
	}
	lease, err := newDHCPLease(cfg.Lease)
	if err != nil {
		return nil, err
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	s := &DHCPServer{
		log:        log.With("component", "dhcp"),
		serviceMAC: cfg.ServiceMAC,
		leaseTime:  lt,
		leaseSecs:  uint32(lt / time.Second),
		mtu:        uint16(cfg.MTU),
		now:        time.Now,
	}
	s.mu.lease = lease
	s.mu.strangers = make(map[ether.MAC]struct{})
	return s, nil
}

// SetLease changes the peer's address, e.g. when a reconnect to the
// signaling server assigned a new one. The zero Prefix withdraws it: the
// service then stays silent. The bound client stays bound; its requests for
// the old address are NAKed from now on.
func (s *DHCPServer) SetLease(p netip.Prefix) error {
	lease, err := newDHCPLease(p)
	if err != nil {
		return err
	}
	s.mu.Lock()
	old := s.mu.lease.prefix
	s.mu.lease = lease
	s.mu.Unlock()
	if old != p {
		s.log.Info("DHCP lease changed", "old", old, "new", p)
	}
	return nil
}

// TakeHeld copies into b the guest's latest DISCOVER, REQUEST or INFORM
// that arrived while the service had no address and returns its length, or
// returns 0 when there is none, it is older than dhcpHeldMaxAge, or the
// service still has no address. A message is taken once. Handing it to
// Handle after SetLease answers a guest whose DHCP client started before the
// peer joined its room at once, instead of at its next retransmission,
// which clients space a second or more apart. b must hold MaxFrameSize.
func (s *DHCPServer) TakeHeld(b []byte) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.mu.lease.valid() {
		return 0
	}
	n := s.mu.heldN
	s.mu.heldN = 0
	if n == 0 || s.now().Sub(s.mu.heldAt) > dhcpHeldMaxAge {
		return 0
	}
	return copy(b, s.mu.held[:n])
}

// Lease returns the address handed out with the room's prefix length, or
// the zero Prefix when there is none.
func (s *DHCPServer) Lease() netip.Prefix {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.mu.lease.prefix
}

// Stats returns a snapshot of the counters.
func (s *DHCPServer) Stats() DHCPStats {
	c := &s.stats
	return DHCPStats{
		Discovers: c.discovers.Load(), Requests: c.requests.Load(), Declines: c.declines.Load(),
		Releases: c.releases.Load(), Informs: c.informs.Load(),
		Offers: c.offers.Load(), Acks: c.acks.Load(), Naks: c.naks.Load(),
		Strangers: c.strangers.Load(), Ignored: c.ignored.Load(), Malformed: c.malformed.Load(),
	}
}

// Handle inspects one frame from the guest. handled reports that the frame
// is a datagram to the DHCP server port (UDP 67, whatever its destination
// MAC or IP): the caller must not forward it. When n > 0, out[:n] holds the
// reply to give the guest. out should hold ether.DHCPMaxFrameLen bytes and
// must not overlap frame. Handle allocates nothing unless it logs, and it
// logs at most a few lines per client (debug level aside).
func (s *DHCPServer) Handle(frame, out []byte) (n int, handled bool) {
	d, handled, ok := parseDHCPToServer(frame)
	if !handled {
		return 0, false
	}
	if !ok {
		s.stats.malformed.Add(1)
		return 0, true
	}
	mac, ok := d.ClientMAC()
	if !ok || mac.IsZero() || mac.IsGroup() {
		s.stats.malformed.Add(1)
		return 0, true
	}
	if d.Op() != ether.BootRequest || d.GIAddr() != netip.IPv4Unspecified() {
		s.stats.ignored.Add(1)
		return 0, true
	}
	t := d.MessageType()
	if s.log.Enabled(context.Background(), slog.LevelDebug) {
		s.log.Debug("DHCP message", "type", t, "client", mac, "xid", d.XID())
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	if !s.mu.lease.valid() && (t == ether.DHCPDiscover || t == ether.DHCPRequest || t == ether.DHCPInform) &&
		len(frame) <= len(s.mu.held) {
		s.mu.heldN = copy(s.mu.held[:], frame)
		s.mu.heldAt = now
	}
	switch t {
	case ether.DHCPDiscover:
		s.stats.discovers.Add(1)
		return s.discover(d, mac, now, out), true
	case ether.DHCPRequest:
		s.stats.requests.Add(1)
		return s.request(d, mac, now, out), true
	case ether.DHCPDecline:
		s.stats.declines.Add(1)
		s.decline(d, mac, now)
	case ether.DHCPRelease:
		s.stats.releases.Add(1)
		s.release(d, mac, now)
	case ether.DHCPInform:
		s.stats.informs.Add(1)
		return s.inform(d, out), true
	default:
		s.stats.ignored.Add(1)
	}
	return 0, true
}

// parseDHCPToServer classifies a frame from the guest. toServer reports a
// UDP datagram to port 67 (what the caller must keep off the mesh); ok
// reports that it is also a well-formed DHCP message, returned in d.
// Non-first fragments carry no port and are never claimed.
func parseDHCPToServer(frame []byte) (d ether.DHCP, toServer, ok bool) {
	e, err := ether.ParseEthernet(frame)
	if err != nil || e.Type() != ether.TypeIPv4 {
		return nil, false, false
	}
	ip, err := ether.ParseIPv4(e.Payload())
	if err != nil || ip.Protocol() != ether.ProtoUDP || ip.FragmentOffset() != 0 {
		return nil, false, false
	}
	p := ip.Payload()
	if len(p) < 4 || uint16(p[2])<<8|uint16(p[3]) != ether.DHCPServerPort {
		return nil, false, false
	}
	if ip.MoreFragments() || !ip.ValidChecksum() {
		return nil, true, false
	}
	u, err := ether.ParseUDP(p)
	if err != nil || !u.ValidChecksum(ip.Src(), ip.Dst()) {
		return nil, true, false
	}
	d, err = ether.ParseDHCP(u.Payload())
	if err != nil {
		return nil, true, false
	}
	return d, true, true
}

// claim binds mac if the binding is free or lapsed and reports whether mac
// is (now) the bound client. Called with mu held.
func (s *DHCPServer) claim(mac ether.MAC, now time.Time) bool {
	if s.isClient(mac, now) {
		return true
	}
	if s.mu.client.IsZero() || !now.Before(s.mu.expires) {
		if !s.mu.client.IsZero() {
			s.log.Info("DHCP binding lapsed", "client", s.mu.client)
		}
		s.mu.client = mac
		s.mu.expires = now.Add(dhcpOfferHold)
		s.log.Info("DHCP client bound", "client", mac)
		return true
	}
	s.stranger(mac, now)
	return false
}

// isClient reports whether mac is the bound client. Called with mu held.
func (s *DHCPServer) isClient(mac ether.MAC, now time.Time) bool {
	return mac == s.mu.client && now.Before(s.mu.expires)
}

// stranger counts a message from a client other than the bound one and logs
// each such client once, then at most one summary line a minute.
func (s *DHCPServer) stranger(mac ether.MAC, now time.Time) {
	s.stats.strangers.Add(1)
	if _, seen := s.mu.strangers[mac]; seen {
		return
	}
	if len(s.mu.strangers) < dhcpMaxStrangers {
		s.mu.strangers[mac] = struct{}{}
		s.log.Warn("ignoring DHCP from a second client: this peer's one address is bound to another; "+
			"give further guests behind this peer static addresses",
			"client", mac, "bound", s.mu.client)
		return
	}
	if now.Sub(s.mu.summaryAt) >= dhcpStrangerLogEvery {
		s.mu.summaryAt = now
		s.log.Warn("ignoring DHCP from further clients", "total_messages", s.stats.strangers.Load())
	}
}

func (s *DHCPServer) discover(d ether.DHCP, mac ether.MAC, now time.Time, out []byte) int {
	if !s.mu.lease.valid() {
		s.stats.ignored.Add(1)
		return 0
	}
	if !s.claim(mac, now) {
		return 0
	}
	if hold := now.Add(dhcpOfferHold); s.mu.expires.Before(hold) {
		s.mu.expires = hold
	}
	return s.reply(d, mac, ether.DHCPOffer, s.mu.lease.addr, out)
}

// request handles the three kinds of DHCPREQUEST of RFC 2131 4.3.2, told
// apart by the server identifier, requested IP and ciaddr.
func (s *DHCPServer) request(d ether.DHCP, mac ether.MAC, now time.Time, out []byte) int {
	if !s.mu.lease.valid() {
		s.stats.ignored.Add(1)
		return 0
	}
	sid, selecting := d.ServerID()
	requested, hasRequested := d.RequestedIP()
	ciaddr := d.CIAddr()
	var want netip.Addr
	switch {
	case selecting:
		if sid != s.mu.lease.router {
			// The client took another server's offer (RFC 2131 4.3.2:
			// that REQUEST also tells us ours was declined).
			s.stats.ignored.Add(1)
			return 0
		}
		want = requested
		if !hasRequested {
			want = ciaddr
		}
	case hasRequested: // INIT-REBOOT: verifying a remembered address
		want = requested
	case ciaddr != netip.IPv4Unspecified(): // RENEWING or REBINDING
		want = ciaddr
	default:
		s.stats.malformed.Add(1)
		return 0
	}
	if !s.claim(mac, now) {
		return 0
	}
	if want != s.mu.lease.addr {
		s.log.Info("DHCP NAK: the guest asked for an address that is not this peer's",
			"client", mac, "requested", want, "lease", s.mu.lease.addr)
		return s.reply(d, mac, ether.DHCPNak, netip.Addr{}, out)
	}
	n := s.reply(d, mac, ether.DHCPAck, s.mu.lease.addr, out)
	if n > 0 {
		s.mu.expires = now.Add(s.leaseTime)
	}
	return n
}

func (s *DHCPServer) decline(d ether.DHCP, mac ether.MAC, now time.Time) {
	if !s.isClient(mac, now) {
		s.stranger(mac, now)
		return
	}
	// The guest found the address in use (ARP probe): a host with a static
	// address collides with the one the room assigned to this peer. There
	// is no other address to offer; the guest retries after ten seconds.
	requested, _ := d.RequestedIP()
	s.log.Warn("guest declined its address: another host on the room's LAN uses it",
		"client", mac, "address", requested)
}

func (s *DHCPServer) release(_ ether.DHCP, mac ether.MAC, now time.Time) {
	if !s.isClient(mac, now) {
		s.stranger(mac, now)
		return
	}
	s.mu.client = ether.MAC{}
	s.mu.expires = time.Time{}
	s.log.Info("DHCP client released its lease", "client", mac)
}

// inform answers DHCPINFORM from any client (a guest with a static address
// asking for the rest of its configuration): it assigns nothing.
func (s *DHCPServer) inform(d ether.DHCP, out []byte) int {
	if !s.mu.lease.valid() {
		s.stats.ignored.Add(1)
		return 0
	}
	mac, _ := d.ClientMAC()
	return s.reply(d, mac, ether.DHCPAck, netip.Addr{}, out)
}

var ipv4Broadcast = netip.AddrFrom4([4]byte{255, 255, 255, 255})

// reply builds a reply of type t to d into out. Addressing follows RFC 2131
// 4.1 for a message that was not relayed: a NAK is broadcast; otherwise a
// client with ciaddr gets unicast there, a client that set the broadcast
// flag gets a broadcast, and any other gets unicast to chaddr and yiaddr.
// Called with mu held.
func (s *DHCPServer) reply(d ether.DHCP, mac ether.MAC, t ether.DHCPMessageType, yiaddr netip.Addr, out []byte) int {
	l := &s.mu.lease
	ciaddr := d.CIAddr()
	hasCI := ciaddr != netip.IPv4Unspecified()
	h := ether.DHCPReplyHeader{EthSrc: s.serviceMAC, IPSrc: l.router, YIAddr: yiaddr}
	switch {
	case t == ether.DHCPNak:
		h.EthDst, h.IPDst = ether.Broadcast, ipv4Broadcast
	case hasCI:
		h.EthDst, h.IPDst = mac, ciaddr
	case d.Broadcast() || !yiaddr.IsValid():
		h.EthDst, h.IPDst = ether.Broadcast, ipv4Broadcast
	default:
		h.EthDst, h.IPDst = mac, yiaddr
	}
	// RFC 2131 table 3: ciaddr is echoed in an ACK, zero in OFFER and NAK.
	if t == ether.DHCPAck {
		h.CIAddr = ciaddr
	}

	var b ether.DHCPBuilder
	b.Start(out, d, h, t)
	b.AddAddr(ether.OptServerID, l.router)
	switch {
	case t == ether.DHCPNak:
		b.AddString(ether.OptMessage, "address not available from this peer")
	default:
		if yiaddr.IsValid() { // not for INFORM: RFC 2131 forbids lease times there
			b.AddUint32(ether.OptLeaseTime, s.leaseSecs)
			b.AddUint32(ether.OptRenewalTime, s.leaseSecs/2)
			b.AddUint32(ether.OptRebindingTime, uint32(uint64(s.leaseSecs)*7/8))
		}
		b.AddAddr(ether.OptSubnetMask, l.mask)
		b.AddAddr(ether.OptRouter, l.router)
		b.AddAddr(ether.OptDNS, l.router)
		b.AddAddr(ether.OptBroadcastAddr, l.broadcast)
		if s.mtu != 0 {
			b.AddUint16(ether.OptInterfaceMTU, s.mtu)
		}
	}
	n, err := b.Finish()
	if err != nil {
		// Only a caller's undersized out buffer gets here.
		s.stats.ignored.Add(1)
		s.log.Warn("DHCP reply not built", "type", t, "err", err)
		return 0
	}
	switch t {
	case ether.DHCPOffer:
		s.stats.offers.Add(1)
	case ether.DHCPAck:
		s.stats.acks.Add(1)
	case ether.DHCPNak:
		s.stats.naks.Add(1)
	}
	return n
}
