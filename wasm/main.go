//go:build js && wasm

package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
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

	uint8Array  js.Value
	funcs       []js.Func   // the lan object's methods
	warnedThrow atomic.Bool // onframe threw; logged once
	warnedType  atomic.Bool // send got something other than bytes; logged once
	leaveOnce   sync.Once
	left        js.Value // the Promise leave returns
}

// startLAN starts a mesh and waits until the server welcomed it, or fails.
func startLAN(opts joinOptions) (*lan, error) {
	log := slog.New(newConsoleHandler(opts.LogLevel))
	l := &lan{opts: opts, log: log, done: make(chan struct{}), uint8Array: js.Global().Get("Uint8Array")}
	l.port = newGuestPort(l.deliver)
	l.obj = l.newObject()
	mesh, err := peer.NewMesh(peer.MeshConfig{
		Signal:      opts.Signal,
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
			return fmt.Errorf("the signaling server at %s did not welcome us within %v", l.opts.Signal, l.opts.Timeout)
		case <-tick.C:
			st := l.mesh.Status()
			if st.ID != "" {
				return nil
			}
			if st.Signal == "reconnecting" {
				// The first connection failed before any welcome: the browser
				// tells scripts nothing more about a failed WebSocket.
				return fmt.Errorf("cannot reach the signaling server at %s (is it running, and does it accept this page's origin?)", l.opts.Signal)
			}
		}
	}
}

// newObject builds the lan object JavaScript sees.
func (l *lan) newObject() js.Value {
	o := js.Global().Get("Object").New()
	o.Set("onframe", js.Null())
	for name, f := range map[string]func(js.Value, []js.Value) any{"send": l.jsSend, "status": l.jsStatus, "leave": l.jsLeave} {
		fn := js.FuncOf(f)
		l.funcs = append(l.funcs, fn)
		o.Set(name, fn)
	}
	return o
}

// release frees the methods of a lan object that was never handed out. (A
// lan handed out keeps them: a page may call status() after leave().)
func (l *lan) release() {
	for _, f := range l.funcs {
		f.Release()
	}
	l.funcs = nil
}

// jsSend implements lan.send(frame): true if the frame was queued.
func (l *lan) jsSend(_ js.Value, args []js.Value) any {
	if len(args) != 1 || !l.isBytes(args[0]) {
		l.port.badSize.Add(1)
		if !l.warnedType.Swap(true) {
			l.log.Error("lan.send wants one Uint8Array holding an Ethernet frame; dropping what it was given (logged once)")
		}
		return false
	}
	frame := args[0]
	err := l.port.Send(frame.Get("length").Int(), func(dst []byte) { js.CopyBytesToGo(dst, frame) })
	return err == nil
}

func (l *lan) isBytes(v js.Value) bool {
	return v.Type() == js.TypeObject && v.InstanceOf(l.uint8Array)
}

// deliver hands a frame to lan.onframe as a new Uint8Array of its own (the
// receiver may keep it). It runs on the switch's goroutine.
func (l *lan) deliver(frame []byte) error {
	if l.obj.Get("onframe").Type() != js.TypeFunction {
		return errNoReceiver
	}
	u8 := l.uint8Array.New(len(frame))
	js.CopyBytesToJS(u8, frame)
	err := catch(func() { l.obj.Call("onframe", u8) })
	if err != nil && !l.warnedThrow.Swap(true) {
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
	b, err := json.Marshal(status{MeshStatus: l.mesh.Status(), Guest: l.port.stats()})
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
