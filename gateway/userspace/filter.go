package userspace

import (
	"net"
	"net/netip"
	"sync"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/network/arp"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"

	"github.com/peerlan/peerlan/gateway"
	"github.com/peerlan/peerlan/peer/ether"
)

// Drop reasons of the userspace path beyond kernel mode's (gateway.Drop*,
// whose names are reused where they mean the same).
const (
	DropICMP      = "icmp"      // ICMP to an address other than .1: not relayed
	DropProtocol  = "protocol"  // neither ARP nor IPv4, or an IP protocol other than TCP, UDP, ICMP
	DropMalformed = "malformed" // too short to parse
	DropQueue     = "queue"     // the switch did not read the stack's frames fast enough
	DropTooBig    = "toobig"    // a frame larger than the reader's buffer
	DropFlows     = "flows"     // a new flow beyond Config.MaxFlows

	// TCP connections the forwarder resets (the guest sees a refused connect).
	DropPendingGuest   = "pending_guest"   // the guest has MaxPendingPerGuest connects waiting
	DropPending        = "pending"         // all guests have MaxPending connects waiting
	DropConnectTimeout = "connect_timeout" // the host's connect took longer than ConnectTimeout
	DropConnectFailed  = "connect_failed"  // the host's connect failed (refused, unreachable)
)

// DropReasons lists every reason the gateway counts, in the order of Stats.
var DropReasons = []string{
	gateway.DropIPv6, gateway.DropBroadcast, gateway.DropMulticast, gateway.DropSpoofed, gateway.DropZeroNet,
	gateway.DropLoopback, gateway.DropPrivate, gateway.DropCGNAT, gateway.DropMetadata, gateway.DropLinkLocal,
	gateway.DropReserved, gateway.DropHost, gateway.DropRoute, gateway.DropRateLimit,
	DropICMP, DropProtocol, DropMalformed, DropQueue, DropTooBig, DropFlows,
	DropPendingGuest, DropPending, DropConnectTimeout, DropConnectFailed,
}

var reasonIndex = func() map[string]int {
	m := make(map[string]int, len(DropReasons))
	for i, r := range DropReasons {
		m[r] = i
	}
	return m
}()

func (g *Gateway) drop(reason string) {
	if i, ok := reasonIndex[reason]; ok {
		g.drops[i].Add(1)
	}
}

const (
	protoICMP = 1
	protoTCP  = 6
	protoUDP  = 17
)

// inspect decides a frame from the room: the network protocol to deliver it
// to the stack with and "", a drop reason, or (0, "") for a frame meant for
// another peer. This is the egress policy of the userspace gateway: the
// stack's forwarders dial whatever they are given, so nothing the policy
// refuses may reach them.
func (g *Gateway) inspect(b []byte, now time.Time) (tcpip.NetworkProtocolNumber, string) {
	e, err := ether.ParseEthernet(b)
	if err != nil {
		return 0, DropMalformed
	}
	dst := e.Dst()
	ours := dst == g.mac
	switch e.Type() {
	case ether.TypeARP:
		if ours || dst.IsBroadcast() {
			return arp.ProtocolNumber, ""
		}
		return 0, ""
	case ether.TypeIPv6:
		if ours || dst.IsGroup() {
			return 0, gateway.DropIPv6
		}
		return 0, ""
	case ether.TypeIPv4:
	default:
		if ours {
			return 0, DropProtocol
		}
		return 0, ""
	}
	if !ours {
		switch {
		case dst.IsBroadcast(): // DHCP among them: each peer answers its own guest
			return 0, gateway.DropBroadcast
		case dst.IsGroup():
			return 0, gateway.DropMulticast
		}
		return 0, ""
	}
	ip, err := ether.ParseIPv4(e.Payload())
	if err != nil {
		return 0, DropMalformed
	}
	src, to := ip.Src(), ip.Dst()
	if src == g.addr || src == g.subnet.Addr() {
		return 0, gateway.DropSpoofed
	}
	if g.subnet.Contains(src) && g.subnet.Contains(to) && to != g.addr && to != broadcast(g.subnet) {
		return 0, gateway.DropRoute // guests reach each other directly, not through us
	}
	if r := gateway.GuestDropReason(g.subnet, g.allow, src, to); r != "" {
		return 0, r
	}
	proto := ip.Protocol()
	if to == g.addr {
		// DNS, ping and the replies of DialGuest connections; new flows to
		// other ports of .1 are dropped by toHost, once the stack has
		// found no endpoint of its own for them.
		switch proto {
		case protoICMP, protoTCP, protoUDP:
		default:
			return 0, gateway.DropHost
		}
	} else {
		switch proto {
		case protoTCP, protoUDP:
		case protoICMP:
			return 0, DropICMP
		default:
			return 0, DropProtocol
		}
		if !g.allowed(to) && g.hostAddrs.has(to, now) {
			return 0, gateway.DropHost
		}
	}
	if g.rate != nil && !g.rate.allow(dirOut, src, len(b), now) {
		return 0, gateway.DropRateLimit
	}
	return ipv4.ProtocolNumber, ""
}

func (g *Gateway) allowed(a netip.Addr) bool {
	for _, p := range g.allow {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// hostAddrsTTL is how long the host's address list is trusted.
const hostAddrsTTL = 5 * time.Second

// hostAddrs caches the host's own interface addresses: the forwarders dial
// from the host, so a guest could otherwise reach the host's services on its
// public address, which kernel mode refuses (DropHost).
type hostAddrs struct {
	mu    sync.Mutex
	at    time.Time
	addrs map[netip.Addr]bool
}

func (h *hostAddrs) has(a netip.Addr, now time.Time) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.addrs == nil || now.Sub(h.at) > hostAddrsTTL {
		h.at = now
		h.addrs = make(map[netip.Addr]bool, len(h.addrs))
		if ifas, err := net.InterfaceAddrs(); err == nil {
			for _, ifa := range ifas {
				if n, ok := ifa.(*net.IPNet); ok {
					if a, ok := netip.AddrFromSlice(n.IP); ok {
						h.addrs[a.Unmap()] = true
					}
				}
			}
		}
	}
	return h.addrs[a]
}
