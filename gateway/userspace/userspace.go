package userspace

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/containers/gvisor-tap-vsock/pkg/services/forwarder"
	"github.com/containers/gvisor-tap-vsock/pkg/tap"
	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/network/arp"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/icmp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"

	"github.com/peerlan/peerlan/gateway"
	"github.com/peerlan/peerlan/peer"
	"github.com/peerlan/peerlan/peer/ether"
)

// Defaults and bounds.
const (
	// DefaultQueueLen bounds the frames the stack has sent toward guests
	// that the switch has not read yet; beyond it frames are dropped
	// (DropQueue), as a congested port does.
	DefaultQueueLen = 1024
	// DefaultMaxFlows bounds the TCP connections and UDP flows relayed at
	// once, all guests together (each holds a socket of the host).
	DefaultMaxFlows = 4096
	// maxAllow bounds Config.Allow, as gateway.HostConfig does.
	maxAllow = 256
	// nic is the stack's one network interface.
	nic tcpip.NICID = 1
	// dnsPort is where guests query the gateway.
	dnsPort = 53
)

var (
	errConfig = errors.New("userspace gateway: bad config")
	errDial   = errors.New("userspace gateway: dial guest")
)

// Config configures a Gateway.
type Config struct {
	// Subnet is the room's IPv4 subnet (from the signaling server's
	// welcome); the gateway takes its first address (.1). Prefix length
	// 16..30. Required.
	Subnet netip.Prefix
	// MAC is the gateway's Ethernet address; default a random locally
	// administered unicast address.
	MAC ether.MAC
	// MTU of the stack's interface; default peer.DefaultGuestMTU. Match the
	// guests' (DHCP gives them this MTU).
	MTU int
	// Allow opens IPv4 prefixes that the egress policy blocks by default, as
	// gateway.HostConfig.Allow does. At most 256.
	Allow []netip.Prefix
	// RateLimit caps each guest's traffic through the gateway in bytes per
	// second, separately in each direction; 0 disables it. At least
	// gateway.MinGuestRateLimit.
	RateLimit uint64
	// DNS configures the forwarder on .1:53; its Listen, PacketConn,
	// Listener and Interface are set by New. Upstreams, ResolvConf, Timeout
	// and the bounds apply as in kernel mode.
	DNS gateway.DNSConfig
	// QueueLen bounds frames waiting toward the switch; default DefaultQueueLen.
	QueueLen int
	// MaxFlows bounds the flows relayed at once: a new TCP connection is
	// dropped (DropFlows) while MaxFlows are relayed or waiting for the
	// host's connect, a new UDP flow while
	// the stack holds MaxFlows flows of either kind. Default DefaultMaxFlows.
	MaxFlows int
	// ConnectTimeout bounds the host's connect for a guest's new TCP
	// connection, which waits for it in its handshake; when it expires the
	// guest gets a reset (DropConnectTimeout). Default
	// DefaultConnectTimeout.
	ConnectTimeout time.Duration
	// MaxPendingPerGuest bounds one guest address's TCP connections waiting
	// for the host's connect; beyond it new ones are reset
	// (DropPendingGuest). Default DefaultMaxPendingPerGuest.
	MaxPendingPerGuest int
	// MaxPending bounds all guests' TCP connections waiting for the host's
	// connect; beyond it new ones are reset (DropPending). Default
	// DefaultMaxPending; at least MaxPendingPerGuest.
	MaxPending int
	// Logger default slog.Default().
	Logger *slog.Logger

	// translate maps destinations guests see to those the host dials, the
	// forwarders' NAT table. Tests only: a guest's kernel (and the stack)
	// refuses loopback destinations, and tests may reach only loopback.
	translate map[netip.Addr]netip.Addr
}

// Gateway is the userspace exit node. It is a peer.Port: the switch writes
// the room's frames into it and reads the stack's frames from it, one frame
// per call. It is safe for concurrent use as the Port contract requires.
type Gateway struct {
	log    *slog.Logger
	subnet netip.Prefix
	addr   netip.Addr // .1
	mac    ether.MAC
	allow  []netip.Prefix
	stack  *stack.Stack
	ep     *tap.LinkEndpoint
	dns    *gateway.DNSForwarder
	tcp    *tcpForwarder
	rate   *limiter           // nil: no limit
	cancel context.CancelFunc // ends the TCP forwarder's dials and relays

	maxFlows int
	ownFlows int // the stack's own endpoints (DNS), not counted against maxFlows

	out       chan *frame // stack → switch, bounded
	frames    sync.Pool   // *frame
	closed    chan struct{}
	closeOnce sync.Once
	closeErr  error

	hostAddrs hostAddrs

	in, outTraffic counter
	drops          []atomic.Uint64 // indexed like DropReasons
}

type counter struct{ packets, bytes atomic.Uint64 }

func (c *counter) add(n int) { c.packets.Add(1); c.bytes.Add(uint64(n)) }

// frame is a pooled buffer for one frame on its way to the switch.
type frame struct {
	b [peer.MaxFrameSize]byte
	n int
}

// New builds the stack for cfg.Subnet and starts the DNS forwarder on it.
// ctx bounds the setup only (reading and probing the host's resolvers).
func New(ctx context.Context, cfg Config) (*Gateway, error) {
	if err := validSubnet(cfg.Subnet); err != nil {
		return nil, err
	}
	subnet := cfg.Subnet.Masked()
	if cfg.MTU == 0 {
		cfg.MTU = peer.DefaultGuestMTU
	}
	if cfg.MTU < 576 || cfg.MTU > 1500 {
		return nil, fmt.Errorf("%w: MTU %d, want 576 to 1500", errConfig, cfg.MTU)
	}
	if len(cfg.Allow) > maxAllow {
		return nil, fmt.Errorf("%w: %d Allow prefixes, at most %d", errConfig, len(cfg.Allow), maxAllow)
	}
	for _, p := range cfg.Allow {
		if !p.IsValid() || !p.Addr().Is4() {
			return nil, fmt.Errorf("%w: Allow %v is not an IPv4 prefix", errConfig, p)
		}
	}
	if cfg.RateLimit != 0 && cfg.RateLimit < gateway.MinGuestRateLimit {
		return nil, fmt.Errorf("%w: RateLimit %d bytes/s, at least %d", errConfig, cfg.RateLimit, gateway.MinGuestRateLimit)
	}
	if cfg.QueueLen < 0 || cfg.MaxFlows < 0 || cfg.ConnectTimeout < 0 || cfg.MaxPendingPerGuest < 0 || cfg.MaxPending < 0 {
		return nil, fmt.Errorf("%w: negative QueueLen, MaxFlows, ConnectTimeout, MaxPendingPerGuest or MaxPending", errConfig)
	}
	if cfg.ConnectTimeout == 0 {
		cfg.ConnectTimeout = DefaultConnectTimeout
	}
	if cfg.MaxPendingPerGuest == 0 {
		cfg.MaxPendingPerGuest = DefaultMaxPendingPerGuest
	}
	if cfg.MaxPending == 0 {
		cfg.MaxPending = max(DefaultMaxPending, cfg.MaxPendingPerGuest)
	}
	if cfg.MaxPending < cfg.MaxPendingPerGuest {
		return nil, fmt.Errorf("%w: MaxPending %d below MaxPendingPerGuest %d", errConfig, cfg.MaxPending, cfg.MaxPendingPerGuest)
	}
	if cfg.MaxFlows == 0 {
		cfg.MaxFlows = DefaultMaxFlows
	}
	if cfg.QueueLen == 0 {
		cfg.QueueLen = DefaultQueueLen
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.MAC.IsZero() {
		if _, err := rand.Read(cfg.MAC[:]); err != nil {
			return nil, fmt.Errorf("userspace gateway: random MAC: %w", err)
		}
		cfg.MAC[0] = cfg.MAC[0]&^1 | 2 // unicast, locally administered
	}
	if cfg.MAC.IsGroup() {
		return nil, fmt.Errorf("%w: MAC %v is a group address", errConfig, cfg.MAC)
	}
	g := &Gateway{
		log:    cfg.Logger.With("component", "userspace"),
		subnet: subnet,
		addr:   subnet.Addr().Next(),
		mac:    cfg.MAC,
		allow:  append([]netip.Prefix(nil), cfg.Allow...),
		out:    make(chan *frame, cfg.QueueLen),
		closed: make(chan struct{}),
		drops:  make([]atomic.Uint64, len(DropReasons)),

		maxFlows: cfg.MaxFlows,
	}
	g.frames.New = func() any { return new(frame) }
	if cfg.RateLimit > 0 {
		g.rate = newLimiter(cfg.RateLimit, subnet)
	}
	if err := g.buildStack(cfg); err != nil {
		return nil, err
	}
	if err := g.startDNS(ctx, cfg.DNS); err != nil {
		g.cancel()
		g.stack.Close()
		return nil, err
	}
	g.ownFlows = len(g.stack.RegisteredEndpoints())
	g.log.Info("userspace stack ready", "subnet", subnet, "address", g.addr, "mac", g.mac, "mtu", cfg.MTU,
		"allow", g.allow, "rate_bytes_per_s", cfg.RateLimit, "connect_timeout", cfg.ConnectTimeout,
		"max_pending_per_guest", cfg.MaxPendingPerGuest, "max_pending", cfg.MaxPending)
	return g, nil
}

// buildStack assembles the netstack. The frames come and go through
// gvisor-tap-vsock's tap.LinkEndpoint, driven directly rather than through
// virtualnetwork.VirtualNetwork: VirtualNetwork's acceptors (qemu stream,
// bess seqpacket, vfkit dgram) all take a net.Conn, so a Port would need a
// conn adapter with a queue and two more copies per frame, and it hides its
// stack, so its DNS (the host's system resolver, no -dns) and its DHCP
// server (which must stay silent here) could not be replaced, nor a UDP
// connection dialled to a guest. The endpoint gets each guest frame from
// Write with one copy (into the stack's buffer) and hands us each stack
// frame, which one copy puts into the queue Read takes from. It also drops
// ARP replies the stack would make for addresses other than .1 (the stack
// is promiscuous so that it terminates flows to any address).
func (g *Gateway) buildStack(cfg Config) error {
	ep, err := tap.NewLinkEndpoint(false, uint32(cfg.MTU), net.HardwareAddr(g.mac[:]).String(), g.addr.String(), nil)
	if err != nil {
		return fmt.Errorf("userspace gateway: link endpoint: %w", err)
	}
	ep.Connect(toSwitch{g})
	g.ep = ep
	s := stack.New(stack.Options{
		NetworkProtocols:   []stack.NetworkProtocolFactory{ipv4.NewProtocol, arp.NewProtocol},
		TransportProtocols: []stack.TransportProtocolFactory{tcp.NewProtocol, udp.NewProtocol, icmp.NewProtocol4},
	})
	g.stack = s
	fail := func(what string, e tcpip.Error) error {
		s.Close()
		return fmt.Errorf("userspace gateway: %s: %s", what, e)
	}
	if e := s.CreateNIC(nic, ep); e != nil {
		return fail("creating the NIC", e)
	}
	if e := s.AddProtocolAddress(nic, tcpip.ProtocolAddress{
		Protocol:          ipv4.ProtocolNumber,
		AddressWithPrefix: tcpip.AddrFrom4(g.addr.As4()).WithPrefix(),
	}, stack.AddressProperties{}); e != nil {
		return fail("adding .1", e)
	}
	// Promiscuous: packets to any address reach the transport forwarders;
	// spoofing: the replies leave from that address.
	if e := s.SetPromiscuousMode(nic, true); e != nil {
		return fail("promiscuous mode", e)
	}
	if e := s.SetSpoofing(nic, true); e != nil {
		return fail("spoofing", e)
	}
	sub, err := tcpip.NewSubnet(tcpip.AddrFrom4(g.subnet.Addr().As4()), tcpip.MaskFromBytes(net.CIDRMask(g.subnet.Bits(), 32)))
	if err != nil {
		s.Close()
		return fmt.Errorf("userspace gateway: route: %w", err)
	}
	s.SetRouteTable([]tcpip.Route{{Destination: sub, NIC: nic}})
	sack := tcpip.TCPSACKEnabled(true)
	s.SetTransportProtocolOption(tcp.ProtocolNumber, &sack)

	// No NAT table outside tests: a guest reaches exactly the address it
	// sent to. The UDP forwarder's own link-local refusal is kept
	// (ec2MetadataAccess false) although the frame filter drops those.
	var natMu sync.Mutex
	nat := make(map[tcpip.Address]tcpip.Address, len(cfg.translate))
	for from, to := range cfg.translate {
		nat[tcpip.AddrFrom4(from.As4())] = tcpip.AddrFrom4(to.As4())
	}
	ctx, cancel := context.WithCancel(context.Background())
	g.cancel = cancel
	var tcpFwd *tcp.Forwarder
	g.tcp, tcpFwd = newTCPForwarder(ctx, g, cfg)
	s.SetTransportProtocolHandler(tcp.ProtocolNumber, g.toHost(tcpFwd.HandlePacket, g.tcp.full))
	udpFwd := forwarder.UDP(s, nat, &natMu, false)
	s.SetTransportProtocolHandler(udp.ProtocolNumber, g.toHost(udpFwd.HandlePacket, g.udpFlowsFull))
	return nil
}

// toHost guards a forwarder: the stack calls it for TCP and UDP packets that
// no endpoint of its own took, i.e. new flows, which the forwarder relays by
// dialling the destination from the host. Packets to .1 reach it when they
// are not for DNS or a DialGuest connection; dialling .1 would reach
// whatever the host has there, so they are dropped (DropHost), as kernel
// mode refuses guests everything on .1 but DNS and ping. The frame filter
// cannot tell these apart from a DialGuest connection's replies. New flows
// beyond MaxFlows (full reports it) are dropped too (DropFlows).
func (g *Gateway) toHost(fwd func(stack.TransportEndpointID, *stack.PacketBuffer) bool, full func() bool) func(stack.TransportEndpointID, *stack.PacketBuffer) bool {
	gw := tcpip.AddrFrom4(g.addr.As4())
	return func(id stack.TransportEndpointID, pkt *stack.PacketBuffer) bool {
		switch {
		case id.LocalAddress == gw:
			g.drop(gateway.DropHost)
			return true // handled: dropped without a reset, as nftables does
		case full():
			g.drop(DropFlows)
			return true
		}
		return fwd(id, pkt)
	}
}

// udpFlowsFull counts the stack's endpoints, each UDP flow being one. It
// walks them, but only for a datagram that starts a flow.
func (g *Gateway) udpFlowsFull() bool {
	return len(g.stack.RegisteredEndpoints())-g.ownFlows >= g.maxFlows
}

// startDNS serves gateway.DNSForwarder on the stack's .1:53.
func (g *Gateway) startDNS(ctx context.Context, cfg gateway.DNSConfig) error {
	full := tcpip.FullAddress{NIC: nic, Addr: tcpip.AddrFrom4(g.addr.As4()), Port: dnsPort}
	pc, err := gonet.DialUDP(g.stack, &full, nil, ipv4.ProtocolNumber)
	if err != nil {
		return fmt.Errorf("userspace gateway: DNS socket: %w", err)
	}
	ln, err := gonet.ListenTCP(g.stack, full, ipv4.ProtocolNumber)
	if err != nil {
		pc.Close()
		return fmt.Errorf("userspace gateway: DNS listener: %w", err)
	}
	cfg.Listen = netip.AddrPortFrom(g.addr, dnsPort)
	cfg.PacketConn, cfg.Listener, cfg.Interface = pc, ln, ""
	if cfg.Logger == nil {
		cfg.Logger = g.log
	}
	fwd, err := gateway.NewDNSForwarder(ctx, cfg)
	if err != nil {
		pc.Close()
		ln.Close()
		return err
	}
	g.dns = fwd
	return nil
}

// GatewayAddr is the gateway's address (.1).
func (g *Gateway) GatewayAddr() netip.Addr { return g.addr }

// Announce queues a gratuitous ARP for .1, so that guests that knew another
// gateway (a restarted one, another MAC) switch to this one at once.
func (g *Gateway) Announce() error {
	f := g.frames.Get().(*frame)
	n, err := ether.BuildGratuitousARP(f.b[:], g.mac, g.addr)
	if err != nil {
		g.frames.Put(f)
		return fmt.Errorf("userspace gateway: announce: %w", err)
	}
	f.n = n
	select {
	case <-g.closed:
		g.frames.Put(f)
		return net.ErrClosed
	case g.out <- f:
		g.outTraffic.add(n)
		return nil
	default:
		g.frames.Put(f)
		g.drop(DropQueue)
		return fmt.Errorf("userspace gateway: announce: %w", peer.ErrDropped)
	}
}

// Subnet is the room's subnet.
func (g *Gateway) Subnet() netip.Prefix { return g.subnet }

// MAC is the gateway's Ethernet address.
func (g *Gateway) MAC() ether.MAC { return g.mac }

// DNS is the forwarder serving .1:53.
func (g *Gateway) DNS() *gateway.DNSForwarder { return g.dns }

// Read returns the next frame the stack sends toward the room. A frame
// larger than b is dropped (DropTooBig) and the next one is returned.
func (g *Gateway) Read(b []byte) (int, error) {
	for {
		select {
		case <-g.closed:
			return 0, net.ErrClosed
		case f := <-g.out:
			n := f.n
			if n > len(b) {
				g.frames.Put(f)
				g.drop(DropTooBig)
				continue
			}
			copy(b, f.b[:n])
			g.frames.Put(f)
			return n, nil
		}
	}
}

// Write takes one frame from the room. Frames for the stack that the policy
// refuses are dropped and counted; frames for other MACs are ignored. It
// never blocks on the network: the stack queues what it cannot send yet.
func (g *Gateway) Write(b []byte) (int, error) {
	select {
	case <-g.closed:
		return 0, net.ErrClosed
	default:
	}
	typ, reason := g.inspect(b, time.Now())
	switch {
	case reason != "":
		g.drop(reason)
		return len(b), nil
	case typ == 0: // for another peer's MAC (flooded to every port)
		return len(b), nil
	}
	g.in.add(len(b))
	pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{
		Payload: buffer.MakeWithData(b[ether.HeaderLen:]), // copies: b is not retained
	})
	g.ep.DeliverNetworkPacket(typ, pkt)
	pkt.DecRef()
	return len(b), nil
}

// toSwitch receives the frames the stack sends (tap.LinkEndpoint calls it
// with the Ethernet header in place) and queues them for Read.
type toSwitch struct{ g *Gateway }

func (t toSwitch) DeliverNetworkPacket(_ tcpip.NetworkProtocolNumber, pkt *stack.PacketBuffer) {
	g := t.g
	size := pkt.Size()
	if size > peer.MaxFrameSize {
		g.drop(DropTooBig)
		return
	}
	f := g.frames.Get().(*frame)
	n := 0
	for _, s := range pkt.AsSlices() {
		n += copy(f.b[n:], s)
	}
	f.n = n
	g.fixARPSender(f.b[:n])
	if dst, ok := guestDst(f.b[:n]); ok && g.rate != nil && !g.rate.allow(dirIn, dst, n, time.Now()) {
		g.frames.Put(f)
		g.drop(gateway.DropRateLimit)
		return
	}
	select {
	case g.out <- f:
		g.outTraffic.add(n)
	default:
		g.frames.Put(f)
		g.drop(DropQueue)
	}
}

// arpSenderIP is where an ARP packet in an Ethernet frame keeps its sender
// protocol address.
const arpSenderIP = ether.HeaderLen + 14

// fixARPSender makes .1 the sender of the stack's ARP requests. The stack
// asks for a guest's MAC from the address of the flow that needs it, which
// for a guest's connection to the internet is the internet address the
// stack answers for; peers' switches drop ARP claiming an address the
// gateway does not hold (arp-spoof), and the answer does not depend on it.
func (g *Gateway) fixARPSender(b []byte) {
	e, err := ether.ParseEthernet(b)
	if err != nil || e.Type() != ether.TypeARP {
		return
	}
	a, err := ether.ParseARP(e.Payload())
	if err != nil || a.Op() != arpRequest || a.SenderIP() == g.addr {
		return
	}
	gw := g.addr.As4()
	copy(b[arpSenderIP:arpSenderIP+4], gw[:])
}

// arpRequest is ARP's request opcode.
const arpRequest = 1

// guestDst is the IPv4 destination of a frame the stack sends.
func guestDst(b []byte) (netip.Addr, bool) {
	e, err := ether.ParseEthernet(b)
	if err != nil || e.Type() != ether.TypeIPv4 {
		return netip.Addr{}, false
	}
	ip, err := ether.ParseIPv4(e.Payload())
	if err != nil {
		return netip.Addr{}, false
	}
	return ip.Dst(), true
}

// DialGuest opens a connection from the gateway's .1 to a guest: network is
// "tcp" or "udp" (or "tcp4"/"udp4"), address an IP:port inside the room's
// subnet. It has the signature of gateway/portfwd's DialFunc. The
// connection's frames pass the per-guest rate limit like any other.
func (g *Gateway) DialGuest(ctx context.Context, network, address string) (net.Conn, error) {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return nil, fmt.Errorf("%w: %q: want IP:port: %w", errDial, address, err)
	}
	a := ap.Addr().Unmap()
	if !g.subnet.Contains(a) || a == g.addr || a == g.subnet.Addr() || a == broadcast(g.subnet) || ap.Port() == 0 {
		return nil, fmt.Errorf("%w: %v is not a guest address and port in %v", errDial, ap, g.subnet)
	}
	select {
	case <-g.closed:
		return nil, fmt.Errorf("%w: %w", errDial, net.ErrClosed)
	default:
	}
	full := tcpip.FullAddress{NIC: nic, Addr: tcpip.AddrFrom4(a.As4()), Port: ap.Port()}
	switch network {
	case "tcp", "tcp4":
		c, err := gonet.DialContextTCP(ctx, g.stack, full, ipv4.ProtocolNumber)
		if err != nil {
			return nil, fmt.Errorf("%w: tcp %v: %w", errDial, ap, err)
		}
		return c, nil
	case "udp", "udp4":
		c, err := gonet.DialUDP(g.stack, nil, &full, ipv4.ProtocolNumber)
		if err != nil {
			return nil, fmt.Errorf("%w: udp %v: %w", errDial, ap, err)
		}
		return c, nil
	}
	return nil, fmt.Errorf("%w: network %q: want tcp or udp", errDial, network)
}

// Close stops the DNS forwarder and the stack (every relayed flow ends) and
// unblocks Read. It may be called more than once.
func (g *Gateway) Close() error {
	g.closeOnce.Do(func() {
		close(g.closed)
		g.cancel() // dials and relays end
		if g.dns != nil {
			g.closeErr = g.dns.Close()
		}
		g.tcp.wait()
		g.stack.Close()
		g.stack.Wait()
	})
	return g.closeErr
}

var _ peer.Port = (*Gateway)(nil)

func validSubnet(p netip.Prefix) error {
	if !p.IsValid() || !p.Addr().Is4() {
		return fmt.Errorf("%w: Subnet %v is not an IPv4 prefix", errConfig, p)
	}
	if p.Bits() < 16 || p.Bits() > 30 {
		return fmt.Errorf("%w: Subnet %v: prefix length 16 to 30", errConfig, p)
	}
	return nil
}

func broadcast(p netip.Prefix) netip.Addr {
	a := p.Masked().Addr().As4()
	host := uint32(1)<<(32-p.Bits()) - 1
	v := (uint32(a[0])<<24 | uint32(a[1])<<16 | uint32(a[2])<<8 | uint32(a[3])) | host
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}
