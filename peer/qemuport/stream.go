package qemuport

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"time"

	"github.com/peerlan/peerlan/peer"
)

// Stream framing: each frame is a 4-byte big-endian length, then the frame.
const streamHeaderLen = 4

// sendQueueLen is how many frames wait for a stream guest before Write
// drops: about 380 KiB of full-size frames, a few ms of a busy guest.
const sendQueueLen = 256

// errOversize ends a connection whose length word is over peer.MaxFrameSize:
// the stream is not QEMU's framing (or is corrupt), and skipping an
// arbitrary length would only find garbage after it.
var errOversize = errors.New("qemuport: frame length over the maximum frame size")

// streamPort listens for QEMU's -netdev stream. One connection at a time is
// the guest: a new one replaces the current one (QEMU restarted).
//
// Goroutines: acceptLoop (until Close) attaches connections; writeLoop
// (until Close) sends queued frames on the current connection; Read runs on
// the caller's goroutine and reads from the current connection.
type streamPort struct {
	log  *slog.Logger
	ln   *net.UnixListener // nil when the port connects (connectLoop)
	done chan struct{}     // closed by Close
	once sync.Once
	// loops are acceptLoop or connectLoop, and writeLoop; Close waits for
	// them, so that none logs or touches a connection after it returns.
	loops sync.WaitGroup

	mu struct {
		sync.Mutex
		cur     *streamConn   // the guest's connection; nil when none
		changed chan struct{} // closed and replaced when cur changes
	}

	queue chan []byte // frames with their header, for writeLoop
	free  chan []byte // buffers for queue; Write drops when none is free

	counters
}

// streamConn is one QEMU connection; r and hdr are only used by Read.
type streamConn struct {
	c      *net.UnixConn
	r      *bufio.Reader
	hdr    [streamHeaderLen]byte
	closed sync.Once
}

func listenStream(path string, log *slog.Logger) (*streamPort, error) {
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("qemuport: %w", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("qemuport: %w", err)
	}
	p := newStreamPort(log)
	p.ln = ln
	p.loops.Go(p.acceptLoop)
	p.loops.Go(p.writeLoop)
	log.Info("waiting for QEMU (-netdev stream,server=off,addr.type=unix,addr.path=" + path + ")")
	return p, nil
}

func newStreamPort(log *slog.Logger) *streamPort {
	p := &streamPort{log: log, done: make(chan struct{}),
		queue: make(chan []byte, sendQueueLen), free: make(chan []byte, sendQueueLen)}
	p.mu.changed = make(chan struct{})
	for range sendQueueLen {
		p.free <- make([]byte, streamHeaderLen+peer.MaxFrameSize)
	}
	return p
}

// connectStream returns a port that connects to QEMU's listening socket.
func connectStream(path string, log *slog.Logger) *streamPort {
	p := newStreamPort(log)
	p.loops.Go(func() { p.connectLoop(path) })
	p.loops.Go(p.writeLoop)
	log.Info("connecting to QEMU (-netdev stream,server=on,addr.type=unix,addr.path=" + path + ")")
	return p
}

// redialDelay is how long connectLoop waits between attempts.
const redialDelay = 200 * time.Millisecond

// connectLoop, until Close, connects to QEMU at path and, whenever that
// connection ends, connects again.
func (p *streamPort) connectLoop(path string) {
	logged := false
	for {
		c, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: path, Net: "unix"})
		if err == nil {
			logged = false
			p.attach(c)
			p.waitDetached()
		} else if !logged {
			logged = true
			p.log.Info("QEMU is not listening yet; retrying", "err", err)
		}
		select {
		case <-p.done:
			return
		case <-time.After(redialDelay):
		}
	}
}

// waitDetached waits until the port has no connection or is closed.
func (p *streamPort) waitDetached() {
	for {
		p.mu.Lock()
		cur, ch := p.mu.cur, p.mu.changed
		p.mu.Unlock()
		if cur == nil {
			return
		}
		select {
		case <-ch:
		case <-p.done:
			return
		}
	}
}

func (p *streamPort) acceptLoop() {
	for {
		c, err := p.ln.AcceptUnix()
		if err != nil {
			select {
			case <-p.done:
				return
			default:
			}
			p.log.Warn("accept failed", "err", err)
			select {
			case <-p.done:
				return
			case <-time.After(100 * time.Millisecond):
			}
			continue
		}
		p.attach(c)
	}
}

// attach makes c the guest's connection, closing the one it replaces.
func (p *streamPort) attach(c *net.UnixConn) {
	sc := &streamConn{c: c, r: bufio.NewReaderSize(c, 64<<10)}
	n := p.connects.Add(1) // counted before a frame on it can be read
	p.mu.Lock()
	old := p.mu.cur
	p.mu.cur = sc
	close(p.mu.changed)
	p.mu.changed = make(chan struct{})
	p.mu.Unlock()
	if old != nil {
		old.close()
		p.log.Warn("a new QEMU connection replaces the current one (QEMU restarted?)", "connection", n)
	} else {
		p.log.Info("QEMU connected", "connection", n)
	}
	select {
	case <-p.done: // Close ran meanwhile and did not see sc
		sc.close()
	default:
	}
}

// detach forgets sc (if it is still the guest's connection) and closes it.
func (p *streamPort) detach(sc *streamConn, why error) {
	p.mu.Lock()
	current := p.mu.cur == sc
	if current {
		p.mu.cur = nil
		close(p.mu.changed)
		p.mu.changed = make(chan struct{})
	}
	p.mu.Unlock()
	sc.close()
	if !current {
		return
	}
	select {
	case <-p.done:
		return
	default:
	}
	if errors.Is(why, io.EOF) || errors.Is(why, io.ErrUnexpectedEOF) {
		p.log.Info("QEMU disconnected; waiting for it to connect again")
	} else {
		p.log.Warn("QEMU connection closed; waiting for it to connect again", "err", why)
	}
}

func (sc *streamConn) close() { sc.closed.Do(func() { sc.c.Close() }) }

func (p *streamPort) current() *streamConn {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.mu.cur
}

// wait returns the guest's connection, waiting for one.
func (p *streamPort) wait() (*streamConn, error) {
	for {
		p.mu.Lock()
		sc, ch := p.mu.cur, p.mu.changed
		p.mu.Unlock()
		select {
		case <-p.done:
			return nil, net.ErrClosed
		default:
		}
		if sc != nil {
			return sc, nil
		}
		select {
		case <-ch:
		case <-p.done:
			return nil, net.ErrClosed
		}
	}
}

// Read returns the guest's next frame. While no QEMU is connected it waits
// for one; a disconnect is not an error of the port.
func (p *streamPort) Read(b []byte) (int, error) {
	for {
		sc, err := p.wait()
		if err != nil {
			return 0, err
		}
		n, err := sc.readFrame(b)
		switch {
		case err == nil:
			p.rxFrames.Add(1)
			return n, nil
		case errors.Is(err, errShortBuffer):
			p.rxDropped.Add(1)
			p.log.Debug("dropped a guest frame longer than the read buffer", "len", n, "buffer", len(b))
		case errors.Is(err, errOversize):
			p.rxDropped.Add(1)
			p.log.Error("QEMU sent a frame length over the maximum; closing the connection (is this -netdev stream?)",
				"len", n, "max", peer.MaxFrameSize)
			p.detach(sc, err)
		default:
			p.detach(sc, err)
		}
	}
}

var errShortBuffer = errors.New("qemuport: frame longer than the buffer")

// readFrame reads one length-prefixed frame into b. A frame longer than b
// (but not over the maximum) is skipped and reported as errShortBuffer with
// its length; nothing is allocated for any length.
func (sc *streamConn) readFrame(b []byte) (int, error) {
	for {
		if _, err := io.ReadFull(sc.r, sc.hdr[:]); err != nil {
			return 0, err
		}
		n := binary.BigEndian.Uint32(sc.hdr[:])
		switch {
		case n == 0:
			continue
		case n > peer.MaxFrameSize:
			return int(min(n, 1<<31-1)), errOversize
		case int(n) > len(b):
			if _, err := sc.r.Discard(int(n)); err != nil {
				return 0, err
			}
			return int(n), errShortBuffer
		}
		if _, err := io.ReadFull(sc.r, b[:n]); err != nil {
			return 0, err
		}
		return int(n), nil
	}
}

// Write queues one frame for the guest. It drops (peer.ErrDropped) when no
// QEMU is connected or the queue is full (the guest is not reading).
func (p *streamPort) Write(b []byte) (int, error) {
	select {
	case <-p.done:
		return 0, net.ErrClosed
	default:
	}
	if len(b) > peer.MaxFrameSize || p.current() == nil {
		p.txDropped.Add(1)
		return 0, peer.ErrDropped
	}
	var f []byte
	select {
	case f = <-p.free:
	default:
		p.txDropped.Add(1)
		return 0, peer.ErrDropped
	}
	f = f[:streamHeaderLen+len(b)]
	binary.BigEndian.PutUint32(f, uint32(len(b)))
	copy(f[streamHeaderLen:], b)
	p.queue <- f // never blocks: there are as many buffers as queue slots
	return len(b), nil
}

// writeLoop sends queued frames on the guest's connection. A write blocks
// while QEMU does not read (its NIC's ring is full); Write then drops once
// the queue is full. Replacing or closing the connection unblocks it.
func (p *streamPort) writeLoop() {
	for {
		var f []byte
		select {
		case f = <-p.queue:
		case <-p.done:
			return
		}
		sc := p.current()
		if sc == nil {
			p.txDropped.Add(1)
		} else if _, err := sc.c.Write(f); err != nil {
			p.txDropped.Add(1)
			p.detach(sc, err)
		} else {
			p.txFrames.Add(1)
		}
		p.free <- f[:cap(f)]
	}
}

// Close closes the listener (removing the socket file) and the connection,
// unblocks Read and Write, and waits for the port's goroutines.
func (p *streamPort) Close() error {
	p.once.Do(func() {
		close(p.done)
		if p.ln != nil {
			p.ln.Close()
		}
		if sc := p.current(); sc != nil {
			sc.close()
		}
	})
	p.loops.Wait()
	return nil
}
