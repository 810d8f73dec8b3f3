package portfwd

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// Networks a Spec may name.
const (
	TCP = "tcp"
	UDP = "udp"
)

// ErrBadSpec is wrapped by every ParseSpec and validation error.
var ErrBadSpec = errors.New("portfwd: bad forward")

// Spec is one forward: connections or datagrams reaching Listen on the host
// go to Guest in the room.
type Spec struct {
	// Network is TCP or UDP.
	Network string
	// Listen is the host side. Its Addr is the zero netip.Addr for ":PORT",
	// which listens on every address of the host, IPv4 and IPv6. A Spec
	// built in code (not by ParseSpec) may use port 0 for a free port (see
	// Forwarder.Addrs); the flag form needs a known port.
	Listen netip.AddrPort
	// Guest is an IPv4 address of the room and a port other than 0.
	Guest netip.AddrPort
}

// ParseSpec parses the flag form NETWORK:HOSTADDR=GUESTIP:PORT, where
// NETWORK is tcp or udp and HOSTADDR is IP:PORT ([IPv6]:PORT for IPv6) or
// :PORT for every address of the host, e.g. "tcp:127.0.0.1:8080=10.86.0.2:80".
func ParseSpec(s string) (Spec, error) {
	bad := func(format string, args ...any) (Spec, error) {
		return Spec{}, fmt.Errorf("%w %q: %s", ErrBadSpec, s, fmt.Sprintf(format, args...))
	}
	network, rest, ok := strings.Cut(s, ":")
	if !ok {
		return bad("want tcp:HOSTADDR=GUESTIP:PORT or udp:..., e.g. tcp:127.0.0.1:8080=10.86.0.2:80")
	}
	if network != TCP && network != UDP {
		return bad("unknown protocol %q: want tcp or udp", network)
	}
	host, guest, ok := strings.Cut(rest, "=")
	if !ok {
		return bad("missing '=' between the host address and the guest's")
	}
	sp := Spec{Network: network}
	var err error
	if sp.Listen, err = parseListen(host); err != nil {
		return bad("host address %q: %v", host, err)
	}
	if sp.Listen.Port() == 0 {
		return bad("host port 0: name the port to listen on")
	}
	if sp.Guest, err = netip.ParseAddrPort(guest); err != nil {
		return bad("guest address %q: want IPv4:PORT", guest)
	}
	if err := sp.checkGuest(); err != nil {
		return bad("%v", err)
	}
	return sp, nil
}

// parseListen parses IP:PORT or :PORT.
func parseListen(s string) (netip.AddrPort, error) {
	if p, ok := strings.CutPrefix(s, ":"); ok {
		n, err := strconv.ParseUint(p, 10, 16)
		if err != nil {
			return netip.AddrPort{}, errors.New("want IP:PORT or :PORT with a port from 1 to 65535")
		}
		return netip.AddrPortFrom(netip.Addr{}, uint16(n)), nil
	}
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		return netip.AddrPort{}, errors.New("want IP:PORT ([IPv6]:PORT) or :PORT")
	}
	return ap, nil
}

// checkGuest checks what can be checked without the room's subnet.
func (s Spec) checkGuest() error {
	a := s.Guest.Addr()
	switch {
	case !a.IsValid():
		return errors.New("no guest address")
	case !a.Is4():
		return fmt.Errorf("guest address %v is not IPv4 (rooms are IPv4)", a)
	case a.IsUnspecified() || a.IsLoopback() || a.IsMulticast() || a == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
		return fmt.Errorf("guest address %v cannot be a guest's", a)
	case s.Guest.Port() == 0:
		return errors.New("guest port 0: name the guest's port")
	}
	return nil
}

// validate checks a Spec built in code as ParseSpec would, except that it
// allows listen port 0.
func (s Spec) validate() error {
	if s.Network != TCP && s.Network != UDP {
		return fmt.Errorf("%w %v: network %q: want tcp or udp", ErrBadSpec, s, s.Network)
	}
	if err := s.checkGuest(); err != nil {
		return fmt.Errorf("%w %v: %v", ErrBadSpec, s, err)
	}
	return nil
}

// String gives the flag form back, e.g. "tcp:127.0.0.1:8080=10.86.0.2:80"
// or "udp::5353=10.86.0.2:53".
func (s Spec) String() string {
	return s.Network + ":" + s.listenString() + "=" + s.Guest.String()
}

// listenString is Listen as net.Listen takes it: ":PORT" for every address.
func (s Spec) listenString() string {
	if !s.Listen.Addr().IsValid() {
		return ":" + strconv.Itoa(int(s.Listen.Port()))
	}
	return s.Listen.String()
}

// AllAddresses reports whether the forward listens on every address of the
// host (the ":PORT" form), not one; such a forward is reachable from any
// network the host is on.
func (s Spec) AllAddresses() bool {
	return !s.Listen.Addr().IsValid() || s.Listen.Addr().IsUnspecified()
}

// CheckSubnet checks that the guest address is a guest's address in the
// room subnet p: inside p and none of its network, broadcast or first (.1,
// the gateway's own) addresses.
func (s Spec) CheckSubnet(p netip.Prefix) error {
	if !p.IsValid() || !p.Addr().Is4() {
		return fmt.Errorf("%w %v: room subnet %v is not an IPv4 prefix", ErrBadSpec, s, p)
	}
	p = p.Masked()
	a := s.Guest.Addr()
	if !p.Contains(a) {
		return fmt.Errorf("%w %v: guest %v is outside the room subnet %v", ErrBadSpec, s, a, p)
	}
	network := p.Addr()
	switch a {
	case network:
		return fmt.Errorf("%w %v: guest %v is the room subnet's network address", ErrBadSpec, s, a)
	case network.Next():
		return fmt.Errorf("%w %v: guest %v is the gateway's own address", ErrBadSpec, s, a)
	case broadcast(p):
		return fmt.Errorf("%w %v: guest %v is the room subnet's broadcast address", ErrBadSpec, s, a)
	}
	return nil
}

// broadcast is the last address of the IPv4 prefix p.
func broadcast(p netip.Prefix) netip.Addr {
	b := p.Addr().As4()
	host := uint32(1)<<(32-p.Bits()) - 1
	v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3]) | host
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}
