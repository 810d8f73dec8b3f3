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
// RTCDataChannel, driven directly rather than through pion's js data
// channel (which starts a goroutine per message).
//
// A few lines of JavaScript (linkPortJS) are the port's browser half, so
// that a frame crosses between Go and JavaScript as bytes in a staging
// Uint8Array plus a number: no js.Value is made per frame (each one costs Go
// a finalizer, the largest Go cost per frame in a CPU profile).
//
//   - Receiving: onmessage copies a binary message into rx and calls the
//     port with its length; the port copies it into a buffer of its own and
//     queues it in a bounded inbox for Read (full: dropped and counted, as a
//     full NIC ring would drop it).
//   - Sending: Write copies the frame into tx and has the channel send it,
//     while the channel's bufferedAmount is at most highWater. Above it, or
//     while older frames wait, the frame joins a bounded queue of the port's
//     own, and the channel's bufferedamountlow event (fired when the amount
//     falls to lowWater) sends queued frames until the amount is above
//     highWater again. A full queue drops its oldest frame, counted as busy.
//
// Pacing is needed because an unreliable channel never pushes back, and
// because bufferedAmount only falls between JavaScript tasks: the guest's
// NIC hands over a burst of frames in one task (a TCP window), and a cap on
// bufferedAmount alone dropped every frame of the burst past the cap even on
// an idle channel.
type linkPort struct {
	dc       js.Value
	send     js.Value // send(n): sends tx[:n]; returns bufferedAmount after, or -1 if the channel refused
	tx, rx   js.Value // staging Uint8Arrays of MaxFrameSize bytes
	counters linkPortCounters

	highWater int

	inbox    chan *inFrame
	inFrames sync.Pool // *inFrame
	done     chan struct{}
	onFrame  js.Func
	onLow    js.Func
	onClose  js.Func
	shutOnce sync.Once
	freeOnce sync.Once

	// mu guards the send side. It is held while calling into JavaScript,
	// which never calls back into the port synchronously.
	mu       sync.Mutex
	buffered int // the channel's bufferedAmount as last read
	queue    sendQueue
}

// inFrame is one received frame waiting for Read.
type inFrame struct {
	n int
	b [MaxFrameSize]byte
}

// Pacing and queue sizes. Measured with BenchmarkBrowserDirectVsRelayed (a
// 16 MiB wget between two guests) and TestBrowserLANBurst; see
// docs/architecture.md ("Browser peers") for the numbers.
const (
	// inboxLen bounds frames received but not yet read by the switch. The
	// switch reads in the same JavaScript task that delivered the frame, so
	// this fills only when the Go side is starved.
	inboxLen = 512

	// sendQueueLen bounds the frames a link holds while the channel's
	// buffer is above its high-water mark. The guest's NIC hands over
	// whatever its TCP stack queued in one task (v86's virtio ring has 1024
	// slots), so no queue absorbs every burst; measured with a 16 MiB wget
	// and the 16 KiB high-water mark (MB/s, drops on the sending link, two
	// or four interleaved runs): no queue 0.87-0.90 with 256-274 drops; 64
	// frames 1.10-1.14, 10-19 drops; 128 frames 1.21-1.25, 0-6 drops; 256
	// frames 1.20-1.25, no drops; 512 frames 1.22, no drops. 256 frames is
	// the smallest queue that never dropped; a full one is 390 KB, about
	// 20 ms at what the channel drains on loopback. Slots are allocated as
	// they are first used.
	sendQueueLen = 256
)

var errLinkClosed = errors.New("peer: data channel closed")

// linkPortJS makes the JavaScript half of a link port. It sets the
// channel's handlers and returns send.
const linkPortJS = `(dc, rx, tx, maxFrame, lowWater, onFrame, onLow, onClose) => {
  dc.binaryType = "arraybuffer";
  dc.bufferedAmountLowThreshold = lowWater;
  dc.onmessage = (e) => {
    const d = e.data;
    if (typeof d === "string") return; // frames are binary; text is not ours
    const n = d.byteLength;
    if (n > maxFrame) { onFrame(-1); return; }
    rx.set(new Uint8Array(d));
    onFrame(n);
  };
  dc.onbufferedamountlow = () => onLow();
  dc.onclose = () => onClose();
  return (n) => {
    try {
      dc.send(tx.subarray(0, n));
    } catch (err) {
      return -1; // not open (closing or closed)
    }
    return dc.bufferedAmount;
  };
}`

// newLinkPortJS is linkPortJS compiled, once per page.
var newLinkPortJS = sync.OnceValue(func() js.Value {
	return js.Global().Get("Function").New("return " + linkPortJS).Invoke()
})

// newPCLinkPort drives dc. maxBuffered is the high-water mark of the
// channel's send buffer (MeshConfig.MaxBuffered).
func newPCLinkPort(dc *webrtc.DataChannel, maxBuffered int) (*linkPort, error) {
	uint8Array := js.Global().Get("Uint8Array")
	p := &linkPort{
		dc:        dc.JSValue(),
		tx:        uint8Array.New(MaxFrameSize),
		rx:        uint8Array.New(MaxFrameSize),
		highWater: maxBuffered,
		inbox:     make(chan *inFrame, inboxLen),
		inFrames:  sync.Pool{New: func() any { return new(inFrame) }},
		done:      make(chan struct{}),
	}
	p.queue.init(sendQueueLen)
	p.onFrame = js.FuncOf(func(_ js.Value, args []js.Value) any {
		p.received(args[0].Int())
		return nil
	})
	p.onLow = js.FuncOf(func(js.Value, []js.Value) any {
		p.drain()
		return nil
	})
	p.onClose = js.FuncOf(func(js.Value, []js.Value) any {
		p.shut()
		return nil
	})
	p.send = newLinkPortJS().Invoke(p.dc, p.rx, p.tx, MaxFrameSize, lowWater(maxBuffered), p.onFrame, p.onLow, p.onClose)
	p.buffered = p.dc.Get("bufferedAmount").Int()
	return p, nil
}

// lowWater is where the channel asks for more (bufferedamountlow): half the
// high-water mark, so that each event refills a few frames rather than one.
// The choice hardly matters: 0, half and the high-water mark less one frame
// measured 1.27-1.31, 1.25-1.29 and 1.23-1.27 MB/s (two interleaved runs
// each), within the runs' noise.
func lowWater(highWater int) int { return highWater / 2 }

// received takes the frame of n bytes in rx (n < 0: an oversize message).
func (p *linkPort) received(n int) {
	if n < 0 {
		p.counters.oversize.Add(1)
		return
	}
	if len(p.inbox) == cap(p.inbox) {
		p.counters.busy.Add(1) // the switch is not keeping up
		return
	}
	f := p.inFrames.Get().(*inFrame)
	f.n = js.CopyBytesToGo(f.b[:n], p.rx)
	select {
	case p.inbox <- f:
	default:
		p.inFrames.Put(f)
		p.counters.busy.Add(1)
	}
}

func (p *linkPort) shut() {
	p.shutOnce.Do(func() { close(p.done) })
}

func (p *linkPort) closed() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Read implements Port.
func (p *linkPort) Read(b []byte) (int, error) {
	select {
	case f := <-p.inbox:
		n := copy(b, f.b[:f.n])
		p.inFrames.Put(f)
		return n, nil
	case <-p.done:
		return 0, net.ErrClosed
	}
}

// Write implements Port. It never blocks: the frame goes to the channel, or
// waits in the port's queue while the channel's buffer is above the
// high-water mark (see linkPort).
func (p *linkPort) Write(b []byte) (int, error) {
	if p.closed() {
		return 0, net.ErrClosed
	}
	if len(b) > MaxFrameSize {
		return 0, errFrameTooBig
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.queue.len() == 0 && p.buffered <= p.highWater {
		if err := p.sendLocked(b); err != nil {
			return 0, err
		}
		return len(b), nil
	}
	if p.queue.push(b) {
		p.counters.busy.Add(1) // the oldest queued frame made room
	}
	return len(b), nil
}

var errFrameTooBig = errors.New("peer: frame larger than MaxFrameSize")

// sendLocked sends b on the channel now. p.mu must be held.
func (p *linkPort) sendLocked(b []byte) error {
	js.CopyBytesToJS(p.tx, b)
	n := p.send.Invoke(len(b)).Int()
	if n < 0 {
		return errLinkClosed
	}
	p.buffered = n
	return nil
}

// drain sends queued frames until the channel's buffer is above the
// high-water mark again. It runs on bufferedamountlow.
func (p *linkPort) drain() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.buffered = p.dc.Get("bufferedAmount").Int()
	for p.queue.len() > 0 && p.buffered <= p.highWater {
		if err := p.sendLocked(p.queue.front()); err != nil {
			p.queue.clear() // the channel is closing; onclose ends the port
			return
		}
		p.queue.pop()
	}
}

// Close implements Port.
func (p *linkPort) Close() error {
	p.shut()
	p.freeOnce.Do(func() {
		for _, h := range []string{"onmessage", "onbufferedamountlow", "onclose"} {
			p.dc.Set(h, js.Null())
		}
		p.dc.Call("close")
		p.onFrame.Release()
		p.onLow.Release()
		p.onClose.Release()
		p.mu.Lock()
		p.queue.clear()
		p.mu.Unlock()
	})
	return nil
}

// sendQueue is a bounded FIFO of frames whose slots are allocated on first
// use and then reused, so an idle link holds no buffers.
type sendQueue struct {
	slots      [][]byte
	head, size int
}

func (q *sendQueue) init(n int) { q.slots = make([][]byte, n) }

func (q *sendQueue) len() int { return q.size }

// push appends a copy of b. When the queue is full it drops the oldest
// frame to make room and reports true.
func (q *sendQueue) push(b []byte) (dropped bool) {
	if q.size == len(q.slots) {
		q.pop()
		dropped = true
	}
	i := (q.head + q.size) % len(q.slots)
	if q.slots[i] == nil {
		q.slots[i] = make([]byte, 0, MaxFrameSize)
	}
	q.slots[i] = append(q.slots[i][:0], b...)
	q.size++
	return dropped
}

// front returns the oldest frame; the queue must not be empty.
func (q *sendQueue) front() []byte { return q.slots[q.head] }

func (q *sendQueue) pop() {
	q.head = (q.head + 1) % len(q.slots)
	q.size--
}

func (q *sendQueue) clear() { q.head, q.size = 0, 0 }
