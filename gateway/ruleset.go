package gateway

import (
	"fmt"
	"net/netip"
	"strings"
)

// Drop reasons, each backed by a named nft counter "drop_<reason>". The order
// is the order in Status lines and metrics.
const (
	DropIPv6        = "ipv6"        // any IPv6 packet from the LAN: only IPv4 is routed
	DropBroadcast   = "broadcast"   // 255.255.255.255 or the room's broadcast address
	DropMulticast   = "multicast"   // 224.0.0.0/4
	DropSpoofed     = "spoofed"     // source address outside the room subnet
	DropZeroNet     = "zeronet"     // 0.0.0.0/8
	DropLoopback    = "loopback"    // 127.0.0.0/8
	DropPrivate     = "private"     // RFC 1918
	DropCGNAT       = "cgnat"       // 100.64.0.0/10
	DropMetadata    = "metadata"    // 169.254.169.254, the cloud metadata service
	DropLinkLocal   = "linklocal"   // 169.254.0.0/16
	DropReserved    = "reserved"    // 240.0.0.0/4
	DropHost        = "host"        // the gateway host's own addresses, except DNS and ping on .1
	DropRoute       = "route"       // would leave through another interface than the uplink
	DropInvalid     = "invalid"     // conntrack state invalid
	DropUnsolicited = "unsolicited" // new connection from outside toward a guest (no port forwarding)
	DropRateLimit   = "ratelimit"   // over the per-guest bandwidth limit
	DropUplink      = "uplink"      // forwarded from the uplink to elsewhere, not NAT return traffic
)

// DropReasons lists every drop reason.
var DropReasons = []string{
	DropIPv6, DropBroadcast, DropMulticast, DropSpoofed, DropZeroNet, DropLoopback, DropPrivate,
	DropCGNAT, DropMetadata, DropLinkLocal, DropReserved, DropHost, DropRoute, DropInvalid,
	DropUnsolicited, DropRateLimit, DropUplink,
}

// Names of the accounting counters.
const (
	counterGuestToInternet      = "guest_to_internet"
	counterInternetToGuest      = "internet_to_guest"
	counterFlowsGuestToInternet = "flows_guest_to_internet"
	counterFlowsInternetToGuest = "flows_internet_to_guest"
)

// blockedDestinations is the default egress policy, checked in this order
// after broadcast and multicast. Metadata precedes link-local so that it gets
// its own counter.
var blockedDestinations = []struct {
	reason   string
	prefixes []netip.Prefix
}{
	{DropZeroNet, prefixes("0.0.0.0/8")},
	{DropLoopback, prefixes("127.0.0.0/8")},
	{DropPrivate, prefixes("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16")},
	{DropCGNAT, prefixes("100.64.0.0/10")},
	{DropMetadata, prefixes("169.254.169.254/32")},
	{DropLinkLocal, prefixes("169.254.0.0/16")},
	{DropReserved, prefixes("240.0.0.0/4")},
}

// GuestDropReason is the kernel ruleset's guest_in chain as a function, for
// gateways that enforce the egress policy outside nftables (a userspace
// stack): the drop reason for an IPv4 packet a guest of subnet sends from
// src to dst, or "" when the policy lets it through. allow opens prefixes as
// HostConfig.Allow does. Packets to the gateway's own address (.1) pass
// here; what a gateway accepts on .1 is its own (DNS and ping).
func GuestDropReason(subnet netip.Prefix, allow []netip.Prefix, src, dst netip.Addr) string {
	switch {
	case !dst.Is4() || !src.Is4():
		return DropIPv6
	case dst == netip.AddrFrom4([4]byte{255, 255, 255, 255}) || dst == broadcastAddr(subnet):
		return DropBroadcast
	case dst.IsMulticast():
		return DropMulticast
	case !subnet.Contains(src):
		return DropSpoofed
	case dst == gatewayAddr(subnet):
		return ""
	}
	for _, p := range allow {
		if p.Contains(dst) {
			return ""
		}
	}
	for _, d := range blockedDestinations {
		for _, p := range d.prefixes {
			if p.Contains(dst) {
				return d.reason
			}
		}
	}
	return ""
}

func prefixes(ss ...string) []netip.Prefix {
	out := make([]netip.Prefix, len(ss))
	for i, s := range ss {
		out[i] = netip.MustParsePrefix(s)
	}
	return out
}

// pingRateLimit bounds the echo requests the gateway answers on .1 (all
// guests together), so a guest cannot make it spend CPU on replies.
const pingRateLimit = "limit rate 100/second burst 100 packets"

// rateSetTimeout is how long an idle guest keeps its rate-limit bucket.
const rateSetTimeout = "1m"

// ruleset describes one gateway's nftables table.
type ruleset struct {
	Table  string
	LAN    string
	Uplink string
	Subnet netip.Prefix
	Allow  []netip.Prefix
	// GuestRateLimit in bytes/s per guest and direction; 0 = off.
	GuestRateLimit uint64
	// GuardUplink drops packets forwarded from the uplink to anywhere but
	// NAT return traffic. Set when the gateway itself enabled forwarding on
	// the uplink, so that the host does not become a router for the uplink's
	// network as a side effect.
	GuardUplink bool
}

// tableName is the gateway's own nftables table for a LAN interface.
func tableName(lan string) string { return "peerlan_gw_" + lan }

// rateSetSize bounds the dynamic rate-limit sets: one element per possible guest.
func (r ruleset) rateSetSize() int { return 1<<(32-r.Subnet.Bits()) - 2 }

// text renders the ruleset for `nft -f -`. Loading it replaces the table as
// one transaction (create-if-missing, delete, create), so a reload can never
// leave two copies of a rule.
func (r ruleset) text() string {
	var b strings.Builder
	w := func(indent int, format string, args ...any) {
		b.WriteString(strings.Repeat("\t", indent))
		fmt.Fprintf(&b, format, args...)
		b.WriteByte('\n')
	}
	gw := gatewayAddr(r.Subnet)
	lan, up := quote(r.LAN), quote(r.Uplink)

	w(0, "# peerlan gateway for LAN %s; generated, replaced as a whole on every start.", lan)
	w(0, "table inet %s", r.Table)
	w(0, "delete table inet %s", r.Table)
	w(0, "table inet %s {", r.Table)
	w(1, "comment %s", quote(fmt.Sprintf("peerlan gateway: room %v on %s, uplink %s", r.Subnet, r.LAN, r.Uplink)))
	w(0, "")
	w(1, "# Policy drops, one counter per reason; traffic accounting.")
	for _, reason := range DropReasons {
		w(1, "counter drop_%s {}", reason)
	}
	for _, name := range []string{counterGuestToInternet, counterInternetToGuest, counterFlowsGuestToInternet, counterFlowsInternetToGuest} {
		w(1, "counter %s {}", name)
	}
	w(0, "")
	w(1, "# Destinations the operator opened (HostConfig.Allow).")
	w(1, "set allow {")
	w(2, "type ipv4_addr")
	w(2, "flags interval")
	if len(r.Allow) > 0 {
		w(2, "elements = { %s }", joinPrefixes(r.Allow))
	}
	w(1, "}")
	if r.GuestRateLimit > 0 {
		w(0, "")
		w(1, "# Per-guest token buckets, one element per active guest address.")
		for _, name := range []string{"rate_out", "rate_in"} {
			w(1, "set %s {", name)
			w(2, "type ipv4_addr")
			w(2, "size %d", r.rateSetSize())
			w(2, "flags dynamic,timeout")
			w(2, "timeout %s", rateSetTimeout)
			w(1, "}")
		}
	}

	w(0, "")
	w(1, "# Everything a guest sends, before routing splits it into input and forward.")
	w(1, "chain prerouting {")
	w(2, "type filter hook prerouting priority filter; policy accept;")
	w(2, "iifname %s jump guest_in", lan)
	w(1, "}")
	w(0, "")
	w(1, "chain guest_in {")
	w(2, "meta nfproto ipv6 counter name \"drop_%s\" drop", DropIPv6)
	w(2, "ip daddr { 255.255.255.255, %v } counter name \"drop_%s\" drop", broadcastAddr(r.Subnet), DropBroadcast)
	w(2, "ip daddr 224.0.0.0/4 counter name \"drop_%s\" drop", DropMulticast)
	w(2, "ip saddr != %v counter name \"drop_%s\" drop", r.Subnet, DropSpoofed)
	w(2, "ip daddr %v return", gw)
	w(2, "ip daddr @allow return")
	for _, d := range blockedDestinations {
		w(2, "ip daddr %s counter name \"drop_%s\" drop", setOrSingle(d.prefixes), d.reason)
	}
	w(1, "}")

	w(0, "")
	w(1, "# Guests reach the gateway host only for DNS and ping on %v.", gw)
	w(1, "chain input {")
	w(2, "type filter hook input priority filter; policy accept;")
	w(2, "iifname %s jump guest_to_host", lan)
	w(1, "}")
	w(0, "")
	w(1, "chain guest_to_host {")
	w(2, "ct state established,related accept")
	w(2, "ip daddr %v udp dport 53 accept", gw)
	w(2, "ip daddr %v tcp dport 53 accept", gw)
	w(2, "ip daddr %v icmp type echo-request %s accept", gw, pingRateLimit)
	w(2, "ip daddr @allow accept")
	w(2, "counter name \"drop_%s\" drop", DropHost)
	w(1, "}")

	w(0, "")
	w(1, "chain forward {")
	w(2, "type filter hook forward priority filter; policy accept;")
	w(2, "iifname %s jump guest_to_internet", lan)
	w(2, "oifname %s jump internet_to_guest", lan)
	if r.GuardUplink {
		w(2, "iifname %s ct status ! snat counter name \"drop_%s\" drop", up, DropUplink)
	}
	w(1, "}")
	w(0, "")
	w(1, "chain guest_to_internet {")
	w(2, "ct state invalid counter name \"drop_%s\" drop", DropInvalid)
	if r.GuestRateLimit > 0 {
		w(2, "update @rate_out { ip saddr limit rate over %d bytes/second } counter name \"drop_%s\" drop", r.GuestRateLimit, DropRateLimit)
	}
	w(2, "oifname != %s counter name \"drop_%s\" drop", up, DropRoute)
	w(2, "ct state new counter name %q", counterFlowsGuestToInternet)
	w(2, "counter name %q accept", counterGuestToInternet)
	w(1, "}")
	w(0, "")
	w(1, "chain internet_to_guest {")
	w(2, "ct state invalid counter name \"drop_%s\" drop", DropInvalid)
	if r.GuestRateLimit > 0 {
		w(2, "update @rate_in { ip daddr limit rate over %d bytes/second } counter name \"drop_%s\" drop", r.GuestRateLimit, DropRateLimit)
	}
	w(2, "ct state established,related counter name %q accept", counterInternetToGuest)
	w(2, "ct state new counter name %q", counterFlowsInternetToGuest)
	w(2, "counter name \"drop_%s\" drop", DropUnsolicited)
	w(1, "}")

	w(0, "")
	w(1, "chain postrouting {")
	w(2, "type nat hook postrouting priority srcnat; policy accept;")
	w(2, "oifname %s ip saddr %v masquerade", up, r.Subnet)
	w(1, "}")
	w(0, "}")
	return b.String()
}

// expectedChains is how many chains text() creates; used to verify a load.
const expectedChains = 8

// quote renders an nft string. Interface names were validated to contain no
// quote or backslash, and comments are built from them and addresses.
func quote(s string) string { return `"` + s + `"` }

func joinPrefixes(ps []netip.Prefix) string {
	parts := make([]string, len(ps))
	for i, p := range ps {
		if p.IsSingleIP() {
			parts[i] = p.Addr().String()
		} else {
			parts[i] = p.String()
		}
	}
	return strings.Join(parts, ", ")
}

func setOrSingle(ps []netip.Prefix) string {
	if len(ps) == 1 {
		return joinPrefixes(ps)
	}
	return "{ " + joinPrefixes(ps) + " }"
}
