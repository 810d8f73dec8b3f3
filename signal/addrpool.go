package signal

import (
	"errors"
	"fmt"
	"net/netip"
)

// DefaultSubnet is the room prefix when none is configured. 10.86.0.0/24 sits
// in a corner of 10/8 that home routers and cloud defaults rarely use; every
// room gets the same prefix because rooms are separate LANs.
var DefaultSubnet = netip.MustParsePrefix("10.86.0.0/24")

var errPoolExhausted = errors.New("signal: no free address in the room's subnet")

// addrPool hands out the host addresses of an IPv4 prefix: not the network
// address, not the broadcast address and not .1, which is the gateway's. It is
// not safe for concurrent use; the Server's lock guards it.
type addrPool struct {
	prefix  netip.Prefix
	gateway netip.Addr
	size    int // number of addresses in the prefix
	used    []bool
}

// checkSubnet validates a room prefix: IPv4, masked, between /16 and /29.
func checkSubnet(p netip.Prefix) error {
	if !p.IsValid() || !p.Addr().Is4() {
		return fmt.Errorf("signal: subnet %v is not an IPv4 prefix", p)
	}
	if p.Masked() != p {
		return fmt.Errorf("signal: subnet %v has host bits set (did you mean %v?)", p, p.Masked())
	}
	if p.Bits() < 16 || p.Bits() > 29 {
		return fmt.Errorf("signal: subnet %v must be between /16 and /29", p)
	}
	return nil
}

func newAddrPool(p netip.Prefix) *addrPool {
	size := 1 << (32 - p.Bits())
	return &addrPool{prefix: p, gateway: p.Addr().Next(), size: size, used: make([]bool, size)}
}

// index returns a's offset in the prefix, or -1 if a is not a host address
// this pool may hand out to a guest.
func (p *addrPool) index(a netip.Addr) int {
	if !p.prefix.Contains(a) {
		return -1
	}
	i := int(u32(a) - u32(p.prefix.Addr()))
	if i <= 1 || i >= p.size-1 { // network, gateway, broadcast
		return -1
	}
	return i
}

func (p *addrPool) addr(i int) netip.Addr {
	v := u32(p.prefix.Addr()) + uint32(i)
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

// take allocates the lowest free guest address; low addresses are easy to
// read and type. want, when valid and free, is preferred (resume).
func (p *addrPool) take(want netip.Addr) (netip.Addr, error) {
	if i := p.index(want); i > 0 && !p.used[i] {
		p.used[i] = true
		return want, nil
	}
	for i := 2; i < p.size-1; i++ {
		if !p.used[i] {
			p.used[i] = true
			return p.addr(i), nil
		}
	}
	return netip.Addr{}, errPoolExhausted
}

// release frees a guest address; the gateway address is never pooled.
func (p *addrPool) release(a netip.Addr) {
	if i := p.index(a); i > 0 {
		p.used[i] = false
	}
}

// capacity is the number of guest addresses.
func (p *addrPool) capacity() int { return p.size - 3 }

func u32(a netip.Addr) uint32 {
	b := a.As4()
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
}
