//go:build js

package peer

import (
	"errors"
	"net"
	"sync"
	"syscall/js"

	"github.com/pion/webrtc/v4"
)

// linkPort is the switch port of one remote peer: the browser's
// RTCDataChannel, driven directly. pion's js data channel starts a goroutine
// per message; here onmessage copies the frame into a bounded inbox instead.
type linkPort struct {
	dc          js.Value
	maxBuffered int
	counters    linkPortCounters

	inbox     chan []byte
	done      chan struct{}
	onMessage js.Func
	onClose   js.Func
	closeOnce sync.Once
	out       js.Value // reused Uint8Array for sends
}

// inboxLen bounds frames received but not yet read by the switch.
const inboxLen = 512

var errLinkClosed = errors.New("peer: data channel closed")

func newLinkPort(dc *webrtc.DataChannel, maxBuffered int) (*linkPort, error) {
	p := &linkPort{
		dc:          dc.JSValue(),
		maxBuffered: maxBuffered,
		inbox:       make(chan []byte, inboxLen),
		done:        make(chan struct{}),
		out:         js.Global().Get("Uint8Array").New(maxLinkMessage),
	}
	p.dc.Set("binaryType", "arraybuffer")
	uint8Array := js.Global().Get("Uint8Array")
	p.onMessage = js.FuncOf(func(_ js.Value, args []js.Value) any {
		data := args[0].Get("data")
		if data.Type() == js.TypeString {
			return nil // frames are binary; text is not ours
		}
		n := data.Get("byteLength").Int()
		if n > MaxFrameSize {
			p.counters.oversize.Add(1)
			return nil
		}
		b := make([]byte, n)
		js.CopyBytesToGo(b, uint8Array.New(data))
		select {
		case p.inbox <- b:
		default:
			p.counters.busy.Add(1) // the switch is not keeping up: drop, as a full NIC ring would
		}
		return nil
	})
	p.onClose = js.FuncOf(func(js.Value, []js.Value) any {
		p.shut()
		return nil
	})
	p.dc.Set("onmessage", p.onMessage)
	p.dc.Set("onclose", p.onClose)
	return p, nil
}

func (p *linkPort) shut() {
	p.closeOnce.Do(func() { close(p.done) })
}

// Read implements Port.
func (p *linkPort) Read(b []byte) (int, error) {
	select {
	case f := <-p.inbox:
		return copy(b, f), nil
	case <-p.done:
		return 0, net.ErrClosed
	}
}

// Write implements Port. The browser's data channel never pushes back, and
// large send buffers freeze Chrome's channel for seconds, so the port keeps
// the buffer small and drops above the cap.
func (p *linkPort) Write(b []byte) (int, error) {
	select {
	case <-p.done:
		return 0, net.ErrClosed
	default:
	}
	if p.dc.Get("readyState").String() != "open" {
		return 0, errLinkClosed
	}
	if p.dc.Get("bufferedAmount").Int() > p.maxBuffered {
		p.counters.busy.Add(1)
		return 0, ErrDropped
	}
	js.CopyBytesToJS(p.out, b)
	p.dc.Call("send", p.out.Call("subarray", 0, len(b)))
	return len(b), nil
}

// Close implements Port.
func (p *linkPort) Close() error {
	p.shut()
	p.dc.Set("onmessage", js.Null())
	p.dc.Set("onclose", js.Null())
	p.dc.Call("close")
	p.onMessage.Release()
	p.onClose.Release()
	return nil
}
