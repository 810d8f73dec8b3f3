package peer

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/peerlan/peerlan/peer/ether"
)

var (
	dhcpTestGuest   = ether.MAC{0x52, 0x54, 0x00, 0x12, 0x34, 0x56}
	dhcpTestOther   = ether.MAC{0x52, 0x54, 0x00, 0xaa, 0xbb, 0xcc}
	dhcpTestService = ether.MAC{0x02, 0x70, 0x6c, 0x00, 0x00, 0x01}
	dhcpTestLease   = netip.MustParsePrefix("10.77.0.23/24")
	dhcpTestAddr    = dhcpTestLease.Addr()
	dhcpTestRouter  = netip.MustParseAddr("10.77.0.1")
	dhcpTestZero    = netip.IPv4Unspecified()
)

// dhcpTestMsg describes a client message; dhcpTestFrame encodes it as a
// whole frame with valid checksums, the way a DHCP client would send it.
type dhcpTestMsg struct {
	op        uint8 // default BootRequest
	typ       ether.DHCPMessageType
	mac       ether.MAC
	xid       uint32
	broadcast bool
	ciaddr    netip.Addr
	giaddr    netip.Addr
	requested netip.Addr
	serverID  netip.Addr
	ethDst    ether.MAC  // default broadcast
	ipSrc     netip.Addr // default 0.0.0.0
	ipDst     netip.Addr // default 255.255.255.255
	dstPort   uint16     // default 67
}

func dhcpTestFrame(m dhcpTestMsg) []byte {
	var opts []byte
	if m.typ != 0 {
		opts = append(opts, ether.OptMessageType, 1, uint8(m.typ))
	}
	if m.requested.IsValid() {
		a := m.requested.As4()
		opts = append(opts, ether.OptRequestedIP, 4, a[0], a[1], a[2], a[3])
	}
	if m.serverID.IsValid() {
		a := m.serverID.As4()
		opts = append(opts, ether.OptServerID, 4, a[0], a[1], a[2], a[3])
	}
	opts = append(opts, ether.OptParamRequestList, 4, 1, 3, 6, 26, ether.OptEnd)

	d := make([]byte, ether.DHCPMinLen+len(opts))
	d[0] = m.op
	if d[0] == 0 {
		d[0] = ether.BootRequest
	}
	d[1], d[2] = 1, 6
	binary.BigEndian.PutUint32(d[4:], m.xid)
	if m.broadcast {
		d[10] = 0x80
	}
	putTestAddr(d[12:], m.ciaddr)
	putTestAddr(d[24:], m.giaddr)
	copy(d[28:], m.mac[:])
	binary.BigEndian.PutUint32(d[236:], ether.DHCPCookie)
	copy(d[240:], opts)

	src, dst := m.ipSrc, m.ipDst
	if !src.IsValid() {
		src = dhcpTestZero
	}
	if !dst.IsValid() {
		dst = netip.AddrFrom4([4]byte{255, 255, 255, 255})
	}
	port := m.dstPort
	if port == 0 {
		port = ether.DHCPServerPort
	}
	ethDst := m.ethDst
	if ethDst.IsZero() {
		ethDst = ether.Broadcast
	}
	f := make([]byte, ether.HeaderLen+20+8+len(d))
	e := ether.Ethernet(f)
	e.SetDst(ethDst)
	e.SetSrc(m.mac)
	e.SetType(ether.TypeIPv4)
	ipb := f[ether.HeaderLen:]
	ipb[0] = 0x45
	binary.BigEndian.PutUint16(ipb[2:], uint16(len(ipb)))
	ipb[8], ipb[9] = 64, ether.ProtoUDP
	ip := ether.IPv4(ipb)
	ip.SetSrc(src)
	ip.SetDst(dst)
	ip.SetChecksum(ip.ComputeChecksum())
	u := ether.UDP(ipb[20:])
	u.SetSrcPort(ether.DHCPClientPort)
	u.SetDstPort(port)
	binary.BigEndian.PutUint16(u[4:], uint16(len(u)))
	copy(u[8:], d)
	u.SetChecksum(u.ComputeChecksum(src, dst))
	return f
}

func putTestAddr(b []byte, a netip.Addr) {
	if a.IsValid() {
		v := a.As4()
		copy(b, v[:])
	}
}

// dhcpTestReply checks a reply frame down to its DHCP message, and that it
// comes from the service with the test room's server identifier.
func dhcpTestReply(t *testing.T, frame []byte) (ether.Ethernet, ether.IPv4, ether.DHCP) {
	t.Helper()
	e, ip, d := dhcpTestParse(t, frame)
	if e.Src() != dhcpTestService || ip.Src() != dhcpTestRouter {
		t.Fatalf("reply from %v %v, want the service MAC and the server identifier", e.Src(), ip.Src())
	}
	if sid, _ := d.ServerID(); sid != dhcpTestRouter {
		t.Fatalf("server identifier %v", sid)
	}
	return e, ip, d
}

// dhcpTestParse checks that frame is a well-formed DHCP server message.
func dhcpTestParse(t *testing.T, frame []byte) (ether.Ethernet, ether.IPv4, ether.DHCP) {
	t.Helper()
	e, err := ether.ParseEthernet(frame)
	if err != nil || e.Type() != ether.TypeIPv4 {
		t.Fatalf("reply ethernet: %v", err)
	}
	ip, err := ether.ParseIPv4(e.Payload())
	if err != nil || !ip.ValidChecksum() {
		t.Fatalf("reply ipv4: %v", err)
	}
	u, err := ether.ParseUDP(ip.Payload())
	if err != nil || !u.ValidChecksum(ip.Src(), ip.Dst()) || u.SrcPort() != 67 || u.DstPort() != 68 {
		t.Fatalf("reply udp: %v", err)
	}
	d, err := ether.ParseDHCP(u.Payload())
	if err != nil || d.Op() != ether.BootReply {
		t.Fatalf("reply dhcp: %v", err)
	}
	if sid, _ := d.ServerID(); e.Src() != dhcpTestService || sid != ip.Src() {
		t.Fatalf("reply from %v %v with server identifier %v", e.Src(), ip.Src(), sid)
	}
	return e, ip, d
}

// dhcpTestClock is a settable clock.
type dhcpTestClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *dhcpTestClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *dhcpTestClock) advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// dhcpTestLog records log messages by level.
type dhcpTestLog struct {
	mu   sync.Mutex
	msgs []string
}

// Enabled leaves out debug records, as a production logger would.
func (l *dhcpTestLog) Enabled(_ context.Context, lv slog.Level) bool { return lv >= slog.LevelInfo }
func (l *dhcpTestLog) Handle(_ context.Context, r slog.Record) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.msgs = append(l.msgs, r.Level.String()+" "+r.Message)
	return nil
}
func (l *dhcpTestLog) WithAttrs([]slog.Attr) slog.Handler { return l }
func (l *dhcpTestLog) WithGroup(string) slog.Handler      { return l }

func (l *dhcpTestLog) count(substr string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, m := range l.msgs {
		if strings.Contains(m, substr) {
			n++
		}
	}
	return n
}

type dhcpTestEnv struct {
	srv   *DHCPServer
	clock *dhcpTestClock
	log   *dhcpTestLog
	out   []byte
}

func newDHCPTestEnv(t *testing.T, cfg DHCPConfig) *dhcpTestEnv {
	t.Helper()
	env := &dhcpTestEnv{clock: &dhcpTestClock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}, log: &dhcpTestLog{}}
	if cfg.ServiceMAC.IsZero() {
		cfg.ServiceMAC = dhcpTestService
	}
	cfg.Logger = slog.New(env.log)
	srv, err := NewDHCPServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	srv.now = env.clock.now
	env.srv = srv
	env.out = make([]byte, ether.DHCPMaxFrameLen)
	return env
}

// handle feeds m to the server; it must be handled. It returns the reply or nil.
func (env *dhcpTestEnv) handle(t *testing.T, m dhcpTestMsg) []byte {
	t.Helper()
	n, handled := env.srv.Handle(dhcpTestFrame(m), env.out)
	if !handled {
		t.Fatalf("%v not handled", m.typ)
	}
	if n == 0 {
		return nil
	}
	return env.out[:n]
}

func TestDHCPConfigValidation(t *testing.T) {
	tests := []struct {
		name string
		cfg  DHCPConfig
		want error
	}{
		{"good", DHCPConfig{Lease: dhcpTestLease, ServiceMAC: dhcpTestService, MTU: 1400}, nil},
		{"no lease yet", DHCPConfig{ServiceMAC: dhcpTestService}, nil},
		{"group MAC", DHCPConfig{ServiceMAC: ether.MAC{0x03, 0, 0, 0, 0, 1}}, errDHCPServiceMAC},
		{"zero MAC", DHCPConfig{}, errDHCPServiceMAC},
		{"vendor MAC", DHCPConfig{ServiceMAC: ether.MAC{0x00, 0x1b, 0x21, 0, 0, 1}}, errDHCPServiceMAC},
		{"IPv6 lease", DHCPConfig{ServiceMAC: dhcpTestService, Lease: netip.MustParsePrefix("2001:db8::5/64")}, errDHCPLease},
		{"mapped lease", DHCPConfig{ServiceMAC: dhcpTestService, Lease: netip.MustParsePrefix("::ffff:10.0.0.5/120")}, errDHCPLease},
		{"/31", DHCPConfig{ServiceMAC: dhcpTestService, Lease: netip.MustParsePrefix("10.0.0.5/31")}, errDHCPLease},
		{"/7", DHCPConfig{ServiceMAC: dhcpTestService, Lease: netip.MustParsePrefix("10.0.0.5/7")}, errDHCPLease},
		{"router address", DHCPConfig{ServiceMAC: dhcpTestService, Lease: netip.MustParsePrefix("10.77.0.1/24")}, errDHCPLease},
		{"network address", DHCPConfig{ServiceMAC: dhcpTestService, Lease: netip.MustParsePrefix("10.77.0.0/24")}, errDHCPLease},
		{"broadcast address", DHCPConfig{ServiceMAC: dhcpTestService, Lease: netip.MustParsePrefix("10.77.0.255/24")}, errDHCPLease},
		{"lease time 5s", DHCPConfig{ServiceMAC: dhcpTestService, LeaseTime: 5 * time.Second}, errDHCPLeaseTime},
		{"lease time 2 years", DHCPConfig{ServiceMAC: dhcpTestService, LeaseTime: 2 * 365 * 24 * time.Hour}, errDHCPLeaseTime},
		{"MTU 67", DHCPConfig{ServiceMAC: dhcpTestService, MTU: 67}, errDHCPMTU},
		{"MTU 1501", DHCPConfig{ServiceMAC: dhcpTestService, MTU: 1501}, errDHCPMTU},
		{"MTU -1", DHCPConfig{ServiceMAC: dhcpTestService, MTU: -1}, errDHCPMTU},
	}
	for _, tt := range tests {
		_, err := NewDHCPServer(tt.cfg)
		if !errors.Is(err, tt.want) || (tt.want == nil && err != nil) {
			t.Errorf("%s: %v, want %v", tt.name, err, tt.want)
		}
	}
	srv, _ := NewDHCPServer(DHCPConfig{ServiceMAC: dhcpTestService})
	if err := srv.SetLease(netip.MustParsePrefix("10.77.0.1/24")); !errors.Is(err, errDHCPLease) {
		t.Fatalf("SetLease(.1): %v", err)
	}
	if srv.Lease().IsValid() {
		t.Fatal("a rejected lease was applied")
	}
}

func TestDHCPLeaseDerivation(t *testing.T) {
	tests := []struct {
		lease                   string
		mask, router, broadcast string
	}{
		{"10.77.0.23/24", "255.255.255.0", "10.77.0.1", "10.77.0.255"},
		{"172.20.5.9/20", "255.255.240.0", "172.20.0.1", "172.20.15.255"},
		{"192.0.2.2/30", "255.255.255.252", "192.0.2.1", "192.0.2.3"},
		{"10.1.2.3/8", "255.0.0.0", "10.0.0.1", "10.255.255.255"},
	}
	for _, tt := range tests {
		l, err := newDHCPLease(netip.MustParsePrefix(tt.lease))
		if err != nil {
			t.Fatalf("%s: %v", tt.lease, err)
		}
		if l.mask.String() != tt.mask || l.router.String() != tt.router || l.broadcast.String() != tt.broadcast {
			t.Errorf("%s: mask %v router %v broadcast %v", tt.lease, l.mask, l.router, l.broadcast)
		}
	}
}

func TestDHCPDiscoverRequestAck(t *testing.T) {
	env := newDHCPTestEnv(t, DHCPConfig{Lease: dhcpTestLease, MTU: 1400, LeaseTime: time.Hour})

	offer := env.handle(t, dhcpTestMsg{typ: ether.DHCPDiscover, mac: dhcpTestGuest, xid: 7})
	if offer == nil {
		t.Fatal("no OFFER")
	}
	e, ip, d := dhcpTestReply(t, offer)
	// No broadcast flag, no ciaddr: unicast to chaddr and yiaddr (RFC 2131 4.1).
	if e.Dst() != dhcpTestGuest || ip.Dst() != dhcpTestAddr {
		t.Fatalf("OFFER to %v %v", e.Dst(), ip.Dst())
	}
	if d.MessageType() != ether.DHCPOffer || d.XID() != 7 || d.YIAddr() != dhcpTestAddr || d.CIAddr() != dhcpTestZero {
		t.Fatalf("OFFER type %v xid %d yiaddr %v", d.MessageType(), d.XID(), d.YIAddr())
	}
	checkDHCPTestLeaseOptions(t, d, 3600, 1400)

	ack := env.handle(t, dhcpTestMsg{typ: ether.DHCPRequest, mac: dhcpTestGuest, xid: 8,
		requested: dhcpTestAddr, serverID: dhcpTestRouter})
	if ack == nil {
		t.Fatal("no ACK")
	}
	e, ip, d = dhcpTestReply(t, ack)
	if e.Dst() != dhcpTestGuest || ip.Dst() != dhcpTestAddr || d.MessageType() != ether.DHCPAck || d.XID() != 8 || d.YIAddr() != dhcpTestAddr {
		t.Fatalf("ACK to %v %v type %v yiaddr %v", e.Dst(), ip.Dst(), d.MessageType(), d.YIAddr())
	}
	checkDHCPTestLeaseOptions(t, d, 3600, 1400)

	st := env.srv.Stats()
	if st.Discovers != 1 || st.Requests != 1 || st.Offers != 1 || st.Acks != 1 || st.Naks != 0 || st.Malformed != 0 {
		t.Fatalf("stats %+v", st)
	}
}

func checkDHCPTestLeaseOptions(t *testing.T, d ether.DHCP, leaseSecs uint32, mtu uint16) {
	t.Helper()
	u32 := func(code uint8) uint32 {
		v, ok := d.Option(code)
		if !ok || len(v) != 4 {
			t.Fatalf("option %d missing", code)
		}
		return binary.BigEndian.Uint32(v)
	}
	addr := func(code uint8) netip.Addr {
		v, ok := d.Option(code)
		if !ok || len(v) != 4 {
			t.Fatalf("option %d missing", code)
		}
		return netip.AddrFrom4([4]byte(v))
	}
	if u32(ether.OptLeaseTime) != leaseSecs || u32(ether.OptRenewalTime) != leaseSecs/2 || u32(ether.OptRebindingTime) != leaseSecs*7/8 {
		t.Fatalf("lease %d T1 %d T2 %d", u32(ether.OptLeaseTime), u32(ether.OptRenewalTime), u32(ether.OptRebindingTime))
	}
	if addr(ether.OptSubnetMask).String() != "255.255.255.0" || addr(ether.OptRouter) != dhcpTestRouter ||
		addr(ether.OptDNS) != dhcpTestRouter || addr(ether.OptBroadcastAddr).String() != "10.77.0.255" {
		t.Fatal("mask, router, DNS or broadcast wrong")
	}
	v, ok := d.Option(ether.OptInterfaceMTU)
	switch {
	case mtu == 0 && ok:
		t.Fatal("MTU option sent though not configured")
	case mtu != 0 && (!ok || len(v) != 2 || binary.BigEndian.Uint16(v) != mtu):
		t.Fatalf("MTU option %x, want %d", v, mtu)
	}
}

func TestDHCPDefaultLeaseAndNoMTU(t *testing.T) {
	env := newDHCPTestEnv(t, DHCPConfig{Lease: dhcpTestLease})
	_, _, d := dhcpTestReply(t, env.handle(t, dhcpTestMsg{typ: ether.DHCPDiscover, mac: dhcpTestGuest}))
	checkDHCPTestLeaseOptions(t, d, 12*3600, 0)
}

func TestDHCPReplyAddressing(t *testing.T) {
	bcast := netip.AddrFrom4([4]byte{255, 255, 255, 255})
	tests := []struct {
		name    string
		msg     dhcpTestMsg
		typ     ether.DHCPMessageType
		ethDst  ether.MAC
		ipDst   netip.Addr
		ciaddr  netip.Addr
		yiaddr  netip.Addr
		hasTime bool
	}{
		{"discover, broadcast flag", dhcpTestMsg{typ: ether.DHCPDiscover, broadcast: true},
			ether.DHCPOffer, ether.Broadcast, bcast, dhcpTestZero, dhcpTestAddr, true},
		{"selecting, broadcast flag", dhcpTestMsg{typ: ether.DHCPRequest, broadcast: true, requested: dhcpTestAddr, serverID: dhcpTestRouter},
			ether.DHCPAck, ether.Broadcast, bcast, dhcpTestZero, dhcpTestAddr, true},
		{"init-reboot", dhcpTestMsg{typ: ether.DHCPRequest, requested: dhcpTestAddr},
			ether.DHCPAck, dhcpTestGuest, dhcpTestAddr, dhcpTestZero, dhcpTestAddr, true},
		{"renewing, unicast to the server", dhcpTestMsg{typ: ether.DHCPRequest, ciaddr: dhcpTestAddr,
			ethDst: ether.MAC{0x02, 0xaa, 0, 0, 0, 1}, ipSrc: dhcpTestAddr, ipDst: dhcpTestRouter},
			ether.DHCPAck, dhcpTestGuest, dhcpTestAddr, dhcpTestAddr, dhcpTestAddr, true},
		{"rebinding, broadcast flag ignored for ciaddr", dhcpTestMsg{typ: ether.DHCPRequest, ciaddr: dhcpTestAddr, broadcast: true, ipSrc: dhcpTestAddr},
			ether.DHCPAck, dhcpTestGuest, dhcpTestAddr, dhcpTestAddr, dhcpTestAddr, true},
		{"init-reboot, wrong address: NAK broadcast", dhcpTestMsg{typ: ether.DHCPRequest, requested: netip.MustParseAddr("10.77.0.99")},
			ether.DHCPNak, ether.Broadcast, bcast, dhcpTestZero, dhcpTestZero, false},
		{"renewing, wrong address: NAK broadcast", dhcpTestMsg{typ: ether.DHCPRequest, ciaddr: netip.MustParseAddr("10.9.9.9"), ipSrc: netip.MustParseAddr("10.9.9.9")},
			ether.DHCPNak, ether.Broadcast, bcast, dhcpTestZero, dhcpTestZero, false},
		{"selecting, wrong address: NAK", dhcpTestMsg{typ: ether.DHCPRequest, requested: netip.MustParseAddr("10.77.0.24"), serverID: dhcpTestRouter},
			ether.DHCPNak, ether.Broadcast, bcast, dhcpTestZero, dhcpTestZero, false},
		{"inform from the bound guest", dhcpTestMsg{typ: ether.DHCPInform, ciaddr: dhcpTestAddr, ipSrc: dhcpTestAddr},
			ether.DHCPAck, dhcpTestGuest, dhcpTestAddr, dhcpTestAddr, dhcpTestZero, false},
		{"inform from another host", dhcpTestMsg{typ: ether.DHCPInform, mac: dhcpTestOther, ciaddr: netip.MustParseAddr("10.77.0.200")},
			ether.DHCPAck, dhcpTestOther, netip.MustParseAddr("10.77.0.200"), netip.MustParseAddr("10.77.0.200"), dhcpTestZero, false},
		{"inform without ciaddr", dhcpTestMsg{typ: ether.DHCPInform, mac: dhcpTestOther},
			ether.DHCPAck, ether.Broadcast, bcast, dhcpTestZero, dhcpTestZero, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := newDHCPTestEnv(t, DHCPConfig{Lease: dhcpTestLease})
			if tt.msg.mac.IsZero() {
				tt.msg.mac = dhcpTestGuest
			}
			tt.msg.xid = 0x1234
			r := env.handle(t, tt.msg)
			if r == nil {
				t.Fatal("no reply")
			}
			e, ip, d := dhcpTestReply(t, r)
			if d.MessageType() != tt.typ || e.Dst() != tt.ethDst || ip.Dst() != tt.ipDst ||
				d.CIAddr() != tt.ciaddr || d.YIAddr() != tt.yiaddr || d.XID() != 0x1234 {
				t.Fatalf("%v to %v %v ciaddr %v yiaddr %v", d.MessageType(), e.Dst(), ip.Dst(), d.CIAddr(), d.YIAddr())
			}
			if _, ok := d.Option(ether.OptLeaseTime); ok != tt.hasTime {
				t.Fatalf("lease time present %v", ok)
			}
			if d.Flags() != dhcpTestFrameFlags(tt.msg) {
				t.Fatalf("flags %#x not echoed", d.Flags())
			}
			if tt.typ == ether.DHCPNak {
				if _, ok := d.Option(ether.OptRouter); ok {
					t.Fatal("NAK carries configuration")
				}
			} else if a, ok := d.Option(ether.OptRouter); !ok || netip.AddrFrom4([4]byte(a)) != dhcpTestRouter {
				t.Fatal("no router option")
			}
		})
	}
}

func dhcpTestFrameFlags(m dhcpTestMsg) uint16 {
	if m.broadcast {
		return 0x8000
	}
	return 0
}

func TestDHCPSilentCases(t *testing.T) {
	tests := []struct {
		name string
		msg  dhcpTestMsg
		stat func(DHCPStats) uint64
	}{
		{"REQUEST for another server", dhcpTestMsg{typ: ether.DHCPRequest, requested: dhcpTestAddr, serverID: netip.MustParseAddr("10.77.0.2")},
			func(s DHCPStats) uint64 { return s.Ignored }},
		{"REQUEST without any address", dhcpTestMsg{typ: ether.DHCPRequest},
			func(s DHCPStats) uint64 { return s.Malformed }},
		{"relayed DISCOVER", dhcpTestMsg{typ: ether.DHCPDiscover, giaddr: netip.MustParseAddr("10.1.0.1")},
			func(s DHCPStats) uint64 { return s.Ignored }},
		{"BOOTREPLY to the server port", dhcpTestMsg{op: ether.BootReply, typ: ether.DHCPOffer},
			func(s DHCPStats) uint64 { return s.Ignored }},
		{"OFFER from a guest", dhcpTestMsg{typ: ether.DHCPOffer},
			func(s DHCPStats) uint64 { return s.Ignored }},
		{"no message type (BOOTP)", dhcpTestMsg{},
			func(s DHCPStats) uint64 { return s.Ignored }},
		{"DECLINE", dhcpTestMsg{typ: ether.DHCPDecline, requested: dhcpTestAddr, serverID: dhcpTestRouter},
			func(s DHCPStats) uint64 { return s.Declines }},
		{"RELEASE", dhcpTestMsg{typ: ether.DHCPRelease, ciaddr: dhcpTestAddr, serverID: dhcpTestRouter},
			func(s DHCPStats) uint64 { return s.Releases }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := newDHCPTestEnv(t, DHCPConfig{Lease: dhcpTestLease})
			// Bind the guest first so DECLINE and RELEASE come from it.
			env.handle(t, dhcpTestMsg{typ: ether.DHCPDiscover, mac: dhcpTestGuest})
			tt.msg.mac = dhcpTestGuest
			if r := env.handle(t, tt.msg); r != nil {
				t.Fatal("unexpected reply")
			}
			if got := tt.stat(env.srv.Stats()); got != 1 {
				t.Fatalf("counter %d, stats %+v", got, env.srv.Stats())
			}
		})
	}
}

func TestDHCPDeclineKeepsBindingAndWarns(t *testing.T) {
	env := newDHCPTestEnv(t, DHCPConfig{Lease: dhcpTestLease})
	env.handle(t, dhcpTestMsg{typ: ether.DHCPDiscover, mac: dhcpTestGuest})
	env.handle(t, dhcpTestMsg{typ: ether.DHCPDecline, mac: dhcpTestGuest, requested: dhcpTestAddr, serverID: dhcpTestRouter})
	if env.log.count("WARN guest declined") != 1 {
		t.Fatalf("log %v", env.log.msgs)
	}
	if env.handle(t, dhcpTestMsg{typ: ether.DHCPDiscover, mac: dhcpTestGuest}) == nil {
		t.Fatal("the guest gets no offer after declining")
	}
	if env.handle(t, dhcpTestMsg{typ: ether.DHCPDiscover, mac: dhcpTestOther}) != nil {
		t.Fatal("DECLINE freed the binding for another client")
	}
}

func TestDHCPOneClientPerPeer(t *testing.T) {
	env := newDHCPTestEnv(t, DHCPConfig{Lease: dhcpTestLease, LeaseTime: time.Hour})
	if env.handle(t, dhcpTestMsg{typ: ether.DHCPDiscover, mac: dhcpTestGuest}) == nil {
		t.Fatal("first client got no offer")
	}
	for range 3 {
		if env.handle(t, dhcpTestMsg{typ: ether.DHCPDiscover, mac: dhcpTestOther}) != nil {
			t.Fatal("second client got an offer")
		}
		if env.handle(t, dhcpTestMsg{typ: ether.DHCPRequest, mac: dhcpTestOther, requested: dhcpTestAddr}) != nil {
			t.Fatal("second client got an answer to REQUEST")
		}
	}
	if env.handle(t, dhcpTestMsg{typ: ether.DHCPRelease, mac: dhcpTestOther, ciaddr: dhcpTestAddr}) != nil {
		t.Fatal("reply to RELEASE")
	}
	if got := env.log.count("second client"); got != 1 {
		t.Fatalf("stranger logged %d times, want once", got)
	}
	if st := env.srv.Stats(); st.Strangers != 7 {
		t.Fatalf("strangers %d", st.Strangers)
	}
	// The stranger's RELEASE did not free the binding.
	if env.handle(t, dhcpTestMsg{typ: ether.DHCPRequest, mac: dhcpTestGuest, requested: dhcpTestAddr, serverID: dhcpTestRouter}) == nil {
		t.Fatal("bound guest lost its address")
	}

	// A flood of random MACs: 16 lines, then one summary a minute.
	for i := range 100 {
		m := ether.MAC{0x52, 0x54, 1, 0, 0, byte(i)}
		env.handle(t, dhcpTestMsg{typ: ether.DHCPDiscover, mac: m})
	}
	first := env.log.count("second client") + env.log.count("further clients")
	if first > dhcpMaxStrangers+1 {
		t.Fatalf("%d log lines for a flood", first)
	}
	env.clock.advance(2 * time.Minute)
	env.handle(t, dhcpTestMsg{typ: ether.DHCPDiscover, mac: ether.MAC{0x52, 0x54, 2, 0, 0, 1}})
	env.handle(t, dhcpTestMsg{typ: ether.DHCPDiscover, mac: ether.MAC{0x52, 0x54, 2, 0, 0, 2}})
	if got := env.log.count("further clients"); got != 2 {
		t.Fatalf("summary lines %d, want 2 (one per minute)", got)
	}
}

func TestDHCPBindingLapsesAndReleases(t *testing.T) {
	env := newDHCPTestEnv(t, DHCPConfig{Lease: dhcpTestLease, LeaseTime: time.Hour})

	// An OFFER holds the binding for a minute only.
	env.handle(t, dhcpTestMsg{typ: ether.DHCPDiscover, mac: dhcpTestGuest})
	env.clock.advance(30 * time.Second)
	if env.handle(t, dhcpTestMsg{typ: ether.DHCPDiscover, mac: dhcpTestOther}) != nil {
		t.Fatal("offer hold broken")
	}
	env.clock.advance(31 * time.Second)
	if env.handle(t, dhcpTestMsg{typ: ether.DHCPDiscover, mac: dhcpTestOther}) == nil {
		t.Fatal("abandoned offer still holds the binding")
	}

	// An ACK holds it for the lease time; renewals extend it.
	env.handle(t, dhcpTestMsg{typ: ether.DHCPRequest, mac: dhcpTestOther, requested: dhcpTestAddr, serverID: dhcpTestRouter})
	env.clock.advance(50 * time.Minute)
	if env.handle(t, dhcpTestMsg{typ: ether.DHCPRequest, mac: dhcpTestOther, ciaddr: dhcpTestAddr}) == nil {
		t.Fatal("renewal refused")
	}
	env.clock.advance(50 * time.Minute)
	if env.handle(t, dhcpTestMsg{typ: ether.DHCPDiscover, mac: dhcpTestGuest}) != nil {
		t.Fatal("renewed binding lapsed early")
	}
	env.clock.advance(11 * time.Minute)
	if env.handle(t, dhcpTestMsg{typ: ether.DHCPDiscover, mac: dhcpTestGuest}) == nil {
		t.Fatal("expired binding not freed")
	}

	// RELEASE from the bound client frees it at once.
	env.handle(t, dhcpTestMsg{typ: ether.DHCPRequest, mac: dhcpTestGuest, requested: dhcpTestAddr, serverID: dhcpTestRouter})
	env.handle(t, dhcpTestMsg{typ: ether.DHCPRelease, mac: dhcpTestGuest, ciaddr: dhcpTestAddr, serverID: dhcpTestRouter})
	if env.handle(t, dhcpTestMsg{typ: ether.DHCPDiscover, mac: dhcpTestOther}) == nil {
		t.Fatal("released binding not freed")
	}
}

func TestDHCPLeaseChange(t *testing.T) {
	env := newDHCPTestEnv(t, DHCPConfig{})
	// No address yet: swallowed, silent.
	if env.handle(t, dhcpTestMsg{typ: ether.DHCPDiscover, mac: dhcpTestGuest}) != nil {
		t.Fatal("offer without a lease")
	}
	if st := env.srv.Stats(); st.Ignored != 1 {
		t.Fatalf("stats %+v", st)
	}
	if err := env.srv.SetLease(dhcpTestLease); err != nil {
		t.Fatal(err)
	}
	if env.srv.Lease() != dhcpTestLease {
		t.Fatal("Lease() disagrees")
	}
	env.handle(t, dhcpTestMsg{typ: ether.DHCPDiscover, mac: dhcpTestGuest})
	env.handle(t, dhcpTestMsg{typ: ether.DHCPRequest, mac: dhcpTestGuest, requested: dhcpTestAddr, serverID: dhcpTestRouter})

	// A reconnect assigned another address in another room subnet.
	next := netip.MustParsePrefix("10.88.4.9/22")
	if err := env.srv.SetLease(next); err != nil {
		t.Fatal(err)
	}
	r := env.handle(t, dhcpTestMsg{typ: ether.DHCPRequest, mac: dhcpTestGuest, ciaddr: dhcpTestAddr, ipSrc: dhcpTestAddr})
	if r == nil {
		t.Fatal("renewal of the old address not answered")
	}
	_, ip, d := dhcpTestParse(t, r)
	if d.MessageType() != ether.DHCPNak || ip.Src() != netip.MustParseAddr("10.88.4.1") {
		t.Fatalf("got %v from %v, want NAK from the new server identifier", d.MessageType(), ip.Src())
	}
	r = env.handle(t, dhcpTestMsg{typ: ether.DHCPDiscover, mac: dhcpTestGuest})
	_, _, d = dhcpTestParse(t, r)
	if d.MessageType() != ether.DHCPOffer || d.YIAddr() != next.Addr() {
		t.Fatalf("after the change: %v of %v", d.MessageType(), d.YIAddr())
	}
	if mask, _ := d.Option(ether.OptSubnetMask); netip.AddrFrom4([4]byte(mask)).String() != "255.255.252.0" {
		t.Fatalf("mask %v", mask)
	}
	if env.log.count("DHCP lease changed") != 2 || env.log.count("DHCP NAK") != 1 {
		t.Fatalf("log %v", env.log.msgs)
	}

	// Withdrawn: silent again.
	if err := env.srv.SetLease(netip.Prefix{}); err != nil {
		t.Fatal(err)
	}
	if env.handle(t, dhcpTestMsg{typ: ether.DHCPRequest, mac: dhcpTestGuest, ciaddr: next.Addr()}) != nil {
		t.Fatal("reply without a lease")
	}
}

func TestDHCPSetLeaseConcurrentWithHandle(t *testing.T) {
	env := newDHCPTestEnv(t, DHCPConfig{Lease: dhcpTestLease})
	frames := [][]byte{
		dhcpTestFrame(dhcpTestMsg{typ: ether.DHCPDiscover, mac: dhcpTestGuest}),
		dhcpTestFrame(dhcpTestMsg{typ: ether.DHCPRequest, mac: dhcpTestGuest, ciaddr: dhcpTestAddr}),
	}
	leases := []netip.Prefix{dhcpTestLease, netip.MustParsePrefix("10.88.4.9/22"), {}}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range 2000 {
			if err := env.srv.SetLease(leases[i%len(leases)]); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	out := make([]byte, ether.DHCPMaxFrameLen)
	for i := range 2000 {
		n, handled := env.srv.Handle(frames[i%2], out)
		if !handled {
			t.Fatal("not handled")
		}
		if n > 0 {
			dhcpTestParse(t, out[:n]) // a reply is always self-consistent
		}
		_ = env.srv.Stats()
	}
	<-done
}

func TestDHCPNotForTheServer(t *testing.T) {
	env := newDHCPTestEnv(t, DHCPConfig{Lease: dhcpTestLease})
	discover := dhcpTestFrame(dhcpTestMsg{typ: ether.DHCPDiscover, mac: dhcpTestGuest})
	arp := make([]byte, 42)
	copy(arp, discover[:12])
	arp[12], arp[13] = 0x08, 0x06
	ipv6 := append([]byte(nil), discover...)
	ipv6[12], ipv6[13] = 0x86, 0xdd
	toClientPort := dhcpTestFrame(dhcpTestMsg{typ: ether.DHCPDiscover, mac: dhcpTestGuest, dstPort: 68})
	dns := dhcpTestFrame(dhcpTestMsg{mac: dhcpTestGuest, dstPort: 53})
	tcp := append([]byte(nil), discover...)
	tcp[ether.HeaderLen+9] = ether.ProtoTCP
	laterFragment := append([]byte(nil), discover...)
	laterFragment[ether.HeaderLen+6], laterFragment[ether.HeaderLen+7] = 0, 10
	vlan := append(append(append([]byte(nil), discover[:12]...), 0x81, 0x00, 0, 5), discover[12:]...)

	for name, f := range map[string][]byte{
		"ARP": arp, "IPv6": ipv6, "UDP to 68": toClientPort, "DNS": dns, "TCP": tcp,
		"later fragment": laterFragment, "VLAN-tagged": vlan, "runt": discover[:10], "empty": nil,
	} {
		if n, handled := env.srv.Handle(f, env.out); handled || n != 0 {
			t.Errorf("%s: handled %v n %d", name, handled, n)
		}
	}
	if st := env.srv.Stats(); st != (DHCPStats{}) {
		t.Fatalf("stats changed: %+v", st)
	}
}

func TestDHCPMalformedIsSwallowed(t *testing.T) {
	env := newDHCPTestEnv(t, DHCPConfig{Lease: dhcpTestLease})
	good := dhcpTestFrame(dhcpTestMsg{typ: ether.DHCPDiscover, mac: dhcpTestGuest})
	mod := func(f func(b []byte) []byte) []byte { return f(append([]byte(nil), good...)) }
	udp := ether.HeaderLen + 20
	cases := map[string][]byte{
		"bad IP checksum":  mod(func(b []byte) []byte { b[ether.HeaderLen+10] ^= 1; return b }),
		"bad UDP checksum": mod(func(b []byte) []byte { b[udp+6] ^= 1; return b }),
		"first fragment":   mod(func(b []byte) []byte { b[ether.HeaderLen+6] = 0x20; return b }),
		"UDP length past datagram": mod(func(b []byte) []byte {
			b[udp+4], b[udp+5] = 0xff, 0xff
			return b
		}),
		"short DHCP": mod(func(b []byte) []byte {
			b = b[:udp+8+100]
			ip := ether.IPv4(b[ether.HeaderLen:])
			binary.BigEndian.PutUint16(ip[2:], uint16(len(ip)))
			ip.SetChecksum(ip.ComputeChecksum())
			u := ether.UDP(b[udp:])
			binary.BigEndian.PutUint16(u[4:], uint16(len(u)))
			u.SetChecksum(0)
			return b
		}),
		"zero chaddr": dhcpTestFrame(dhcpTestMsg{typ: ether.DHCPDiscover}),
		"group chaddr": mod(func(b []byte) []byte {
			return dhcpTestFrame(dhcpTestMsg{typ: ether.DHCPDiscover, mac: ether.MAC{0x01, 0, 0x5e, 0, 0, 1}})
		}),
	}
	for name, f := range cases {
		if n, handled := env.srv.Handle(f, env.out); !handled || n != 0 {
			t.Errorf("%s: handled %v n %d", name, handled, n)
		}
	}
	if st := env.srv.Stats(); st.Malformed != uint64(len(cases)) || st.Offers != 0 {
		t.Fatalf("stats %+v", st)
	}
	// A UDP checksum of zero means none and is accepted.
	noSum := mod(func(b []byte) []byte { b[udp+6], b[udp+7] = 0, 0; return b })
	if n, _ := env.srv.Handle(noSum, env.out); n == 0 {
		t.Fatal("datagram without UDP checksum refused")
	}
	// An undersized out buffer: handled, no reply, no panic.
	if n, handled := env.srv.Handle(good, make([]byte, 100)); !handled || n != 0 {
		t.Fatalf("small out: handled %v n %d", handled, n)
	}
}

func TestDHCPHandleAllocatesNothing(t *testing.T) {
	env := newDHCPTestEnv(t, DHCPConfig{Lease: dhcpTestLease, MTU: 1400})
	discover := dhcpTestFrame(dhcpTestMsg{typ: ether.DHCPDiscover, mac: dhcpTestGuest})
	renew := dhcpTestFrame(dhcpTestMsg{typ: ether.DHCPRequest, mac: dhcpTestGuest, ciaddr: dhcpTestAddr})
	other := dhcpTestFrame(dhcpTestMsg{mac: dhcpTestGuest, dstPort: 53})
	env.srv.Handle(discover, env.out) // binds (and logs) once
	allocs := testing.AllocsPerRun(100, func() {
		if n, _ := env.srv.Handle(discover, env.out); n == 0 {
			t.Fatal("no offer")
		}
		if n, _ := env.srv.Handle(renew, env.out); n == 0 {
			t.Fatal("no ack")
		}
		if _, handled := env.srv.Handle(other, env.out); handled {
			t.Fatal("DNS handled")
		}
	})
	if allocs != 0 {
		t.Fatalf("Handle allocates %.1f times per exchange", allocs)
	}
}

func BenchmarkDHCPHandleNonDHCP(b *testing.B) {
	srv, _ := NewDHCPServer(DHCPConfig{Lease: dhcpTestLease, ServiceMAC: dhcpTestService})
	frame := dhcpTestFrame(dhcpTestMsg{mac: dhcpTestGuest, dstPort: 53})
	out := make([]byte, ether.DHCPMaxFrameLen)
	for b.Loop() {
		srv.Handle(frame, out)
	}
}

func BenchmarkDHCPHandleRequest(b *testing.B) {
	srv, _ := NewDHCPServer(DHCPConfig{Lease: dhcpTestLease, ServiceMAC: dhcpTestService})
	frame := dhcpTestFrame(dhcpTestMsg{typ: ether.DHCPRequest, mac: dhcpTestGuest, ciaddr: dhcpTestAddr})
	out := make([]byte, ether.DHCPMaxFrameLen)
	for b.Loop() {
		srv.Handle(frame, out)
	}
}

// dhcpTestCapture loads a frame captured from busybox udhcpc (see
// ether/testdata).
func dhcpTestCapture(t *testing.T, name string) []byte {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("ether", "testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	var digits strings.Builder
	for line := range strings.Lines(string(raw)) {
		if !strings.HasPrefix(line, "#") {
			digits.WriteString(strings.TrimSpace(line))
		}
	}
	b, err := hex.DecodeString(digits.String())
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestDHCPServerOnUdhcpcCaptures(t *testing.T) {
	env := newDHCPTestEnv(t, DHCPConfig{Lease: netip.MustParsePrefix("192.0.2.23/24")})
	lease, server := netip.MustParseAddr("192.0.2.23"), netip.MustParseAddr("192.0.2.1")
	steps := []struct {
		file   string
		typ    ether.DHCPMessageType
		ethDst ether.MAC
		ipDst  netip.Addr
	}{
		{"udhcpc_discover.hex", ether.DHCPOffer, dhcpTestGuest, lease},
		{"udhcpc_request_selecting.hex", ether.DHCPAck, dhcpTestGuest, lease},
		{"udhcpc_request_renewing.hex", ether.DHCPAck, dhcpTestGuest, lease},
		{"udhcpc_release.hex", 0, ether.MAC{}, netip.Addr{}},
	}
	for _, s := range steps {
		n, handled := env.srv.Handle(dhcpTestCapture(t, s.file), env.out)
		if !handled {
			t.Fatalf("%s not handled", s.file)
		}
		if s.typ == 0 {
			if n != 0 {
				t.Fatalf("%s answered", s.file)
			}
			continue
		}
		if n == 0 {
			t.Fatalf("%s: no reply", s.file)
		}
		e, ip, d := dhcpTestParse(t, env.out[:n])
		if d.MessageType() != s.typ || e.Dst() != s.ethDst || ip.Dst() != s.ipDst || ip.Src() != server || d.YIAddr() != lease {
			t.Fatalf("%s: %v to %v %v from %v, yiaddr %v", s.file, d.MessageType(), e.Dst(), ip.Dst(), ip.Src(), d.YIAddr())
		}
	}
	if st := env.srv.Stats(); st.Releases != 1 || st.Acks != 2 || st.Offers != 1 {
		t.Fatalf("stats %+v", st)
	}
	// The RELEASE freed the binding: another client may take the address.
	if env.handle(t, dhcpTestMsg{typ: ether.DHCPDiscover, mac: dhcpTestOther}) == nil {
		t.Fatal("binding not freed by the captured RELEASE")
	}
}

func FuzzDHCPHandle(f *testing.F) {
	for _, name := range []string{"udhcpc_discover.hex", "udhcpc_request_selecting.hex",
		"udhcpc_request_renewing.hex", "udhcpc_release.hex", "arp_request.hex"} {
		raw, err := os.ReadFile(filepath.Join("ether", "testdata", name))
		if err != nil {
			f.Fatal(err)
		}
		var digits strings.Builder
		for line := range strings.Lines(string(raw)) {
			if !strings.HasPrefix(line, "#") {
				digits.WriteString(strings.TrimSpace(line))
			}
		}
		b, _ := hex.DecodeString(digits.String())
		f.Add(b, false)
		f.Add(b, true)
	}
	f.Add(dhcpTestFrame(dhcpTestMsg{typ: ether.DHCPInform, mac: dhcpTestGuest, ciaddr: netip.MustParseAddr("192.0.2.40")}), true)
	f.Fuzz(func(t *testing.T, frame []byte, fixChecksums bool) {
		if fixChecksums {
			// Let the fuzzer past the checksum checks into the DHCP logic.
			frame = bytes.Clone(frame)
			if ip, err := ether.ParseIPv4(frame[min(len(frame), ether.HeaderLen):]); err == nil {
				ip.SetChecksum(ip.ComputeChecksum())
				if u, err := ether.ParseUDP(ip.Payload()); err == nil && ip.Protocol() == ether.ProtoUDP {
					u.SetChecksum(u.ComputeChecksum(ip.Src(), ip.Dst()))
				}
			}
		}
		srv, err := NewDHCPServer(DHCPConfig{Lease: netip.MustParsePrefix("192.0.2.23/24"), ServiceMAC: dhcpTestService, MTU: 1400})
		if err != nil {
			t.Fatal(err)
		}
		out := make([]byte, ether.DHCPMaxFrameLen)
		n, handled := srv.Handle(frame, out)
		if n > 0 {
			if !handled {
				t.Fatal("reply to an unhandled frame")
			}
			_, ip, d := dhcpTestParse(t, out[:n])
			if ip.Src() != netip.MustParseAddr("192.0.2.1") {
				t.Fatalf("reply from %v", ip.Src())
			}
			if y := d.YIAddr(); y != netip.IPv4Unspecified() && y != netip.MustParseAddr("192.0.2.23") {
				t.Fatalf("handed out %v", y)
			}
		}
		_, toServer, _ := parseDHCPToServer(frame)
		if toServer != handled {
			t.Fatal("Handle and the classifier disagree")
		}
		if isDHCPServerMessage(frame) && handled {
			t.Fatal("a frame both to and from the server port")
		}
	})
}
