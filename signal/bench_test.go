//go:build linux

package signal_test

// Benchmarks of the signaling server (issue 2, `make bench`). Each figure is
// reported beside a baseline measured in the same run:
//
//   - BenchmarkJoin: joins per second (WebSocket connect + join + welcome)
//     against an in-process Server on httptest, vs bare WebSocket connects
//     with one echoed message against a gorilla echo server ("x-ws-connect").
//   - BenchmarkRelayLatency: median and p99 latency of a signal message from
//     one peer to another through an in-process Server (half the round trip
//     A→B→A), vs the round trip of the same message through a gorilla echo
//     server ("x-ws-echo"): both paths are two WebSocket messages with one
//     server step between them.
//   - BenchmarkHeldPeers: 10,000 peers (100 rooms × 100) held by a real
//     bin/signal subprocess with its default settings and the limits raised
//     by flags; reports its RSS and KiB per peer against the goal of 10,000
//     peers within 1 GiB ("x-1GiB-goal", below 1 meets it).
//
// The per-operation benchmarks do at least a floor of samples per call, so
// they give usable medians and p99s with -benchtime 1x as well; they report
// their own ns/op.
//
// Run: go test -run '^$' -bench . ./signal/

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/peerlan/peerlan/internal/promtext"
	"github.com/peerlan/peerlan/signal"
	"github.com/peerlan/peerlan/signal/proto"
	"github.com/peerlan/peerlan/signal/signaltest"
)

// benchDialer is a lean client: small buffers, so 10,000 of them fit easily
// beside the server they measure.
var benchDialer = websocket.Dialer{
	HandshakeTimeout: 10 * time.Second,
	ReadBufferSize:   1024,
	WriteBufferSize:  1024,
}

var benchQuiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// benchJoin connects to url, joins room and reads the welcome.
func benchJoin(url, room string) (*websocket.Conn, *proto.Welcome, error) {
	ws, resp, err := benchDialer.Dial(url, nil)
	if err != nil {
		if resp != nil {
			return nil, nil, fmt.Errorf("dial: %w (%s)", err, resp.Status)
		}
		return nil, nil, fmt.Errorf("dial: %w", err)
	}
	j, err := proto.Encode(&proto.Join{V: proto.ProtocolVersion, Room: room})
	if err == nil {
		_ = ws.SetWriteDeadline(time.Now().Add(10 * time.Second))
		err = ws.WriteMessage(websocket.TextMessage, j)
	}
	var msg []byte
	if err == nil {
		_ = ws.SetReadDeadline(time.Now().Add(30 * time.Second))
		_, msg, err = ws.ReadMessage()
	}
	if err != nil {
		ws.Close()
		return nil, nil, fmt.Errorf("join %s: %w", room, err)
	}
	m, err := proto.Decode(msg)
	w, ok := m.(*proto.Welcome)
	if !ok {
		ws.Close()
		return nil, nil, fmt.Errorf("join %s: want a welcome, got %.200s (%v)", room, msg, err)
	}
	_ = ws.SetReadDeadline(time.Time{})
	_ = ws.SetWriteDeadline(time.Time{})
	return ws, w, nil
}

// benchClose ends a client connection the way a leaving peer does: a
// normal-closure close frame, then the socket.
func benchClose(ws *websocket.Conn) {
	_ = ws.WriteControl(websocket.CloseMessage,
		websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second))
	_ = ws.Close()
}

// benchEchoServer is the baseline: a bare gorilla WebSocket server, with the
// signaling server's buffer sizes, that echoes every message.
func benchEchoServer(tb testing.TB) string {
	up := websocket.Upgrader{ReadBufferSize: 1024, WriteBufferSize: 1024, WriteBufferPool: &sync.Pool{}}
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ws, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer ws.Close()
		for {
			mt, b, err := ws.ReadMessage()
			if err != nil {
				return
			}
			if err := ws.WriteMessage(mt, b); err != nil {
				return
			}
		}
	}))
	tb.Cleanup(hs.Close)
	return "ws" + strings.TrimPrefix(hs.URL, "http")
}

// benchConnectEcho is the baseline's unit of work: connect, one message
// echoed.
func benchConnectEcho(url string, msg []byte) (*websocket.Conn, error) {
	ws, _, err := benchDialer.Dial(url, nil)
	if err != nil {
		return nil, err
	}
	_ = ws.SetReadDeadline(time.Now().Add(30 * time.Second))
	if err := ws.WriteMessage(websocket.TextMessage, msg); err != nil {
		ws.Close()
		return nil, err
	}
	if _, _, err := ws.ReadMessage(); err != nil {
		ws.Close()
		return nil, err
	}
	return ws, nil
}

// benchChurn runs n connects with workers goroutines. Each worker keeps its
// connections in groups of group (for joins: one room), and closes a group
// once it is full, so rooms see members join, announce and leave.
func benchChurn(n, workers, group int, connect func(worker, groupNo int) (*websocket.Conn, error)) error {
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			held := make([]*websocket.Conn, 0, group)
			defer func() {
				for _, ws := range held {
					benchClose(ws)
				}
			}()
			for g := 0; ; g++ {
				for len(held) < group {
					if next.Add(1) > int64(n) {
						return
					}
					ws, err := connect(w, g)
					if err != nil {
						errs <- err
						return
					}
					held = append(held, ws)
				}
				for _, ws := range held {
					benchClose(ws)
				}
				held = held[:0]
			}
		}()
	}
	wg.Wait()
	close(errs)
	return <-errs
}

const (
	joinMinSamples = 2000 // per call, so -benchtime 1x still measures something
	joinWorkers    = 16   // concurrent joiners
	joinRoomSize   = 8    // peers per room before the room is emptied
)

// BenchmarkJoin measures joins per second: WebSocket connect, join, welcome,
// by 16 concurrent clients into rooms of 8 (so every join is also announced
// to the members already there, and every room is emptied by leaving
// members), against an in-process Server with its default configuration. The
// baseline is the same churn of bare WebSocket connects with one echoed
// message of the join's size against a gorilla echo server.
func BenchmarkJoin(b *testing.B) {
	ts := signaltest.Start(b, func(c *signal.Config) { c.Logger = benchQuiet })
	echo := benchEchoServer(b)
	joinMsg, err := proto.Encode(&proto.Join{V: proto.ProtocolVersion, Room: "join-00-0000"})
	if err != nil {
		b.Fatal(err)
	}
	n := max(b.N, joinMinSamples)

	startBase := time.Now()
	if err := benchChurn(n, joinWorkers, joinRoomSize, func(int, int) (*websocket.Conn, error) {
		return benchConnectEcho(echo, joinMsg)
	}); err != nil {
		b.Fatalf("baseline: %v", err)
	}
	base := time.Since(startBase)

	before := metrics(b, ts).Sum("peerlan_signal_joins_total")
	b.ResetTimer()
	start := time.Now()
	err = benchChurn(n, joinWorkers, joinRoomSize, func(w, g int) (*websocket.Conn, error) {
		ws, _, err := benchJoin(ts.URL, fmt.Sprintf("join-%02d-%04d", w, g%10000))
		return ws, err
	})
	el := time.Since(start)
	b.StopTimer()
	if err != nil {
		b.Fatal(err)
	}
	if got := metrics(b, ts).Sum("peerlan_signal_joins_total") - before; got != float64(n) {
		b.Fatalf("server counted %v joins, want %d", got, n)
	}
	joinRate := float64(n) / el.Seconds()
	baseRate := float64(n) / base.Seconds()
	b.ReportMetric(float64(el.Nanoseconds())/float64(n), "ns/op")
	b.ReportMetric(joinRate, "joins/s")
	b.ReportMetric(baseRate, "ws-connects/s")
	b.ReportMetric(baseRate/joinRate, "x-ws-connect")
}

const relayMinSamples = 2000

// benchCandidate is a signal payload of a typical trickled ICE candidate's
// size; the %08d is a sequence number, so every message is distinct.
const benchCandidate = `{"kind":"candidate","candidate":{"candidate":"candidate:842163049 1 udp 1677729535 203.0.113.7 61665 typ srflx raddr 192.0.2.10 rport 61665 generation 0 ufrag EsAw network-cost 999","sdpMid":"0","sdpMLineIndex":0},"seq":"%08d"}`

// BenchmarkRelayLatency measures how long a signal message takes from one
// peer to another through an in-process Server: peer A sends a signal to B,
// B returns its data to A at once, and half of each round trip is one
// sample. Interleaved with it, the same bytes make a round trip through a
// gorilla echo server: also two WebSocket messages with one server step
// between them, so "x-ws-echo" is the relay's cost over the bare transport.
// The per-connection rate limit is raised for the benchmark (the default
// allows 50 messages per second); the limiter still runs on every message.
func BenchmarkRelayLatency(b *testing.B) {
	ts := signaltest.Start(b, func(c *signal.Config) {
		c.Logger = benchQuiet
		c.MessagesPerSecond = 1e6
		c.Burst = 1e6
	})
	pair := benchStartRelayPair(b, ts.URL, ts.URL, "latency")
	echoURL := benchEchoServer(b)
	e, _, err := benchDialer.Dial(echoURL, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer benchClose(e)

	n := max(b.N, relayMinSamples)
	relay := make([]time.Duration, 0, n)
	bare := make([]time.Duration, 0, n)
	before := metrics(b, ts).Sum(`peerlan_signal_relayed_messages_total{type="signal"}`)
	b.ResetTimer()
	start := time.Now()
	for i := range n {
		half, msg := pair.sample(b, i)
		relay = append(relay, half)

		t0 := time.Now()
		if err := e.WriteMessage(websocket.TextMessage, msg); err != nil {
			b.Fatal(err)
		}
		_, got, err := e.ReadMessage()
		rtt := time.Since(t0)
		if err != nil || !bytes.Equal(got, msg) {
			b.Fatalf("echo: %.100s (%v)", got, err)
		}
		bare = append(bare, rtt)
	}
	el := time.Since(start)
	b.StopTimer()
	if got := metrics(b, ts).Sum(`peerlan_signal_relayed_messages_total{type="signal"}`) - before; got != float64(2*n) {
		b.Fatalf("server counted %v relayed signals, want %d", got, 2*n)
	}
	rp50, rp99 := benchPercentile(relay, 50), benchPercentile(relay, 99)
	ep50, ep99 := benchPercentile(bare, 50), benchPercentile(bare, 99)
	us := func(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e3 }
	b.ReportMetric(float64(el.Nanoseconds())/float64(n), "ns/op") // one relay round trip and one echo
	b.ReportMetric(us(rp50), "p50-us")
	b.ReportMetric(us(rp99), "p99-us")
	b.ReportMetric(us(ep50), "ws-echo-p50-us")
	b.ReportMetric(us(ep99), "ws-echo-p99-us")
	b.ReportMetric(us(rp50)/us(ep50), "x-ws-echo")
	b.ReportMetric(us(rp99)/us(ep99), "x-ws-echo-p99")
}

// benchRelayPair is two peers of one room, A joined at urlA and B at urlB;
// B answers every signal from A with the same data at once.
type benchRelayPair struct {
	a          *websocket.Conn
	toB, fromB []byte
	msg, want  []byte
	echoErr    chan error
	wa, wb     *proto.Welcome
}

func benchStartRelayPair(b *testing.B, urlA, urlB, room string) *benchRelayPair {
	b.Helper()
	a, wa, err := benchJoin(urlA, room)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { benchClose(a) })
	bb, wb, err := benchJoin(urlB, room)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { benchClose(bb) })
	if _, m, err := a.ReadMessage(); err != nil || !bytes.Contains(m, []byte(`"peer-joined"`)) {
		b.Fatalf("A: want peer-joined for B, got %s (%v)", m, err)
	}

	// B: answer every signal from A with the same data, rewriting only the
	// envelope, as cheaply as the echo server answers.
	fromA := []byte(`{"type":"signal","from":"` + string(wa.ID) + `","data":`)
	toA := []byte(`{"type":"signal","to":"` + string(wa.ID) + `","data":`)
	p := &benchRelayPair{a: a, wa: wa, wb: wb, echoErr: make(chan error, 1),
		fromB: []byte(`{"type":"signal","from":"` + string(wb.ID) + `","data":`),
		toB:   []byte(`{"type":"signal","to":"` + string(wb.ID) + `","data":`),
		msg:   make([]byte, 0, 1024), want: make([]byte, 0, 1024)}
	go func() {
		reply := make([]byte, 0, 1024)
		for {
			_, m, err := bb.ReadMessage()
			if err != nil {
				p.echoErr <- err
				return
			}
			if !bytes.HasPrefix(m, fromA) {
				p.echoErr <- fmt.Errorf("B got %.200s", m)
				return
			}
			reply = append(append(reply[:0], toA...), m[len(fromA):]...)
			if err := bb.WriteMessage(websocket.TextMessage, reply); err != nil {
				p.echoErr <- err
				return
			}
		}
	}()
	return p
}

// sample sends the i-th candidate A→B→A and returns half the round trip and
// the message A sent.
func (p *benchRelayPair) sample(b *testing.B, i int) (time.Duration, []byte) {
	data := fmt.Appendf(nil, benchCandidate, i)
	p.msg = append(append(append(p.msg[:0], p.toB...), data...), '}')
	p.want = append(append(append(p.want[:0], p.fromB...), data...), '}')
	t0 := time.Now()
	if err := p.a.WriteMessage(websocket.TextMessage, p.msg); err != nil {
		b.Fatal(err)
	}
	_, got, err := p.a.ReadMessage()
	rtt := time.Since(t0)
	if err != nil {
		b.Fatalf("A: %v (B: %v)", err, benchPending(p.echoErr))
	}
	if !bytes.Equal(got, p.want) {
		b.Fatalf("A got %.300s\nwant %.300s", got, p.want)
	}
	return rtt / 2, p.msg
}

func benchPending(c <-chan error) error {
	select {
	case err := <-c:
		return err
	default:
		return nil
	}
}

// benchPercentile returns the p-th percentile (nearest rank) of d; it sorts d.
func benchPercentile(d []time.Duration, p float64) time.Duration {
	slices.Sort(d)
	i := int(math.Ceil(p/100*float64(len(d)))) - 1
	return d[max(0, min(i, len(d)-1))]
}

const (
	heldPeers    = 10000
	heldRooms    = 100
	heldPerRoom  = heldPeers / heldRooms
	heldWorkers  = 32
	heldGoalRSS  = 1 << 30 // 10,000 peers within 1 GiB
	heldSettle   = 6 * time.Second
	heldDeadline = 90 * time.Second // for joining and draining the announcements
)

// BenchmarkHeldPeers joins 10,000 WebSocket clients, 100 rooms of 100 peers,
// to a real bin/signal subprocess, holds them through a keepalive round, and
// reads the server's VmRSS. The server runs with its defaults (logs at info
// included) and only its limits raised by flags. Peers join round-robin over
// the rooms; every client drains its socket, as the server disconnects slow
// readers, and answers pings while reading.
func BenchmarkHeldPeers(b *testing.B) {
	bin := benchBuildSignal(b)
	benchRaiseNofile(b, heldPeers+1024)
	for range b.N {
		r := benchHold(b, bin)
		b.ReportMetric(0, "ns/op")
		b.ReportMetric(float64(r.peers), "peers")
		b.ReportMetric(float64(r.rss)/(1<<20), "RSS-MiB")
		b.ReportMetric(float64(r.hwm)/(1<<20), "peak-RSS-MiB")
		b.ReportMetric(float64(r.idle)/(1<<20), "idle-RSS-MiB")
		b.ReportMetric(float64(r.rss)/1024/float64(r.peers), "KiB/peer")
		b.ReportMetric(float64(r.rss-r.idle)/1024/float64(r.peers), "added-KiB/peer")
		b.ReportMetric(float64(r.rss)/heldGoalRSS*heldPeers/float64(r.peers), "x-1GiB-goal")
		b.ReportMetric(float64(r.peers)/r.ramp.Seconds(), "ramp-joins/s")
		b.ReportMetric(float64(r.cpu.Microseconds())/float64(r.peers), "server-cpu-us/join")
		b.ReportMetric(r.shutdown.Seconds(), "shutdown-s")
	}
}

type heldResult struct {
	peers          int
	idle, rss, hwm int64 // bytes
	ramp, shutdown time.Duration
	cpu            time.Duration // server CPU time spent on the ramp
}

// heldTarget is the server process a held-peers measurement runs against:
// one bin/signal, or a cluster of instances in one process.
type heldTarget interface {
	pid() int
	urls() []string  // signaling endpoints; peers join them round-robin
	bases() []string // http base URLs whose /metrics are summed
	stop(timeout time.Duration) error
	warnings() string
}

func (s *benchSignal) urls() []string  { return []string{s.url} }
func (s *benchSignal) bases() []string { return []string{s.base} }

// heldShape is what a held-peers measurement joins and expects.
type heldShape struct {
	peers, rooms int
	roomGauge    float64       // the rooms gauges' sum (each instance counts a room it holds members of)
	deadline     time.Duration // for joining and draining the announcements
}

// benchHold runs one measurement against a fresh bin/signal.
func benchHold(b *testing.B, bin string) heldResult {
	child := benchStartSignal(b, bin,
		"-max-conns", strconv.Itoa(heldPeers+100),
		"-max-rooms", strconv.Itoa(heldRooms+100),
		"-max-peers", strconv.Itoa(heldPerRoom))
	return benchHoldOn(b, child, heldShape{peers: heldPeers, rooms: heldRooms, roomGauge: heldRooms, deadline: heldDeadline})
}

// benchHoldOn joins sh.peers peers in sh.rooms rooms to child, holds them
// through a keepalive round, measures the child's memory and stops it.
func benchHoldOn(b *testing.B, child heldTarget, sh heldShape) heldResult {
	heldPeers, heldRooms := sh.peers, sh.rooms
	heldPerRoom := heldPeers / heldRooms
	urls := child.urls()
	var r heldResult
	var err error
	time.Sleep(200 * time.Millisecond) // let the idle server settle
	if r.idle, _, err = benchProcMem(child.pid()); err != nil {
		b.Fatal(err)
	}

	// Every client has a reader goroutine that drains its socket. It counts
	// peer-joined announcements; anything else, and any connection lost
	// before shutdown, is a failure.
	var (
		clients   = make([]*websocket.Conn, heldPeers)
		readers   sync.WaitGroup
		announced atomic.Int64 // peer-joined messages received
		listed    atomic.Int64 // peers listed in welcomes
		other     atomic.Int64
		lost      atomic.Int64
		goingAway atomic.Int64
		stopping  atomic.Bool
		firstBad  atomic.Pointer[string]
	)
	bad := func(s string) { firstBad.CompareAndSwap(nil, &s) }
	peerJoined := []byte(`{"type":"peer-joined"`)
	read := func(k int, ws *websocket.Conn) {
		defer readers.Done()
		var head [24]byte
		for {
			_, rd, err := ws.NextReader()
			if err != nil {
				switch {
				case websocket.IsCloseError(err, websocket.CloseGoingAway) && stopping.Load():
					goingAway.Add(1)
				case !stopping.Load():
					lost.Add(1)
					bad(fmt.Sprintf("peer %d lost its connection: %v", k, err))
				}
				return
			}
			m, _ := io.ReadFull(rd, head[:])
			if bytes.HasPrefix(head[:m], peerJoined) {
				announced.Add(1)
			} else {
				other.Add(1)
				rest, _ := io.ReadAll(io.LimitReader(rd, 200))
				bad(fmt.Sprintf("peer %d got an unexpected message: %s%s", k, head[:m], rest))
			}
		}
	}
	b.Cleanup(func() {
		stopping.Store(true)
		for _, ws := range clients {
			if ws != nil {
				ws.Close()
			}
		}
		readers.Wait()
	})

	cpu0, err := benchProcCPU(child.pid())
	if err != nil {
		b.Fatal(err)
	}
	var next atomic.Int64
	var joiners sync.WaitGroup
	joinErrs := make(chan error, heldWorkers)
	start := time.Now()
	for range heldWorkers {
		joiners.Add(1)
		go func() {
			defer joiners.Done()
			for {
				k := int(next.Add(1)) - 1
				if k >= heldPeers || firstBad.Load() != nil {
					return
				}
				// A room's members come through every instance in turn.
				ws, w, err := benchJoin(urls[(k/heldRooms)%len(urls)], fmt.Sprintf("held-%03d", k%heldRooms))
				if err != nil {
					joinErrs <- fmt.Errorf("peer %d: %w", k, err)
					return
				}
				listed.Add(int64(len(w.Peers)))
				clients[k] = ws
				readers.Add(1)
				go read(k, ws)
			}
		}()
	}
	joiners.Wait()
	r.ramp = time.Since(start)
	close(joinErrs)
	if err := <-joinErrs; err != nil {
		b.Fatalf("joining: %v (server: %s)", err, child.warnings())
	}
	// Each room of n peers announces n(n-1)/2 joins.
	wantAnnounced := int64(heldRooms * heldPerRoom * (heldPerRoom - 1) / 2)
	for announced.Load() < wantAnnounced && firstBad.Load() == nil && time.Since(start) < sh.deadline {
		time.Sleep(50 * time.Millisecond)
	}
	cpu1, err := benchProcCPU(child.pid())
	if err != nil {
		b.Fatal(err)
	}
	r.cpu = cpu1 - cpu0
	drained := time.Since(start)
	// Hold them through a keepalive round: every peer must answer a ping.
	if firstBad.Load() == nil {
		time.Sleep(heldSettle)
	}
	if p := firstBad.Load(); p != nil {
		b.Fatalf("%s (lost %d, unexpected messages %d; server: %s)", *p, lost.Load(), other.Load(), child.warnings())
	}
	// Of every pair of peers in a room, the later one lists the earlier in
	// its welcome and the earlier one is told of the later one.
	if got := announced.Load(); got != wantAnnounced {
		b.Fatalf("peers got %d peer-joined announcements, want %d (server: %s)", got, wantAnnounced, child.warnings())
	}
	if got := listed.Load(); got != wantAnnounced {
		b.Fatalf("welcomes listed %d peers in all, want %d", got, wantAnnounced)
	}
	if r.rss, r.hwm, err = benchProcMem(child.pid()); err != nil {
		b.Fatal(err)
	}
	s := promtext.Samples{}
	for _, base := range child.bases() {
		one, err := promtext.Scrape(base + "/metrics")
		if err != nil {
			b.Fatal(err)
		}
		for k, v := range one {
			s[k] += v
		}
	}
	for _, c := range []struct {
		series string
		want   float64
	}{
		{"peerlan_signal_connections", float64(heldPeers)},
		{"peerlan_signal_peers", float64(heldPeers)},
		{"peerlan_signal_rooms", sh.roomGauge},
		{"peerlan_signal_rejections_total", 0},
	} {
		if got := s.Sum(c.series); got != c.want {
			b.Fatalf("server reports %s = %v, want %v", c.series, got, c.want)
		}
	}
	r.peers = int(s.Sum("peerlan_signal_peers"))
	b.Logf("%d peers joined in %v, announcements drained after %v; server RSS %.0f MiB (idle %.0f MiB, peak %.0f MiB)",
		r.peers, r.ramp.Round(time.Millisecond), drained.Round(time.Millisecond),
		float64(r.rss)/(1<<20), float64(r.idle)/(1<<20), float64(r.hwm)/(1<<20))

	// Graceful shutdown: every peer is told "going away".
	stopping.Store(true)
	t0 := time.Now()
	if err := child.stop(30 * time.Second); err != nil {
		b.Fatal(err)
	}
	r.shutdown = time.Since(t0)
	readers.Wait()
	if got := goingAway.Load(); got != int64(heldPeers) {
		b.Fatalf("%d of %d peers were closed with going away on shutdown", got, heldPeers)
	}
	return r
}

// benchBuildSignal builds the current bin/signal into a temporary directory.
func benchBuildSignal(b *testing.B) string {
	b.Helper()
	gobin := filepath.Join(runtime.GOROOT(), "bin", "go")
	if _, err := os.Stat(gobin); err != nil {
		if gobin, err = exec.LookPath("go"); err != nil {
			b.Fatal("no go command to build bin/signal with")
		}
	}
	out := filepath.Join(b.TempDir(), "signal")
	cmd := exec.Command(gobin, "build", "-o", out, "github.com/peerlan/peerlan/signal/cmd/signal")
	if msg, err := cmd.CombinedOutput(); err != nil {
		b.Fatalf("go build signal: %v\n%s", err, msg)
	}
	return out
}

// benchRaiseNofile raises this process's open-file limit to at least need;
// children inherit it. It raises the hard limit only when it must (root).
func benchRaiseNofile(b *testing.B, need uint64) {
	b.Helper()
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		b.Fatal(err)
	}
	want := lim
	want.Max = max(lim.Max, need)
	want.Cur = want.Max
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &want); err != nil || want.Cur < need {
		b.Skipf("needs %d open files per process; RLIMIT_NOFILE is %d/%d and cannot be raised: %v", need, lim.Cur, lim.Max, err)
	}
}

// benchSignal is a running bin/signal.
type benchSignal struct {
	cmd       *exec.Cmd
	url, base string // ws URL of the signaling endpoint; http base URL
	log       *benchLogWriter
	done      chan error
}

func (s *benchSignal) pid() int { return s.cmd.Process.Pid }

// benchStartSignal starts bin/signal on a free loopback port with JSON logs
// and waits until it listens.
func benchStartSignal(b *testing.B, bin string, args ...string) *benchSignal {
	b.Helper()
	lw := &benchLogWriter{listening: make(chan string, 1)}
	cmd := exec.Command(bin, append([]string{"-addr", "127.0.0.1:0", "-log-format", "json"}, args...)...)
	cmd.Stdout = lw
	cmd.Stderr = lw
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	s := &benchSignal{cmd: cmd, log: lw, done: make(chan error, 1)}
	go func() { s.done <- cmd.Wait() }()
	b.Cleanup(func() {
		if err := s.stop(10 * time.Second); err != nil {
			b.Log(err)
		}
	})
	select {
	case s.url = <-lw.listening:
	case err := <-s.done:
		s.done <- err
		b.Fatalf("bin/signal exited: %v: %s", err, lw.tail())
	case <-time.After(15 * time.Second):
		b.Fatalf("bin/signal did not report listening: %s", lw.tail())
	}
	s.base = "http" + strings.TrimSuffix(strings.TrimPrefix(s.url, "ws"), "/signal")
	return s
}

// stop sends SIGTERM and waits for a clean exit, killing after timeout.
func (s *benchSignal) stop(timeout time.Duration) error {
	select {
	case err := <-s.done:
		s.done <- err
		return nil // already stopped (and reported by its first stop)
	default:
	}
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-s.done:
		s.done <- nil
		if err != nil {
			return fmt.Errorf("bin/signal: %v: %s", err, s.log.tail())
		}
		return nil
	case <-time.After(timeout):
		_ = s.cmd.Process.Kill()
		<-s.done
		s.done <- nil
		return fmt.Errorf("bin/signal did not stop within %v of SIGTERM: %s", timeout, s.log.tail())
	}
}

func (s *benchSignal) warnings() string { return s.log.tail() }

// benchLogWriter reads bin/signal's JSON log lines: it finds the listening
// address and keeps the last warnings and errors.
type benchLogWriter struct {
	listening chan string
	mu        sync.Mutex
	partial   []byte
	bad       []string // last WARN/ERROR lines
	nbad      int
}

func (w *benchLogWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.partial = append(w.partial, p...)
	for {
		i := bytes.IndexByte(w.partial, '\n')
		if i < 0 {
			break
		}
		w.line(w.partial[:i])
		w.partial = w.partial[i+1:]
	}
	w.partial = slices.Clip(w.partial)
	return len(p), nil
}

func (w *benchLogWriter) line(l []byte) {
	switch {
	case bytes.Contains(l, []byte(`"level":"WARN"`)), bytes.Contains(l, []byte(`"level":"ERROR"`)):
		w.nbad++
		if len(w.bad) < 20 {
			w.bad = append(w.bad, string(l))
		}
	case bytes.Contains(l, []byte(`listening`)):
		var rec struct {
			Signal string `json:"signal"`
		}
		if json.Unmarshal(l, &rec) == nil && rec.Signal != "" {
			select {
			case w.listening <- rec.Signal:
			default:
			}
		}
	}
}

// tail summarises the warnings and errors logged so far.
func (w *benchLogWriter) tail() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.nbad == 0 {
		return "no warnings"
	}
	return fmt.Sprintf("%d warnings/errors, first: %s", w.nbad, strings.Join(w.bad, "\n"))
}

// benchProcMem returns a process's VmRSS and VmHWM in bytes.
func benchProcMem(pid int) (rss, hwm int64, err error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok || (k != "VmRSS" && k != "VmHWM") {
			continue
		}
		kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		if err != nil {
			return 0, 0, fmt.Errorf("/proc/%d/status %s: %w", pid, k, err)
		}
		if k == "VmRSS" {
			rss = kb << 10
		} else {
			hwm = kb << 10
		}
	}
	if rss == 0 {
		return 0, 0, errors.New("no VmRSS in /proc/" + strconv.Itoa(pid) + "/status")
	}
	return rss, hwm, sc.Err()
}

// benchProcCPU returns a process's user plus system CPU time.
func benchProcCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// Fields after the command name, which is in parentheses and may hold
	// spaces: state is field 3, utime 14, stime 15.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	var ticks int64
	for _, s := range f[11:13] {
		t, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("/proc/%d/stat: %w", pid, err)
		}
		ticks += t
	}
	const clockTicks = 100 // USER_HZ, 100 on every Linux architecture Go supports
	return time.Duration(ticks) * time.Second / clockTicks, nil
}
