package userspace

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os/exec"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/peerlan/peerlan/gateway"
	"github.com/peerlan/peerlan/peer"
	"github.com/peerlan/peerlan/peer/ether"
)

// discoverFrame is a DHCPDISCOVER as a guest broadcasts it.
func discoverFrame() []byte {
	d := make([]byte, 240+4)
	d[0], d[1], d[2] = 1, 1, 6 // BOOTREQUEST, Ethernet
	copy(d[28:], guestMAC[:])
	copy(d[236:], []byte{99, 130, 83, 99}) // magic cookie
	copy(d[240:], []byte{53, 1, 1, 255})   // DHCPDISCOVER, end
	src := netip.AddrPortFrom(netip.IPv4Unspecified(), 68)
	dst := netip.AddrPortFrom(netip.AddrFrom4([4]byte{255, 255, 255, 255}), 67)
	return udpFrame(ether.Broadcast, guestMAC, src, dst, d)
}

// readFrames collects what the gateway sends within d.
func readFrames(t *testing.T, g *Gateway, d time.Duration) [][]byte {
	t.Helper()
	var out [][]byte
	got := make(chan []byte)
	stop := make(chan struct{})
	go func() {
		for {
			b := make([]byte, peer.MaxFrameSize)
			n, err := g.Read(b)
			if err != nil {
				close(got)
				return
			}
			select {
			case got <- b[:n]:
			case <-stop:
				return
			}
		}
	}()
	deadline := time.After(d)
	for {
		select {
		case f, ok := <-got:
			if !ok {
				return out
			}
			out = append(out, f)
		case <-deadline:
			close(stop)
			return out
		}
	}
}

func TestDHCPSilence(t *testing.T) {
	g := newGateway(t, Config{})
	for range 3 {
		if _, err := g.Write(discoverFrame()); err != nil {
			t.Fatal(err)
		}
	}
	// A unicast request to .1:67 (a client renewing with the wrong server)
	// does not reach a DHCP server either.
	unicast := udpFrame(g.MAC(), guestMAC, netip.AddrPortFrom(testGuest, 68), netip.AddrPortFrom(g.GatewayAddr(), 67), make([]byte, 244))
	g.Write(unicast)
	for _, f := range readFrames(t, g, 2*time.Second) {
		if e, _ := ether.ParseEthernet(f); e.Type() == ether.TypeIPv4 {
			t.Errorf("the stack answered DHCP: % x", f[:min(len(f), 64)])
		}
	}
	if n := drops(g, gateway.DropBroadcast); n != 3 {
		t.Errorf("broadcast drops = %d, want 3 (the DISCOVERs)", n)
	}
	if n := drops(g, gateway.DropHost); n != 1 {
		t.Errorf("host drops = %d, want 1 (unicast to .1:67)", n)
	}
}

func TestDenyList(t *testing.T) {
	g := newGateway(t, Config{Allow: []netip.Prefix{netip.MustParsePrefix("192.168.7.0/24")}})
	from := netip.AddrPortFrom(testGuest, 40000)
	cases := []struct {
		dst    string
		reason string
	}{
		{"127.0.0.1:80", gateway.DropLoopback},
		{"10.1.2.3:80", gateway.DropPrivate},
		{"172.16.0.1:80", gateway.DropPrivate},
		{"192.168.1.1:80", gateway.DropPrivate},
		{"100.64.0.1:80", gateway.DropCGNAT},
		{"169.254.169.254:80", gateway.DropMetadata},
		{"169.254.1.1:80", gateway.DropLinkLocal},
		{"0.1.2.3:80", gateway.DropZeroNet},
		{"240.0.0.1:80", gateway.DropReserved},
		{"224.0.0.251:5353", gateway.DropMulticast},
		{"10.86.0.255:9", gateway.DropBroadcast},
		{"10.86.0.1:22", gateway.DropHost},
		{"10.86.0.20:80", gateway.DropRoute},
	}
	for _, c := range cases {
		before := drops(g, c.reason)
		g.Write(udpFrame(g.MAC(), guestMAC, from, netip.MustParseAddrPort(c.dst), []byte("x")))
		if drops(g, c.reason) != before+1 {
			t.Errorf("to %s: %s drops %d → %d, want one more (all: %v)", c.dst, c.reason, before, drops(g, c.reason), g.Stats().Drops)
		}
	}
	// Spoofed sources: outside the room, or .1 itself.
	for _, src := range []string{"198.51.100.9:1", "10.86.0.1:1"} {
		before := drops(g, gateway.DropSpoofed)
		g.Write(udpFrame(g.MAC(), guestMAC, netip.MustParseAddrPort(src), netip.MustParseAddrPort("203.0.113.1:9"), nil))
		if drops(g, gateway.DropSpoofed) != before+1 {
			t.Errorf("from %s: not counted as spoofed", src)
		}
	}
	// -allow opens a private prefix: nothing is dropped (the frame reaches
	// the stack, whose UDP forwarder dials a socket that goes nowhere).
	before := g.Stats()
	g.Write(udpFrame(g.MAC(), guestMAC, from, netip.MustParseAddrPort("192.168.7.7:9"), nil))
	after := g.Stats()
	if after.FromGuests.Packets != before.FromGuests.Packets+1 {
		t.Errorf("allowed frame not delivered: %v → %v", before, after)
	}
	for _, r := range DropReasons {
		if after.Drops[r] != before.Drops[r] {
			t.Errorf("allowed frame counted as %s", r)
		}
	}
}

func TestNewRefusesBadConfig(t *testing.T) {
	for _, cfg := range []Config{
		{},
		{Subnet: netip.MustParsePrefix("10.86.0.0/8")},
		{Subnet: netip.MustParsePrefix("2001:db8::/64")},
		{Subnet: testSubnet, MTU: 9000},
		{Subnet: testSubnet, RateLimit: 10},
		{Subnet: testSubnet, MAC: ether.Broadcast},
		{Subnet: testSubnet, Allow: []netip.Prefix{netip.MustParsePrefix("2001:db8::/32")}},
	} {
		if g, err := New(context.Background(), cfg); err == nil {
			g.Close()
			t.Errorf("New(%+v) accepted", cfg)
		}
	}
}

func TestLimiter(t *testing.T) {
	const rate = 100_000
	l := newLimiter(rate, testSubnet)
	now := time.Unix(1000, 0)
	sent := 0
	for l.allow(dirIn, testGuest, 1000, now) {
		sent += 1000
	}
	if sent != rate {
		t.Fatalf("burst = %d bytes, want one second's worth (%d)", sent, rate)
	}
	if !l.allow(dirOut, testGuest, 1000, now) {
		t.Error("the other direction has its own bucket")
	}
	if !l.allow(dirIn, netip.MustParseAddr("10.86.0.11"), 1000, now) {
		t.Error("another guest has its own bucket")
	}
	now = now.Add(100 * time.Millisecond)
	sent = 0
	for l.allow(dirIn, testGuest, 1000, now) {
		sent += 1000
	}
	if sent != rate/10 {
		t.Errorf("after 100 ms: %d bytes, want %d", sent, rate/10)
	}
	if !l.allow(dirIn, netip.MustParseAddr("198.51.100.1"), 1<<20, now) {
		t.Error("addresses outside the room are not limited")
	}
	l.allow(dirIn, testGuest, 1, now.Add(2*idleBucket)) // sweeps
	if len(l.buckets[dirOut]) != 0 {
		t.Errorf("idle buckets kept: %v", l.buckets[dirOut])
	}
}

// TestRateLimitUDP floods a loopback UDP sink through the stack at a
// guest's limit and checks that no more than the budget got through.
func TestRateLimitUDP(t *testing.T) {
	const rate = 64 << 10
	g := newGateway(t, Config{RateLimit: rate, translate: toLoopback})
	sink, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer sink.Close()
	dst := netip.AddrPortFrom(internetHost, uint16(sink.LocalAddr().(*net.UDPAddr).Port))
	start := time.Now()
	payload := make([]byte, 1000)
	const frames = 400 // 400 kB, six times the one-second budget
	for range frames {
		g.Write(udpFrame(g.MAC(), guestMAC, netip.AddrPortFrom(testGuest, 40001), dst, payload))
	}
	elapsed := time.Since(start)
	got := 0
	buf := make([]byte, 2048)
	for {
		sink.SetReadDeadline(time.Now().Add(time.Second))
		n, _, err := sink.ReadFrom(buf)
		if err != nil {
			break
		}
		got += n
	}
	budget := float64(rate) * (1 + elapsed.Seconds())
	t.Logf("sent %d B in %v, %d B arrived, budget %.0f B, drops %d", frames*len(payload), elapsed, got, budget, drops(g, gateway.DropRateLimit))
	if got == 0 || float64(got) > budget {
		t.Errorf("%d bytes arrived; want some and at most %.0f", got, budget)
	}
	if drops(g, gateway.DropRateLimit) == 0 {
		t.Error("no rate-limit drops counted")
	}
}

func TestPingAndARP(t *testing.T) {
	l := newGuestLab(t, Config{})
	if out, err := l.run(20*time.Second, "ping", "-c", "3", "-i", "0.2", "-W", "5", l.g.GatewayAddr().String()); err != nil {
		t.Fatalf("ping .1: %v\n%s", err, out)
	}
	out, _ := l.run(5*time.Second, "ip", "neigh", "show", l.g.GatewayAddr().String())
	if !strings.Contains(out, l.g.MAC().String()) {
		t.Errorf("ARP for .1 = %q, want the gateway's MAC %v", out, l.g.MAC())
	}
	// Pings to other addresses are not answered by the stack on their behalf.
	if out, err := l.run(10*time.Second, "ping", "-c", "1", "-W", "2", "198.51.100.1"); err == nil {
		t.Errorf("ping 198.51.100.1 answered:\n%s", out)
	}
	if drops(l.g, DropICMP) == 0 {
		t.Error("ICMP to a non-gateway address not counted")
	}
}

func TestDNS(t *testing.T) {
	if _, err := exec.LookPath("dig"); err != nil {
		t.Skip("needs dig")
	}
	l := newGuestLab(t, Config{})
	for _, proto := range []string{"+notcp", "+tcp"} {
		out, err := l.run(20*time.Second, "dig", "+short", "+tries=3", "+time=3", proto, "@"+l.g.GatewayAddr().String(), "example.test")
		if err != nil || strings.TrimSpace(out) != "192.0.2.7" {
			t.Errorf("dig %s: %v: %q, want 192.0.2.7", proto, err, out)
		}
	}
	if s := l.g.DNS().Stats(); s.QueriesUDP == 0 || s.QueriesTCP == 0 {
		t.Errorf("DNS stats %+v, want UDP and TCP queries", s)
	}
}

// TestTCPThroughStack fetches from an HTTP server on the host's loopback,
// which the guest addresses as internetHost (translated), and checks that
// addressing it as what it is, 127.0.0.1, is refused by the policy.
func TestTCPThroughStack(t *testing.T) {
	if _, err := exec.LookPath("curl"); err != nil {
		t.Skip("needs curl")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	body := strings.Repeat("peerlan userspace ", 50000) // 900 kB: many segments, windows
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				r := bufio.NewReader(c)
				for {
					line, err := r.ReadString('\n')
					if err != nil || line == "\r\n" {
						break
					}
				}
				fmt.Fprintf(c, "HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
			}()
		}
	}()
	port := ln.Addr().(*net.TCPAddr).Port
	url := fmt.Sprintf("http://%v:%d/", internetHost, port)

	t.Run("allowed", func(t *testing.T) {
		l := newGuestLab(t, Config{translate: toLoopback})
		out, err := l.run(30*time.Second, "curl", "-sS", "--max-time", "20", url)
		if err != nil || out != body {
			t.Fatalf("curl: %v: got %d bytes, want %d", err, len(out), len(body))
		}
		if s := l.g.Stats(); s.ToGuests.Bytes < uint64(len(body)) {
			t.Errorf("ToGuests %d bytes, want at least the body", s.ToGuests.Bytes)
		}
	})
	t.Run("refused", func(t *testing.T) {
		// A guest's kernel does not send to 127/8 at all, so the refused
		// destinations are a private and a CGNAT one, translated to the
		// same server: only the policy stands between.
		l := newGuestLab(t, Config{translate: map[netip.Addr]netip.Addr{
			netip.MustParseAddr("192.168.1.1"): netip.MustParseAddr("127.0.0.1"),
			netip.MustParseAddr("100.64.0.1"):  netip.MustParseAddr("127.0.0.1"),
		}})
		for dst, reason := range map[string]string{"192.168.1.1": gateway.DropPrivate, "100.64.0.1": gateway.DropCGNAT} {
			if out, err := l.run(15*time.Second, "curl", "-sS", "--max-time", "3", fmt.Sprintf("http://%s:%d/", dst, port)); err == nil {
				t.Errorf("curl %s succeeded: %q", dst, out[:min(len(out), 100)])
			}
			if drops(l.g, reason) == 0 {
				t.Errorf("%s: no %s drops counted", dst, reason)
			}
		}
	})
}

func TestDialGuest(t *testing.T) {
	if _, err := exec.LookPath("busybox"); err != nil || exec.Command("python3", "-c", "").Run() != nil {
		t.Skip("needs busybox (nc) and python3")
	}
	l := newGuestLab(t, Config{})
	l.start(t, "busybox", "nc", "-l", "-p", "7000", "-e", "echo", "hello from the guest")
	l.start(t, "python3", "-c", "import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\ns.bind(('0.0.0.0', 7001))\n"+
		"while True:\n    d, a = s.recvfrom(100)\n    s.sendto(d, a)\n")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var c net.Conn
	var err error
	for ctx.Err() == nil { // until nc listens
		if c, err = l.g.DialGuest(ctx, "tcp", testGuest.String()+":7000"); err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("DialGuest tcp: %v", err)
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	got, err := io.ReadAll(c)
	c.Close()
	if strings.TrimSpace(string(got)) != "hello from the guest" {
		t.Errorf("tcp: read %q (%v)", got, err)
	}

	u, err := l.g.DialGuest(ctx, "udp", testGuest.String()+":7001")
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	buf := make([]byte, 64)
	var n int
	for ctx.Err() == nil { // until the echo server listens
		u.Write([]byte("ping\n"))
		u.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
		if n, err = u.Read(buf); err == nil {
			break
		}
	}
	if strings.TrimSpace(string(buf[:n])) != "ping" {
		t.Errorf("udp: read %q (%v)", buf[:n], err)
	}

	for _, bad := range []struct{ network, addr string }{
		{"tcp", "198.51.100.1:80"}, {"tcp", "10.86.0.1:53"}, {"tcp", "10.86.0.255:80"},
		{"sctp", testGuest.String() + ":80"}, {"tcp", "guest:80"}, {"tcp", testGuest.String() + ":0"},
	} {
		if c, err := l.g.DialGuest(ctx, bad.network, bad.addr); err == nil {
			c.Close()
			t.Errorf("DialGuest(%s, %s) accepted", bad.network, bad.addr)
		}
	}
}

func TestCloseUnblocksRead(t *testing.T) {
	g := newGateway(t, Config{})
	done := make(chan error, 1)
	go func() {
		_, err := g.Read(make([]byte, peer.MaxFrameSize))
		done <- err
	}()
	time.Sleep(50 * time.Millisecond)
	g.Close()
	select {
	case err := <-done:
		if err == nil {
			t.Error("Read after Close returned no error")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Read still blocked after Close")
	}
	if _, err := g.Write(discoverFrame()); err == nil {
		t.Error("Write after Close returned no error")
	}
	if err := g.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

func TestAnnounce(t *testing.T) {
	g := newGateway(t, Config{})
	if err := g.Announce(); err != nil {
		t.Fatal(err)
	}
	frames := readFrames(t, g, 500*time.Millisecond)
	if len(frames) != 1 {
		t.Fatalf("%d frames, want the gratuitous ARP", len(frames))
	}
	e, _ := ether.ParseEthernet(frames[0])
	a, err := ether.ParseARP(e.Payload())
	if err != nil || !e.Dst().IsBroadcast() || a.SenderIP() != g.GatewayAddr() || a.SenderMAC() != g.MAC() {
		t.Errorf("announce frame % x (%v)", frames[0], err)
	}
}

// TestARPRequestsFromGateway: the stack resolves a guest it has not heard an
// ARP from (a guest that kept .1's MAC across a gateway restart) when that
// guest's SYN to the internet arrives. Its ARP request must claim .1, not
// the internet address it answers for, or peers' switches drop it as
// spoofed.
func TestARPRequestsFromGateway(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	g := newGateway(t, Config{translate: toLoopback})
	syn := udpFrame(g.MAC(), guestMAC, netip.AddrPortFrom(testGuest, 40000),
		netip.AddrPortFrom(internetHost, uint16(ln.Addr().(*net.TCPAddr).Port)), make([]byte, 12))
	ip := syn[ether.HeaderLen:]
	ip[9] = protoTCP
	binary.BigEndian.PutUint16(ip[10:], 0)
	binary.BigEndian.PutUint16(ip[10:], ^ether.Checksum(ip[:20], 0))
	tcp := ip[20:] // ports as written; seq 0, ack 0
	clear(tcp[4:])
	tcp[12] = 5 << 4 // data offset
	tcp[13] = 0x02   // SYN
	binary.BigEndian.PutUint16(tcp[14:], 65535)
	syn = syn[:ether.HeaderLen+20+20]
	binary.BigEndian.PutUint16(ip[2:], 40)
	binary.BigEndian.PutUint16(ip[10:], 0)
	binary.BigEndian.PutUint16(ip[10:], ^ether.Checksum(ip[:20], 0))
	g.Write(syn)
	for _, f := range readFrames(t, g, 3*time.Second) {
		e, _ := ether.ParseEthernet(f)
		if e.Type() != ether.TypeARP {
			continue
		}
		a, err := ether.ParseARP(e.Payload())
		if err != nil || a.Op() != arpRequest || a.TargetIP() != testGuest {
			continue
		}
		if a.SenderIP() != g.GatewayAddr() || a.SenderMAC() != g.MAC() {
			t.Fatalf("ARP request for the guest claims %v at %v, want .1 at the gateway's MAC", a.SenderIP(), a.SenderMAC())
		}
		return
	}
	t.Fatal("the stack sent no ARP request for the guest")
}

func TestMaxFlows(t *testing.T) {
	g := newGateway(t, Config{MaxFlows: 2, translate: toLoopback})
	sink, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer sink.Close()
	dst := netip.AddrPortFrom(internetHost, uint16(sink.LocalAddr().(*net.UDPAddr).Port))
	for port := range uint16(3) { // three flows: source ports 40000..40002
		g.Write(udpFrame(g.MAC(), guestMAC, netip.AddrPortFrom(testGuest, 40000+port), dst, []byte("x")))
	}
	got := 0
	for {
		sink.SetReadDeadline(time.Now().Add(time.Second))
		if _, _, err := sink.ReadFrom(make([]byte, 16)); err != nil {
			break
		}
		got++
	}
	if got != 2 || drops(g, DropFlows) != 1 {
		t.Errorf("%d datagrams relayed, %d flow drops; want 2 and 1", got, drops(g, DropFlows))
	}
}

func TestCloseLeavesNoGoroutines(t *testing.T) {
	resolver := startResolver(t)
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	g, err := New(context.Background(), Config{Subnet: testSubnet, DNS: gateway.DNSConfig{Upstreams: []netip.AddrPort{resolver}}})
	if err != nil {
		t.Fatal(err)
	}
	g.Write(discoverFrame())
	g.Close()
}
