package portfwd

import (
	"errors"
	"io"
	"net"
	"sync"
	"time"
)

// bufPool holds the copy buffers: two per open TCP connection, one per UDP
// session plus one per UDP listener.
var bufPool = sync.Pool{New: func() any { b := make([]byte, bufSize); return &b }}

// acceptBackoffMax bounds the pause after a failing Accept (EMFILE and
// the like), so that a full file table does not spin the loop.
const acceptBackoffMax = time.Second

// serveTCP accepts until the listener closes.
func (fw *forward) serveTCP() {
	defer fw.f.wg.Done()
	var backoff time.Duration
	for {
		c, err := fw.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) || fw.f.ctx.Err() != nil {
				return
			}
			backoff = min(max(2*backoff, 5*time.Millisecond), acceptBackoffMax)
			fw.log.Warn("accept failed; retrying", "err", err, "backoff", backoff)
			select {
			case <-time.After(backoff):
			case <-fw.f.ctx.Done():
				return
			}
			continue
		}
		backoff = 0
		// The limit is checked before anything is spent on the connection:
		// the refused one is closed at once.
		if fw.active.Add(1) > int64(fw.f.cfg.MaxConns) {
			fw.active.Add(-1)
			fw.refuse(c.RemoteAddr().String(), fw.f.cfg.MaxConns) // counted before the client can see the close
			c.Close()
			continue
		}
		if !fw.track(c) {
			fw.active.Add(-1)
			c.Close()
			return
		}
		fw.accepted.Add(1)
		fw.f.wg.Add(1)
		go fw.handleTCP(c)
	}
}

// handleTCP dials the guest for client c and copies both ways until both
// directions ended.
func (fw *forward) handleTCP(c net.Conn) {
	defer fw.f.wg.Done()
	defer fw.active.Add(-1)
	defer func() { c.Close(); fw.untrack(c) }()
	client := c.RemoteAddr().String()
	g, err := fw.dialGuest(client)
	if err != nil {
		return
	}
	if !fw.track(g) {
		g.Close()
		return
	}
	defer func() { g.Close(); fw.untrack(g) }()
	fw.log.Debug("connection open", "client", client)
	done := make(chan struct{})
	go func() {
		defer close(done)
		pipe(g, c, fw.bytesToGuest.Add)
	}()
	pipe(c, g, fw.bytesFromGuest.Add)
	<-done
	fw.log.Debug("connection closed", "client", client)
}

// pipe copies src to dst through a pooled 64 KiB buffer, counting bytes
// with count as they go (a long connection shows in the metrics while it
// lasts). At src's EOF it half-closes dst, so that a client that shut its
// write side still gets the answer; on any error it closes both, which
// ends the other direction as well.
func pipe(dst, src net.Conn, count func(uint64) uint64) {
	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp)
	buf := *bp
	for {
		n, rerr := src.Read(buf)
		if n > 0 {
			w, werr := dst.Write(buf[:n])
			count(uint64(w))
			if werr != nil {
				dst.Close()
				src.Close()
				return
			}
		}
		if rerr == nil {
			continue
		}
		cw, ok := dst.(interface{ CloseWrite() error })
		if errors.Is(rerr, io.EOF) && ok && cw.CloseWrite() == nil {
			return
		}
		dst.Close()
		src.Close()
		return
	}
}
