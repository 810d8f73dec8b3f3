package relay

import (
	"net"
	"net/netip"
	"testing"
)

func TestClassifyAddr(t *testing.T) {
	cases := []struct {
		addr string
		want AddrClass
	}{
		// Unspecified and "this network".
		{"0.0.0.0", ClassUnspecified},
		{"::", ClassUnspecified},
		{"::ffff:0.0.0.0", ClassUnspecified},
		{"0.0.0.1", ClassThisNetwork},
		{"0.255.255.255", ClassThisNetwork},
		// Loopback in every spelling.
		{"127.0.0.1", ClassLoopback},
		{"127.255.255.254", ClassLoopback},
		{"::1", ClassLoopback},
		{"::ffff:127.0.0.1", ClassLoopback},
		{"::ffff:7f00:1", ClassLoopback},
		{"fe80::1%eth0", ClassLinkLocal},
		{"::ffff:127.0.0.1%lo", ClassLoopback},
		// RFC 1918, edges included.
		{"10.0.0.1", ClassPrivate},
		{"10.255.255.255", ClassPrivate},
		{"172.16.0.0", ClassPrivate},
		{"172.31.255.255", ClassPrivate},
		{"192.168.0.1", ClassPrivate},
		{"192.168.255.255", ClassPrivate},
		{"::ffff:10.0.0.1", ClassPrivate},
		{"::ffff:192.168.1.1", ClassPrivate},
		// CGNAT, link-local, metadata.
		{"100.64.0.0", ClassCGNAT},
		{"100.127.255.255", ClassCGNAT},
		{"100.100.100.200", ClassCGNAT},
		{"169.254.169.254", ClassLinkLocal},
		{"::ffff:169.254.169.254", ClassLinkLocal},
		{"169.254.0.1", ClassLinkLocal},
		{"fe80::1", ClassLinkLocal},
		{"febf:ffff::1", ClassLinkLocal},
		// Multicast and broadcast.
		{"224.0.0.1", ClassMulticast},
		{"239.255.255.250", ClassMulticast},
		{"ff02::1", ClassMulticast},
		{"ff05::1:3", ClassMulticast},
		{"255.255.255.255", ClassBroadcast},
		{"::ffff:255.255.255.255", ClassBroadcast},
		// Reserved blocks.
		{"240.0.0.1", ClassReserved},
		{"255.255.255.254", ClassReserved},
		{"192.0.0.8", ClassReserved},
		{"198.18.0.1", ClassReserved},
		{"198.19.255.255", ClassReserved},
		{"100::1", ClassReserved},
		// IPv6 private space and IPv4-carrying forms.
		{"fc00::1", ClassUniqueLocal},
		{"fd00:ec2::254", ClassUniqueLocal},
		{"fdff:ffff::1", ClassUniqueLocal},
		{"fec0::1", ClassSiteLocal},
		{"::7f00:1", ClassTranslated},        // IPv4-compatible 127.0.0.1
		{"::a00:1", ClassTranslated},         // IPv4-compatible 10.0.0.1
		{"::ffff:0:7f00:1", ClassTranslated}, // IPv4-translated
		{"64:ff9b::7f00:1", ClassTranslated},
		{"64:ff9b::808:808", ClassTranslated},
		{"64:ff9b:1::a00:1", ClassTranslated},
		{"2002:7f00:1::1", ClassTranslated},   // 6to4 of 127.0.0.1
		{"2001:0:7f00:1::1", ClassTranslated}, // Teredo
		// Global: relayed to.
		{"8.8.8.8", ClassGlobal},
		{"1.1.1.1", ClassGlobal},
		{"::ffff:8.8.8.8", ClassGlobal},
		{"9.255.255.255", ClassGlobal},
		{"11.0.0.0", ClassGlobal},
		{"100.63.255.255", ClassGlobal},
		{"100.128.0.0", ClassGlobal},
		{"172.15.255.255", ClassGlobal},
		{"172.32.0.0", ClassGlobal},
		{"192.167.255.255", ClassGlobal},
		{"192.169.0.0", ClassGlobal},
		{"169.253.255.255", ClassGlobal},
		{"198.17.255.255", ClassGlobal},
		{"198.20.0.0", ClassGlobal},
		{"223.255.255.255", ClassGlobal},
		{"192.0.2.1", ClassGlobal},    // TEST-NET-1, used as test "internet"
		{"198.51.100.7", ClassGlobal}, // TEST-NET-2
		{"203.0.113.9", ClassGlobal},  // TEST-NET-3
		{"2001:db8::1", ClassGlobal},  // documentation
		{"2606:4700::1111", ClassGlobal},
		{"2a00:1450:4001::1", ClassGlobal},
	}
	for _, tc := range cases {
		a, err := netip.ParseAddr(tc.addr)
		if err != nil {
			t.Fatalf("bad test address %q: %v", tc.addr, err)
		}
		if got := ClassifyAddr(a); got != tc.want {
			t.Errorf("ClassifyAddr(%s) = %q, want %q", tc.addr, got, tc.want)
		}
		// pion hands handlers a net.IP in 4- or 16-byte form.
		for _, ip := range []net.IP{net.IP(a.AsSlice()), net.IP(a.AsSlice()).To16()} {
			if got := ClassifyAddr(addrFromIP(ip)); got != tc.want {
				t.Errorf("ClassifyAddr(net.IP %v len %d) = %q, want %q", ip, len(ip), got, tc.want)
			}
		}
	}
}

func TestNormalizeAddr(t *testing.T) {
	cases := []struct{ in, want string }{
		{"::ffff:127.0.0.1", "127.0.0.1"},
		{"fe80::1%eth0", "fe80::1"},
		{"::ffff:10.1.2.3%x", "10.1.2.3"},
		{"2001:db8::1", "2001:db8::1"},
		{"192.0.2.1", "192.0.2.1"},
	}
	for _, tc := range cases {
		if got := NormalizeAddr(netip.MustParseAddr(tc.in)); got != netip.MustParseAddr(tc.want) {
			t.Errorf("NormalizeAddr(%s) = %s, want %s", tc.in, got, tc.want)
		}
	}
	if got := NormalizeAddr(netip.Addr{}); got != netip.IPv4Unspecified() {
		t.Errorf("NormalizeAddr(zero) = %v", got)
	}
	for _, ip := range []net.IP{nil, {}, {1, 2, 3}} {
		if got := ClassifyAddr(addrFromIP(ip)); got != ClassUnspecified {
			t.Errorf("malformed IP %v classified %q", ip, got)
		}
	}
}

// FuzzClassifyAddr checks invariants that must hold for every address:
// a mapped address classifies like its IPv4 form, zones never matter, and
// every refused class lies in a special-purpose block.
func FuzzClassifyAddr(f *testing.F) {
	f.Add([]byte{127, 0, 0, 1})
	f.Add([]byte{10, 0, 0, 1})
	f.Add([]byte{8, 8, 8, 8})
	f.Add(netip.MustParseAddr("::ffff:169.254.169.254").AsSlice())
	f.Add(netip.MustParseAddr("fd00::1").AsSlice())
	f.Add(netip.MustParseAddr("2001:db8::1").AsSlice())
	f.Fuzz(func(t *testing.T, b []byte) {
		a, ok := netip.AddrFromSlice(b)
		if !ok {
			if ClassifyAddr(addrFromIP(b)) != ClassUnspecified {
				t.Fatalf("malformed %x not unspecified", b)
			}
			return
		}
		c := ClassifyAddr(a)
		if a.Is4() {
			if m := ClassifyAddr(netip.AddrFrom16(a.As16())); m != c {
				t.Fatalf("%s is %q but its mapped form is %q", a, c, m)
			}
		} else if z := ClassifyAddr(a.WithZone("eth0")); z != c {
			t.Fatalf("%s is %q but with a zone %q", a, c, z)
		}
		n := NormalizeAddr(a)
		if n.Is4In6() || n.Zone() != "" {
			t.Fatalf("NormalizeAddr(%s) = %s", a, n)
		}
		// Cross-check against the standard library's view.
		if n.IsLoopback() || n.IsPrivate() || n.IsLinkLocalUnicast() || n.IsMulticast() ||
			n.IsUnspecified() || n.IsInterfaceLocalMulticast() || n.IsLinkLocalMulticast() {
			if c == ClassGlobal {
				t.Fatalf("%s is special to net/netip but classified global", a)
			}
		}
	})
}
