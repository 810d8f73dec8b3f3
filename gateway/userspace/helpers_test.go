package userspace

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/peerlan/peerlan/gateway"
	"github.com/peerlan/peerlan/peer"
	"github.com/peerlan/peerlan/peer/ether"
	"github.com/peerlan/peerlan/peer/tap"
)

var (
	testSubnet = netip.MustParsePrefix("10.86.0.0/24")
	testGuest  = netip.MustParseAddr("10.86.0.10")
	guestMAC   = ether.MAC{0x02, 0, 0, 0, 0, 0x10}
	// internetHost is what guests dial for the test's servers on loopback.
	internetHost = netip.MustParseAddr("198.51.100.80")
	toLoopback   = map[netip.Addr]netip.Addr{internetHost: netip.MustParseAddr("127.0.0.1")}
)

// newGateway starts a Gateway whose DNS goes to a test resolver on loopback
// (answering every A query with 192.0.2.7), never to the host's.
func newGateway(t *testing.T, cfg Config) *Gateway {
	t.Helper()
	cfg.Subnet = testSubnet
	if len(cfg.DNS.Upstreams) == 0 {
		cfg.DNS.Upstreams = []netip.AddrPort{startResolver(t)}
	}
	g, err := New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { g.Close() })
	return g
}

// startResolver serves DNS on 127.0.0.1 with one answer for every name.
func startResolver(t *testing.T) netip.AddrPort {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(r)
		for _, q := range r.Question {
			if q.Qtype == dns.TypeA {
				rr, _ := dns.NewRR(q.Name + " 60 IN A 192.0.2.7")
				m.Answer = append(m.Answer, rr)
			}
		}
		w.WriteMsg(m)
	})}
	started := make(chan struct{})
	srv.NotifyStartedFunc = func() { close(started) }
	go srv.ActivateAndServe()
	<-started
	t.Cleanup(func() { srv.Shutdown() })
	return pc.LocalAddr().(*net.UDPAddr).AddrPort()
}

// udpFrame builds an Ethernet/IPv4/UDP frame.
func udpFrame(dstMAC, srcMAC ether.MAC, src, dst netip.AddrPort, payload []byte) []byte {
	b := make([]byte, ether.HeaderLen+20+8+len(payload))
	e := ether.Ethernet(b)
	e.SetDst(dstMAC)
	e.SetSrc(srcMAC)
	e.SetType(ether.TypeIPv4)
	ip := b[ether.HeaderLen:]
	ip[0] = 0x45
	binary.BigEndian.PutUint16(ip[2:], uint16(len(ip)))
	ip[8] = 64
	ip[9] = protoUDP
	s4, d4 := src.Addr().As4(), dst.Addr().As4()
	copy(ip[12:16], s4[:])
	copy(ip[16:20], d4[:])
	binary.BigEndian.PutUint16(ip[10:], ^ether.Checksum(ip[:20], 0))
	u := ether.UDP(ip[20:])
	u.SetSrcPort(src.Port())
	u.SetDstPort(dst.Port())
	binary.BigEndian.PutUint16(u[4:], uint16(8+len(payload)))
	copy(u[8:], payload)
	u.SetChecksum(u.ComputeChecksum(src.Addr(), dst.Addr()))
	return b
}

// guestLab is a real Linux guest: a TAP device in a namespace of the test's
// own with testGuest/24 and a default route via .1, its frames pumped to and
// from a Gateway as the switch would.
// With cfg.Offload the TAP carries offloaded frames both ways, as a guest
// behind an offload link does, and the lab counts the super-frames.
type guestLab struct {
	g  *Gateway
	ns string

	superIn, superOut atomic.Uint64 // super-frames into and out of the gateway
}

func newGuestLab(t *testing.T, cfg Config) *guestLab {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root for a network namespace and a TAP device")
	}
	for _, c := range []string{"ip", "ping"} {
		if _, err := exec.LookPath(c); err != nil {
			t.Skipf("needs %s", c)
		}
	}
	suffix := make([]byte, 4)
	rand.Read(suffix)
	ns := "plus-" + hex.EncodeToString(suffix)
	if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
		t.Skipf("ip netns add: %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
	dev, err := tap.Open(tap.Config{Name: "guest0", Netns: ns, MTU: peer.DefaultGuestMTU, Offload: cfg.Offload})
	if err != nil {
		t.Fatal(err)
	}
	l := &guestLab{g: newGateway(t, cfg), ns: ns}
	l.ip(t, "link", "set", "lo", "up")
	l.ip(t, "link", "set", "guest0", "address", guestMAC.String(), "up")
	l.ip(t, "addr", "add", testGuest.String()+"/24", "dev", "guest0")
	l.ip(t, "route", "add", "default", "via", l.g.GatewayAddr().String())
	done := make(chan struct{}, 2)
	go func() { // guest → gateway
		defer func() { done <- struct{}{} }()
		b := make([]byte, peer.MaxOffloadFrameSize)
		for {
			n, o, err := dev.ReadOffload(b)
			if err != nil {
				if errors.Is(err, peer.ErrDropped) {
					continue
				}
				return
			}
			if o.GSO != ether.GSONone {
				l.superIn.Add(1)
			}
			l.g.WriteOffload(b[:n], o)
		}
	}()
	go func() { // gateway → guest
		defer func() { done <- struct{}{} }()
		b := make([]byte, peer.MaxOffloadFrameSize)
		for {
			n, o, err := l.g.ReadOffload(b)
			if err != nil {
				return
			}
			if o.GSO != ether.GSONone {
				l.superOut.Add(1)
			}
			dev.WriteOffload(b[:n], o)
		}
	}()
	t.Cleanup(func() {
		l.g.Close()
		dev.Close()
		<-done
		<-done
	})
	return l
}

func (l *guestLab) ip(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command("ip", append([]string{"-n", l.ns}, args...)...).CombinedOutput(); err != nil {
		t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
}

// run runs a command in the guest's namespace, bounded by timeout.
func (l *guestLab) run(timeout time.Duration, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", l.ns, name}, args...)...).CombinedOutput()
	return string(out), err
}

// start runs a long-lived command in the guest's namespace until the test ends.
func (l *guestLab) start(t *testing.T, name string, args ...string) {
	t.Helper()
	cmd := exec.Command("ip", append([]string{"netns", "exec", l.ns, name}, args...)...)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
}

func drops(g *Gateway, reason string) uint64 { return g.Stats().Drops[reason] }

var _ = gateway.DropHost
