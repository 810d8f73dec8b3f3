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
	// maxBigQueued bounds the super-frames (up to 64 KiB each) among the
	// queued frames, so that the queue holds at most a few MiB.
	maxBigQueued = 128
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
	// Offload makes the Gateway an OffloadPort that carries TCP
	// super-frames and partial checksums (ether.Offload) both ways, so a
	// stream through a link that negotiated offloads costs a frame per
	// 64 KiB instead of per 1514 bytes. The switch then reads it with
	// ReadOffload only; Read drops super-frames (DropTooBig).
	Offload bool
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
	ep     *link
	dns    *gateway.DNSForwarder
	tcp    *tcpForwarder
	rate   *limiter           // nil: no limit
	cancel context.CancelFunc // ends the TCP forwarder's dials and relays

	maxFlows int
	ownFlows int // the stack's own endpoints (DNS), not counted against maxFlows

	out       chan *frame  // stack → switch, bounded
	frames    sync.Pool    // *frame of peer.MaxFrameSize
	bigFrames sync.Pool    // *frame of ether.MaxOffloadFrameSize
	bigQueued atomic.Int32 // super-frames in out
	closed    chan struct{}
	closeOnce sync.Once
	closeErr  error

	hostAddrs hostAddrs

	in, outTraffic counter
	drops          []atomic.Uint64 // indexed like DropReasons
}

type counter struct{ packets, bytes atomic.Uint64 }

func (c *counter) add(n int) { c.packets.Add(1); c.bytes.Add(uint64(n)) }

// frame is a pooled buffer for one frame on its way to the switch, with
// the offload work left on it.
type frame struct {
	b   []byte
	n   int
	o   ether.Offload
	big bool // from bigFrames
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
	g.frames.New = func() any { return &frame{b: make([]byte, peer.MaxFrameSize)} }
	g.bigFrames.New = func() any { return &frame{b: make([]byte, ether.MaxOffloadFrameSize), big: true} }
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

// buildStack assembles the netstack on the package's own link endpoint
// (link), not gvisor-tap-vsock's VirtualNetwork, which hides its stack (its
// DNS and DHCP could not be replaced) and takes frames only from a
// net.Conn. The endpoint gets each guest frame from Write with one copy
// (into the stack's buffer) and hands each stack frame to send, which one
// copy puts into the queue Read takes from.
func (g *Gateway) buildStack(cfg Config) error {
	ep := &link{g: g, mtu: uint32(cfg.MTU), mac: tcpip.LinkAddress(g.mac[:]), offload: cfg.Offload}
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
	f.n, f.o = n, ether.Offload{}
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
// larger than b, or a super-frame (with Config.Offload), is dropped
// (DropTooBig) and the next one is returned; a partial checksum is
// completed.
func (g *Gateway) Read(b []byte) (int, error) {
	for {
		n, o, err := g.ReadOffload(b)
		if err != nil || o.IsZero() {
			return n, err
		}
		if o.GSO != ether.GSONone || o.Check(b[:n]) != nil {
			g.drop(DropTooBig)
			continue
		}
		ether.FinishChecksum(b[:n], o)
		return n, nil
	}
}

// Offloads reports Config.Offload (see peer.OffloadPort).
func (g *Gateway) Offloads() bool { return g.ep.offload }

// ReadOffload is Read for the switch when Offloads: the next frame and the
// work left on it (a partial TCP checksum, segmentation of a super-frame).
func (g *Gateway) ReadOffload(b []byte) (int, ether.Offload, error) {
	for {
		select {
		case <-g.closed:
			return 0, ether.Offload{}, net.ErrClosed
		case f := <-g.out:
			n, o := f.n, f.o
			if f.big {
				g.bigQueued.Add(-1)
			}
			if n > len(b) {
				g.putFrame(f)
				g.drop(DropTooBig)
				continue
			}
			copy(b, f.b[:n])
			g.putFrame(f)
			return n, o, nil
		}
	}
}

func (g *Gateway) putFrame(f *frame) {
	if f.big {
		g.bigFrames.Put(f)
		return
	}
	g.frames.Put(f)
}

// Write takes one frame from the room. Frames for the stack that the policy
// refuses are dropped and counted; frames for other MACs are ignored. It
// never blocks on the network: the stack queues what it cannot send yet.
func (g *Gateway) Write(b []byte) (int, error) {
	return g.WriteOffload(b, ether.Offload{})
}

// WriteOffload is Write for a frame with work o left, when Offloads. The
// stack takes a TCP super-frame whole (its TCP accepts segments larger
// than the MSS) and does not verify checksums, so the work needs no doing;
// o is checked against the frame all the same, and a frame that does not
// match it is dropped (DropMalformed).
func (g *Gateway) WriteOffload(b []byte, o ether.Offload) (int, error) {
	if !o.IsZero() && (!g.ep.offload || o.Check(b) != nil || o.GSO == ether.GSOTCPv6) {
		g.drop(DropMalformed)
		return len(b), nil
	}
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
	g.ep.deliver(typ, pkt)
	pkt.DecRef()
	return len(b), nil
}

// send queues a frame the stack sends (link calls it with the Ethernet
// header in place and the offload work o left on it) for Read.
func (g *Gateway) send(pkt *stack.PacketBuffer, o ether.Offload) {
	size := pkt.Size()
	big := o.GSO != ether.GSONone
	switch {
	case !big && size > peer.MaxFrameSize, size > ether.MaxOffloadFrameSize:
		g.drop(DropTooBig)
		return
	case big && g.bigQueued.Add(1) > maxBigQueued:
		g.bigQueued.Add(-1)
		g.drop(DropQueue)
		return
	}
	var f *frame
	if big {
		f = g.bigFrames.Get().(*frame)
	} else {
		f = g.frames.Get().(*frame)
	}
	n := 0
	for _, s := range pkt.AsSlices() {
		n += copy(f.b[n:], s)
	}
	f.n, f.o = n, o
	unqueue := func() {
		if big {
			g.bigQueued.Add(-1)
		}
		g.putFrame(f)
	}
	if !g.ownARP(f.b[:n]) {
		unqueue()
		return
	}
	if dst, ok := guestDst(f.b[:n]); ok && g.rate != nil && !g.rate.allow(dirIn, dst, n, time.Now()) {
		unqueue()
		g.drop(gateway.DropRateLimit)
		return
	}
	select {
	case g.out <- f:
		g.outTraffic.add(n)
	default:
		unqueue()
		g.drop(DropQueue)
	}
}

// arpSenderIP is where an ARP packet in an Ethernet frame keeps its sender
// protocol address.
const arpSenderIP = ether.HeaderLen + 14

// ownARP keeps the stack's ARP to .1's own: it makes .1 the sender of the
// stack's ARP requests, and reports false for replies about any other
// address, which must not leave. The stack is promiscuous, so it would
// answer for every address; and it asks for a guest's MAC from the address
// of the flow that needs it, which for a guest's connection to the
// internet is the internet address the stack answers for. Peers' switches
// drop ARP claiming an address the gateway does not hold (arp-spoof), and
// the answer to a request does not depend on its sender address.
func (g *Gateway) ownARP(b []byte) bool {
	e, err := ether.ParseEthernet(b)
	if err != nil || e.Type() != ether.TypeARP {
		return true
	}
	a, err := ether.ParseARP(e.Payload())
	if err != nil || a.SenderIP() == g.addr {
		return true
	}
	switch a.Op() {
	case arpRequest:
		gw := g.addr.As4()
		copy(b[arpSenderIP:arpSenderIP+4], gw[:])
		return true
	case arpReply:
		return false
	}
	return true
}

// ARP opcodes.
const (
	arpRequest = 1
	arpReply   = 2
)

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

var _ peer.OffloadPort = (*Gateway)(nil)

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
