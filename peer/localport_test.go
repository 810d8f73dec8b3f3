package peer

import (
	"bytes"
	"errors"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/peerlan/peerlan/peer/ether"
)

// localTestGuest is an in-memory guest port. The test plays the guest
// through send (frames the guest emits) and recv (frames given to it). It
// fails the test if Write is ever entered by two goroutines at once, which
// the Port contract forbids.
type localTestGuest struct {
	t       *testing.T
	send    chan []byte
	recv    chan []byte
	closed  chan struct{}
	once    sync.Once
	writing atomic.Int32
}

func newLocalTestGuest(t *testing.T) *localTestGuest {
	return &localTestGuest{t: t, send: make(chan []byte, 16), recv: make(chan []byte, 64), closed: make(chan struct{})}
}

func (g *localTestGuest) Read(b []byte) (int, error) {
	select {
	case f := <-g.send:
		return copy(b, f), nil
	case <-g.closed:
		return 0, net.ErrClosed
	}
}

func (g *localTestGuest) Write(b []byte) (int, error) {
	if g.writing.Add(1) != 1 {
		g.t.Error("concurrent Write on the guest port")
	}
	defer g.writing.Add(-1)
	select {
	case <-g.closed:
		return 0, net.ErrClosed
	default:
	}
	select {
	case g.recv <- bytes.Clone(b):
		return len(b), nil
	default:
		return 0, ErrDropped
	}
}

func (g *localTestGuest) Close() error {
	g.once.Do(func() { close(g.closed) })
	return nil
}

func (g *localTestGuest) received(t *testing.T) []byte {
	t.Helper()
	select {
	case f := <-g.recv:
		return f
	case <-time.After(5 * time.Second):
		t.Fatal("nothing written to the guest")
		return nil
	}
}

func newLocalTestPort(t *testing.T, lease netip.Prefix) (*LocalPort, *localTestGuest, *DHCPServer) {
	t.Helper()
	srv, err := NewDHCPServer(DHCPConfig{Lease: lease, ServiceMAC: dhcpTestService, MTU: 1400})
	if err != nil {
		t.Fatal(err)
	}
	g := newLocalTestGuest(t)
	p := NewLocalPort(g, srv, nil)
	t.Cleanup(func() { p.Close() })
	return p, g, srv
}

// localTestARP is an ARP request from the guest.
func localTestARP() []byte {
	f := make([]byte, ether.ARPFrameLen)
	e := ether.Ethernet(f)
	e.SetDst(ether.Broadcast)
	e.SetSrc(dhcpTestGuest)
	e.SetType(ether.TypeARP)
	a := e.Payload()
	copy(a, []byte{0, 1, 8, 0, 6, 4, 0, 1})
	copy(a[8:], dhcpTestGuest[:])
	copy(a[14:], []byte{10, 77, 0, 23})
	copy(a[24:], []byte{10, 77, 0, 1})
	return f
}

func TestLocalPortAnswersDHCPAndForwardsTheRest(t *testing.T) {
	p, g, _ := newLocalTestPort(t, dhcpTestLease)
	arp := localTestARP()
	dns := dhcpTestFrame(dhcpTestMsg{mac: dhcpTestGuest, dstPort: 53, ipSrc: dhcpTestAddr, ipDst: dhcpTestRouter,
		ethDst: ether.MAC{0x02, 0xaa, 0, 0, 0, 1}})
	g.send <- dhcpTestFrame(dhcpTestMsg{typ: ether.DHCPDiscover, mac: dhcpTestGuest, xid: 1})
	g.send <- dhcpTestFrame(dhcpTestMsg{typ: ether.DHCPRequest, mac: dhcpTestGuest, xid: 2,
		requested: dhcpTestAddr, serverID: dhcpTestRouter})
	g.send <- arp
	// A renewal unicast to the gateway's MAC and IP is still ours.
	g.send <- dhcpTestFrame(dhcpTestMsg{typ: ether.DHCPRequest, mac: dhcpTestGuest, xid: 3, ciaddr: dhcpTestAddr,
		ipSrc: dhcpTestAddr, ipDst: dhcpTestRouter, ethDst: ether.MAC{0x02, 0xaa, 0, 0, 0, 1}})
	g.send <- dns

	buf := make([]byte, MaxFrameSize)
	// Each ACK is followed by a gratuitous ARP for the guest's address,
	// from the guest's MAC, to the mesh.
	garp := make([]byte, ether.ARPFrameLen)
	if _, err := ether.BuildGratuitousARP(garp, dhcpTestGuest, dhcpTestAddr); err != nil {
		t.Fatal(err)
	}
	for _, want := range [][]byte{garp, arp, garp, dns} {
		n, err := p.Read(buf)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(buf[:n], want) {
			t.Fatalf("Read returned %x, want %x", buf[:n], want)
		}
	}
	for _, want := range []struct {
		typ ether.DHCPMessageType
		xid uint32
	}{{ether.DHCPOffer, 1}, {ether.DHCPAck, 2}, {ether.DHCPAck, 3}} {
		_, _, d := dhcpTestReply(t, g.received(t))
		if d.MessageType() != want.typ || d.XID() != want.xid {
			t.Fatalf("guest got %v xid %d, want %v xid %d", d.MessageType(), d.XID(), want.typ, want.xid)
		}
	}
	st := p.Stats()
	if st.FromGuest != 2 || st.Announced != 2 || st.DHCPConsumed != 3 || st.DHCPReplies != 3 || st.ToGuest != 3 ||
		st.DHCP.Discovers != 1 || st.DHCP.Requests != 2 || st.DHCP.Offers != 1 || st.DHCP.Acks != 2 {
		t.Fatalf("stats %+v", st)
	}
}

func TestLocalPortWrite(t *testing.T) {
	p, g, _ := newLocalTestPort(t, dhcpTestLease)
	arp := localTestARP()
	if n, err := p.Write(arp); err != nil || n != len(arp) {
		t.Fatalf("Write: %d %v", n, err)
	}
	if got := g.received(t); !bytes.Equal(got, arp) {
		t.Fatalf("guest got %x", got)
	}
	// A DHCP server message from the mesh (some remote guest's dnsmasq).
	rogue := dhcpTestFrame(dhcpTestMsg{op: ether.BootReply, typ: ether.DHCPOffer, mac: dhcpTestGuest})
	u := ether.UDP(rogue[ether.HeaderLen+20:])
	u.SetSrcPort(ether.DHCPServerPort)
	u.SetDstPort(ether.DHCPClientPort)
	if n, err := p.Write(rogue); err != nil || n != len(rogue) {
		t.Fatalf("filtered Write: %d %v", n, err)
	}
	// A guest's own client datagram to port 67 seen from the mesh is not a
	// server message and passes.
	if _, err := p.Write(dhcpTestFrame(dhcpTestMsg{typ: ether.DHCPDiscover, mac: dhcpTestOther})); err != nil {
		t.Fatal(err)
	}
	_, _, d := dhcpTestParseClient(t, g.received(t))
	if d.MessageType() != ether.DHCPDiscover {
		t.Fatalf("guest got %v", d.MessageType())
	}
	select {
	case f := <-g.recv:
		t.Fatalf("unexpected frame for the guest: %x", f)
	default:
	}
	if st := p.Stats(); st.ServerBlocked != 1 || st.ToGuest != 2 {
		t.Fatalf("stats %+v", st)
	}

	// A congested guest: ErrDropped passes through, uncounted as delivered.
	for range cap(g.recv) {
		p.Write(arp)
	}
	if _, err := p.Write(arp); !errors.Is(err, ErrDropped) {
		t.Fatalf("full guest: %v", err)
	}
}

// dhcpTestParseClient walks a client message frame.
func dhcpTestParseClient(t *testing.T, frame []byte) (ether.Ethernet, ether.IPv4, ether.DHCP) {
	t.Helper()
	d, toServer, ok := parseDHCPToServer(frame)
	if !toServer || !ok {
		t.Fatalf("not a DHCP client message: %x", frame)
	}
	e := ether.Ethernet(frame)
	ip, _ := ether.ParseIPv4(e.Payload())
	return e, ip, d
}

func TestLocalPortWithoutServicesPassesEverything(t *testing.T) {
	g := newLocalTestGuest(t)
	p := NewLocalPort(g, nil, nil)
	defer p.Close()
	discover := dhcpTestFrame(dhcpTestMsg{typ: ether.DHCPDiscover, mac: dhcpTestGuest})
	g.send <- discover
	buf := make([]byte, MaxFrameSize)
	if n, err := p.Read(buf); err != nil || !bytes.Equal(buf[:n], discover) {
		t.Fatalf("Read %d %v", n, err)
	}
	offer := dhcpTestFrame(dhcpTestMsg{typ: ether.DHCPOffer, mac: dhcpTestGuest, dstPort: 68})
	ether.UDP(offer[ether.HeaderLen+20:]).SetSrcPort(67)
	if _, err := p.Write(offer); err != nil {
		t.Fatal(err)
	}
	if got := g.received(t); !bytes.Equal(got, offer) {
		t.Fatal("server message filtered without a local service")
	}
	if st := p.Stats(); st.FromGuest != 1 || st.ToGuest != 1 || st.DHCP != (DHCPStats{}) {
		t.Fatalf("stats %+v", st)
	}
}

func TestLocalPortSerialisesWrites(t *testing.T) {
	defer goleak.VerifyNone(t)
	p, g, _ := newLocalTestPort(t, dhcpTestLease)
	// A reader that drains what the guest receives so nothing is dropped.
	stop := make(chan struct{})
	var drainer, wg sync.WaitGroup
	drainer.Go(func() {
		for {
			select {
			case <-g.recv:
			case <-stop:
				return
			}
		}
	})
	// The "switch" writes frames while Read answers DHCP.
	arp := localTestARP()
	wg.Go(func() {
		for range 2000 {
			for {
				if _, err := p.Write(arp); err == nil {
					break
				}
				time.Sleep(time.Microsecond)
			}
		}
	})
	const exchanges = 500
	wg.Go(func() {
		discover := dhcpTestFrame(dhcpTestMsg{typ: ether.DHCPDiscover, mac: dhcpTestGuest})
		for range exchanges {
			g.send <- discover
		}
		g.send <- arp // lets Read return
	})
	buf := make([]byte, MaxFrameSize)
	if _, err := p.Read(buf); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	close(stop)
	drainer.Wait()
	if st := p.Stats(); st.DHCPConsumed != exchanges || st.DHCPReplies+st.ReplyDrops != exchanges || st.DHCP.Offers != exchanges {
		t.Fatalf("stats %+v", st)
	}
}

func TestLocalPortCloseUnblocksRead(t *testing.T) {
	defer goleak.VerifyNone(t)
	p, _, _ := newLocalTestPort(t, dhcpTestLease)
	errc := make(chan error, 1)
	go func() {
		_, err := p.Read(make([]byte, MaxFrameSize))
		errc <- err
	}()
	time.Sleep(10 * time.Millisecond)
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-errc:
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("Read after Close: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not unblock Read")
	}
	if _, err := p.Write(localTestARP()); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Write after Close: %v", err)
	}
	if err := p.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

// localTestCycleGuest replays a fixed list of frames and discards writes,
// without allocating, for the allocation check.
type localTestCycleGuest struct {
	frames [][]byte
	next   int
	writes int
}

func (g *localTestCycleGuest) Read(b []byte) (int, error) {
	f := g.frames[g.next%len(g.frames)]
	g.next++
	return copy(b, f), nil
}

func (g *localTestCycleGuest) Write(b []byte) (int, error) { g.writes++; return len(b), nil }
func (g *localTestCycleGuest) Close() error                { return nil }

func TestLocalPortAllocatesNothing(t *testing.T) {
	srv, err := NewDHCPServer(DHCPConfig{Lease: dhcpTestLease, ServiceMAC: dhcpTestService})
	if err != nil {
		t.Fatal(err)
	}
	g := &localTestCycleGuest{frames: [][]byte{
		dhcpTestFrame(dhcpTestMsg{typ: ether.DHCPDiscover, mac: dhcpTestGuest}),
		dhcpTestFrame(dhcpTestMsg{typ: ether.DHCPRequest, mac: dhcpTestGuest, ciaddr: dhcpTestAddr}),
		localTestARP(),
	}}
	p := NewLocalPort(g, srv, nil)
	buf := make([]byte, MaxFrameSize)
	arp := localTestARP()
	p.Read(buf) // binds the client (and logs) once
	allocs := testing.AllocsPerRun(100, func() {
		if _, err := p.Read(buf); err != nil {
			t.Fatal(err)
		}
		if _, err := p.Write(arp); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Fatalf("%.1f allocations per Read+Write", allocs)
	}
	if g.writes < 200 {
		t.Fatalf("replies not written: %d", g.writes)
	}
}

func BenchmarkLocalPortWrite(b *testing.B) {
	srv, _ := NewDHCPServer(DHCPConfig{Lease: dhcpTestLease, ServiceMAC: dhcpTestService})
	p := NewLocalPort(&localTestCycleGuest{}, srv, nil)
	frame := dhcpTestFrame(dhcpTestMsg{mac: dhcpTestGuest, dstPort: 53})
	for b.Loop() {
		p.Write(frame)
	}
}

// TestLocalPortAnswersHeldDHCP: a DISCOVER that came before the peer had an
// address is answered as soon as it has one, without the guest asking
// again; a second AnswerHeld finds nothing.
func TestLocalPortAnswersHeldDHCP(t *testing.T) {
	p, g, srv := newLocalTestPort(t, netip.Prefix{})
	g.send <- dhcpTestFrame(dhcpTestMsg{typ: ether.DHCPDiscover, mac: dhcpTestGuest, xid: 7})
	g.send <- localTestARP()
	buf := make([]byte, MaxFrameSize)
	if _, err := p.Read(buf); err != nil { // returns the ARP: the DISCOVER was the service's
		t.Fatal(err)
	}
	select {
	case f := <-g.recv:
		t.Fatalf("answered without an address: %x", f)
	default:
	}
	p.AnswerHeld() // still no address: nothing, and the message stays held
	if err := srv.SetLease(dhcpTestLease); err != nil {
		t.Fatal(err)
	}
	p.AnswerHeld()
	_, _, d := dhcpTestReply(t, g.received(t))
	if d.MessageType() != ether.DHCPOffer || d.XID() != 7 || d.YIAddr() != dhcpTestAddr {
		t.Fatalf("guest got %v xid %d for %v, want the OFFER for xid 7", d.MessageType(), d.XID(), d.YIAddr())
	}
	p.AnswerHeld()
	select {
	case f := <-g.recv:
		t.Fatalf("answered twice: %x", f)
	case <-time.After(50 * time.Millisecond):
	}
}
