package gateway

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"testing"
)

func TestHostConfigDefaults(t *testing.T) {
	c, err := HostConfig{LAN: "tap0"}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	if c.Subnet != DefaultSubnet || c.StateDir != DefaultStateDir || c.NftPath != "nft" || c.Logger == nil {
		t.Errorf("defaults not applied: %+v", c)
	}
	c, err = HostConfig{
		LAN:    "tap0",
		Subnet: netip.MustParsePrefix("10.99.3.77/24"),
		Allow: []netip.Prefix{
			netip.MustParsePrefix("192.168.1.77/24"),
			netip.MustParsePrefix("192.168.0.0/16"),
			netip.MustParsePrefix("10.1.2.3/32"),
			netip.MustParsePrefix("192.168.0.0/16"),
		},
	}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	if c.Subnet.String() != "10.99.3.0/24" {
		t.Errorf("subnet not masked: %v", c.Subnet)
	}
	// Covered and duplicate prefixes go: nft rejects overlapping interval elements.
	if got := fmt.Sprint(c.Allow); got != "[10.1.2.3/32 192.168.0.0/16]" {
		t.Errorf("allow list %s", got)
	}
}

func TestHostConfigErrors(t *testing.T) {
	for name, c := range map[string]HostConfig{
		"no LAN":              {},
		"LAN name too long":   {LAN: "abcdefghijklmnop"},
		"LAN name with quote": {LAN: `tap"0`},
		"LAN name with space": {LAN: "tap 0"},
		"LAN dot":             {LAN: ".."},
		"uplink is LAN":       {LAN: "tap0", Uplink: "tap0"},
		"bad uplink name":     {LAN: "tap0", Uplink: "eth/0"},
		"IPv6 subnet":         {LAN: "tap0", Subnet: netip.MustParsePrefix("fd00::/64")},
		"subnet too large":    {LAN: "tap0", Subnet: netip.MustParsePrefix("10.0.0.0/8")},
		"subnet too small":    {LAN: "tap0", Subnet: netip.MustParsePrefix("10.0.0.0/31")},
		"loopback subnet":     {LAN: "tap0", Subnet: netip.MustParsePrefix("127.1.0.0/24")},
		"multicast subnet":    {LAN: "tap0", Subnet: netip.MustParsePrefix("239.1.1.0/24")},
		"link-local subnet":   {LAN: "tap0", Subnet: netip.MustParsePrefix("169.254.3.0/24")},
		"IPv6 allow":          {LAN: "tap0", Allow: []netip.Prefix{netip.MustParsePrefix("fd00::/8")}},
		"invalid allow":       {LAN: "tap0", Allow: []netip.Prefix{{}}},
		"allow list too long": {LAN: "tap0", Allow: make([]netip.Prefix, maxAllow+1)},
		"rate too low":        {LAN: "tap0", GuestRateLimit: 1000},
		"rate too high":       {LAN: "tap0", GuestRateLimit: 1 << 50},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := c.withDefaults()
			if !errors.Is(err, errInvalidConfig) {
				t.Fatalf("err = %v, want errInvalidConfig", err)
			}
			if !strings.HasPrefix(err.Error(), "gateway: ") {
				t.Errorf("error %q lacks the package prefix", err)
			}
		})
	}
}

func TestSubnetAddresses(t *testing.T) {
	for _, tc := range []struct{ subnet, gw, brd string }{
		{"10.86.0.0/24", "10.86.0.1", "10.86.0.255"},
		{"100.96.0.0/20", "100.96.0.1", "100.96.15.255"},
		{"192.0.2.64/30", "192.0.2.65", "192.0.2.67"},
		{"172.20.0.0/16", "172.20.0.1", "172.20.255.255"},
	} {
		p := netip.MustParsePrefix(tc.subnet)
		if got := gatewayAddr(p).String(); got != tc.gw {
			t.Errorf("gatewayAddr(%s) = %s, want %s", tc.subnet, got, tc.gw)
		}
		if got := broadcastAddr(p).String(); got != tc.brd {
			t.Errorf("broadcastAddr(%s) = %s, want %s", tc.subnet, got, tc.brd)
		}
	}
}
