package portfwd

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
)

func TestParseSpec(t *testing.T) {
	for _, c := range []struct {
		in      string
		want    Spec
		all     bool
		wantStr string // "" means the input
	}{
		{in: "tcp:127.0.0.1:8080=10.86.0.2:80", want: Spec{TCP, netip.MustParseAddrPort("127.0.0.1:8080"), netip.MustParseAddrPort("10.86.0.2:80")}},
		{in: "udp:127.0.0.1:5353=10.86.0.9:53", want: Spec{UDP, netip.MustParseAddrPort("127.0.0.1:5353"), netip.MustParseAddrPort("10.86.0.9:53")}},
		{in: "tcp::2222=10.86.0.3:22", all: true, want: Spec{TCP, netip.AddrPortFrom(netip.Addr{}, 2222), netip.MustParseAddrPort("10.86.0.3:22")}},
		{in: "tcp:0.0.0.0:2222=10.86.0.3:22", all: true, want: Spec{TCP, netip.MustParseAddrPort("0.0.0.0:2222"), netip.MustParseAddrPort("10.86.0.3:22")}},
		{in: "tcp:[::1]:8080=10.86.0.2:80", want: Spec{TCP, netip.MustParseAddrPort("[::1]:8080"), netip.MustParseAddrPort("10.86.0.2:80")}},
		{in: "tcp:192.0.2.7:65535=192.168.5.20:65535", want: Spec{TCP, netip.MustParseAddrPort("192.0.2.7:65535"), netip.MustParseAddrPort("192.168.5.20:65535")}},
	} {
		got, err := ParseSpec(c.in)
		if err != nil || got != c.want {
			t.Errorf("ParseSpec(%q) = %+v, %v; want %+v", c.in, got, err, c.want)
			continue
		}
		if got.String() != c.in {
			t.Errorf("ParseSpec(%q).String() = %q, want the input back", c.in, got.String())
		}
		if got.AllAddresses() != c.all {
			t.Errorf("ParseSpec(%q).AllAddresses() = %v", c.in, got.AllAddresses())
		}
	}
	for _, c := range []struct{ in, want string }{
		{"", "want tcp:HOSTADDR"},
		{"tcp", "want tcp:HOSTADDR"},
		{"sctp:127.0.0.1:80=10.86.0.2:80", `unknown protocol "sctp"`},
		{"TCP:127.0.0.1:80=10.86.0.2:80", `unknown protocol "TCP"`},
		{"tcp:127.0.0.1:8080", "missing '='"},
		{"tcp:127.0.0.1:8080-10.86.0.2:80", "missing '='"},
		{"tcp:localhost:8080=10.86.0.2:80", "host address"},
		{"tcp:127.0.0.1=10.86.0.2:80", "host address"},
		{"tcp:127.0.0.1:70000=10.86.0.2:80", "host address"},
		{"tcp::=10.86.0.2:80", "host address"},
		{"tcp::http=10.86.0.2:80", "host address"},
		{"tcp:127.0.0.1:0=10.86.0.2:80", "host port 0"},
		{"tcp::0=10.86.0.2:80", "host port 0"},
		{"tcp:127.0.0.1:8080=", "guest address"},
		{"tcp:127.0.0.1:8080=10.86.0.2", "guest address"},
		{"tcp:127.0.0.1:8080=10.86.0.2:http", "guest address"},
		{"tcp:127.0.0.1:8080=guest:80", "guest address"},
		{"tcp:127.0.0.1:8080=10.86.0.2:0", "guest port 0"},
		{"tcp:127.0.0.1:8080=[fd00::2]:80", "not IPv4"},
		{"tcp:127.0.0.1:8080=[::ffff:10.86.0.2]:80", "not IPv4"},
		{"tcp:127.0.0.1:8080=127.0.0.1:80", "cannot be a guest's"},
		{"udp:127.0.0.1:8080=0.0.0.0:80", "cannot be a guest's"},
		{"udp:127.0.0.1:8080=224.0.0.251:5353", "cannot be a guest's"},
		{"tcp:127.0.0.1:8080=10.86.0.2:80=x", "guest address"},
	} {
		got, err := ParseSpec(c.in)
		if err == nil {
			t.Errorf("ParseSpec(%q) = %+v, want an error", c.in, got)
			continue
		}
		if !errors.Is(err, ErrBadSpec) || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), `"`+c.in+`"`) {
			t.Errorf("ParseSpec(%q): %v; want ErrBadSpec naming the input and %q", c.in, err, c.want)
		}
	}
}

func TestCheckSubnet(t *testing.T) {
	room := netip.MustParsePrefix("10.86.0.0/24")
	spec := func(guest string) Spec {
		return Spec{Network: TCP, Listen: netip.MustParseAddrPort("127.0.0.1:8080"), Guest: netip.MustParseAddrPort(guest)}
	}
	for _, g := range []string{"10.86.0.2:80", "10.86.0.254:80", "10.86.0.100:1"} {
		if err := spec(g).CheckSubnet(room); err != nil {
			t.Errorf("guest %s in %v: %v", g, room, err)
		}
	}
	// An unmasked prefix (as a peer's address/prefix) means its subnet.
	if err := spec("10.86.0.2:80").CheckSubnet(netip.MustParsePrefix("10.86.0.7/24")); err != nil {
		t.Errorf("unmasked prefix: %v", err)
	}
	for _, c := range []struct {
		guest, subnet, want string
	}{
		{"10.86.1.2:80", "10.86.0.0/24", "outside the room subnet"},
		{"192.0.2.2:80", "10.86.0.0/24", "outside the room subnet"},
		{"10.86.0.0:80", "10.86.0.0/24", "network address"},
		{"10.86.0.1:80", "10.86.0.0/24", "gateway's own"},
		{"10.86.0.255:80", "10.86.0.0/24", "broadcast"},
		{"10.86.1.255:80", "10.86.0.0/23", "broadcast"},
		{"10.86.0.255:80", "10.86.0.0/23", ""}, // inside a /23
		{"10.86.0.2:80", "fd00::/64", "not an IPv4 prefix"},
	} {
		err := spec(c.guest).CheckSubnet(netip.MustParsePrefix(c.subnet))
		if c.want == "" {
			if err != nil {
				t.Errorf("guest %s in %s: %v", c.guest, c.subnet, err)
			}
			continue
		}
		if err == nil || !errors.Is(err, ErrBadSpec) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("guest %s in %s: %v, want an error saying %q", c.guest, c.subnet, err, c.want)
		}
	}
	if err := spec("10.86.0.2:80").CheckSubnet(netip.Prefix{}); err == nil {
		t.Error("no subnet accepted")
	}
}
