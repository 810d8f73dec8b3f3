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
)

// linkPort is the switch port of one remote peer: a detached data channel.
// Detached channels skip pion's callback goroutine and its per-message copy.
type linkPort struct {
	dc          *webrtc.DataChannel
	rw          datachannel.ReadWriteCloser
	maxBuffered uint64
	counters    linkPortCounters

	rbuf      []byte // owned by the reader
	closeOnce sync.Once
}

func newLinkPort(dc *webrtc.DataChannel, maxBuffered int) (*linkPort, error) {
	rw, err := dc.Detach()
	if err != nil {
		return nil, fmt.Errorf("peer: detach data channel: %w", err)
	}
	return &linkPort{dc: dc, rw: rw, maxBuffered: uint64(maxBuffered), rbuf: make([]byte, maxLinkMessage)}, nil
}

// Read implements Port.
func (p *linkPort) Read(b []byte) (int, error) {
	for {
		n, err := p.rw.Read(p.rbuf)
		if err != nil {
			if errors.Is(err, io.ErrShortBuffer) {
				return 0, fmt.Errorf("peer: remote peer sent a message over %d bytes: %w", maxLinkMessage, err)
			}
			return 0, err
		}
		if n > len(b) {
			p.counters.oversize.Add(1)
			continue
		}
		return copy(b, p.rbuf[:n]), nil
	}
}

// Write implements Port. Unreliable channels never push back on the sender,
// so the port caps the channel's send buffer itself and drops above the cap,
// as a congested Ethernet port would.
func (p *linkPort) Write(b []byte) (int, error) {
	if p.dc.BufferedAmount() > p.maxBuffered {
		p.counters.busy.Add(1)
		return 0, ErrDropped
	}
	return p.rw.Write(b)
}

// Close implements Port.
func (p *linkPort) Close() error {
	var err error
	p.closeOnce.Do(func() {
		err = p.rw.Close()
		// Closing only resets our outgoing stream: a Read returns once the
		// remote resets its side, never when the remote is gone (killed,
		// unplugged). The deadline ends it now.
		if d, ok := p.rw.(datachannel.ReadDeadliner); ok {
			_ = d.SetReadDeadline(time.Now())
		}
	})
	return err
}
