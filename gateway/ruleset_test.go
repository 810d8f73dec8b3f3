package gateway

import (
	"flag"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite golden files in testdata/")

// sampleRulesets are the configurations whose rendering is pinned in
// testdata/ and loaded into a real kernel by TestRulesetLoads.
var sampleRulesets = map[string]ruleset{
	"ruleset_default": {
		Table:       tableName("tap0"),
		LAN:         "tap0",
		Uplink:      "eth0",
		Subnet:      DefaultSubnet,
		GuardUplink: true,
	},
	"ruleset_full": {
		Table:          tableName("pl-gw.7"),
		LAN:            "pl-gw.7",
		Uplink:         "wan_1",
		Subnet:         netip.MustParsePrefix("100.96.0.0/20"),
		Allow:          []netip.Prefix{netip.MustParsePrefix("169.254.169.254/32"), netip.MustParsePrefix("192.168.1.0/24")},
		GuestRateLimit: 1 << 20,
	},
}

func TestRulesetGolden(t *testing.T) {
	for name, rs := range sampleRulesets {
		t.Run(name, func(t *testing.T) {
			got := rs.text()
			path := filepath.Join("testdata", name+".nft")
			if *update {
				if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run with -update to create it)", err)
			}
			if got != string(want) {
				t.Errorf("ruleset differs from %s (run with -update after checking the change):\n%s", path, got)
			}
		})
	}
}

func TestRulesetContent(t *testing.T) {
	rs := sampleRulesets["ruleset_full"]
	text := rs.text()
	for _, want := range []string{
		// The room's own broadcast address is computed from the subnet.
		"ip daddr { 255.255.255.255, 100.96.15.255 } counter name \"drop_broadcast\" drop",
		"ip saddr != 100.96.0.0/20 counter name \"drop_spoofed\" drop",
		"ip daddr 100.96.0.1 return",
		"elements = { 169.254.169.254, 192.168.1.0/24 }",
		"size 4094",
		"update @rate_out { ip saddr limit rate over 1048576 bytes/second }",
		"update @rate_in { ip daddr limit rate over 1048576 bytes/second }",
		"oifname \"wan_1\" ip saddr 100.96.0.0/20 masquerade",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("ruleset lacks %q", want)
		}
	}
	// The allow list must come before every default drop of guest_in.
	allow := strings.Index(text, "ip daddr @allow return")
	for _, d := range blockedDestinations {
		if i := strings.Index(text, "counter name \"drop_"+d.reason+"\""); i < allow {
			t.Errorf("drop %s at %d precedes the allow list at %d", d.reason, i, allow)
		}
	}
	if strings.Contains(text, "drop_uplink\" drop") {
		t.Error("uplink guard present although GuardUplink is false")
	}
	if !strings.Contains(sampleRulesets["ruleset_default"].text(), `iifname "eth0" ct status ! snat counter name "drop_uplink" drop`) {
		t.Error("uplink guard missing although GuardUplink is true")
	}
	if strings.Contains(sampleRulesets["ruleset_default"].text(), "rate_out") {
		t.Error("rate sets present although the limit is off")
	}
	if got := strings.Count(text, "\tchain "); got != expectedChains {
		t.Errorf("%d chains, expectedChains is %d", got, expectedChains)
	}
}

func TestGuestDropReason(t *testing.T) {
	subnet := DefaultSubnet
	allow := []netip.Prefix{netip.MustParsePrefix("192.168.1.0/24")}
	guest := netip.MustParseAddr("10.86.0.10")
	for dst, want := range map[string]string{
		"203.0.113.5":     "",
		"10.86.0.1":       "",
		"192.168.1.7":     "", // allowed
		"192.168.2.7":     DropPrivate,
		"10.9.9.9":        DropPrivate,
		"172.31.0.1":      DropPrivate,
		"127.0.0.1":       DropLoopback,
		"0.0.0.1":         DropZeroNet,
		"100.100.0.1":     DropCGNAT,
		"169.254.169.254": DropMetadata,
		"169.254.3.4":     DropLinkLocal,
		"240.1.1.1":       DropReserved,
		"224.0.0.251":     DropMulticast,
		"255.255.255.255": DropBroadcast,
		"10.86.0.255":     DropBroadcast,
		"2001:db8::1":     DropIPv6,
	} {
		if got := GuestDropReason(subnet, allow, guest, netip.MustParseAddr(dst)); got != want {
			t.Errorf("to %s: %q, want %q", dst, got, want)
		}
	}
	if got := GuestDropReason(subnet, allow, netip.MustParseAddr("198.51.100.1"), netip.MustParseAddr("203.0.113.5")); got != DropSpoofed {
		t.Errorf("from outside the room: %q, want %q", got, DropSpoofed)
	}
}
