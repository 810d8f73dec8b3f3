package gateway

import (
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
)

// DefaultSubnet is the room subnet used when HostConfig.Subnet is unset. It
// matches the signaling server's default room subnet.
var DefaultSubnet = netip.MustParsePrefix("10.86.0.0/24")

// DefaultStateDir holds the crash-recovery state files.
const DefaultStateDir = "/run/peerlan"

// Bounds on the configuration, so that every set and rule stays small.
const (
	minSubnetBits = 16 // a room holds at most 65534 guests: the rate sets are bounded by it
	maxSubnetBits = 30 // .1 plus at least one guest
	maxAllow      = 256
	// MinGuestRateLimit is the smallest accepted per-guest limit. The kernel's
	// byte-mode token bucket holds one second of the rate, so a rate below a
	// few full-size frames would drop every large packet.
	MinGuestRateLimit = 16 << 10
	maxGuestRateLimit = 1 << 40
	maxIfNameLen      = 15 // IFNAMSIZ - 1
)

// HostConfig describes the host side of a gateway. The zero value of every
// optional field selects the documented default.
type HostConfig struct {
	// LAN is the interface that carries the room's frames (the gateway's TAP
	// device). Required; it must exist. It receives the subnet's first address
	// (.1) and is brought up.
	LAN string
	// Subnet is the room's IPv4 subnet; default DefaultSubnet. Prefix length
	// 16..30. It must not overlap a route on any other interface.
	Subnet netip.Prefix
	// Uplink is the interface that leads to the internet; default: the
	// interface of the IPv4 default route with the lowest metric.
	Uplink string
	// Allow opens IPv4 prefixes that the egress policy blocks by default
	// (private, CGNAT, link-local, ...), for forwarding and for the gateway's
	// own addresses within them. At most 256 entries.
	Allow []netip.Prefix
	// GuestRateLimit caps each guest's traffic in bytes per second, separately
	// in each direction; 0 disables the limit. At least MinGuestRateLimit.
	GuestRateLimit uint64
	// StateDir holds the lock and crash-recovery files; default
	// DefaultStateDir. Created with mode 0700 when missing.
	StateDir string
	// NftPath is the nft binary; default: "nft" looked up in PATH.
	NftPath string
	// Logger receives setup, recovery and teardown events; default slog.Default().
	Logger *slog.Logger
}

// withDefaults returns a validated copy with defaults filled in.
func (c HostConfig) withDefaults() (HostConfig, error) {
	if err := validIfName(c.LAN); err != nil {
		return c, fmt.Errorf("%w: LAN: %w", errInvalidConfig, err)
	}
	if c.Uplink != "" {
		if err := validIfName(c.Uplink); err != nil {
			return c, fmt.Errorf("%w: Uplink: %w", errInvalidConfig, err)
		}
		if c.Uplink == c.LAN {
			return c, fmt.Errorf("%w: Uplink and LAN are both %q", errInvalidConfig, c.LAN)
		}
	}
	if !c.Subnet.IsValid() {
		c.Subnet = DefaultSubnet
	}
	if err := validSubnet(c.Subnet); err != nil {
		return c, err
	}
	c.Subnet = c.Subnet.Masked()
	if len(c.Allow) > maxAllow {
		return c, fmt.Errorf("%w: %d allow-list entries, at most %d", errInvalidConfig, len(c.Allow), maxAllow)
	}
	allow := make([]netip.Prefix, 0, len(c.Allow))
	for _, p := range c.Allow {
		if !p.IsValid() || !p.Addr().Is4() {
			return c, fmt.Errorf("%w: allow-list entry %v is not an IPv4 prefix", errInvalidConfig, p)
		}
		allow = append(allow, p.Masked())
	}
	c.Allow = mergePrefixes(allow)
	if c.GuestRateLimit != 0 && (c.GuestRateLimit < MinGuestRateLimit || c.GuestRateLimit > maxGuestRateLimit) {
		return c, fmt.Errorf("%w: GuestRateLimit %d bytes/s outside [%d, %d]", errInvalidConfig,
			c.GuestRateLimit, MinGuestRateLimit, uint64(maxGuestRateLimit))
	}
	if c.StateDir == "" {
		c.StateDir = DefaultStateDir
	}
	if c.NftPath == "" {
		c.NftPath = "nft"
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c, nil
}

// validSubnet rejects prefixes that cannot be a routed room.
func validSubnet(p netip.Prefix) error {
	if !p.Addr().Is4() {
		return fmt.Errorf("%w: subnet %v is not IPv4", errInvalidConfig, p)
	}
	if p.Bits() < minSubnetBits || p.Bits() > maxSubnetBits {
		return fmt.Errorf("%w: subnet %v: prefix length must be %d..%d", errInvalidConfig, p, minSubnetBits, maxSubnetBits)
	}
	for _, r := range unroutableRanges {
		if r.Overlaps(p) {
			return fmt.Errorf("%w: subnet %v lies in %v", errInvalidConfig, p, r)
		}
	}
	return nil
}

var unroutableRanges = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/8"),
	netip.MustParsePrefix("127.0.0.0/8"),
	netip.MustParsePrefix("169.254.0.0/16"),
	netip.MustParsePrefix("224.0.0.0/4"),
	netip.MustParsePrefix("240.0.0.0/4"),
}

// validIfName accepts Linux interface names that are also safe inside an nft
// table name and a quoted nft string: letters, digits, '_', '-', '.'.
func validIfName(name string) error {
	if name == "" {
		return fmt.Errorf("interface name is empty")
	}
	if len(name) > maxIfNameLen {
		return fmt.Errorf("interface name %q longer than %d bytes", name, maxIfNameLen)
	}
	if name == "." || name == ".." {
		return fmt.Errorf("interface name %q is not allowed", name)
	}
	for _, r := range name {
		ok := r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' || r == '-' || r == '.'
		if !ok {
			return fmt.Errorf("interface name %q: only letters, digits, '_', '-' and '.' are supported", name)
		}
	}
	return nil
}

// gatewayAddr is the subnet's first host address (.1 in a /24).
func gatewayAddr(subnet netip.Prefix) netip.Addr {
	return subnet.Masked().Addr().Next()
}

// broadcastAddr is the subnet's last address.
func broadcastAddr(subnet netip.Prefix) netip.Addr {
	a := subnet.Masked().Addr().As4()
	host := uint32(1)<<(32-subnet.Bits()) - 1
	v := uint32(a[0])<<24 | uint32(a[1])<<16 | uint32(a[2])<<8 | uint32(a[3])
	v |= host
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

// mergePrefixes sorts prefixes and drops those covered by another, so that
// nft accepts them as interval set elements (it rejects overlaps).
func mergePrefixes(in []netip.Prefix) []netip.Prefix {
	out := make([]netip.Prefix, 0, len(in))
	for _, p := range in {
		covered := false
		for _, q := range in {
			if q != p && q.Bits() < p.Bits() && q.Contains(p.Addr()) {
				covered = true
				break
			}
		}
		if !covered && !slices.Contains(out, p) {
			out = append(out, p)
		}
	}
	slices.SortFunc(out, netip.Prefix.Compare)
	return out
}
