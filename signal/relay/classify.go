package relay

import (
	"net"
	"net/netip"
)

// AddrClass names why a peer address is not relayed to. The empty class
// means the address is globally routable and may be relayed to.
type AddrClass string

// Address classes the relay refuses (DESIGN.md invariant 8). Refusals are
// counted under "permission-<class>".
const (
	ClassGlobal      AddrClass = ""
	ClassUnspecified AddrClass = "unspecified"  // 0.0.0.0, ::, invalid
	ClassThisNetwork AddrClass = "this-network" // 0.0.0.0/8
	ClassLoopback    AddrClass = "loopback"     // 127.0.0.0/8, ::1
	ClassPrivate     AddrClass = "private"      // RFC 1918
	ClassCGNAT       AddrClass = "cgnat"        // 100.64.0.0/10 (also hosts some cloud metadata)
	ClassLinkLocal   AddrClass = "link-local"   // 169.254.0.0/16 (cloud metadata), fe80::/10
	ClassMulticast   AddrClass = "multicast"    // 224.0.0.0/4, ff00::/8
	ClassBroadcast   AddrClass = "broadcast"    // 255.255.255.255
	ClassReserved    AddrClass = "reserved"     // special-purpose blocks that are not one of the above
	ClassUniqueLocal AddrClass = "unique-local" // fc00::/7 (IPv6 private space, fd00:ec2::254 metadata)
	ClassSiteLocal   AddrClass = "site-local"   // fec0::/10, deprecated but still routed internally
	ClassTranslated  AddrClass = "translated"   // IPv6 forms that carry an IPv4 address to a translator or tunnel
)

// Special-purpose blocks (RFC 6890 registries) that a relay must not reach.
// Documentation ranges (192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24,
// 2001:db8::/32) are deliberately absent: nothing routes them, and test
// networks use them as their "internet".
var refusedPrefixes = []refusedPrefix{
	{netip.MustParsePrefix("0.0.0.0/8"), ClassThisNetwork},
	{netip.MustParsePrefix("10.0.0.0/8"), ClassPrivate},
	{netip.MustParsePrefix("100.64.0.0/10"), ClassCGNAT},
	{netip.MustParsePrefix("127.0.0.0/8"), ClassLoopback},
	{netip.MustParsePrefix("169.254.0.0/16"), ClassLinkLocal},
	{netip.MustParsePrefix("172.16.0.0/12"), ClassPrivate},
	{netip.MustParsePrefix("192.0.0.0/24"), ClassReserved},  // IETF protocol assignments, DS-Lite
	{netip.MustParsePrefix("192.168.0.0/16"), ClassPrivate}, //
	{netip.MustParsePrefix("198.18.0.0/15"), ClassReserved}, // device benchmarking, used inside labs
	{netip.MustParsePrefix("224.0.0.0/4"), ClassMulticast},
	{netip.MustParsePrefix("255.255.255.255/32"), ClassBroadcast},
	{netip.MustParsePrefix("240.0.0.0/4"), ClassReserved},

	{netip.MustParsePrefix("::/96"), ClassTranslated},           // IPv4-compatible (deprecated); :: and ::1 are caught earlier
	{netip.MustParsePrefix("::ffff:0:0:0/96"), ClassTranslated}, // IPv4-translated (SIIT)
	{netip.MustParsePrefix("64:ff9b::/96"), ClassTranslated},    // NAT64 well-known prefix
	{netip.MustParsePrefix("64:ff9b:1::/48"), ClassTranslated},  // NAT64 local-use prefix
	{netip.MustParsePrefix("100::/64"), ClassReserved},          // discard-only
	{netip.MustParsePrefix("2001::/32"), ClassTranslated},       // Teredo
	{netip.MustParsePrefix("2002::/16"), ClassTranslated},       // 6to4
	{netip.MustParsePrefix("fc00::/7"), ClassUniqueLocal},
	{netip.MustParsePrefix("fe80::/10"), ClassLinkLocal},
	{netip.MustParsePrefix("fec0::/10"), ClassSiteLocal},
	{netip.MustParsePrefix("ff00::/8"), ClassMulticast},
}

// NormalizeAddr returns the form of a that classification and comparisons
// use: IPv4-mapped IPv6 becomes IPv4 (a socket sends to ::ffff:127.0.0.1 as
// to 127.0.0.1), the zone is dropped, and the invalid zero Addr becomes the
// unspecified IPv4 address so that it is refused rather than skipped.
func NormalizeAddr(a netip.Addr) netip.Addr {
	if !a.IsValid() {
		return netip.IPv4Unspecified()
	}
	return a.Unmap().WithZone("")
}

// addrFromIP converts what pion/turn hands to handlers. A nil or malformed
// IP normalises to unspecified.
func addrFromIP(ip net.IP) netip.Addr {
	a, _ := netip.AddrFromSlice(ip)
	return NormalizeAddr(a)
}

// ClassifyAddr returns the class of a after normalising it, or ClassGlobal
// when a may be relayed to.
func ClassifyAddr(a netip.Addr) AddrClass {
	a = NormalizeAddr(a)
	switch {
	case a.IsUnspecified():
		return ClassUnspecified
	case a.IsLoopback():
		return ClassLoopback
	}
	table := refusedV6
	if a.Is4() {
		table = refusedV4
	}
	for _, r := range table {
		if r.prefix.Contains(a) {
			return r.class
		}
	}
	return ClassGlobal
}

type refusedPrefix = struct {
	prefix netip.Prefix
	class  AddrClass
}

// refusedV4 and refusedV6 split refusedPrefixes by family, halving the scan
// on the per-datagram path.
var refusedV4, refusedV6 = splitByFamily(refusedPrefixes)

func splitByFamily(all []refusedPrefix) (v4, v6 []refusedPrefix) {
	for _, r := range all {
		if r.prefix.Addr().Is4() {
			v4 = append(v4, r)
		} else {
			v6 = append(v6, r)
		}
	}
	return v4, v6
}
