package relay

import (
	"fmt"
	"net"
	"runtime"
	"sync/atomic"
	"testing"
	"time"
)

func listenUDP4(tb testing.TB) *net.UDPConn {
	tb.Helper()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = c.Close() })
	return c
}

// Datagrams that arrive together come back one by one, in order, with their
// sources; queued datagrams leave when the reader next runs out of input,
// and one the kernel refuses is counted without holding back the others.
func TestBatchConn(t *testing.T) {
	var dropped atomic.Int64
	bc := newBatchConn(listenUDP4(t), func(n int) { dropped.Add(int64(n)) })
	if !bc.batchSend {
		t.Fatal("an IPv4 socket should batch its sends")
	}
	src := listenUDP4(t)
	const n = batchSize + 5 // more than one batch
	for i := range n {
		if _, err := src.WriteTo(fmt.Appendf(nil, "d%02d", i), bc.LocalAddr()); err != nil {
			t.Fatal(err)
		}
	}
	buf := make([]byte, 64)
	for i := range n {
		_ = bc.SetReadDeadline(time.Now().Add(2 * time.Second))
		k, from, err := bc.ReadFrom(buf)
		if err != nil {
			t.Fatal(err)
		}
		if want := fmt.Sprintf("d%02d", i); string(buf[:k]) != want || from.String() != src.LocalAddr().String() {
			t.Fatalf("read %q from %v, want %q from %v", buf[:k], from, want, src.LocalAddr())
		}
	}

	dst := src.LocalAddr().(*net.UDPAddr)
	for i, to := range []*net.UDPAddr{dst, {IP: net.IPv4(127, 0, 0, 1), Port: 0}, dst} {
		b := bc.sendBuffer()
		bc.queue(copy(b, fmt.Sprintf("q%d", i)), to)
	}
	_ = src.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	if k, _, err := src.ReadFrom(buf); err == nil {
		t.Fatalf("%q left before a flush", buf[:k])
	}
	// The next read finds no input left and flushes first.
	go func() { _, _, _ = bc.ReadFrom(buf) }()
	got := make([]byte, 64)
	for _, want := range []string{"q0", "q2"} {
		_ = src.SetReadDeadline(time.Now().Add(2 * time.Second))
		k, _, err := src.ReadFrom(got)
		if err != nil || string(got[:k]) != want {
			t.Fatalf("got %q (%v), want %q", got[:k], err, want)
		}
	}
	_ = bc.Close()
	if d := dropped.Load(); d != 1 {
		t.Fatalf("%d sends counted as dropped, want 1 (to port 0)", d)
	}
}

// A dual-stack socket (what "udp" with a wildcard address opens) batches
// its sends to IPv4 clients too, whose addresses it reads in mapped form.
func TestBatchConnDualStack(t *testing.T) {
	c, err := net.ListenUDP("udp", &net.UDPAddr{Port: 0})
	if err != nil {
		t.Skipf("no dual-stack socket here: %v", err)
	}
	bc := newBatchConn(c, func(int) { t.Error("a send was refused") })
	defer bc.Close()
	if runtime.GOOS != "linux" {
		t.Skip("sends are batched on dual-stack sockets on Linux only")
	}
	client := listenUDP4(t)
	port := bc.LocalAddr().(*net.UDPAddr).Port
	if _, err := client.WriteTo([]byte("hello"), &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port}); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64)
	_, from, err := bc.ReadFrom(buf)
	if err != nil {
		t.Fatal(err)
	}
	b := bc.sendBuffer()
	if b == nil {
		t.Fatal("a dual-stack socket on Linux does not batch its sends")
	}
	bc.queue(copy(b, "answer"), from.(*net.UDPAddr))
	bc.flush()
	_ = client.SetReadDeadline(time.Now().Add(2 * time.Second))
	k, _, err := client.ReadFrom(buf)
	if err != nil || string(buf[:k]) != "answer" {
		t.Fatalf("client got %q (%v)", buf[:k], err)
	}
}
