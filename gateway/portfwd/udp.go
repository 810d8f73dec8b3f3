package portfwd

import (
	"errors"
	"net"
	"net/netip"
	"os"
	"sync/atomic"
	"syscall"
	"time"
)

// udpSession is one client address's "connection" to the guest: datagrams
// from the client go out on guest, and what guest receives goes back to the
// client.
type udpSession struct {
	client netip.AddrPort
	guest  net.Conn
	last   atomic.Int64 // unix nanoseconds of the last datagram either way
}

func (s *udpSession) touch() { s.last.Store(time.Now().UnixNano()) }

// serveUDP reads the listener until it closes, handing each datagram to its
// client's session (opened on the client's first datagram).
func (fw *forward) serveUDP() {
	defer fw.f.wg.Done()
	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp)
	buf := *bp
	for {
		n, from, err := fw.pc.ReadFromUDPAddrPort(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) || fw.f.ctx.Err() != nil {
				return
			}
			fw.log.Warn("reading the UDP listener", "err", err)
			time.Sleep(5 * time.Millisecond) // no spin on a persistent error
			continue
		}
		s := fw.session(from)
		if s == nil {
			continue
		}
		s.touch()
		if _, err := s.guest.Write(buf[:n]); err != nil {
			fw.log.Debug("sending to the guest", "client", from, "err", err)
			continue
		}
		fw.bytesToGuest.Add(uint64(n))
	}
}

// session returns from's session, opening it if there is room; nil when
// the client is refused or the guest cannot be dialed. Only serveUDP calls
// it, so no two calls race to open one client's session.
func (fw *forward) session(from netip.AddrPort) *udpSession {
	fw.mu.Lock()
	if fw.closing {
		fw.mu.Unlock()
		return nil
	}
	s := fw.sessions[from]
	full := len(fw.sessions) >= fw.f.cfg.MaxSessions
	fw.mu.Unlock()
	if s != nil {
		return s
	}
	if full {
		fw.refuse(from.String(), fw.f.cfg.MaxSessions)
		return nil
	}
	g, err := fw.dialGuest(from.String())
	if err != nil {
		return nil
	}
	s = &udpSession{client: from, guest: g}
	s.touch()
	fw.mu.Lock()
	if fw.closing {
		fw.mu.Unlock()
		g.Close()
		return nil
	}
	fw.sessions[from] = s
	fw.mu.Unlock()
	fw.accepted.Add(1)
	fw.active.Add(1)
	fw.f.wg.Add(1)
	go fw.serveSession(s)
	fw.log.Debug("session open", "client", from)
	return s
}

// serveSession sends the guest's datagrams back to the client until the
// session has been idle for the idle timeout or is closed.
func (fw *forward) serveSession(s *udpSession) {
	defer fw.f.wg.Done()
	defer fw.active.Add(-1)
	defer func() {
		s.guest.Close()
		fw.mu.Lock()
		if fw.sessions[s.client] == s {
			delete(fw.sessions, s.client)
		}
		fw.mu.Unlock()
	}()
	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp)
	buf := *bp
	idle := fw.f.cfg.UDPIdle
	for {
		if err := s.guest.SetReadDeadline(time.Unix(0, s.last.Load()).Add(idle)); err != nil {
			return
		}
		n, err := s.guest.Read(buf)
		if n > 0 {
			s.touch()
			if _, werr := fw.pc.WriteToUDPAddrPort(buf[:n], s.client); werr == nil {
				fw.bytesFromGuest.Add(uint64(n))
			}
		}
		switch {
		case err == nil:
		case errors.Is(err, os.ErrDeadlineExceeded):
			if time.Since(time.Unix(0, s.last.Load())) >= idle {
				fw.log.Debug("session expired", "client", s.client, "idle", idle)
				return
			}
		case errors.Is(err, syscall.ECONNREFUSED):
			// An ICMP port unreachable from the guest: nothing listens
			// there now, but something may later.
		default:
			return
		}
	}
}
