//go:build linux

package signal_test

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/peerlan/peerlan/internal/promtext"
	"github.com/peerlan/peerlan/signal/proto"
)

const (
	churnPeers   = 1000
	churnRooms   = 20
	churnWorkers = 16
	churnFor     = 10 * time.Second
	churnGrace   = 500 * time.Millisecond // bin/signal's -resume-grace for the soak
)

// BenchmarkChurn is issue 13's soak of the signaling server: 1,000 peers in
// 20 rooms of a real bin/signal join, leave, vanish (the socket closed with
// no close frame, so the server holds them for the resume grace) and resume
// (from a saved resume token, within or after the grace) at random for ten
// seconds. Then every peer leaves, and the server must be back where it was
// before: no peers, rooms or connections held, its goroutines as many as
// after a warm-up round of the same peers ("x-goroutines", 1 = baseline),
// its RSS near that round's ("x-rss-warm"), and every room's addresses free
// again (a newcomer to each room gets the first one).
func BenchmarkChurn(b *testing.B) {
	bin := benchBuildSignal(b)
	benchRaiseNofile(b, churnPeers+1024)
	for range b.N {
		srv := benchStartSignal(b, bin, "-resume-grace", churnGrace.String(), "-max-peers", "64")
		scrape := func() promtext.Samples {
			s, err := promtext.Scrape(srv.base + "/metrics")
			if err != nil {
				b.Fatal(err)
			}
			return s
		}
		settled := func(what string) promtext.Samples {
			deadline := time.Now().Add(churnGrace + 10*time.Second)
			for {
				s := scrape()
				if s.Sum("peerlan_signal_peers") == 0 && s.Sum("peerlan_signal_rooms") == 0 && s.Sum("peerlan_signal_connections") == 0 {
					return s
				}
				if time.Now().After(deadline) {
					b.Fatalf("%s: the server still holds %v peers, %v rooms, %v connections", what,
						s.Sum("peerlan_signal_peers"), s.Sum("peerlan_signal_rooms"), s.Sum("peerlan_signal_connections"))
				}
				time.Sleep(50 * time.Millisecond)
			}
		}

		slots := make([]churnSlot, churnPeers)
		for k := range slots {
			slots[k].room = "churn-" + strconv.Itoa(k%churnRooms)
		}
		// Warm-up: everyone joins and leaves once; the baseline is after it.
		for k := range slots {
			if err := slots[k].join(srv.url, false); err != nil {
				b.Fatal(err)
			}
		}
		for k := range slots {
			slots[k].leave()
		}
		base := settled("after the warm-up")
		baseRSS, baseG := base.Sum("process_resident_memory_bytes"), base.Sum("go_goroutines")

		var ops [churnOps]atomic.Int64
		var failure atomic.Pointer[error]
		var wg sync.WaitGroup
		start := time.Now()
		for w := range churnWorkers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				rng := rand.New(rand.NewPCG(uint64(w), 13))
				for time.Since(start) < churnFor && failure.Load() == nil {
					s := &slots[rng.IntN(churnPeers)]
					if !s.mu.TryLock() {
						continue
					}
					op, err := s.step(srv.url, rng)
					s.mu.Unlock()
					if err != nil {
						failure.CompareAndSwap(nil, &err)
						return
					}
					ops[op].Add(1)
				}
			}()
		}
		wg.Wait()
		took := time.Since(start)
		if p := failure.Load(); p != nil {
			b.Fatalf("churn: %v (server: %s)", *p, srv.warnings())
		}
		for k := range slots {
			slots[k].leave()
		}
		end := settled("after the churn")
		endRSS, endG := end.Sum("process_resident_memory_bytes"), end.Sum("go_goroutines")

		// Every address is free again: the first newcomer of each room gets
		// the room's first address.
		var first netip.Addr
		for r := range churnRooms {
			var s churnSlot
			s.room = "churn-" + strconv.Itoa(r)
			if err := s.join(srv.url, false); err != nil {
				b.Fatal(err)
			}
			if r == 0 {
				first = s.ip
			} else if s.ip != first {
				b.Fatalf("room %s gave its first newcomer %v, room churn-0 gave %v: addresses leaked", s.room, s.ip, first)
			}
			s.leave()
		}
		settled("after the address check")

		total := int64(0)
		for i := range ops {
			total += ops[i].Load()
		}
		b.ReportMetric(0, "ns/op")
		b.ReportMetric(float64(total)/took.Seconds(), "ops/s")
		for i, name := range churnOpNames {
			b.ReportMetric(float64(ops[i].Load()), name)
		}
		b.ReportMetric(endG/baseG, "x-goroutines")
		b.ReportMetric(endRSS/baseRSS, "x-rss-warm")
		b.ReportMetric(endRSS/(1<<20), "end-RSS-MiB")
		b.Logf("%d operations in %v; goroutines %v -> %v, RSS %.1f -> %.1f MiB", total, took.Round(time.Millisecond),
			baseG, endG, baseRSS/(1<<20), endRSS/(1<<20))
		srv.stop(10 * time.Second)
	}
}

type churnOp int

const (
	opJoin churnOp = iota
	opResume
	opLeave
	opVanish
	opSignal
	churnOps
)

var churnOpNames = [churnOps]string{"joins", "resumes", "leaves", "vanishes", "signals"}

// churnSlot is one peer of the soak: connected or not, with the resume
// token of its last welcome. Guarded by mu.
type churnSlot struct {
	mu     sync.Mutex
	room   string
	ws     *websocket.Conn
	done   chan struct{} // closed when the reader ends
	id     proto.PeerID
	ip     netip.Addr
	resume string
	others []proto.PeerID // from the welcome, for signals
}

// step does one random operation fitting the slot's state.
func (s *churnSlot) step(url string, rng *rand.Rand) (churnOp, error) {
	if s.ws == nil {
		resume := s.resume != "" && rng.IntN(2) == 0
		op := opJoin
		if resume {
			op = opResume
		}
		return op, s.join(url, resume)
	}
	switch rng.IntN(4) {
	case 0:
		s.leave()
		return opLeave, nil
	case 1:
		s.vanish()
		return opVanish, nil
	case 2:
		s.vanish() // and straight back, within the grace
		return opResume, s.join(url, true)
	}
	if len(s.others) == 0 {
		return opSignal, nil
	}
	to := s.others[rng.IntN(len(s.others))]
	m, _ := proto.Encode(&proto.Signal{To: to, Data: []byte(`{"kind":"restart","session":0}`)})
	_ = s.ws.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if err := s.ws.WriteMessage(websocket.TextMessage, m); err != nil {
		return opSignal, fmt.Errorf("signal from %s: %w", s.id, err)
	}
	return opSignal, nil
}

func (s *churnSlot) join(url string, resume bool) error {
	ws, _, err := benchDialer.Dial(url, nil)
	if err != nil {
		return fmt.Errorf("dial: %w", err)
	}
	j := &proto.Join{V: proto.ProtocolVersion, Room: s.room}
	if resume {
		j.Resume = s.resume
	}
	b, _ := proto.Encode(j)
	_ = ws.SetWriteDeadline(time.Now().Add(10 * time.Second))
	if err := ws.WriteMessage(websocket.TextMessage, b); err != nil {
		ws.Close()
		return err
	}
	_ = ws.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, msg, err := ws.ReadMessage()
	if err != nil {
		ws.Close()
		return fmt.Errorf("join %s: %w", s.room, err)
	}
	m, _ := proto.Decode(msg)
	w, ok := m.(*proto.Welcome)
	if !ok {
		ws.Close()
		return fmt.Errorf("join %s: want a welcome, got %.200s", s.room, msg)
	}
	if resume && w.ID != s.id {
		ws.Close()
		return fmt.Errorf("resume in %s gave id %s, want %s", s.room, w.ID, s.id)
	}
	_ = ws.SetReadDeadline(time.Time{})
	s.ws, s.id, s.ip, s.resume = ws, w.ID, w.IP, w.Resume
	s.others = s.others[:0]
	for _, p := range w.Peers {
		s.others = append(s.others, p.ID)
	}
	s.done = make(chan struct{})
	go func(ws *websocket.Conn, done chan struct{}) {
		defer close(done)
		for {
			if _, _, err := ws.NextReader(); err != nil {
				return
			}
		}
	}(ws, s.done)
	return nil
}

// leave says leave and closes cleanly: the server frees the address at once.
func (s *churnSlot) leave() {
	if s.ws == nil {
		return
	}
	b, _ := proto.Encode(&proto.Leave{})
	_ = s.ws.SetWriteDeadline(time.Now().Add(time.Second))
	_ = s.ws.WriteMessage(websocket.TextMessage, b)
	benchClose(s.ws)
	<-s.done
	s.ws = nil
}

// vanish drops the TCP connection with no close frame, as a crashed peer
// or a lost network does.
func (s *churnSlot) vanish() {
	if s.ws == nil {
		return
	}
	_ = s.ws.NetConn().Close()
	<-s.done
	s.ws = nil
}
