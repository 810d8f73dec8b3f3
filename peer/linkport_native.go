//go:build !js

package peer

import (
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/pion/datachannel"
	"github.com/pion/webrtc/v4"

	"github.com/peerlan/peerlan/peer/ether"
)

// linkPort is the switch port of one remote peer: an open data channel,
// either a detached pion/webrtc one (detached channels skip pion's callback
// goroutine and its per-message copy) or a nativertc session's.
//
// On a link whose two peers negotiated offload (see negotiation), every
// message is an ether.Offload header (ether.VirtioNetHdrLen bytes) followed
// by the frame, which may then be a TCP super-frame, and the port is an
// OffloadPort; otherwise a message is exactly one frame.
type linkPort struct {
	ch          channel
	maxBuffered uint64
	offload     bool
	counters    linkPortCounters

	low       chan struct{} // a token when the send buffer fell below half the cap
	done      chan struct{} // closed by Close
	closeOnce sync.Once

	rbuf []byte // owned by the reader

	// Owned by the writer.
	wbuf  []byte      // header and frame of an offload message
	stall *time.Timer // bounds a wait for the send buffer to drain
}

// maxStall is how long a write waits for a full send buffer to drain before
// it drops the frame. A live link drains half a megabyte in milliseconds;
// one whose peer went silent should not hold the port's writer for long
// (its queue drops the oldest frames meanwhile), until ICE declares it dead.
const maxStall = 100 * time.Millisecond

// offloadSupported: native peers can take offloaded frames on a link (they
// finish the work themselves for a port that cannot), so they offer it.
const offloadSupported = true

// channel is an open data channel as a link port drives it; pion's
// datachannel.DataChannel is one. Read and Write move one message each;
// BufferedAmount counts the bytes written and not yet sent, and the
// function given to OnBufferedAmountLow runs when it falls to the
// threshold. Close resets the channel; a Read blocked then returns once
// the read deadline passes.
type channel interface {
	Read([]byte) (int, error)
	Write([]byte) (int, error)
	Close() error
	SetReadDeadline(time.Time) error
	BufferedAmount() uint64
	SetBufferedAmountLowThreshold(uint64)
	OnBufferedAmountLow(func())
}

// pcChannel is a pion/webrtc data channel, detached, as a channel.
type pcChannel struct {
	datachannel.ReadWriteCloser
	dc *webrtc.DataChannel
}

func (c pcChannel) BufferedAmount() uint64                  { return c.dc.BufferedAmount() }
func (c pcChannel) SetBufferedAmountLowThreshold(th uint64) { c.dc.SetBufferedAmountLowThreshold(th) }
func (c pcChannel) OnBufferedAmountLow(f func())            { c.dc.OnBufferedAmountLow(f) }

func (c pcChannel) SetReadDeadline(t time.Time) error {
	if d, ok := c.ReadWriteCloser.(datachannel.ReadDeadliner); ok {
		return d.SetReadDeadline(t)
	}
	return nil
}

// newPCLinkPort detaches dc, which has just opened, and drives it.
func newPCLinkPort(dc *webrtc.DataChannel, maxBuffered int) (*linkPort, error) {
	rw, err := dc.Detach()
	if err != nil {
		return nil, fmt.Errorf("peer: detach data channel: %w", err)
	}
	return newLinkPort(pcChannel{ReadWriteCloser: rw, dc: dc}, maxBuffered), nil
}

// newLinkPort drives ch.
func newLinkPort(ch channel, maxBuffered int) *linkPort {
	p := &linkPort{
		ch: ch, maxBuffered: uint64(maxBuffered),
		low: make(chan struct{}, 1), done: make(chan struct{}),
		rbuf: make([]byte, maxLinkMessage),
	}
	ch.SetBufferedAmountLowThreshold(p.maxBuffered / 2)
	ch.OnBufferedAmountLow(func() {
		select {
		case p.low <- struct{}{}:
		default:
		}
	})
	return p
}

// setOffload switches p to the offload message format; both sides of the
// link agreed on it before the channel opened.
func setOffload(p *linkPort, on bool) {
	p.offload = on
	if on {
		p.wbuf = make([]byte, ether.VirtioNetHdrLen+MaxOffloadFrameSize)
	}
}

// Read implements Port. On an offload link it returns only frames without
// work left (the switch reads such a link with ReadOffload).
func (p *linkPort) Read(b []byte) (int, error) {
	for {
		n, o, err := p.ReadOffload(b)
		if err != nil || o.IsZero() {
			return n, err
		}
		p.counters.oversize.Add(1)
	}
}

// Offloads implements OffloadPort.
func (p *linkPort) Offloads() bool { return p.offload }

// ReadOffload implements OffloadPort: the next frame and, on an offload
// link, the work its header says it needs. The switch checks that work
// against the frame before it relies on it.
func (p *linkPort) ReadOffload(b []byte) (int, ether.Offload, error) {
	for {
		n, err := p.ch.Read(p.rbuf)
		if err != nil {
			if errors.Is(err, io.ErrShortBuffer) {
				return 0, ether.Offload{}, fmt.Errorf("peer: remote peer sent a message over %d bytes: %w", maxLinkMessage, err)
			}
			return 0, ether.Offload{}, err
		}
		msg := p.rbuf[:n]
		var o ether.Offload
		if p.offload {
			if o, err = ether.ParseOffload(msg); err != nil {
				p.counters.oversize.Add(1)
				continue
			}
			// Whether the remote verified checksums is no business of
			// our kernel's: it checks for itself.
			o.DataValid = false
			msg = msg[ether.VirtioNetHdrLen:]
		}
		if len(msg) > len(b) {
			p.counters.oversize.Add(1)
			continue
		}
		return copy(b, msg), o, nil
	}
}

// Write implements Port.
func (p *linkPort) Write(b []byte) (int, error) { return p.WriteOffload(b, ether.Offload{}) }

// WriteOffload implements OffloadPort; work is only sent on an offload link
// (the switch finishes it for any other).
//
// An unreliable channel never pushes back on its sender, so the port paces
// itself: with more than maxBuffered bytes queued in the channel it waits for
// the channel to drain to half of that, as a NIC's ring stops its driver, and
// drops the frame (counting it) only when the channel stays full for
// maxStall. Waiting here instead of dropping at once is what keeps a TCP
// stream from losing a burst every time it outruns the channel: the frames
// wait in the switch's queue for this port, which drops the oldest only if
// the wait lasts.
func (p *linkPort) WriteOffload(b []byte, o ether.Offload) (int, error) {
	if p.ch.BufferedAmount() > p.maxBuffered && !p.waitDrain() {
		p.counters.busy.Add(1)
		return 0, ErrDropped
	}
	if !p.offload {
		if !o.IsZero() {
			return 0, errLinkNoOffload
		}
		return p.ch.Write(b)
	}
	o.Put(p.wbuf)
	n := copy(p.wbuf[ether.VirtioNetHdrLen:], b)
	if _, err := p.ch.Write(p.wbuf[:ether.VirtioNetHdrLen+n]); err != nil {
		return 0, err
	}
	return n, nil
}

var errLinkNoOffload = errors.New("peer: offloaded frame for a link without offload")

// waitDrain waits until the send buffer is at most maxBuffered, and reports
// false if that did not happen within maxStall or the port closed.
func (p *linkPort) waitDrain() bool {
	if p.stall == nil {
		p.stall = time.NewTimer(maxStall)
	} else {
		p.stall.Reset(maxStall)
	}
	defer p.stall.Stop()
	for p.ch.BufferedAmount() > p.maxBuffered {
		select {
		case <-p.low:
		case <-p.stall.C:
			return false
		case <-p.done:
			return false
		}
	}
	return true
}

// Close implements Port.
func (p *linkPort) Close() error {
	var err error
	p.closeOnce.Do(func() {
		close(p.done)
		err = p.ch.Close()
		// Closing only resets our outgoing stream: a Read returns once the
		// remote resets its side, never when the remote is gone (killed,
		// unplugged). The deadline ends it now.
		_ = p.ch.SetReadDeadline(time.Now())
	})
	return err
}

// ReadOffload is Read for the switch on an offload link; it reports the end
// of the port as Read does.
func (p *meshLinkPort) ReadOffload(b []byte) (int, ether.Offload, error) {
	n, o, err := p.linkPort.ReadOffload(b)
	if err != nil && !errors.Is(err, ErrDropped) {
		p.once.Do(func() { p.onEnd(err) })
	}
	return n, o, err
}
