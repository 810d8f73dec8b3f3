package relay

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Defaults for zero Config fields.
const (
	// DefaultRealm is the TURN realm. It enters the long-term key, so
	// clients must see the same realm the credential is checked against.
	DefaultRealm = "peerlan"
	// DefaultMinPort and DefaultMaxPort are IANA's dynamic port range, as
	// coturn uses.
	DefaultMinPort = 49152
	DefaultMaxPort = 65535
	// DefaultMaxAllocationsPerUser allows one allocation per peer connection
	// and TURN URL in the largest room: browsers do not share allocations
	// between RTCPeerConnections, so a peer in a room of 64 with a turn: and
	// a turns: URL holds 2*63 allocations.
	DefaultMaxAllocationsPerUser = 128
	// DefaultMaxPermissionsPerAllocation: a WebRTC allocation serves one
	// remote peer, which needs a permission per candidate IP (a handful).
	DefaultMaxPermissionsPerAllocation = 64
	// DefaultMaxAllocationLifetime bounds an allocation's age however often
	// it is refreshed. Credential expiry is the first bound (a refresh with
	// an expired credential is refused); this one catches long credentials.
	DefaultMaxAllocationLifetime = 12 * time.Hour
	// DefaultMaxConns bounds concurrent TCP and TLS connections per server.
	DefaultMaxConns = 1024
	// DefaultHandshakeTimeout is how long a TCP connection may take to
	// finish TLS and send its first bytes.
	DefaultHandshakeTimeout = 10 * time.Second
	// DefaultConnIdleTimeout closes TCP connections on which the client sent
	// nothing for that long. Clients refresh permissions every 5 minutes and
	// allocations every 10 minutes by default.
	DefaultConnIdleTimeout = 11 * time.Minute
	// connWriteTimeout bounds a write to a TCP client, so a client that
	// stops reading cannot block the allocation's relay loop.
	connWriteTimeout = 10 * time.Second
	// minSecretLen matches signal.NewSigner.
	minSecretLen = 16
)

// Config configures a Server. The Server owns every listener and packet
// conn it is given or opens, and closes them on Close.
type Config struct {
	// Secret is the TURN REST shared secret (coturn's static-auth-secret),
	// at least 16 bytes. Required.
	Secret []byte
	// Realm defaults to DefaultRealm.
	Realm string

	// UDPAddrs, TCPAddrs and TLSAddrs are "host:port" addresses to listen
	// on for TURN over UDP, TCP and TLS. PacketConns, Listeners and
	// TLSListeners are already open sockets for the same purposes
	// (TLSListeners are plain TCP listeners that the server wraps in TLS).
	// At least one of all six must be given.
	UDPAddrs     []string
	TCPAddrs     []string
	TLSAddrs     []string
	PacketConns  []net.PacketConn
	Listeners    []net.Listener
	TLSListeners []net.Listener

	// TLSConfig serves the TLS listeners; if nil, TLSCertFile and
	// TLSKeyFile (PEM) are loaded. Required when there are TLS listeners.
	TLSConfig   *tls.Config
	TLSCertFile string
	TLSKeyFile  string

	// RelayIP is the IPv4 address advertised in XOR-RELAYED-ADDRESS: the
	// address peers send to. It defaults to the listeners' address when
	// they all share one specified IPv4 address, and is required otherwise
	// (for example when listening on ":3478"). pion/turn relays over UDP
	// and IPv4 only.
	RelayIP netip.Addr
	// RelayBindIP is where relay sockets are bound; it defaults to 0.0.0.0,
	// which also works when RelayIP is a 1:1 NAT address.
	RelayBindIP netip.Addr
	// MinPort and MaxPort (inclusive) bound relay ports; they default to
	// DefaultMinPort and DefaultMaxPort and must be set together.
	MinPort, MaxPort uint16
	// ListenPacket opens relay sockets; it defaults to net.ListenPacket.
	// A pion/transport vnet.Net's ListenPacket fits, for virtual networks.
	ListenPacket func(network, address string) (net.PacketConn, error)

	// AllowPeers lists prefixes relayed to even though their class is
	// refused, for deliberate lab set-ups. The relay's own RelayIP is
	// always allowed (at its allocations' ports only), so that two clients
	// of one relay reach each other's relayed addresses.
	AllowPeers []netip.Prefix

	// MaxAllocationsPerUser defaults to DefaultMaxAllocationsPerUser. The
	// user is the part of the credential username after the expiry.
	MaxAllocationsPerUser int
	// MaxPermissionsPerAllocation counts distinct peer IPs with a
	// permission, per client transport address. Defaults to
	// DefaultMaxPermissionsPerAllocation.
	MaxPermissionsPerAllocation int
	// MaxAllocationLifetime closes allocations older than this, however
	// often they were refreshed. Defaults to DefaultMaxAllocationLifetime.
	// (pion/turn itself grants each Allocate or Refresh the requested
	// lifetime below one hour, and 10 minutes for a request of an hour or
	// more; it has no knob.)
	MaxAllocationLifetime time.Duration
	// MaxConns, HandshakeTimeout and ConnIdleTimeout bound TCP and TLS
	// connections; they default to DefaultMaxConns, DefaultHandshakeTimeout
	// and DefaultConnIdleTimeout.
	MaxConns         int
	HandshakeTimeout time.Duration
	ConnIdleTimeout  time.Duration

	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// Registerer receives the peerlan_turn_* metrics; nil registers none.
	// Close unregisters them.
	Registerer prometheus.Registerer
}

// Configuration errors.
var (
	errNoSecret        = errors.New("relay: Secret of at least 16 bytes is required")
	errNoListeners     = errors.New("relay: no UDP, TCP or TLS listener configured")
	errRelayIPRequired = errors.New("relay: RelayIP is required unless all listeners share one specified IPv4 address")
	errRelayIPNotIPv4  = errors.New("relay: RelayIP must be a specified IPv4 address (pion/turn relays over IPv4)")
	errRelayBindIP     = errors.New("relay: RelayBindIP must be an IPv4 address")
	errPortRange       = errors.New("relay: MinPort and MaxPort must be set together, with 0 < MinPort <= MaxPort")
	errNegativeLimit   = errors.New("relay: limits and timeouts must not be negative")
	errNoTLSConfig     = errors.New("relay: TLS listeners need TLSConfig or TLSCertFile and TLSKeyFile")
	errAllowPrefix     = errors.New("relay: invalid AllowPeers prefix")
	errBadAddr         = errors.New("relay: invalid listen address")
)

// withDefaults returns c with zero fields defaulted. It does not open
// anything.
func (c Config) withDefaults() Config {
	if c.Realm == "" {
		c.Realm = DefaultRealm
	}
	if c.MinPort == 0 && c.MaxPort == 0 {
		c.MinPort, c.MaxPort = DefaultMinPort, DefaultMaxPort
	}
	if !c.RelayBindIP.IsValid() {
		c.RelayBindIP = netip.IPv4Unspecified()
	}
	if c.ListenPacket == nil {
		c.ListenPacket = net.ListenPacket
	}
	if c.MaxAllocationsPerUser == 0 {
		c.MaxAllocationsPerUser = DefaultMaxAllocationsPerUser
	}
	if c.MaxPermissionsPerAllocation == 0 {
		c.MaxPermissionsPerAllocation = DefaultMaxPermissionsPerAllocation
	}
	if c.MaxAllocationLifetime == 0 {
		c.MaxAllocationLifetime = DefaultMaxAllocationLifetime
	}
	if c.MaxConns == 0 {
		c.MaxConns = DefaultMaxConns
	}
	if c.HandshakeTimeout == 0 {
		c.HandshakeTimeout = DefaultHandshakeTimeout
	}
	if c.ConnIdleTimeout == 0 {
		c.ConnIdleTimeout = DefaultConnIdleTimeout
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if !c.RelayIP.IsValid() {
		c.RelayIP = c.listenersIP()
	}
	c.RelayIP = c.RelayIP.Unmap()
	return c
}

// listenersIP is the one specified IPv4 address all listeners share, or the
// zero Addr.
func (c Config) listenersIP() netip.Addr {
	var addrs []netip.Addr
	for _, group := range [][]string{c.UDPAddrs, c.TCPAddrs, c.TLSAddrs} {
		for _, s := range group {
			ap, err := netip.ParseAddrPort(s)
			if err != nil {
				return netip.Addr{}
			}
			addrs = append(addrs, ap.Addr())
		}
	}
	for _, pc := range c.PacketConns {
		addrs = append(addrs, addrOf(pc.LocalAddr()))
	}
	for _, group := range [][]net.Listener{c.Listeners, c.TLSListeners} {
		for _, l := range group {
			addrs = append(addrs, addrOf(l.Addr()))
		}
	}
	var one netip.Addr
	for _, a := range addrs {
		a = a.Unmap()
		if !a.Is4() || a.IsUnspecified() || (one.IsValid() && a != one) {
			return netip.Addr{}
		}
		one = a
	}
	return one
}

func addrOf(a net.Addr) netip.Addr {
	switch a := a.(type) {
	case *net.UDPAddr:
		return addrFromIP(a.IP)
	case *net.TCPAddr:
		return addrFromIP(a.IP)
	}
	if ap, err := netip.ParseAddrPort(a.String()); err == nil {
		return ap.Addr()
	}
	return netip.Addr{}
}

// validate checks a defaulted Config.
func (c Config) validate() error {
	if len(c.Secret) < minSecretLen {
		return errNoSecret
	}
	n := len(c.UDPAddrs) + len(c.TCPAddrs) + len(c.TLSAddrs) +
		len(c.PacketConns) + len(c.Listeners) + len(c.TLSListeners)
	if n == 0 {
		return errNoListeners
	}
	for _, group := range [][]string{c.UDPAddrs, c.TCPAddrs, c.TLSAddrs} {
		for _, s := range group {
			if _, _, err := net.SplitHostPort(s); err != nil {
				return fmt.Errorf("%w %q: %w", errBadAddr, s, err)
			}
		}
	}
	if !c.RelayIP.IsValid() {
		return errRelayIPRequired
	}
	if !c.RelayIP.Is4() || c.RelayIP.IsUnspecified() {
		return fmt.Errorf("%w, got %s", errRelayIPNotIPv4, c.RelayIP)
	}
	if !c.RelayBindIP.Unmap().Is4() {
		return fmt.Errorf("%w, got %s", errRelayBindIP, c.RelayBindIP)
	}
	if c.MinPort == 0 || c.MaxPort == 0 || c.MinPort > c.MaxPort {
		return fmt.Errorf("%w (got %d-%d)", errPortRange, c.MinPort, c.MaxPort)
	}
	if c.MaxAllocationsPerUser < 0 || c.MaxPermissionsPerAllocation < 0 || c.MaxAllocationLifetime < 0 ||
		c.MaxConns < 0 || c.HandshakeTimeout < 0 || c.ConnIdleTimeout < 0 {
		return errNegativeLimit
	}
	if len(c.TLSAddrs)+len(c.TLSListeners) > 0 && c.TLSConfig == nil &&
		(c.TLSCertFile == "" || c.TLSKeyFile == "") {
		return errNoTLSConfig
	}
	for _, p := range c.AllowPeers {
		if !p.IsValid() {
			return fmt.Errorf("%w: %v", errAllowPrefix, p)
		}
	}
	return nil
}
