//go:build linux

package peer

import (
	"encoding/binary"
	"errors"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/pion/transport/v4"
	"golang.org/x/sys/unix"
)

// gsoConn is a UDP socket that moves runs of datagrams with one system call
// each way, using Linux's UDP segmentation offload (UDP_SEGMENT: one sendmsg
// carries up to 64 datagrams of one size to one destination, the last one
// possibly shorter) and receive coalescing (UDP_GRO: one recvmsg returns
// such a run). On the wire nothing changes: each datagram is still one DTLS
// record, so any peer, a browser included, reads them as before.
//
// Why: an offloaded super-frame leaves the SCTP association as some 55
// full-size DTLS records written back to back, and a sendto per record was a
// fifth of a sending peer's CPU, a recvfrom per record a tenth of the
// receiver's.
//
// When a run goes out: a datagram shorter than the run's size ends the run
// (the last fragment of an SCTP message is that short one), so it is sent at
// once, in the writer's goroutine; so is a datagram that cannot join the run
// (another destination, a larger size, a full run) and any small datagram
// (STUN, SACKs, a ping), which never waits. A run of full-size datagrams
// that nothing ends (the association stopped at its congestion window) is
// sent by the conn's flusher goroutine, which the run's first datagram
// wakes, once the run has not grown for gsoLinger.
//
// If the kernel refuses UDP_SEGMENT (an old kernel, a device without
// checksum offload), the conn sends one datagram per call from then on; if
// it refuses UDP_GRO, reads are one datagram each, as before.
type gsoConn struct {
	*net.UDPConn // every method not overridden here passes through

	wmu struct {
		sync.Mutex
		run    []byte       // datagrams back to back
		dst    *net.UDPAddr // where the run goes
		seg    int          // size of each datagram of the run but the last
		n      int          // datagrams in the run
		oob    []byte       // the UDP_SEGMENT control message
		last   time.Time    // when the run last grew
		closed bool
	}
	flush chan struct{} // wakes the flusher; closed by Close
	noGSO atomic.Bool   // the kernel refused a segmented send
	// maxSeg, when not 0, is the largest datagram that may join a run: a
	// segmented send whose datagrams exceed the path's MTU fails with
	// EMSGSIZE (the kernel fragments only datagrams sent alone), so larger
	// ones are sent one per call.
	maxSeg atomic.Int32

	rmu struct {
		sync.Mutex
		buf   []byte       // a received run
		addr  *net.UDPAddr // its source
		off   int          // next datagram's offset in buf
		end   int          // bytes of buf in use
		seg   int          // size of each datagram of the run
		oob   []byte       // control buffer for recvmsg
		groOn bool
	}
}

const (
	// gsoMaxSegments is the kernel's limit of datagrams per segmented send.
	gsoMaxSegments = 64
	// gsoMaxRun bounds a run's bytes: a UDP payload's 16-bit length.
	gsoMaxRun = 65000
	// gsoMinDefer is the size from which a datagram may wait for others of
	// its size: full DTLS records of SCTP packets are about 1.2 KB, and
	// anything much smaller is not a fragment of a larger message.
	gsoMinDefer = 1000

	// gsoLinger is how long a run that no short datagram ended waits for
	// more: an association writes a burst's datagrams microseconds apart.
	gsoLinger = 20 * time.Microsecond

	udpSegment = 103 // UDP_SEGMENT (linux/udp.h)
	udpGRO     = 104 // UDP_GRO
)

// newGSOConn wraps c, turning receive coalescing on when the kernel allows.
func newGSOConn(c *net.UDPConn) *gsoConn {
	g := &gsoConn{UDPConn: c, flush: make(chan struct{}, 1)}
	g.wmu.run = make([]byte, 0, gsoMaxRun+2048)
	g.wmu.oob = make([]byte, unix.CmsgSpace(2))
	if raw, err := c.SyscallConn(); err == nil {
		var serr error
		_ = raw.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.SOL_UDP, udpGRO, 1) })
		g.rmu.groOn = serr == nil
	}
	if g.rmu.groOn {
		g.rmu.buf = make([]byte, 65536)
		g.rmu.oob = make([]byte, unix.CmsgSpace(4))
	}
	go g.flusher()
	return g
}

// flusher sends runs that no short datagram ended, once they have stopped
// growing for gsoLinger: woken by a run's first datagram, it would
// otherwise send most runs with one datagram in them (measured: a tenth of
// the sender's CPU went to datagrams the flusher sent alone).
func (g *gsoConn) flusher() {
	for range g.flush {
		for {
			g.wmu.Lock()
			w := &g.wmu
			if w.n == 0 || w.closed || time.Since(w.last) >= gsoLinger {
				g.sendRunLocked()
				g.wmu.Unlock()
				break
			}
			g.wmu.Unlock()
			runtime.Gosched()
		}
	}
}

// WriteTo queues or sends one datagram (see gsoConn). A send error of a
// queued run is not reported: UDP promises no delivery either.
func (g *gsoConn) WriteTo(b []byte, addr net.Addr) (int, error) {
	ua, ok := addr.(*net.UDPAddr)
	if !ok || g.noGSO.Load() {
		return g.UDPConn.WriteTo(b, addr)
	}
	return g.WriteToUDP(b, ua)
}

// WriteToUDP is WriteTo for a UDP address.
func (g *gsoConn) WriteToUDP(b []byte, addr *net.UDPAddr) (int, error) {
	if g.noGSO.Load() {
		return g.UDPConn.WriteToUDP(b, addr)
	}
	g.wmu.Lock()
	defer g.wmu.Unlock()
	if g.wmu.closed {
		return 0, net.ErrClosed
	}
	w := &g.wmu
	if w.n > 0 && (w.n == gsoMaxSegments || len(b) > w.seg || len(w.run)+len(b) > gsoMaxRun || !sameUDPAddr(w.dst, addr)) {
		g.sendRunLocked()
	}
	if w.n == 0 && (len(b) < gsoMinDefer || g.tooBigToSegment(len(b))) {
		return g.UDPConn.WriteToUDP(b, addr) // nothing to wait for, or it cannot join a run
	}
	if w.n == 0 {
		w.dst, w.seg = addr, len(b)
	}
	w.run = append(w.run, b...)
	w.n++
	w.last = time.Now()
	switch {
	case len(b) < w.seg || len(b) < gsoMinDefer:
		g.sendRunLocked() // the short last datagram ends the run
	case w.n == 1:
		select {
		case g.flush <- struct{}{}:
		default:
		}
	}
	return len(b), nil
}

// sendRunLocked sends the run, if any. wmu must be held.
func (g *gsoConn) sendRunLocked() {
	w := &g.wmu
	if w.n == 0 {
		return
	}
	if w.n == 1 || g.noGSO.Load() {
		g.sendOneByOne()
	} else {
		putUDPSegment(w.oob, uint16(w.seg))
		_, _, err := g.UDPConn.WriteMsgUDP(w.run, w.oob, w.dst)
		switch {
		case err == nil:
		case errors.Is(err, unix.EMSGSIZE):
			g.maxSeg.Store(int32(w.seg - 1))
			g.sendOneByOne()
		case isGSOUnsupported(err):
			g.noGSO.Store(true)
			g.sendOneByOne()
		}
	}
	w.run, w.n = w.run[:0], 0
}

// tooBigToSegment reports whether a datagram of n bytes is known to be too
// large for a segmented send on this socket's path.
func (g *gsoConn) tooBigToSegment(n int) bool {
	m := g.maxSeg.Load()
	return m != 0 && n > int(m)
}

func (g *gsoConn) sendOneByOne() {
	w := &g.wmu
	for off := 0; off < len(w.run); off += w.seg {
		_, _ = g.UDPConn.WriteToUDP(w.run[off:min(off+w.seg, len(w.run))], w.dst)
	}
}

// putUDPSegment writes a UDP_SEGMENT control message into oob, which holds
// unix.CmsgSpace(2) bytes.
func putUDPSegment(oob []byte, size uint16) {
	h := (*unix.Cmsghdr)(unsafe.Pointer(&oob[0]))
	h.Level, h.Type = unix.SOL_UDP, udpSegment
	h.SetLen(unix.CmsgLen(2))
	binary.NativeEndian.PutUint16(oob[unix.CmsgLen(0):], size)
}

// isGSOUnsupported reports an error that means segmented sends cannot work
// on this socket's path (EIO: the device lacks checksum offload).
func isGSOUnsupported(err error) bool {
	return errors.Is(err, unix.EIO) || errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOPROTOOPT)
}

func sameUDPAddr(a, b *net.UDPAddr) bool {
	return a.Port == b.Port && a.IP.Equal(b.IP) && a.Zone == b.Zone
}

// Write sends on a connected socket; the run goes first, to keep order.
func (g *gsoConn) Write(b []byte) (int, error) {
	g.wmu.Lock()
	g.sendRunLocked()
	g.wmu.Unlock()
	return g.UDPConn.Write(b)
}

// WriteMsgUDP passes through after the run, to keep order.
func (g *gsoConn) WriteMsgUDP(b, oob []byte, addr *net.UDPAddr) (int, int, error) {
	g.wmu.Lock()
	g.sendRunLocked()
	g.wmu.Unlock()
	return g.UDPConn.WriteMsgUDP(b, oob, addr)
}

// ReadFrom returns one datagram, splitting a coalesced run across calls.
func (g *gsoConn) ReadFrom(b []byte) (int, net.Addr, error) {
	n, addr, err := g.ReadFromUDP(b)
	if addr == nil {
		return n, nil, err
	}
	return n, addr, err
}

// ReadFromUDP is ReadFrom with a UDP address.
func (g *gsoConn) ReadFromUDP(b []byte) (int, *net.UDPAddr, error) {
	r := &g.rmu
	r.Lock()
	defer r.Unlock()
	if !r.groOn {
		return g.UDPConn.ReadFromUDP(b)
	}
	if r.off >= r.end {
		n, oobn, _, addr, err := g.UDPConn.ReadMsgUDP(r.buf, r.oob)
		if err != nil {
			return 0, nil, err
		}
		r.addr, r.off, r.end, r.seg = addr, 0, n, groSegment(r.oob[:oobn])
		if r.seg <= 0 || r.seg >= n {
			r.seg = n
		}
	}
	d := r.buf[r.off:min(r.off+r.seg, r.end)]
	r.off += len(d)
	return copy(b, d), r.addr, nil
}

// Read is ReadFrom without the address.
func (g *gsoConn) Read(b []byte) (int, error) {
	n, _, err := g.ReadFromUDP(b)
	return n, err
}

// ReadMsgUDP is ReadFromUDP; coalescing's control message is the conn's own.
func (g *gsoConn) ReadMsgUDP(b, _ []byte) (int, int, int, *net.UDPAddr, error) {
	n, addr, err := g.ReadFromUDP(b)
	return n, 0, 0, addr, err
}

// groSegment returns the segment size of a coalesced read, or 0.
func groSegment(oob []byte) int {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return 0
	}
	for _, m := range msgs {
		if m.Header.Level == unix.SOL_UDP && m.Header.Type == udpGRO && len(m.Data) >= 2 {
			if len(m.Data) >= 4 {
				return int(binary.NativeEndian.Uint32(m.Data))
			}
			return int(binary.NativeEndian.Uint16(m.Data))
		}
	}
	return 0
}

// Close sends nothing more and closes the socket.
func (g *gsoConn) Close() error {
	g.wmu.Lock()
	if !g.wmu.closed {
		g.wmu.closed = true
		g.sendRunLocked()
		close(g.flush)
	}
	g.wmu.Unlock()
	return g.UDPConn.Close()
}

// batchUDP wraps a UDP socket of the host's stack in a gsoConn.
func batchUDP(c transport.UDPConn) transport.UDPConn {
	if uc, ok := c.(*net.UDPConn); ok {
		return newGSOConn(uc)
	}
	return c
}
