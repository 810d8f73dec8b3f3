package qemuport

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/peerlan/peerlan/peer"
)

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Log(string(bytes.TrimRight(b, "\n")))
	return len(b), nil
}

func listen(t *testing.T, mode Mode) (Port, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "q.sock")
	p, err := Listen(Config{Mode: mode, Path: path, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p, path
}

// fakeQEMU is QEMU's side of -netdev stream.
func dialStream(t *testing.T, path string) net.Conn {
	t.Helper()
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func frame(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = seed + byte(i)
	}
	return b
}

func framed(f []byte) []byte {
	return append(binary.BigEndian.AppendUint32(nil, uint32(len(f))), f...)
}

type readResult struct {
	b   []byte
	err error
}

func readAsync(p Port, size int) <-chan readResult {
	ch := make(chan readResult, 1)
	go func() {
		b := make([]byte, size)
		n, err := p.Read(b)
		ch <- readResult{b[:n], err}
	}()
	return ch
}

func wantRead(t *testing.T, ch <-chan readResult, want []byte) {
	t.Helper()
	select {
	case r := <-ch:
		if r.err != nil || !bytes.Equal(r.b, want) {
			t.Fatalf("Read = %d bytes, %v; want %d bytes", len(r.b), r.err, len(want))
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Read did not return")
	}
}

// writeEventually retries Write until a connection is attached (Write drops
// until the accept goroutine has seen it).
func writeEventually(t *testing.T, p Port, f []byte) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		_, err := p.Write(f)
		if err == nil {
			return
		}
		if !errors.Is(err, peer.ErrDropped) || time.Now().After(deadline) {
			t.Fatalf("Write: %v", err)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func readFramed(t *testing.T, c net.Conn) []byte {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	var hdr [4]byte
	if _, err := io.ReadFull(c, hdr[:]); err != nil {
		t.Fatal(err)
	}
	b := make([]byte, binary.BigEndian.Uint32(hdr[:]))
	if _, err := io.ReadFull(c, b); err != nil {
		t.Fatal(err)
	}
	return b
}

func TestParseAddr(t *testing.T) {
	for in, want := range map[string]Config{
		"unix:/a":        {Mode: Stream, Path: "/a"},
		"stream:unix:/a": {Mode: Stream, Path: "/a"},
		"dgram:unix:b":   {Mode: Dgram, Path: "b"},
		"connect:unix:c": {Mode: Stream, Path: "c", Connect: true},
	} {
		if got, err := ParseAddr(in); err != nil || got != want {
			t.Errorf("ParseAddr(%q) = %+v, %v; want %+v", in, got, err, want)
		}
	}
	for _, in := range []string{"", "/a", "unix:", "tcp:1.2.3.4:5", "dgram:/a", "connect:"} {
		if _, err := ParseAddr(in); err == nil {
			t.Errorf("ParseAddr(%q) accepted", in)
		}
	}
}

func TestStreamFraming(t *testing.T) {
	p, path := listen(t, Stream)
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("socket mode %v, %v; want 0600", fi.Mode(), err)
	}
	if _, err := p.Write(frame(60, 1)); !errors.Is(err, peer.ErrDropped) {
		t.Fatalf("Write with no QEMU = %v, want ErrDropped", err)
	}
	q := dialStream(t, path)

	// Guest to switch: two frames in one write, then one split into
	// single bytes (partial reads of header and body).
	a, b, c := frame(60, 1), frame(peer.MaxFrameSize, 2), frame(342, 3)
	ch := readAsync(p, peer.MaxFrameSize)
	if _, err := q.Write(append(framed(a), framed(b)...)); err != nil {
		t.Fatal(err)
	}
	wantRead(t, ch, a)
	wantRead(t, readAsync(p, peer.MaxFrameSize), b)
	ch = readAsync(p, peer.MaxFrameSize)
	for _, x := range framed(c) {
		q.Write([]byte{x})
		time.Sleep(time.Millisecond)
	}
	wantRead(t, ch, c)

	// A frame longer than the reader's buffer is dropped whole, and the
	// next one is intact.
	ch = readAsync(p, 100)
	q.Write(append(framed(frame(200, 4)), framed(a)...))
	wantRead(t, ch, a)

	// Switch to guest.
	writeEventually(t, p, c)
	if got := readFramed(t, q); !bytes.Equal(got, c) {
		t.Fatalf("QEMU got %d bytes, want %d", len(got), len(c))
	}
	// The writer counts a frame after its write returned, which may be
	// after QEMU's side read it.
	st := p.Stats()
	for deadline := time.Now().Add(time.Second); st.TxFrames == 0 && time.Now().Before(deadline); st = p.Stats() {
		time.Sleep(time.Millisecond)
	}
	if st.RxFrames != 4 || st.RxDropped != 1 || st.TxFrames != 1 || st.Connects != 1 {
		t.Errorf("stats %+v", st)
	}

	p.Close()
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Errorf("socket file after Close: %v", err)
	}
}

// TestStreamOversize: a length over MaxFrameSize (here 4 GiB - 1) ends that
// connection without allocating it; the port waits for the next one.
func TestStreamOversize(t *testing.T) {
	p, path := listen(t, Stream)
	ch := readAsync(p, peer.MaxFrameSize)
	q := dialStream(t, path)
	q.Write([]byte{0xff, 0xff, 0xff, 0xff, 1, 2, 3})
	q.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := q.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("QEMU side read %v after an oversize length, want EOF (closed)", err)
	}
	q2 := dialStream(t, path)
	f := frame(98, 5)
	q2.Write(framed(f))
	wantRead(t, ch, f)
	if st := p.Stats(); st.RxDropped != 1 || st.Connects != 2 {
		t.Errorf("stats %+v", st)
	}
}

// TestStreamReconnect: QEMU restarted; the new connection replaces the old,
// which is closed, and frames flow on the new one.
func TestStreamReconnect(t *testing.T) {
	p, path := listen(t, Stream)
	q1 := dialStream(t, path)
	writeEventually(t, p, frame(60, 1))
	readFramed(t, q1)

	q1.Close() // QEMU exited
	time.Sleep(20 * time.Millisecond)
	ch := readAsync(p, peer.MaxFrameSize)
	q2 := dialStream(t, path)
	f := frame(70, 2)
	q2.Write(framed(f))
	wantRead(t, ch, f)
	writeEventually(t, p, f)
	if got := readFramed(t, q2); !bytes.Equal(got, f) {
		t.Fatal("wrong frame on the new connection")
	}

	// A third connection while q2 is still open replaces q2.
	q3 := dialStream(t, path)
	q2.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := q2.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("replaced connection: read %v, want EOF", err)
	}
	ch = readAsync(p, peer.MaxFrameSize)
	q3.Write(framed(f))
	wantRead(t, ch, f)
}

// TestStreamSlowGuest: QEMU that does not read makes Write drop, never block.
func TestStreamSlowGuest(t *testing.T) {
	p, path := listen(t, Stream)
	dialStream(t, path) // never reads
	writeEventually(t, p, frame(60, 0))
	f := frame(peer.MaxFrameSize, 1)
	start := time.Now()
	dropped := 0
	for range 4000 {
		if _, err := p.Write(f); errors.Is(err, peer.ErrDropped) {
			dropped++
		} else if err != nil {
			t.Fatal(err)
		}
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("4000 writes to a stuck guest took %v", d)
	}
	if dropped == 0 {
		t.Error("no frame dropped for a guest that never reads")
	}
}

func TestStreamClose(t *testing.T) {
	p, path := listen(t, Stream)
	waiting := readAsync(p, 64) // no QEMU yet
	q := dialStream(t, path)
	_ = q
	time.Sleep(20 * time.Millisecond)
	p.Close()
	select {
	case r := <-waiting:
		if !errors.Is(r.err, net.ErrClosed) {
			t.Fatalf("Read after Close: %v, want net.ErrClosed", r.err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not unblock Read")
	}
	if _, err := p.Write(frame(60, 0)); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Write after Close: %v", err)
	}
	p.Close()
}

func TestStaleSocket(t *testing.T) {
	for _, mode := range []Mode{Stream, Dgram} {
		t.Run(mode.String(), func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "q.sock")
			// A socket file nobody is bound to any more (a killed run).
			network := map[Mode]string{Stream: "unix", Dgram: "unixgram"}[mode]
			l, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
			if err != nil {
				t.Fatal(err)
			}
			l.Close() // unixgram does not unlink: the file stays
			if _, err := os.Stat(path); err != nil {
				t.Fatal(err)
			}
			p, err := Listen(Config{Mode: mode, Path: path})
			if err != nil {
				t.Fatalf("stale socket not replaced: %v", err)
			}
			// A live one is refused.
			if _, err := Listen(Config{Mode: mode, Path: path}); !errors.Is(err, errInUse) {
				t.Fatalf("second Listen on %s: %v, want in use", network, err)
			}
			p.Close()
			// A file that is not a socket is never removed.
			os.WriteFile(path, []byte("x"), 0o600)
			if _, err := Listen(Config{Mode: mode, Path: path}); !errors.Is(err, errNotSocket) {
				t.Fatalf("Listen over a regular file: %v", err)
			}
		})
	}
}

// fakeDgramQEMU binds its own socket (QEMU's local.path).
func fakeDgramQEMU(t *testing.T, dir, name, remote string) *net.UnixConn {
	t.Helper()
	c, err := net.DialUnix("unixgram", &net.UnixAddr{Name: filepath.Join(dir, name), Net: "unixgram"},
		&net.UnixAddr{Name: remote, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func TestDgram(t *testing.T) {
	p, path := listen(t, Dgram)
	dir := t.TempDir()
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("socket mode %v, %v; want 0600", fi.Mode(), err)
	}
	if _, err := p.Write(frame(60, 0)); !errors.Is(err, peer.ErrDropped) {
		t.Fatalf("Write before QEMU sent anything = %v, want ErrDropped", err)
	}
	q := fakeDgramQEMU(t, dir, "qemu1.sock", path)
	a := frame(60, 1)
	ch := readAsync(p, peer.MaxFrameSize)
	q.Write(a)
	wantRead(t, ch, a)
	b := frame(peer.MaxFrameSize, 2)
	if _, err := p.Write(b); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 2000)
	q.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := q.Read(got); err != nil || !bytes.Equal(got[:n], b) {
		t.Fatalf("QEMU read %d, %v", n, err)
	}

	// Too long for the buffer (and for Ethernet): dropped, not truncated.
	ch = readAsync(p, peer.MaxFrameSize)
	q.Write(frame(9000, 3))
	q.Write(a)
	wantRead(t, ch, a)

	// QEMU restarted on another path: answers follow it.
	q2 := fakeDgramQEMU(t, dir, "qemu2.sock", path)
	ch = readAsync(p, peer.MaxFrameSize)
	q2.Write(a)
	wantRead(t, ch, a)
	if _, err := p.Write(b); err != nil {
		t.Fatal(err)
	}
	q2.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := q2.Read(got); err != nil || n != len(b) {
		t.Fatalf("restarted QEMU read %d, %v", n, err)
	}

	// A guest that does not read: Write drops without blocking.
	start := time.Now()
	dropped := 0
	for range 4000 {
		if _, err := p.Write(b); errors.Is(err, peer.ErrDropped) {
			dropped++
		}
	}
	if d := time.Since(start); d > 2*time.Second || dropped == 0 {
		t.Errorf("4000 writes to a stuck guest: %v, %d dropped", d, dropped)
	}
	// QEMU gone: drops, no error beyond that.
	q2.Close()
	if _, err := p.Write(b); !errors.Is(err, peer.ErrDropped) {
		t.Errorf("Write to a gone QEMU: %v", err)
	}
	st := p.Stats()
	if st.RxDropped != 1 || st.Connects != 2 || st.RxFrames != 3 {
		t.Errorf("stats %+v", st)
	}

	ch = readAsync(p, 64)
	time.Sleep(10 * time.Millisecond)
	p.Close()
	select {
	case r := <-ch:
		if !errors.Is(r.err, net.ErrClosed) {
			t.Fatalf("Read after Close: %v", r.err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not unblock Read")
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Errorf("socket file after Close: %v", err)
	}
}

// TestStreamConnect: QEMU listens (server=on); the port connects, and
// connects again when QEMU closes the connection or is restarted.
func TestStreamConnect(t *testing.T) {
	path := filepath.Join(t.TempDir(), "qemu.sock")
	p, err := Listen(Config{Path: path, Connect: true, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	// One reader for the whole test, as the switch's: its pending Read is
	// how the port sees QEMU's side close.
	frames := make(chan readResult, 16)
	go func() {
		for {
			b := make([]byte, peer.MaxFrameSize)
			n, err := p.Read(b)
			frames <- readResult{b[:n], err}
			if err != nil {
				return
			}
		}
	}()
	f := frame(80, 7)
	exchange := func(ln net.Listener, what string) net.Conn {
		t.Helper()
		ln.(*net.UnixListener).SetDeadline(time.Now().Add(5 * time.Second))
		q, err := ln.Accept()
		if err != nil {
			t.Fatalf("%s: the port did not connect: %v", what, err)
		}
		q.Write(framed(f))
		wantRead(t, frames, f)
		writeEventually(t, p, f)
		if got := readFramed(t, q); !bytes.Equal(got, f) {
			t.Fatalf("%s: wrong frame", what)
		}
		return q
	}
	time.Sleep(50 * time.Millisecond) // the port tries before QEMU is up
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	exchange(ln, "first connection").Close()
	exchange(ln, "QEMU closed the connection").Close()
	ln.Close() // QEMU exits, and is started again
	if ln, err = net.Listen("unix", path); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	exchange(ln, "QEMU restarted")
	if st := p.Stats(); st.Connects != 3 {
		t.Errorf("stats %+v, want 3 connections", st)
	}
	p.Close()
	select {
	case r := <-frames:
		if !errors.Is(r.err, net.ErrClosed) {
			t.Fatalf("Read after Close: %v", r.err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not unblock Read")
	}
}
