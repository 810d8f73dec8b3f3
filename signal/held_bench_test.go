//go:build linux

package signal_test

// The held-peers measurement of BenchmarkHeldPeers and
// BenchmarkClusterHeldPeers: server processes (bin/signal) hold the peers,
// client processes (this test binary, re-run as TestHeldClients) hold the
// peers' WebSocket connections, so that each process stays under the
// open-file limit and only the servers' memory is measured.

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/peerlan/peerlan/internal/promtext"
)

type heldResult struct {
	peers          int
	idle, rss, hwm int64   // bytes, summed over the server processes
	each           []int64 // each server process's RSS
	ramp, shutdown time.Duration
	cpu            time.Duration // servers' CPU time spent on the ramp
}

// report reports r against the goal of goalPeers peers within 1 GiB of
// servers' RSS in all ("x-1GiB-goal", below 1 meets it).
func (r heldResult) report(b *testing.B, goalPeers int) {
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(float64(r.peers), "peers")
	b.ReportMetric(float64(r.rss)/(1<<20), "RSS-MiB")
	b.ReportMetric(float64(r.hwm)/(1<<20), "peak-RSS-MiB")
	b.ReportMetric(float64(r.idle)/(1<<20), "idle-RSS-MiB")
	b.ReportMetric(float64(r.rss)/1024/float64(r.peers), "KiB/peer")
	b.ReportMetric(float64(r.rss-r.idle)/1024/float64(r.peers), "added-KiB/peer")
	b.ReportMetric(float64(r.rss)/heldGoalRSS*float64(goalPeers)/float64(r.peers), "x-1GiB-goal")
	b.ReportMetric(float64(r.peers)/r.ramp.Seconds(), "ramp-joins/s")
	b.ReportMetric(float64(r.cpu.Microseconds())/float64(r.peers), "server-cpu-us/join")
	b.ReportMetric(r.shutdown.Seconds(), "shutdown-s")
}

// heldTarget is the server processes a held-peers measurement runs against:
// one bin/signal, or the instances of a cluster.
type heldTarget interface {
	pids() []int
	urls() []string  // signaling endpoints; peers join them round-robin
	bases() []string // http base URLs whose /metrics are summed
	stop(timeout time.Duration) error
	warnings() string
}

func (s *benchSignal) pids() []int     { return []int{s.cmd.Process.Pid} }
func (s *benchSignal) urls() []string  { return []string{s.url} }
func (s *benchSignal) bases() []string { return []string{s.base} }

// heldShape is what a held-peers measurement joins and expects.
type heldShape struct {
	peers, rooms int
	roomGauge    float64       // the rooms gauges' sum (each instance counts a room it holds members of)
	clients      int           // client processes holding the peers' connections
	deadline     time.Duration // for joining and draining the announcements
}

// benchHoldOn joins sh.peers peers in sh.rooms rooms to target from
// sh.clients client processes, holds them through a keepalive round,
// measures the servers' memory and stops them.
func benchHoldOn(b *testing.B, target heldTarget, sh heldShape) heldResult {
	perRoom := sh.peers / sh.rooms
	// Each room of n peers announces n(n-1)/2 joins.
	want := int64(sh.rooms * perRoom * (perRoom - 1) / 2)
	var r heldResult
	time.Sleep(200 * time.Millisecond) // let the idle servers settle
	r.idle, _, _ = benchProcsMem(b, target.pids())

	clients := make([]*heldClientProc, sh.clients)
	for i := range clients {
		clients[i] = benchStartHeldClients(b, heldClientSpec{URLs: target.urls(), Peers: sh.peers, Rooms: sh.rooms,
			Index: i, Of: sh.clients, Workers: (heldWorkers + sh.clients - 1) / sh.clients})
	}
	// ask sends cmd to every client process and sums the first field of
	// their replies; rest is the first client's rest of its reply that
	// is not empty.
	ask := func(cmd, reply string, timeout time.Duration) (sum [3]int64, rest string) {
		for _, c := range clients {
			c.send(b, cmd)
		}
		for _, c := range clients {
			got, err := c.reply(reply, timeout)
			if err != nil {
				b.Fatalf("%s: %v (servers: %s)", cmd, err, target.warnings())
			}
			f := strings.SplitN(got, " ", len(sum)+1)
			for i := range sum {
				if i < len(f) {
					n, _ := strconv.ParseInt(f[i], 10, 64)
					sum[i] += n
				}
			}
			if len(f) > len(sum) && rest == "" {
				rest = f[len(sum)]
			}
		}
		return sum, rest
	}

	cpu0 := benchProcsCPU(b, target.pids())
	start := time.Now()
	joined, _ := ask("join", "JOINED", sh.deadline)
	r.ramp = time.Since(start)
	// status: peer-joined announcements received, connections lost,
	// unexpected messages, and the first failure.
	status, bad := ask("status", "STATUS", 10*time.Second)
	for status[0] < want && bad == "" && time.Since(start) < sh.deadline {
		time.Sleep(50 * time.Millisecond)
		status, bad = ask("status", "STATUS", 10*time.Second)
	}
	r.cpu = benchProcsCPU(b, target.pids()) - cpu0
	drained := time.Since(start)
	// Hold them through a keepalive round: every peer must answer a ping.
	if bad == "" {
		time.Sleep(heldSettle)
		status, bad = ask("status", "STATUS", 10*time.Second)
	}
	if bad != "" {
		b.Fatalf("%s (lost %d, unexpected messages %d; servers: %s)", bad, status[1], status[2], target.warnings())
	}
	// Of every pair of peers in a room, the later one lists the earlier in
	// its welcome and the earlier one is told of the later one.
	if status[0] != want {
		b.Fatalf("peers got %d peer-joined announcements, want %d (servers: %s)", status[0], want, target.warnings())
	}
	if joined[0] != want {
		b.Fatalf("welcomes listed %d peers in all, want %d", joined[0], want)
	}
	r.rss, r.hwm, r.each = benchProcsMem(b, target.pids())
	s := promtext.Samples{}
	for _, base := range target.bases() {
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
		{"peerlan_signal_connections", float64(sh.peers)},
		{"peerlan_signal_peers", float64(sh.peers)},
		{"peerlan_signal_rooms", sh.roomGauge},
		{"peerlan_signal_rejections_total", 0},
	} {
		if got := s.Sum(c.series); got != c.want {
			b.Fatalf("servers report %s = %v, want %v", c.series, got, c.want)
		}
	}
	r.peers = int(s.Sum("peerlan_signal_peers"))
	each := make([]string, len(r.each))
	for i, v := range r.each {
		each[i] = fmt.Sprintf("%.0f", float64(v)/(1<<20))
	}
	b.Logf("%d peers joined in %v, announcements drained after %v; servers' RSS %.0f MiB (%s MiB; idle %.0f MiB, peak %.0f MiB)",
		r.peers, r.ramp.Round(time.Millisecond), drained.Round(time.Millisecond),
		float64(r.rss)/(1<<20), strings.Join(each, " + "), float64(r.idle)/(1<<20), float64(r.hwm)/(1<<20))

	// Graceful shutdown: every peer is told "going away".
	ask("stop", "STOPPING", 10*time.Second)
	t0 := time.Now()
	if err := target.stop(30 * time.Second); err != nil {
		b.Fatal(err)
	}
	r.shutdown = time.Since(t0)
	if away, _ := ask("wait", "DONE", 30*time.Second); away[0] != int64(sh.peers) {
		b.Fatalf("%d of %d peers were closed with going away on shutdown", away[0], sh.peers)
	}
	return r
}

// benchProcsMem returns the sum of the processes' VmRSS and VmHWM in bytes,
// and each one's VmRSS.
func benchProcsMem(b *testing.B, pids []int) (rss, hwm int64, each []int64) {
	b.Helper()
	for _, pid := range pids {
		r, h, err := benchProcMem(pid)
		if err != nil {
			b.Fatal(err)
		}
		rss, hwm, each = rss+r, hwm+h, append(each, r)
	}
	return rss, hwm, each
}

// benchProcsCPU returns the processes' user plus system CPU time in all.
func benchProcsCPU(b *testing.B, pids []int) time.Duration {
	b.Helper()
	var sum time.Duration
	for _, pid := range pids {
		d, err := benchProcCPU(pid)
		if err != nil {
			b.Fatal(err)
		}
		sum += d
	}
	return sum
}

const heldClientEnv = "PEERLAN_BENCH_HELD_CLIENTS"

// heldClientSpec tells a client process which peers to hold: of peers
// 0..Peers-1, those k with k%Of == Index. Peer k is member k/Rooms of room
// k%Rooms and joins through URLs[(k/Rooms+k%Rooms)%len(URLs)]: a room's
// members come through every instance in turn, each room starting at
// another, so that every instance holds as many peers.
type heldClientSpec struct {
	URLs                    []string
	Peers, Rooms, Index, Of int
	Workers                 int // concurrent joins
}

// heldClientReplies are the first words of TestHeldClients's replies; its
// other output (the test framework's) is kept for errors.
var heldClientReplies = map[string]bool{"READY": true, "JOINED": true, "STATUS": true, "STOPPING": true, "DONE": true, "ERROR": true}

// heldClientProc is a running client process, driven by commands on its
// stdin, each answered by one line on its stdout (see TestHeldClients).
type heldClientProc struct {
	cmd     *exec.Cmd
	in      io.WriteCloser
	replies chan string
	done    chan error
	mu      sync.Mutex
	tail    []string // its other output, for errors
}

func benchStartHeldClients(b *testing.B, spec heldClientSpec) *heldClientProc {
	b.Helper()
	js, err := json.Marshal(spec)
	if err != nil {
		b.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run", "^TestHeldClients$", "-test.bench", "^$", "-test.count", "1")
	cmd.Env = append(os.Environ(), heldClientEnv+"="+string(js))
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	c := &heldClientProc{cmd: cmd, in: in, replies: make(chan string, 4), done: make(chan error, 1)}
	go func() {
		sc := bufio.NewScanner(out)
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			if w, _, _ := strings.Cut(sc.Text(), " "); heldClientReplies[w] {
				c.replies <- sc.Text()
				continue
			}
			c.mu.Lock()
			if len(c.tail) < 20 {
				c.tail = append(c.tail, sc.Text())
			}
			c.mu.Unlock()
		}
		close(c.replies)
		c.done <- cmd.Wait()
	}()
	b.Cleanup(func() {
		in.Close() // the client process closes its connections and exits
		select {
		case <-c.done:
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			<-c.done
		}
	})
	if _, err := c.reply("READY", 30*time.Second); err != nil {
		b.Fatal(err)
	}
	return c
}

func (c *heldClientProc) send(b *testing.B, cmd string) {
	if _, err := io.WriteString(c.in, cmd+"\n"); err != nil {
		b.Fatalf("client process %d: %s: %v", c.cmd.Process.Pid, cmd, err)
	}
}

// reply returns the rest of the next line, which must start with want.
func (c *heldClientProc) reply(want string, timeout time.Duration) (string, error) {
	select {
	case l, ok := <-c.replies:
		if !ok {
			c.mu.Lock()
			defer c.mu.Unlock()
			return "", fmt.Errorf("client process exited: %s", strings.Join(c.tail, "\n"))
		}
		w, rest, _ := strings.Cut(l, " ")
		if w != want {
			return "", fmt.Errorf("client process: want %s, got %s", want, l)
		}
		return rest, nil
	case <-time.After(timeout):
		return "", fmt.Errorf("client process: no %s within %v", want, timeout)
	}
}

// TestHeldClients is the client process of the held-peers benchmarks: it
// holds the peers its spec gives it and answers commands on stdin, one line
// each: "join" (JOINED <peers listed in welcomes>, or ERROR), "status"
// (STATUS <announcements> <lost> <unexpected> [first failure]), "stop"
// (STOPPING: losing a connection is no failure from now on) and "wait"
// (DONE <connections closed with going away>, once every connection is
// closed). It closes every connection and exits when stdin closes.
func TestHeldClients(t *testing.T) {
	env := os.Getenv(heldClientEnv)
	if env == "" {
		t.Skip("a client process of the held-peers benchmarks")
	}
	var spec heldClientSpec
	if err := json.Unmarshal([]byte(env), &spec); err != nil {
		t.Fatal(err)
	}
	h := &heldPeerSet{spec: spec}
	defer h.close()
	fmt.Println("READY")
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		switch sc.Text() {
		case "join":
			if listed, err := h.join(); err != nil {
				fmt.Println("ERROR", oneLine(err.Error()))
			} else {
				fmt.Println("JOINED", listed)
			}
		case "status":
			fmt.Println("STATUS", h.announced.Load(), h.lost.Load(), h.other.Load(), h.failure())
		case "stop":
			h.stopping.Store(true)
			fmt.Println("STOPPING")
		case "wait":
			h.readers.Wait()
			fmt.Println("DONE", h.goingAway.Load())
		default:
			fmt.Println("ERROR unknown command", sc.Text())
		}
	}
}

func oneLine(s string) string { return strings.ReplaceAll(s, "\n", " ") }

// heldPeerSet is a client process's peers. Every client has a reader
// goroutine that drains its socket (the server disconnects slow readers)
// and answers pings. It counts peer-joined announcements; anything else,
// and any connection lost before stopping, is a failure.
type heldPeerSet struct {
	spec      heldClientSpec
	mu        sync.Mutex
	clients   []*websocket.Conn
	readers   sync.WaitGroup
	announced atomic.Int64
	other     atomic.Int64
	lost      atomic.Int64
	goingAway atomic.Int64
	stopping  atomic.Bool
	firstBad  atomic.Pointer[string]
}

func (h *heldPeerSet) bad(s string) { s = oneLine(s); h.firstBad.CompareAndSwap(nil, &s) }

func (h *heldPeerSet) failure() string {
	if p := h.firstBad.Load(); p != nil {
		return *p
	}
	return ""
}

// join joins this process's peers, spec.Workers at a time, and returns how
// many peers their welcomes listed in all.
func (h *heldPeerSet) join() (int64, error) {
	sp := h.spec
	var (
		next    atomic.Int64
		listed  atomic.Int64
		joiners sync.WaitGroup
	)
	next.Store(int64(sp.Index))
	errs := make(chan error, sp.Workers)
	for range sp.Workers {
		joiners.Add(1)
		go func() {
			defer joiners.Done()
			for {
				k := int(next.Add(int64(sp.Of))) - sp.Of
				if k >= sp.Peers || h.firstBad.Load() != nil {
					return
				}
				ws, w, err := benchJoin(sp.URLs[(k/sp.Rooms+k%sp.Rooms)%len(sp.URLs)], fmt.Sprintf("held-%03d", k%sp.Rooms))
				if err != nil {
					errs <- fmt.Errorf("peer %d: %w", k, err)
					return
				}
				listed.Add(int64(len(w.Peers)))
				h.mu.Lock()
				h.clients = append(h.clients, ws)
				h.mu.Unlock()
				h.readers.Add(1)
				go h.read(k, ws)
			}
		}()
	}
	joiners.Wait()
	close(errs)
	return listed.Load(), <-errs
}

var peerJoinedPrefix = []byte(`{"type":"peer-joined"`)

func (h *heldPeerSet) read(k int, ws *websocket.Conn) {
	defer h.readers.Done()
	var head [24]byte
	for {
		_, rd, err := ws.NextReader()
		if err != nil {
			switch {
			case websocket.IsCloseError(err, websocket.CloseGoingAway) && h.stopping.Load():
				h.goingAway.Add(1)
			case !h.stopping.Load():
				h.lost.Add(1)
				h.bad(fmt.Sprintf("peer %d lost its connection: %v", k, err))
			}
			return
		}
		m, _ := io.ReadFull(rd, head[:])
		if bytes.HasPrefix(head[:m], peerJoinedPrefix) {
			h.announced.Add(1)
		} else {
			h.other.Add(1)
			rest, _ := io.ReadAll(io.LimitReader(rd, 200))
			h.bad(fmt.Sprintf("peer %d got an unexpected message: %s%s", k, head[:m], rest))
		}
	}
}

// close closes every connection and waits for the readers.
func (h *heldPeerSet) close() {
	h.stopping.Store(true)
	h.mu.Lock()
	for _, ws := range h.clients {
		ws.Close()
	}
	h.mu.Unlock()
	h.readers.Wait()
}
