//go:build js && wasm

package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"syscall/js"
	"time"

	"github.com/peerlan/peerlan/peer"
)

func main() {
	api := js.Global().Get("Object").New()
	api.Set("version", version())
	api.Set("join", js.FuncOf(join))
	js.Global().Set("peerlan", api)
	select {} // serve calls from JavaScript for the page's lifetime
}

// join implements peerlan.join(options): it returns a Promise of a lan.
func join(_ js.Value, args []js.Value) any {
	return newPromise(func(resolve, reject func(any)) {
		opts, err := joinArgs(args)
		if err != nil {
			reject(jsError("peerlan.join: " + err.Error()))
			return
		}
		// Joining waits for the server: not on the calling JavaScript
		// task, which must return for the browser to make progress.
		go func() {
			l, err := startLAN(opts)
			if err != nil {
				reject(jsError("peerlan.join: " + err.Error()))
				return
			}
			resolve(l.obj)
		}()
	})
}

func joinArgs(args []js.Value) (joinOptions, error) {
	if len(args) != 1 || args[0].Type() != js.TypeObject {
		return joinOptions{}, errors.New("want one options object, e.g. peerlan.join({signal: \"wss://host/signal\", room: \"name\"})")
	}
	var data string
	if err := catch(func() { data = js.Global().Get("JSON").Call("stringify", args[0]).String() }); err != nil {
		return joinOptions{}, fmt.Errorf("options cannot be read: %w", err)
	}
	return parseOptions([]byte(data))
}

// lan is one joined room: the value join resolves to.
type lan struct {
	opts   joinOptions
	log    *slog.Logger
	mesh   *peer.Mesh
	port   *guestPort
	obj    js.Value // the JavaScript lan object
	cancel context.CancelFunc
	done   chan struct{} // closed when the mesh's Run returned
	runErr error         // Run's result, valid after done

	// The lan object's JavaScript half (lanJS) and what Go shares with it.
	half    js.Value // {lan, deliver, close, stage, lens, rx, error}
	deliver js.Value // half.deliver(n): hands rx[:n] to lan.onframe
	stage   js.Value // the frames lan.send accepted, end to end
	lens    js.Value // their lengths (Uint16Array, seen as bytes)
	rx      js.Value // the frame for the guest that deliver hands over

	// Owned by flush, which only JavaScript's microtask calls.
	stageBuf []byte
	lensBuf  []byte
	lensU16  []uint16

	funcs       []js.Func   // the Go functions behind the lan object
	warnedThrow atomic.Bool // onframe threw; logged once
	warnedType  atomic.Bool // send got something other than bytes; logged once
	leaveOnce   sync.Once
	left        js.Value // the Promise leave returns
}

// stageFrames is how many frames lan.send collects before it hands them to
// Go (see lanJS). A guest's NIC hands over a TCP window in one task, and a
// call into Go costs about as much as forwarding a frame, so a burst costs
// one call rather than one per frame. It must not exceed guestQueueLen:
// the switch reads the guest's queue only after the call returns.
const stageFrames = 64

// quietSpell is how long the guest must have sent nothing for its next
// frame to go into Go at once rather than at the end of the task (see
// lanJS): a ping or the first frame of an exchange waits for nothing, while
// a stream's bursts cost one call into Go each.
const quietSpell = 20 * time.Millisecond

// lanJS makes the JavaScript half of a lan object: lan.send checks a frame
// and copies it into the stage, which crosses into Go as bytes in a shared
// buffer plus a count, so no js.Value is made per frame. The first frame
// after a quiet spell goes into Go at once (a ping waits for nothing);
// other frames wait for the end of the JavaScript task (a microtask) and go
// together, or earlier when the stage is full. Measured in the pinged guest
// of BenchmarkBrowserDirectVsRelayed: lan.send to RTCDataChannel.send took
// 135-160 µs going at once and 380 µs waiting for the task's end; a 16 MiB
// wget's sender made 1,213 calls into Go for 11,667 frames. deliver
// (called by Go) hands a frame of rx to lan.onframe and reports how that
// went: 0 delivered, 1 no onframe function, 2 onframe threw (the exception
// is kept in error).
const lanJS = `(maxFrame, stageFrames, quietMs, goFlush, goRefuse, goStatus, goLeave) => {
  const stage = new Uint8Array(stageFrames * maxFrame);
  const lens = new Uint16Array(stageFrames);
  const rx = new Uint8Array(maxFrame);
  let count = 0, used = 0, taskOpen = false, closed = false, lastSend = -Infinity;
  const half = {stage, lens: new Uint8Array(lens.buffer), rx, error: null};
  const flush = () => {
    const n = count;
    if (n === 0) return;
    count = 0;
    used = 0;
    goFlush(n); // Go copies the stage before anything it calls can send again
  };
  const endTask = () => { taskOpen = false; flush(); };
  const lan = {
    onframe: null,
    send(frame) {
      if (!(frame instanceof Uint8Array)) { goRefuse(1); return false; }
      const n = frame.length;
      if (n === 0 || n > maxFrame) { goRefuse(2); return false; }
      if (closed) return false;
      if (count === stageFrames) flush();
      stage.set(frame, used);
      lens[count++] = n;
      used += n;
      const now = performance.now(), quiet = now - lastSend >= quietMs;
      lastSend = now;
      if (!taskOpen) {
        taskOpen = true;
        queueMicrotask(endTask);
        if (quiet) flush(); // the first frame after a quiet spell goes at once
      }
      return true;
    },
    status: goStatus,
    leave: goLeave,
  };
  half.lan = lan;
  half.deliver = (n) => {
    const f = lan.onframe;
    if (typeof f !== "function") return 1;
    try {
      f(rx.slice(0, n));
    } catch (err) {
      half.error = err;
      return 2;
    }
    return 0;
  };
  half.close = () => { closed = true; count = 0; used = 0; };
  return half;
}`

// newLanJS is lanJS compiled, once per page.
var newLanJS = sync.OnceValue(func() js.Value {
	return js.Global().Get("Function").New("return " + lanJS).Invoke()
})

// startLAN starts a mesh and waits until the server welcomed it, or fails.
func startLAN(opts joinOptions) (*lan, error) {
	log := slog.New(newConsoleHandler(opts.LogLevel))
	l := &lan{opts: opts, log: log, done: make(chan struct{})}
	l.port = newGuestPort(l.deliverFrame)
	l.obj = l.newObject()
	mesh, err := peer.NewMesh(peer.MeshConfig{
		Signal:      strings.Join(opts.Signal, ","),
		Room:        opts.Room,
		Token:       opts.Token,
		Relay:       opts.Relay,
		Local:       l.port,
		MaxBuffered: peer.BrowserMaxBuffered,
		ICEServers:  opts.ICEServers,
		Logger:      log,
	})
	if err != nil {
		l.release()
		return nil, err
	}
	l.mesh = mesh
	ctx, cancel := context.WithCancel(context.Background())
	l.cancel = cancel
	go func() {
		defer close(l.done)
		l.runErr = mesh.Run(ctx)
	}()
	if err := l.waitJoined(); err != nil {
		cancel()
		<-l.done
		l.release()
		return nil, err
	}
	return l, nil
}

// joinPoll is how often join checks whether the server has welcomed us.
const joinPoll = 20 * time.Millisecond

func (l *lan) waitJoined() error {
	deadline := time.NewTimer(l.opts.Timeout)
	defer deadline.Stop()
	tick := time.NewTicker(joinPoll)
	defer tick.Stop()
	for {
		select {
		case <-l.done:
			if l.runErr != nil {
				return fmt.Errorf("the signaling server refused to join room %q: %w", l.opts.Room, l.runErr)
			}
			return errors.New("the mesh stopped before it joined")
		case <-deadline.C:
			return fmt.Errorf("the signaling server at %s did not welcome us within %v", l.opts.servers(), l.opts.Timeout)
		case <-tick.C:
			st := l.mesh.Status()
			if st.ID != "" {
				return nil
			}
			if st.Signal == "reconnecting" {
				// The first round of connections (one to each URL) failed
				// before any welcome: the browser tells scripts nothing more
				// about a failed WebSocket.
				return fmt.Errorf("cannot reach the signaling server at %s (is it running, and does it accept this page's origin?)", l.opts.servers())
			}
		}
	}
}

// newObject builds the lan object JavaScript sees (see lanJS).
func (l *lan) newObject() js.Value {
	fn := func(f func(js.Value, []js.Value) any) js.Func {
		jf := js.FuncOf(f)
		l.funcs = append(l.funcs, jf)
		return jf
	}
	l.half = newLanJS().Invoke(peer.MaxFrameSize, stageFrames, quietSpell.Seconds()*1000,
		fn(l.jsFlush), fn(l.jsRefuse), fn(l.jsStatus), fn(l.jsLeave))
	l.deliver = l.half.Get("deliver")
	l.stage = l.half.Get("stage")
	l.lens = l.half.Get("lens")
	l.rx = l.half.Get("rx")
	l.stageBuf = make([]byte, stageFrames*peer.MaxFrameSize)
	l.lensBuf = make([]byte, 2*stageFrames)
	l.lensU16 = make([]uint16, stageFrames)
	return l.half.Get("lan")
}

// release frees the methods of a lan object that was never handed out. (A
// lan handed out keeps them: a page may call status() after leave().)
func (l *lan) release() {
	for _, f := range l.funcs {
		f.Release()
	}
	l.funcs = nil
}

// jsFlush takes the n frames lan.send staged (see lanJS).
func (l *lan) jsFlush(_ js.Value, args []js.Value) any {
	n := min(args[0].Int(), stageFrames)
	js.CopyBytesToGo(l.lensBuf[:2*n], l.lens)
	total := 0
	for i := range n {
		// A Uint16Array has the platform's byte order, little-endian in
		// every browser that runs wasm.
		l.lensU16[i] = uint16(l.lensBuf[2*i]) | uint16(l.lensBuf[2*i+1])<<8
		total += int(l.lensU16[i])
	}
	total = min(total, len(l.stageBuf))
	js.CopyBytesToGo(l.stageBuf[:total], l.stage)
	l.port.SendBatch(l.lensU16[:n], l.stageBuf[:total])
	return nil
}

// jsRefuse counts a frame lan.send refused: kind 1 was not a Uint8Array,
// kind 2 had a bad size.
func (l *lan) jsRefuse(_ js.Value, args []js.Value) any {
	l.port.badSize.Add(1)
	if args[0].Int() == 1 && !l.warnedType.Swap(true) {
		l.log.Error("lan.send wants one Uint8Array holding an Ethernet frame; dropping what it was given (logged once)")
	}
	return nil
}

// deliverFrame hands a frame to lan.onframe as a new Uint8Array of its own
// (the receiver may keep it). It runs on the switch's goroutine.
func (l *lan) deliverFrame(frame []byte) error {
	js.CopyBytesToJS(l.rx, frame)
	switch l.deliver.Invoke(len(frame)).Int() {
	case 0:
		return nil
	case 1:
		return errNoReceiver
	}
	err := errors.New(l.half.Get("error").Call("toString").String())
	if !l.warnedThrow.Swap(true) {
		l.log.Error("lan.onframe threw; the frame is dropped (logged once; see status().guest)", "err", err)
	}
	return err
}

// status is lan.status(): peer.MeshStatus plus the guest port's counters.
type status struct {
	peer.MeshStatus
	Guest guestPortStats `json:"guest"`
}

func (l *lan) jsStatus(js.Value, []js.Value) any {
	st := status{MeshStatus: l.mesh.Status(), Guest: l.port.stats()}
	b, err := json.Marshal(st)
	if err != nil { // cannot happen: every field marshals
		return jsError("peerlan: status: " + err.Error())
	}
	return js.Global().Get("JSON").Call("parse", string(b))
}

// jsLeave implements lan.leave(): it leaves the room and returns a Promise
// that resolves once the mesh has stopped. Calling it again returns the same
// Promise.
func (l *lan) jsLeave(js.Value, []js.Value) any {
	l.leaveOnce.Do(func() {
		l.half.Call("close") // lan.send refuses from now on
		l.cancel()
		l.left = newPromise(func(resolve, _ func(any)) {
			go func() {
				<-l.done
				resolve(js.Undefined())
			}()
		})
	})
	return l.left
}

// ---- JavaScript helpers ----

// newPromise returns a JavaScript Promise whose executor is run.
func newPromise(run func(resolve, reject func(any))) js.Value {
	var executor js.Func
	executor = js.FuncOf(func(_ js.Value, args []js.Value) any {
		resolve, reject := args[0], args[1]
		run(func(v any) { resolve.Invoke(v) }, func(v any) { reject.Invoke(v) })
		return nil
	})
	p := js.Global().Get("Promise").New(executor)
	executor.Release()
	return p
}

// jsError returns a new JavaScript Error.
func jsError(msg string) js.Value {
	return js.Global().Get("Error").New(msg)
}

// catch runs f and returns the JavaScript exception it raised, if any.
func catch(f func()) (err error) {
	defer func() {
		if r := recover(); r != nil {
			if e, ok := r.(error); ok {
				err = e
				return
			}
			err = fmt.Errorf("%v", r)
		}
	}()
	f()
	return nil
}
