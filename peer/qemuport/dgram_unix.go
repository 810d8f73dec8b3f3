//go:build unix

package qemuport

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/peerlan/peerlan/peer"
)

var _ Port = (*dgramPort)(nil)

// dgramPort is bound where QEMU's -netdev dgram sends (its remote.path) and
// answers to the address the guest's last datagram came from (QEMU's
// local.path), so a restarted QEMU, even on another path, is followed at
// its first frame.
type dgramPort struct {
	log  *slog.Logger
	path string
	conn *net.UnixConn
	raw  syscall.RawConn
	once sync.Once

	closed atomic.Bool
	// dst is where frames for the guest go; nil until QEMU sent one. Read
	// stores it, Write loads it.
	dst atomic.Pointer[syscall.SockaddrUnix]
	// unnamedLogged and sendErrLogged keep a repeated condition to one line.
	unnamedLogged, sendErrLogged atomic.Bool

	counters
}

func listenDgram(path string, log *slog.Logger) (Port, error) {
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		return nil, fmt.Errorf("qemuport: %w", err)
	}
	p := &dgramPort{log: log, path: path, conn: conn}
	if err := os.Chmod(path, 0o600); err != nil {
		p.Close()
		return nil, fmt.Errorf("qemuport: %w", err)
	}
	if p.raw, err = conn.SyscallConn(); err != nil {
		p.Close()
		return nil, fmt.Errorf("qemuport: %w", err)
	}
	log.Info("waiting for QEMU (-netdev dgram,local.type=unix,local.path=QEMU.sock,remote.type=unix,remote.path=" + path + ")")
	return p, nil
}

// Read returns the next datagram from the guest. A datagram longer than b
// or than peer.MaxFrameSize is dropped (the kernel truncates it into b, it
// is never allocated).
func (p *dgramPort) Read(b []byte) (int, error) {
	for {
		n, _, flags, from, err := p.conn.ReadMsgUnix(b, nil)
		if err != nil {
			if p.closed.Load() {
				return 0, net.ErrClosed
			}
			return 0, fmt.Errorf("qemuport: %w", err)
		}
		if flags&syscall.MSG_TRUNC != 0 || n > peer.MaxFrameSize {
			p.rxDropped.Add(1)
			p.log.Debug("dropped a guest datagram longer than the read buffer", "buffer", len(b))
			continue
		}
		if from == nil || from.Name == "" {
			p.rxDropped.Add(1)
			if !p.unnamedLogged.Swap(true) {
				p.log.Error("QEMU's socket has no address to answer to: give -netdev dgram a local.type=unix,local.path=...")
			}
			continue
		}
		if n == 0 {
			continue
		}
		if d := p.dst.Load(); d == nil || d.Name != from.Name {
			p.dst.Store(&syscall.SockaddrUnix{Name: from.Name})
			p.sendErrLogged.Store(false)
			c := p.connects.Add(1)
			if d == nil {
				p.log.Info("QEMU attached", "qemu", from.Name, "connection", c)
			} else {
				p.log.Warn("QEMU now sends from a new address; answering there (QEMU restarted?)", "qemu", from.Name, "was", d.Name, "connection", c)
			}
		}
		p.rxFrames.Add(1)
		return n, nil
	}
}

// Write sends one frame to the guest without waiting: when QEMU's socket
// is full, gone or not known yet the frame is dropped (peer.ErrDropped).
func (p *dgramPort) Write(b []byte) (int, error) {
	if p.closed.Load() {
		return 0, net.ErrClosed
	}
	dst := p.dst.Load()
	if dst == nil || len(b) > peer.MaxFrameSize {
		p.txDropped.Add(1)
		return 0, peer.ErrDropped
	}
	var serr error
	err := p.raw.Write(func(fd uintptr) bool {
		serr = syscall.Sendto(int(fd), b, syscall.MSG_DONTWAIT, dst)
		return true
	})
	if err == nil {
		err = serr
	}
	if err != nil {
		p.txDropped.Add(1)
		if p.closed.Load() {
			return 0, net.ErrClosed
		}
		if !errors.Is(err, syscall.EAGAIN) && !errors.Is(err, syscall.ENOBUFS) && !p.sendErrLogged.Swap(true) {
			p.log.Warn("cannot send to QEMU; dropping frames until it sends again", "qemu", dst.Name, "err", err)
		}
		return 0, peer.ErrDropped
	}
	p.txFrames.Add(1)
	return len(b), nil
}

// Close closes the socket, unblocking Read, and removes its file.
func (p *dgramPort) Close() error {
	p.once.Do(func() {
		p.closed.Store(true)
		p.conn.Close()
		os.Remove(p.path)
	})
	return nil
}
