package relay

import (
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/peerlan/peerlan/internal/sockbuf"
)

// Relay socket errors, seen by pion/turn (which answers 508 Insufficient
// Capacity to an Allocate that fails) and in its debug log.
var (
	errRelayClosed    = errors.New("relay: server closed")
	errPortOutOfRange = errors.New("relay: requested port outside the relay port range")
	errNoFreePort     = errors.New("relay: no free relay port")
	errTCPRelay       = errors.New("relay: TCP relay allocations (RFC 6062) are not supported")
	errOwnAddressPort = errors.New("relay: relay's own address is reachable at relay ports only")
	errRefusedPeer    = errors.New("relay: peer address refused")
	errNotUDPAddr     = errors.New("relay: peer address is not a UDP address")
)

// maxBindTries bounds bind attempts per allocation on ports that another
// program holds.
const maxBindTries = 16

// relayPorts is the server's turn.RelayAddressGenerator. It hands out relay
// sockets inside [MinPort, MaxPort] and wraps each in a relayConn that
// counts, filters and ages its traffic.
type relayPorts struct {
	s *Server

	mu    sync.Mutex
	inUse map[uint16]*relayConn // guarded by mu
}

// Validate implements turn.RelayAddressGenerator.
func (*relayPorts) Validate() error { return nil }

// AllocateConn implements turn.RelayAddressGenerator. pion/turn v4 never
// calls it; TCP relaying is not offered.
func (*relayPorts) AllocateConn(string, int) (net.Conn, net.Addr, error) {
	return nil, nil, errTCPRelay
}

// AllocatePacketConn implements turn.RelayAddressGenerator: a requested port
// (EVEN-PORT) must lie in the range; otherwise a random free port is taken,
// scanning from a random start so a nearly full range still finds its
// holes, and giving up after maxBindTries ports that another program holds.
func (r *relayPorts) AllocatePacketConn(network string, requestedPort int) (net.PacketConn, net.Addr, error) {
	cfg := &r.s.cfg
	if r.s.closing.Load() {
		return nil, nil, errRelayClosed
	}
	if requestedPort != 0 {
		if requestedPort < int(cfg.MinPort) || requestedPort > int(cfg.MaxPort) {
			return nil, nil, fmt.Errorf("%w: %d", errPortOutOfRange, requestedPort)
		}
		return r.bind(network, uint16(requestedPort))
	}
	size := int(cfg.MaxPort) - int(cfg.MinPort) + 1
	start := rand.IntN(size)
	tries := 0
	var lastErr error
	for i := 0; i < size && tries < maxBindTries; i++ {
		port := uint16(int(cfg.MinPort) + (start+i)%size)
		r.mu.Lock()
		_, busy := r.inUse[port]
		r.mu.Unlock()
		if busy {
			continue
		}
		tries++
		pc, addr, err := r.bind(network, port)
		if err == nil {
			return pc, addr, nil
		}
		lastErr = err
	}
	return nil, nil, fmt.Errorf("%w in %d-%d: %w", errNoFreePort, cfg.MinPort, cfg.MaxPort, lastErr)
}

func (r *relayPorts) bind(network string, port uint16) (net.PacketConn, net.Addr, error) {
	cfg := &r.s.cfg
	pc, err := cfg.ListenPacket(network, netip.AddrPortFrom(cfg.RelayBindIP, port).String())
	if err != nil {
		return nil, nil, err
	}
	sockbuf.Enlarge(pc)
	rc := &relayConn{
		PacketConn: pc, s: r.s, port: port, created: time.Now(),
		addr:     &net.UDPAddr{IP: cfg.RelayIP.AsSlice(), Port: int(port)},
		addrPort: netip.AddrPortFrom(cfg.RelayIP, port),
		inbox:    make(chan datagram, inboxSize),
		done:     make(chan struct{}),
	}
	rc.perms.Store(&map[netip.Addr]struct{}{})
	rc.channels.Store(&map[netip.AddrPort]uint16{})
	rc.lifetime = time.AfterFunc(cfg.MaxAllocationLifetime, rc.expire)
	r.mu.Lock()
	if _, busy := r.inUse[port]; busy || r.s.closing.Load() {
		r.mu.Unlock()
		rc.lifetime.Stop()
		_ = pc.Close()
		return nil, nil, fmt.Errorf("%w: %d taken concurrently or closing", errNoFreePort, port)
	}
	r.inUse[port] = rc
	r.mu.Unlock()
	go rc.pump()
	return rc, rc.addr, nil
}

func (r *relayPorts) lookup(port int) *relayConn {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.inUse[uint16(port)] //nolint:gosec // relay ports fit uint16
}

func (r *relayPorts) release(rc *relayConn) {
	r.mu.Lock()
	if r.inUse[rc.port] == rc {
		delete(r.inUse, rc.port)
	}
	r.mu.Unlock()
}

// all returns the open relay conns.
func (r *relayPorts) all() []*relayConn {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]*relayConn, 0, len(r.inUse))
	for _, rc := range r.inUse {
		out = append(out, rc)
	}
	return out
}

// relayConn is one allocation's relay socket. pion/turn reads peers'
// datagrams from it and writes clients' datagrams to it; the wrapper
//   - counts relayed bytes in both directions,
//   - drops datagrams from peers without a permission before pion sees them
//     (pion would drop them too, logging each at Info),
//   - refuses writes to refused addresses again (defence in depth) and to
//     the relay's own address at any port that is not an allocation's,
//   - hands a write to another allocation of this server straight to that
//     allocation's client, or its inbox, instead of through the kernel (see
//     WriteTo and handOff),
//   - closes itself at MaxAllocationLifetime, which ends the allocation.
//
// Reads come from inbox, fed by pump (the socket) and by other allocations.
type relayConn struct {
	net.PacketConn
	s        *Server
	port     uint16
	addr     *net.UDPAddr   // the relayed address, RelayIP:port
	addrPort netip.AddrPort // the same, as a map key
	created  time.Time
	lifetime *time.Timer

	// perms is the set of peer IPs with a permission, copied on write from
	// pion's permission events so the per-datagram read needs no lock.
	perms atomic.Pointer[map[netip.Addr]struct{}]
	// channels maps peers to the channel numbers the client bound for
	// them, copied on write from pion's channel events like perms.
	channels atomic.Pointer[map[netip.AddrPort]uint16]
	// toClient is set when the client talks UDP to one of this server's
	// listeners; nil for TCP and TLS clients.
	toClient atomic.Pointer[clientPath]

	inbox chan datagram
	done  chan struct{} // closed by Close

	// user and client are set when pion reports the allocation; guarded by
	// Server.mu.
	user, client string

	closeOnce sync.Once
	closed    atomic.Bool
}

// inboxSize is how many datagrams wait for pion to read them, the
// in-process counterpart of a socket's receive buffer: beyond it datagrams
// are dropped, as the kernel drops them at a full socket. Measured with
// BenchmarkRelayTURN (iperf3 through two relay-only peers, ~370k datagrams):
// 256 dropped 299 (inbox-full), 512 and 1024 none. Its slots cost 12 KiB
// per allocation; the datagrams themselves come from a shared pool.
const inboxSize = 512

// datagramSize bounds a relayed datagram: pion reads relay sockets into
// 1600-byte buffers and truncates anything longer, so nothing longer is
// worth keeping.
const datagramSize = 2048

// clientPath is where an allocation's client is reached: its address and
// the listener socket it talks to.
type clientPath struct {
	conn net.PacketConn
	addr *net.UDPAddr
}

// datagram is a payload waiting in an inbox.
type datagram struct {
	buf  *[]byte // from bufPool
	n    int
	from *net.UDPAddr
}

var bufPool = sync.Pool{New: func() any { b := make([]byte, datagramSize); return &b }}

func (rc *relayConn) permitted(a netip.Addr) bool {
	_, ok := (*rc.perms.Load())[a]
	return ok
}

// setPermission adds or removes a; callers hold Server.mu, which serialises
// writers.
func (rc *relayConn) setPermission(a netip.Addr, on bool) {
	if _, has := (*rc.perms.Load())[a]; has != on {
		storeWith(&rc.perms, a, struct{}{}, on)
	}
}

// setChannel records or forgets the channel number bound for peer; callers
// hold Server.mu. Forgetting checks the number, so that a stale delete
// cannot drop a rebinding.
func (rc *relayConn) setChannel(peer netip.AddrPort, number uint16, on bool) {
	cur, has := (*rc.channels.Load())[peer]
	if on && (!has || cur != number) || !on && has && cur == number {
		storeWith(&rc.channels, peer, number, on)
	}
}

// storeWith replaces the map in m by a copy with k set to v (on) or
// removed: readers load the map on every datagram without a lock, so it is
// never changed in place. Callers hold Server.mu, which serialises writers.
func storeWith[K comparable, V any](m *atomic.Pointer[map[K]V], k K, v V, on bool) {
	next := maps.Clone(*m.Load())
	if on {
		next[k] = v
	} else {
		delete(next, k)
	}
	m.Store(&next)
}

// pump moves the socket's datagrams from permitted peers to the client
// until the socket closes: as ChannelData straight from here when the
// client talks UDP and bound a channel for the peer (the usual case once
// ICE has picked a relayed pair), else through the inbox and pion's read
// loop, which sends a Data indication or writes to a TCP client.
func (rc *relayConn) pump() {
	m := rc.s.metrics
	for {
		buf := bufPool.Get().(*[]byte)
		n, addr, err := rc.PacketConn.ReadFrom(*buf)
		if err != nil {
			bufPool.Put(buf)
			if !rc.closed.Load() {
				rc.s.log.Warn("relay: relay socket failed; ending its allocation", "relay_port", rc.port, "err", err)
			}
			_ = rc.Close()
			return
		}
		ua, ok := addr.(*net.UDPAddr)
		var peer netip.Addr
		if ok {
			peer = addrFromIP(ua.IP)
		}
		if !ok || !rc.permitted(peer) {
			bufPool.Put(buf)
			m.dropNoPerm.Inc()
			continue
		}
		if rc.sendOnChannel(netip.AddrPortFrom(peer, uint16(ua.Port)), (*buf)[:n], nil) { //nolint:gosec // a UDP port
			bufPool.Put(buf)
			continue
		}
		select {
		case rc.inbox <- datagram{buf, n, ua}:
		case <-rc.done:
			bufPool.Put(buf)
		}
	}
}

// handOff takes a datagram that allocation from, of this server, sent to
// rc. It runs in pion's listener loop, which serves every client, so it
// never blocks. When rc's client is on UDP and has bound a channel for
// from, the datagram goes out to it as ChannelData at once, as pion's read
// loop for rc would send it: no queue, no second goroutine. Otherwise it
// waits in rc's inbox for that loop (which then sends a Data indication,
// or ChannelData to a TCP client). A datagram that does not fit is dropped
// and counted.
func (rc *relayConn) handOff(p []byte, from *relayConn) {
	m := rc.s.metrics
	if !rc.permitted(from.addrPort.Addr()) {
		m.dropNoPerm.Inc()
		return
	}
	if rc.sendOnChannel(from.addrPort, p, from.toClient.Load()) {
		return
	}
	buf := bufPool.Get().(*[]byte)
	n := copy(*buf, p)
	select {
	case rc.inbox <- datagram{buf, n, from.addr}:
		return
	case <-rc.done:
	default:
		m.dropFull.Inc()
	}
	bufPool.Put(buf)
}

// channelDataHeader is RFC 8656 §12.4's channel number and length.
const channelDataHeader = 4

// sendOnChannel sends p from peer to rc's client as ChannelData, as pion's
// read loop for rc would, and reports whether it took p: it does when the
// client talks UDP and bound a channel for peer, or the allocation is gone.
// A datagram it cannot send is dropped and counted. sender is the sending
// allocation's client path when the sender is another allocation of this
// server, else nil.
func (rc *relayConn) sendOnChannel(peer netip.AddrPort, p []byte, sender *clientPath) bool {
	path := rc.toClient.Load()
	if path == nil {
		return false
	}
	ch, ok := (*rc.channels.Load())[peer]
	if !ok {
		return false
	}
	m := rc.s.metrics
	switch {
	case rc.closed.Load():
		// The allocation is gone; pion would no longer send either.
	case rc.writeChannelData(path, ch, p, sender):
		m.peerToClient(len(p))
	default:
		m.dropSend.Inc()
	}
	return true
}

// writeChannelData frames p for channel ch and sends it to the client at
// path, reporting whether it went. When the sending allocation's client
// talks to the same listener, this runs in that listener's read loop (pion
// writes to a relay socket only from the loop serving its client), so the
// datagram may join the loop's next batched send; otherwise it is sent at
// once.
func (rc *relayConn) writeChannelData(path *clientPath, ch uint16, p []byte, sender *clientPath) bool {
	if bc, ok := path.conn.(*batchConn); ok && sender != nil && sender.conn == path.conn {
		if b := bc.sendBuffer(); b != nil {
			n := frameChannelData(b, ch, p)
			if n > 0 {
				bc.queue(n, path.addr)
			}
			return n > 0
		}
	}
	buf := bufPool.Get().(*[]byte)
	defer bufPool.Put(buf)
	n := frameChannelData(*buf, ch, p)
	if n == 0 {
		return false
	}
	_, err := path.conn.WriteTo((*buf)[:n], path.addr)
	return err == nil
}

// frameChannelData writes p into b as ChannelData for channel ch (RFC 8656
// §12.4), padded to 4 bytes as pion pads it, and returns its length, or 0
// when b is too short (p is longer than pion ever reads from a client).
func frameChannelData(b []byte, ch uint16, p []byte) int {
	size := (channelDataHeader + len(p) + 3) &^ 3
	if size > len(b) {
		return 0
	}
	binary.BigEndian.PutUint16(b[0:2], ch)
	binary.BigEndian.PutUint16(b[2:4], uint16(len(p))) //nolint:gosec // bounded by len(b)
	n := copy(b[channelDataHeader:], p)
	clear(b[channelDataHeader+n : size])
	return size
}

// ReadFrom returns the next datagram from a permitted peer.
func (rc *relayConn) ReadFrom(p []byte) (int, net.Addr, error) {
	select {
	case d := <-rc.inbox:
		return rc.take(d, p)
	case <-rc.done:
		return 0, nil, net.ErrClosed // pion then deletes the allocation
	}
}

func (rc *relayConn) take(d datagram, p []byte) (int, net.Addr, error) {
	n := copy(p, (*d.buf)[:d.n])
	bufPool.Put(d.buf)
	rc.s.metrics.peerToClient(n)
	return n, d.from, nil
}

// WriteTo sends a client's datagram to a peer. A datagram for another
// allocation of this server (clients of one relay reach each other at their
// relayed addresses, which is how two relay-only peers connect) is handed
// over in process (see handOff): no send and receive through the kernel,
// which were half the relay's work per datagram on that path.
func (rc *relayConn) WriteTo(p []byte, addr net.Addr) (int, error) {
	ua, ok := addr.(*net.UDPAddr)
	if !ok {
		return 0, errNotUDPAddr
	}
	s := rc.s
	a := addrFromIP(ua.IP)
	if a == s.cfg.RelayIP && ua.Port >= int(s.cfg.MinPort) && ua.Port <= int(s.cfg.MaxPort) {
		if dst := s.ports.lookup(ua.Port); dst != nil {
			s.metrics.clientToPeer(len(p))
			dst.handOff(p, rc)
			return len(p), nil // a dropped datagram is lost, as UDP's would be
		}
	}
	switch {
	case s.allowListed(a):
	case a == s.cfg.RelayIP:
		// Only ports that are relayed addresses right now: not the TURN
		// listeners (whose ephemeral port may lie inside the range) nor
		// anything else on the host.
		s.metrics.dropOwn.Inc()
		return 0, fmt.Errorf("%w: %s", errOwnAddressPort, ua)
	case ClassifyAddr(a) != ClassGlobal:
		s.metrics.dropPeer.Inc()
		return 0, fmt.Errorf("%w: %s", errRefusedPeer, a)
	}
	n, err := rc.PacketConn.WriteTo(p, addr)
	if err == nil {
		s.metrics.clientToPeer(n)
	}
	return n, err
}

// Close releases the port. pion/turn closes a relay socket more than once.
func (rc *relayConn) Close() error {
	var err error
	rc.closeOnce.Do(func() {
		rc.closed.Store(true)
		close(rc.done)
		rc.lifetime.Stop()
		err = rc.PacketConn.Close()
		rc.s.ports.release(rc)
	})
	return err
}

func (rc *relayConn) expire() {
	rc.s.metrics.lifetimeExceeded.Inc()
	rc.s.log.Info("relay: allocation reached its maximum lifetime",
		"relay_port", rc.port, "age", time.Since(rc.created).Round(time.Second), "user", rc.userName())
	_ = rc.Close() // pion's read loop sees the error and deletes the allocation
}

func (rc *relayConn) userName() string {
	rc.s.mu.Lock()
	defer rc.s.mu.Unlock()
	return rc.user
}
