package peer

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/peerlan/peerlan/peer/ether"
)

// Switch defaults and bounds; SwitchConfig documents each.
const (
	DefaultMACAgingTime   = 5 * time.Minute
	DefaultSwitchQueueLen = 1024
	DefaultMaxMACsPerPort = 256
	DefaultMaxPorts       = 128
	DefaultBroadcastRate  = 200
	DefaultBroadcastBurst = 200

	minMACAgingTime   = time.Second
	maxMACAgingTime   = 24 * time.Hour
	maxSwitchQueueLen = 4096
	maxMACsPerPort    = 1 << 16
	maxPorts          = 4096
	maxBroadcastRate  = 1_000_000
	maxPortNameLen    = 128

	// readBufSize is the buffer each port's reader hands to Read: larger
	// than any frame the switch accepts (an offloaded super-frame included),
	// so that a port delivering an oversize frame shows up in the oversize
	// counter rather than vanishing inside the port.
	readBufSize = MaxOffloadFrameSize + 1024
)

var (
	errSwitchClosed  = errors.New("peer: switch closed")
	errPortExists    = errors.New("peer: port name already in use")
	errNoSuchPort    = errors.New("peer: no such port")
	errTooManyPorts  = errors.New("peer: too many ports")
	errBadPortName   = errors.New("peer: bad port name")
	errBadPortKind   = errors.New("peer: bad port kind")
	errNilPort       = errors.New("peer: nil port")
	errBadSwitchConf = errors.New("peer: bad switch config")
)

// SwitchConfig configures a Switch. The zero value of every field selects
// its default.
type SwitchConfig struct {
	// MACAgingTime is how long a MAC stays learned without a frame from it.
	// Defaults to 5 minutes (IEEE 802.1D's default); 1 s to 24 h.
	MACAgingTime time.Duration

	// QueueLen is how many frames each port's transmit queue holds before
	// the oldest is dropped. Defaults to 1024; at most 4096. A slot costs
	// MaxFrameSize bytes twice (the queue is double-buffered), allocated the
	// first time the queue is that deep. 1024 is what a TCP stream of plain
	// frames needs while a paced link or a TAP writer catches up with a
	// burst: with 64 the receiving peer dropped 3% of frames under iperf3
	// between two bin/peer namespaces (-offload=false), with 256 still
	// 1.5%, with 512 under 0.2%; once native links carried larger SCTP
	// packets (package nativertc) and outran the receiving TAP's writer,
	// 512 dropped 0.67% and 1024 none.
	QueueLen int

	// MaxMACsPerPort bounds the MAC addresses learned on one port; frames
	// from further new source MACs are dropped (DropMACLimit), like port
	// security on a hardware switch. Defaults to 256; at most 65536.
	MaxMACsPerPort int

	// MaxPorts bounds the ports of the switch. Defaults to 128; at most 4096.
	MaxPorts int

	// BroadcastRate is the sustained rate, in frames per second, at which a
	// link may send broadcast and multicast frames; BroadcastBurst is how
	// many it may send at once after being quiet. Excess frames are dropped
	// (DropBroadcastBudget). Default 200 and 200; at most 1e6 each.
	BroadcastRate  int
	BroadcastBurst int

	// Logger receives the switch's logs. Defaults to discarding them.
	Logger *slog.Logger

	// Now is the switch's clock. The broadcast budget reads it for each
	// group frame from a link; MAC aging samples it once per tick (1/64 of
	// MACAgingTime, from 100 ms to 1 s), so aging is late by up to a tick.
	// Defaults to time.Now; tests inject a fake one.
	Now func() time.Time
}

// withDefaults returns c with zero fields set to their defaults.
func (c SwitchConfig) withDefaults() SwitchConfig {
	if c.MACAgingTime == 0 {
		c.MACAgingTime = DefaultMACAgingTime
	}
	if c.QueueLen == 0 {
		c.QueueLen = DefaultSwitchQueueLen
	}
	if c.MaxMACsPerPort == 0 {
		c.MaxMACsPerPort = DefaultMaxMACsPerPort
	}
	if c.MaxPorts == 0 {
		c.MaxPorts = DefaultMaxPorts
	}
	if c.BroadcastRate == 0 {
		c.BroadcastRate = DefaultBroadcastRate
	}
	if c.BroadcastBurst == 0 {
		c.BroadcastBurst = DefaultBroadcastBurst
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return c
}

// validate checks a config that withDefaults has filled in.
func (c SwitchConfig) validate() error {
	check := func(name string, v, lo, hi int64) error {
		if v < lo || v > hi {
			return fmt.Errorf("%w: %s is %d, want %d to %d", errBadSwitchConf, name, v, lo, hi)
		}
		return nil
	}
	return errors.Join(
		check("MACAgingTime", int64(c.MACAgingTime), int64(minMACAgingTime), int64(maxMACAgingTime)),
		check("QueueLen", int64(c.QueueLen), 1, maxSwitchQueueLen),
		check("MaxMACsPerPort", int64(c.MaxMACsPerPort), 1, maxMACsPerPort),
		check("MaxPorts", int64(c.MaxPorts), 1, maxPorts),
		check("BroadcastRate", int64(c.BroadcastRate), 1, maxBroadcastRate),
		check("BroadcastBurst", int64(c.BroadcastBurst), 1, maxBroadcastRate),
	)
}

// Switch is the learning Ethernet switch every peer runs: one or more local
// ports (this peer's guest) and one link port per remote peer.
//
// Forwarding (DESIGN.md invariant 4):
//   - Frames shorter than an Ethernet header or longer than MaxFrameSize,
//     and frames with a group or all-zero source MAC, are dropped. An
//     OffloadPort's offloaded frames may be longer (MaxOffloadFrameSize) if
//     their work passes ether.Offload.Check; they leave by OffloadPorts as
//     they are and by other ports finished (checksummed, segmented).
//   - The source MAC is learned on the ingress port and ages out after
//     MACAgingTime without frames from it; a port's learned MACs are
//     forgotten when it is removed.
//   - Unicast to a learned MAC goes to exactly its port. Broadcast,
//     multicast and unknown unicast are flooded. A frame never leaves by the
//     port it came in on.
//   - Split horizon: a frame from a link goes only to local ports, never to
//     another link. The mesh is a full mesh in which every peer floods to
//     every link itself, so this is what keeps it free of loops.
//   - A link is an untrusted remote peer: it may not use a source MAC that is
//     currently learned (not expired) on any other port (DropSpoofedSource),
//     and its broadcast and multicast frames spend a token bucket
//     (DropBroadcastBudget). Budgets apply on ingress, where the receiving
//     peer protects its own guest; it cannot trust a sender to police itself.
//     A link added with AddGuardedLink also has its layer-3 claims checked
//     (L3Guard) before anything is learned from the frame.
//   - A local port's guest is trusted: a source MAC it uses moves to that
//     port even from a link where it is still live. This is deliberate: the
//     guest's NIC is here, so a remote peer that claimed the guest's MAC
//     first (to black-hole its traffic) loses it the moment the guest speaks,
//     and cannot take it back while the local entry is live. Between local
//     ports, and from an expired entry, a MAC simply moves (a host moved).
//
// Each port has a reader goroutine, which parses, learns and forwards what
// the port reads, and a writer goroutine, which drains the port's bounded
// transmit queue into its Write. A reader never waits for another port: it
// copies the frame into the destination queue's preallocated slot, and a
// full queue drops its oldest frame (DropQueueFull). So a slow or frozen
// port loses its own frames and delays nobody.
//
// Locking:
//   - The forwarding path takes no lock but the destination queues' (each
//     held for one copy), and tableMu when it learns or moves a MAC. It
//     reads the port set and the MAC table through atomic pointers to
//     immutable snapshots, which the rare writers replace (copy-on-write)
//     under mu and tableMu respectively.
//   - mu guards port membership, the lifecycle (closed) and the retired
//     counters. tableMu guards the MAC table's writers and every port's
//     macCount and forgotten flag. The two are never held together, and
//     neither is held while calling into a Port.
type Switch struct {
	cfg   SwitchConfig
	log   *slog.Logger
	start time.Time // origin of the switch's clocks (nanoseconds since start)

	// coarseNow is the MAC table's clock: cfg.Now sampled by the janitor
	// every tick. Reading the real clock costs about as much as the rest
	// of forwarding a frame (more in a browser), while aging needs no
	// better than tick precision.
	coarseNow atomic.Int64
	tick      time.Duration

	ports atomic.Pointer[portSet] // the forwarding path's view of the ports
	table atomic.Pointer[macTable]

	wg   sync.WaitGroup // every goroutine the switch started
	done chan struct{}  // closed by Close; stops the janitor

	mu struct {
		sync.Mutex
		closed bool
		// all holds every port whose counters still count towards Stats:
		// the live ports, plus removed ones whose goroutines have not
		// finished yet (see retire).
		all          []*switchPort
		retiredDrops SwitchDrops // drops of ports fully removed
	}

	tableMu sync.Mutex // serializes writers of table; see above
}

// portSet is an immutable snapshot of the live ports.
type portSet struct {
	byName map[string]*switchPort
	all    []*switchPort // flood targets for frames from a local port
	locals []*switchPort // flood targets for frames from a link
}

func (ps *portSet) with(sp *switchPort) *portSet {
	n := &portSet{byName: make(map[string]*switchPort, len(ps.byName)+1)}
	for name, p := range ps.byName {
		n.byName[name] = p
	}
	n.byName[sp.name] = sp
	n.all = append(slices.Clip(ps.all), sp)
	n.locals = slices.Clip(ps.locals)
	if sp.kind == PortKindLocal {
		n.locals = append(n.locals, sp)
	}
	return n
}

func (ps *portSet) without(sp *switchPort) *portSet {
	n := &portSet{byName: make(map[string]*switchPort, len(ps.byName))}
	for name, p := range ps.byName {
		if p != sp {
			n.byName[name] = p
		}
	}
	isSP := func(p *switchPort) bool { return p == sp }
	n.all = slices.DeleteFunc(slices.Clone(ps.all), isSP)
	n.locals = slices.DeleteFunc(slices.Clone(ps.locals), isSP)
	return n
}

// macKey is a MAC packed into an integer, so that table lookups take the
// map's fast path for 64-bit keys.
type macKey uint64

func keyOf(m ether.MAC) macKey {
	return macKey(m[0])<<40 | macKey(m[1])<<32 | macKey(m[2])<<24 | macKey(m[3])<<16 | macKey(m[4])<<8 | macKey(m[5])
}

func (k macKey) mac() ether.MAC {
	return ether.MAC{byte(k >> 40), byte(k >> 32), byte(k >> 24), byte(k >> 16), byte(k >> 8), byte(k)}
}

// macTable is an immutable snapshot of the learned MACs. Entries are shared
// between snapshots; only their lastSeen changes in place.
type macTable map[macKey]*macEntry

type macEntry struct {
	port     *switchPort // fixed: a MAC that moves gets a new entry
	lastSeen atomic.Int64
}

// expired reports whether e has aged out at now (on the coarse clock).
func (s *Switch) expired(e *macEntry, now int64) bool {
	return now-e.lastSeen.Load() > int64(s.cfg.MACAgingTime)
}

// switchPort is the switch's side of one Port.
type switchPort struct {
	name string
	kind PortKind
	port Port
	off  OffloadPort // port, when it carries offloaded frames; else nil
	// guard, on a link to a remote peer, is what its frames may claim.
	guard *L3Guard
	q     *frameQueue
	// batch is the writer's ring: frames taken from q being written.
	batch frameRing

	readerDone chan struct{}
	writerDone chan struct{}

	// Reader goroutine only, except that Stats loads the counters.
	rxFrames, rxBytes atomic.Uint64
	budget            tokenBucket
	_                 [64]byte // keep the reader's and the writer's counters on separate cache lines

	// Writer goroutine only, except that Stats loads them.
	txFrames, txBytes atomic.Uint64
	_                 [64]byte

	drops  [numDropReasons]atomic.Uint64
	logged atomic.Uint32 // bit per DropReason: already logged once

	// Guarded by Switch.tableMu.
	macCount  int
	forgotten bool // its MACs were purged; it may learn no more

	// Guarded by Switch.mu.
	removed bool // no longer in the port set
	retired bool // counters folded into retiredDrops
}

// drop counts a dropped frame and logs the first drop of each security
// relevant reason on a port, so an operator learns of an attack or a broken
// guest without a log line per frame.
func (s *Switch) drop(sp *switchPort, r DropReason, frame []byte) {
	sp.drops[r].Add(1)
	switch r {
	case DropSpoofedSource, DropGroupSource, DropZeroSource, DropMACLimit, DropBroadcastBudget, DropOversize, DropBadOffload,
		DropIPSource, DropARPSpoof, DropRogueDHCP, DropRogueRouter, DropTagged:
	default:
		return
	}
	bit := uint32(1) << r
	if sp.logged.Load()&bit != 0 || sp.logged.Or(bit)&bit != 0 {
		return
	}
	attrs := []any{"port", sp.name, "kind", sp.kind, "reason", r, "len", len(frame)}
	if len(frame) >= ether.HeaderLen {
		e := ether.Ethernet(frame)
		attrs = append(attrs, "src", e.Src(), "dst", e.Dst())
	}
	s.log.Warn("switch: dropping frames (logged once per port and reason)", attrs...)
}

// tokenBucket is a GCRA token bucket in the switch's nanosecond clock. It is
// touched only by its port's reader goroutine.
type tokenBucket struct {
	interval  int64 // ns per token
	tolerance int64 // (burst-1) * interval
	tat       int64 // theoretical arrival time of the next conforming frame
}

func newTokenBucket(rate, burst int) tokenBucket {
	interval := int64(time.Second) / int64(rate)
	return tokenBucket{interval: interval, tolerance: int64(burst-1) * interval}
}

func (b *tokenBucket) allow(now int64) bool {
	tat := max(b.tat, now)
	if tat-now > b.tolerance {
		return false
	}
	b.tat = tat + b.interval
	return true
}

// NewSwitch returns a running switch with no ports, or an error if cfg is
// invalid.
func NewSwitch(cfg SwitchConfig) (*Switch, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	s := &Switch{
		cfg:   cfg,
		log:   cfg.Logger,
		start: cfg.Now(),
		// Aging is then late by at most 1/64 of the aging time (and at
		// most a second): 5 minutes become up to 5 min 1 s.
		tick: min(max(cfg.MACAgingTime/64, 100*time.Millisecond), time.Second),
		done: make(chan struct{}),
	}
	s.ports.Store(&portSet{byName: map[string]*switchPort{}})
	s.table.Store(&macTable{})
	s.wg.Add(1)
	go s.janitor()
	return s, nil
}

// now reads the precise clock: nanoseconds since NewSwitch.
func (s *Switch) now() int64 { return int64(s.cfg.Now().Sub(s.start)) }

// sampleClock advances the coarse clock to the precise one.
func (s *Switch) sampleClock() int64 {
	now := s.now()
	s.coarseNow.Store(now)
	return now
}

// AddPort attaches p under a unique name and starts forwarding its frames.
// The switch owns p from then on and closes it when the port is removed.
func (s *Switch) AddPort(name string, kind PortKind, p Port) error {
	return s.addPort(name, kind, p, nil)
}

// AddGuardedLink is AddPort for a link whose frames must also pass g (see
// L3Guard): the mesh's links to remote peers.
func (s *Switch) AddGuardedLink(name string, p Port, g L3Guard) error {
	return s.addPort(name, PortKindLink, p, &g)
}

func (s *Switch) addPort(name string, kind PortKind, p Port, guard *L3Guard) error {
	switch {
	case name == "" || len(name) > maxPortNameLen || strings.ContainsFunc(name, isControl):
		return fmt.Errorf("%w: %q (want 1 to %d printable bytes)", errBadPortName, name, maxPortNameLen)
	case kind != PortKindLocal && kind != PortKindLink:
		return fmt.Errorf("%w: %v", errBadPortKind, kind)
	case p == nil:
		return errNilPort
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.mu.closed {
		return errSwitchClosed
	}
	ports := s.ports.Load()
	if _, ok := ports.byName[name]; ok {
		return fmt.Errorf("%w: %q", errPortExists, name)
	}
	if len(ports.all) >= s.cfg.MaxPorts {
		return fmt.Errorf("%w: %d", errTooManyPorts, s.cfg.MaxPorts)
	}
	sp := &switchPort{
		name:       name,
		kind:       kind,
		port:       p,
		guard:      guard,
		readerDone: make(chan struct{}),
		writerDone: make(chan struct{}),
	}
	if op, ok := p.(OffloadPort); ok && op.Offloads() {
		sp.off = op
	}
	sp.q = newFrameQueue(s.cfg.QueueLen, &sp.drops[DropQueueFull])
	sp.batch = newFrameRing(s.cfg.QueueLen)
	if kind == PortKindLink {
		sp.budget = newTokenBucket(s.cfg.BroadcastRate, s.cfg.BroadcastBurst)
		sp.budget.tat = s.now()
	}
	s.ports.Store(ports.with(sp))
	s.mu.all = append(s.mu.all, sp)
	s.wg.Add(2)
	go s.readLoop(sp)
	go s.writeLoop(sp)
	s.log.Info("switch: port added", "port", name, "kind", kind)
	return nil
}

func isControl(r rune) bool { return r < 0x20 || r == 0x7f }

// RemovePort detaches the named port, closes it, forgets its MACs and waits
// until the switch no longer touches it.
func (s *Switch) RemovePort(name string) error {
	s.mu.Lock()
	sp := s.ports.Load().byName[name]
	if sp == nil {
		s.mu.Unlock()
		return fmt.Errorf("%w: %q", errNoSuchPort, name)
	}
	s.detachLocked(sp)
	s.mu.Unlock()

	s.shutdown(sp)
	<-sp.readerDone
	<-sp.writerDone
	s.retire(sp)
	s.log.Info("switch: port removed", "port", name, "kind", sp.kind)
	return nil
}

// Close removes every port, closing them, and waits for all the switch's
// goroutines to finish. Later AddPort calls fail; Close may be called again.
func (s *Switch) Close() error {
	s.mu.Lock()
	if s.mu.closed {
		s.mu.Unlock()
		s.wg.Wait()
		return nil
	}
	s.mu.closed = true
	var detached []*switchPort
	for _, sp := range s.ports.Load().all {
		s.detachLocked(sp)
		detached = append(detached, sp)
	}
	s.mu.Unlock()

	close(s.done)
	for _, sp := range detached {
		s.shutdown(sp)
	}
	s.wg.Wait()
	for _, sp := range detached {
		s.retire(sp)
	}
	return nil
}

// detachLocked takes sp out of the forwarding path. s.mu must be held; it
// returns false if sp was already detached.
func (s *Switch) detachLocked(sp *switchPort) bool {
	if sp.removed {
		return false
	}
	sp.removed = true
	s.ports.Store(s.ports.Load().without(sp))
	return true
}

// shutdown stops a detached port: its MACs are forgotten, its queue and the
// Port closed, which unblocks its reader and writer.
func (s *Switch) shutdown(sp *switchPort) {
	s.forget(sp)
	sp.q.close()
	if err := sp.port.Close(); err != nil {
		s.log.Debug("switch: port close", "port", sp.name, "err", err)
	}
}

// retire folds the counters of a port whose goroutines have finished into
// the switch totals. Idempotent.
func (s *Switch) retire(sp *switchPort) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if sp.retired {
		return
	}
	sp.retired = true
	for r := range sp.drops {
		s.mu.retiredDrops[r] += sp.drops[r].Load()
	}
	s.mu.all = slices.DeleteFunc(s.mu.all, func(p *switchPort) bool { return p == sp })
}

// readLoop is sp's reader goroutine: it reads frames and forwards them until
// Read fails, then removes the port.
func (s *Switch) readLoop(sp *switchPort) {
	defer s.wg.Done()
	defer close(sp.readerDone)
	s.log.Debug("switch: reader started", "port", sp.name)
	defer s.log.Debug("switch: reader stopped", "port", sp.name)

	buf := make([]byte, readBufSize)
	for {
		var (
			n   int
			o   ether.Offload
			err error
		)
		if sp.off != nil {
			n, o, err = sp.off.ReadOffload(buf)
		} else {
			n, err = sp.port.Read(buf)
		}
		if err != nil {
			if errors.Is(err, ErrDropped) {
				continue // the port lost a frame; it is still usable
			}
			s.readFailed(sp, err)
			return
		}
		s.forward(sp, buf[:n], o)
	}
}

// readFailed removes a port whose Read failed, unless someone else is
// already removing it (they are waiting for this goroutine).
func (s *Switch) readFailed(sp *switchPort, err error) {
	s.mu.Lock()
	mine := s.detachLocked(sp)
	s.mu.Unlock()
	if !mine {
		return
	}
	if errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) {
		s.log.Info("switch: port closed, removing it", "port", sp.name, "kind", sp.kind, "err", err)
	} else {
		s.log.Warn("switch: port read failed, removing it", "port", sp.name, "kind", sp.kind, "err", err)
	}
	s.shutdown(sp)
	<-sp.writerDone
	s.retire(sp)
}

// writeLoop is sp's writer goroutine: it drains the port's queue into the
// port's Write until the queue is closed.
func (s *Switch) writeLoop(sp *switchPort) {
	defer s.wg.Done()
	defer close(sp.writerDone)
	s.log.Debug("switch: writer started", "port", sp.name)
	defer s.log.Debug("switch: writer stopped", "port", sp.name)

	batch := &sp.batch
	var fin finisher
	for sp.q.take(batch) {
		for i := range batch.count {
			slot := batch.at(i)
			stop := s.write(sp, slot.frame(), slot.off, &fin)
			slot.release()
			if stop {
				for j := i + 1; j < batch.count; j++ {
					batch.at(j).release()
				}
				return
			}
		}
		batch.count = 0
	}
}

// finisher is a writer's means to finish offloaded frames in software for a
// port that does not carry them.
type finisher struct {
	seg ether.Segmenter
	buf []byte // one segment; allocated on first need
}

// write hands frame, with the work o it still needs, to sp's port, doing
// that work first when the port cannot. It reports whether the writer must
// stop (a write failed because the port is being removed).
func (s *Switch) write(sp *switchPort, frame []byte, o ether.Offload, fin *finisher) (stop bool) {
	switch {
	case o.IsZero():
		_, err := sp.port.Write(frame)
		return s.written(sp, frame, err)
	case sp.off != nil:
		_, err := sp.off.WriteOffload(frame, o)
		return s.written(sp, frame, err)
	case o.GSO == ether.GSONone:
		// The switch checked o on ingress; the slot is the writer's to change.
		ether.FinishChecksum(frame, o)
		_, err := sp.port.Write(frame)
		return s.written(sp, frame, err)
	}
	if fin.buf == nil {
		fin.buf = make([]byte, MaxFrameSize)
	}
	if fin.seg.Reset(frame, o) != nil {
		sp.drops[DropBadOffload].Add(1)
		return false
	}
	for n := fin.seg.Next(fin.buf); n > 0; n = fin.seg.Next(fin.buf) {
		_, err := sp.port.Write(fin.buf[:n])
		if s.written(sp, fin.buf[:n], err) {
			return true
		}
	}
	return false
}

// written accounts for one Write of frame to sp that returned err, and
// reports whether the writer must stop.
func (s *Switch) written(sp *switchPort, frame []byte, err error) (stop bool) {
	switch {
	case err == nil:
		sp.txFrames.Add(1)
		sp.txBytes.Add(uint64(len(frame)))
	case errors.Is(err, ErrDropped):
		sp.drops[DropPortBusy].Add(1)
	default:
		if sp.q.isClosed() {
			return true
		}
		sp.drops[DropWriteError].Add(1)
		if sp.logged.Or(1<<DropWriteError)&(1<<DropWriteError) == 0 {
			s.log.Warn("switch: port write failed (logged once per port)", "port", sp.name, "kind", sp.kind, "err", err)
		}
	}
	return false
}

// forward handles one frame read from in, with the work o it still needs
// (zero for a plain frame). It is the switch's hot path: it takes no lock
// but the destination queues', and allocates nothing.
func (s *Switch) forward(in *switchPort, frame []byte, o ether.Offload) {
	in.rxFrames.Add(1)
	in.rxBytes.Add(uint64(len(frame)))
	if len(frame) < ether.HeaderLen {
		s.drop(in, DropRunt, frame)
		return
	}
	if !o.IsZero() {
		if o.Check(frame) != nil {
			s.drop(in, DropBadOffload, frame)
			return
		}
	} else if len(frame) > MaxFrameSize {
		s.drop(in, DropOversize, frame)
		return
	}
	eth := ether.Ethernet(frame)
	src, dst := eth.Src(), eth.Dst()
	if src.IsGroup() {
		s.drop(in, DropGroupSource, frame)
		return
	}
	if src.IsZero() {
		s.drop(in, DropZeroSource, frame)
		return
	}
	if in.guard != nil {
		if r := in.guard.check(frame); r != dropNone {
			s.drop(in, r, frame)
			return
		}
	}

	now := s.coarseNow.Load()
	table := *s.table.Load()
	if !s.learn(in, keyOf(src), table, now, frame) {
		return
	}

	if dst.IsGroup() {
		// The budget reads the precise clock: its resolution matters, and
		// group frames from links are few (at most the budget passes).
		if in.kind == PortKindLink && !in.budget.allow(s.now()) {
			s.drop(in, DropBroadcastBudget, frame)
			return
		}
		s.flood(in, frame, o)
		return
	}
	if e := table[keyOf(dst)]; e != nil && !s.expired(e, now) {
		out := e.port
		if out == in || (in.kind == PortKindLink && out.kind == PortKindLink) {
			s.drop(in, DropFiltered, frame)
			return
		}
		out.q.push(frame, o)
		return
	}
	s.flood(in, frame, o)
}

// flood sends frame to every port it may go to but the one it came from.
func (s *Switch) flood(in *switchPort, frame []byte, o ether.Offload) {
	ports := s.ports.Load()
	targets := ports.all
	if in.kind == PortKindLink {
		targets = ports.locals
	}
	for _, out := range targets {
		if out != in {
			out.q.push(frame, o)
		}
	}
}

// learn records that src was seen on in, and reports whether the frame may
// go on. The common case, src already learned on in, is a map lookup and an
// atomic store once per clock tick (not per frame: that would bounce the
// entry's cache line between cores).
func (s *Switch) learn(in *switchPort, src macKey, table macTable, now int64, frame []byte) bool {
	if e := table[src]; e != nil {
		if e.port == in {
			if e.lastSeen.Load() != now {
				e.lastSeen.Store(now)
			}
			return true
		}
		if in.kind == PortKindLink && !s.expired(e, now) {
			s.drop(in, DropSpoofedSource, frame)
			return false
		}
	}
	return s.learnSlow(in, src, now, frame)
}

// learnSlow adds src to the table on in, or moves it there, under tableMu.
func (s *Switch) learnSlow(in *switchPort, src macKey, now int64, frame []byte) bool {
	s.tableMu.Lock()
	defer s.tableMu.Unlock()
	if in.forgotten {
		return false // in is being removed; the frame dies with it
	}
	table := *s.table.Load() // may be newer than the caller's
	old := table[src]
	if old != nil {
		if old.port == in {
			old.lastSeen.Store(now)
			return true
		}
		if in.kind == PortKindLink && !s.expired(old, now) {
			s.drop(in, DropSpoofedSource, frame)
			return false
		}
	}
	if in.macCount >= s.cfg.MaxMACsPerPort {
		s.drop(in, DropMACLimit, frame)
		return false
	}
	e := &macEntry{port: in}
	e.lastSeen.Store(now)
	next := make(macTable, len(table)+1)
	for k, v := range table {
		next[k] = v
	}
	next[src] = e
	s.table.Store(&next)
	in.macCount++
	if old != nil {
		old.port.macCount--
		s.log.Debug("switch: MAC moved", "mac", src.mac(), "from", old.port.name, "to", in.name)
	} else {
		s.log.Debug("switch: MAC learned", "mac", src.mac(), "port", in.name)
	}
	return true
}

// forget purges sp's MACs from the table and stops it from learning more.
func (s *Switch) forget(sp *switchPort) {
	s.tableMu.Lock()
	defer s.tableMu.Unlock()
	if sp.forgotten {
		return
	}
	sp.forgotten = true
	if sp.macCount > 0 {
		s.rebuildTable(func(e *macEntry) bool { return e.port == sp })
	}
}

// rebuildTable replaces the table with one without the entries gone
// reports, adjusting their ports' counts. tableMu must be held.
func (s *Switch) rebuildTable(gone func(*macEntry) bool) int {
	table := *s.table.Load()
	next := make(macTable, len(table))
	removed := 0
	for k, e := range table {
		if gone(e) {
			e.port.macCount--
			removed++
			continue
		}
		next[k] = e
	}
	if removed > 0 {
		s.table.Store(&next)
	}
	return removed
}

// janitor is the switch's housekeeping goroutine. Every tick it samples the
// clock for the MAC table; every 16 ticks it sweeps expired MACs so that the
// table and the per-port counts stay bounded by live addresses. Lookups
// ignore expired entries on their own, so the sweep only reclaims space.
func (s *Switch) janitor() {
	defer s.wg.Done()
	s.log.Debug("switch: janitor started", "tick", s.tick)
	defer s.log.Debug("switch: janitor stopped")

	t := time.NewTicker(s.tick)
	defer t.Stop()
	for n := 1; ; n++ {
		select {
		case <-s.done:
			return
		case <-t.C:
			s.sampleClock()
			if n%16 == 0 {
				s.sweep()
			}
		}
	}
}

// sweep removes expired entries from the MAC table.
func (s *Switch) sweep() {
	now := s.sampleClock()
	s.tableMu.Lock()
	defer s.tableMu.Unlock()
	if n := s.rebuildTable(func(e *macEntry) bool { return s.expired(e, now) }); n > 0 {
		s.log.Debug("switch: MACs aged out", "count", n)
	}
}

// Stats returns a snapshot of the counters. It takes no lock the forwarding
// path takes and is safe to call often and concurrently.
func (s *Switch) Stats() SwitchStats {
	type portView struct {
		sp   *switchPort
		live bool
	}
	s.mu.Lock()
	views := make([]portView, len(s.mu.all))
	for i, sp := range s.mu.all {
		views[i] = portView{sp, !sp.removed}
	}
	st := SwitchStats{Drops: s.mu.retiredDrops}
	s.mu.Unlock()

	st.MACs = len(*s.table.Load())
	for _, v := range views {
		sp := v.sp
		s.tableMu.Lock()
		macs := sp.macCount
		s.tableMu.Unlock()
		ps := SwitchPortStats{
			Name:     sp.name,
			Kind:     sp.kind,
			RxFrames: sp.rxFrames.Load(),
			RxBytes:  sp.rxBytes.Load(),
			TxFrames: sp.txFrames.Load(),
			TxBytes:  sp.txBytes.Load(),
			Queued:   sp.q.len(),
			MACs:     macs,
		}
		for r := range sp.drops {
			ps.Drops[r] = sp.drops[r].Load()
			st.Drops[r] += ps.Drops[r]
		}
		if v.live {
			st.Ports = append(st.Ports, ps)
		}
	}
	slices.SortFunc(st.Ports, func(a, b SwitchPortStats) int { return strings.Compare(a.Name, b.Name) })
	return st
}

// MACTable returns the live (unexpired) entries of the MAC table, sorted by
// MAC. Ages have the janitor's tick as resolution.
func (s *Switch) MACTable() []SwitchMAC {
	now := s.coarseNow.Load()
	var out []SwitchMAC
	for k, e := range *s.table.Load() {
		if s.expired(e, now) {
			continue
		}
		out = append(out, SwitchMAC{
			MAC:  k.mac(),
			Port: e.port.name,
			Kind: e.port.kind,
			Age:  time.Duration(now - e.lastSeen.Load()),
		})
	}
	slices.SortFunc(out, func(a, b SwitchMAC) int { return bytes.Compare(a.MAC[:], b.MAC[:]) })
	return out
}
