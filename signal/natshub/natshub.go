// Package natshub is a signal.Hub whose rooms span several signaling
// servers (instances) joined by NATS: a peer may join through any instance
// and meets every member of its room, whichever instance they came through.
//
// Shared state is one JetStream key-value bucket, named after the cluster:
//
//	cfg                 the room subnet and member limit every instance must share
//	i.<instance>        an instance's presence and TURN relay URLs; per-key TTL
//	                    (PresenceTTL), refreshed every PresenceTTL/3
//	r.<room>.a.<n>      a member: the claim of address offset n of the room
//	                    (1 is the gateway), created only if absent, so an
//	                    address is unique cluster-wide; the value names the
//	                    member (id, role, kind) and the instance holding it
//
// <room> is the room name in unpadded base64url (room names may contain '.',
// the subject separator). Only offsets 2..signal.MaxGuestIndex are claimed,
// which bounds a room's members cluster-wide without a counter.
//
// Events travel on core NATS: <cluster>.room.<room> carries peer-joined and
// peer-left to every instance with members in the room, <cluster>.peer.<id>
// carries signals (and "evict" when another instance resumed the member) to
// the instance holding that peer. Every instance subscribes to all of
// <cluster>.peer.* at once (one subscription, not one per peer, which cost
// each NATS node a subscription per peer of the whole cluster) and keeps
// those for its own members; the others' are dropped. Each instance receives
// all of them on one channel, in the order each sender published them, so a
// newcomer's peer-joined always reaches a member before its first offer.
//
// Of two members, the one whose claim has the lower stream sequence (seq) is
// the older: a newcomer's welcome lists only older members, and a member is
// told peer-joined only of younger ones, so exactly one of each pair makes
// the offers (no glare) even when they join at once on two instances.
//
// An instance that stops heartbeating loses its presence key after
// PresenceTTL; every survivor sees the key expire and, after the resume
// grace, deletes the dead instance's claims by revision, so exactly one
// survivor announces each of its members as left, unless the member was
// resumed elsewhere first (which rewrote its claim). Presence alone does not
// prove death: a JetStream leader election holds every write, live
// instances' heartbeats included, for seconds. So each instance also pulses
// on core NATS (<cluster>.alive.<instance>), and nobody reaps an instance it
// heard within the TTL. An instance that finds its own presence gone checks
// its claims and evicts only the members whose claims were reaped.
//
// No Ethernet frame ever crosses NATS: only the signaling JSON the Server
// accepted (DESIGN.md invariant 1).
package natshub

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/peerlan/peerlan/signal"
	"github.com/peerlan/peerlan/signal/proto"
)

// Config configures a Hub. Zero fields take the documented defaults.
type Config struct {
	// Conn is the NATS connection; required. The Hub does not close it.
	Conn *nats.Conn
	// Cluster names the bucket and the subject prefix, so that several
	// clusters may share one NATS; letters, digits, '-' and '_'. Default
	// "peerlan".
	Cluster string
	// Instance names this instance in logs and in the directory; letters,
	// digits, '-' and '_'. Default: random. A random suffix is added, so
	// that a restarted instance never inherits its former self's members.
	Instance string
	// PresenceTTL is how long an instance that stopped heartbeating is
	// still believed alive: its peers are announced left this long after it
	// died unless they resumed elsewhere. Whole seconds, at least 1 s;
	// default 6 s.
	PresenceTTL time.Duration
	// Replicas is the bucket's replica count (3 on a 3-node JetStream
	// cluster, so that the directory survives a node). Default 1.
	Replicas int
	// MaxBucketBytes bounds the bucket; default 256 MiB.
	MaxBucketBytes int64
	// Relay lists this instance's TURN URLs, published for the others'
	// welcomes (OtherRelay). Default none.
	Relay []string
	// Timeout bounds each NATS request; default 5 s.
	Timeout time.Duration
	// StartTimeout bounds how long Open keeps trying to create the bucket
	// (a JetStream cluster that is still electing its leader refuses it for
	// a while); default 30 s.
	StartTimeout time.Duration
	// Logger receives logs; default slog.Default().
	Logger *slog.Logger
}

// Limits on what the Hub keeps or reads; the directory is shared, so every
// read of it is bounded as well.
const (
	dispatchQueue = 8192    // NATS messages waiting for the dispatcher
	pendingMax    = 256     // events held for a member until its join completes
	maxClaims     = 1 << 20 // claims one scan of the whole bucket reads
	maxValue      = 1024    // bytes of one key's value
)

var nameRE = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// Hub is a shared signal.Hub. Make it with New, give its Open to
// signal.Config.Hub.
type Hub struct {
	cfg  Config
	inst string // this instance's name in the directory (with its suffix)
	log  *slog.Logger

	// Set by Open.
	hc       signal.HubConfig
	maxIdx   int
	js       jetstream.JetStream
	kv       jetstream.KeyValue
	ch       chan *nats.Msg
	peerSub  *nats.Subscription // <cluster>.peer.*, into ch
	aliveSub *nats.Subscription // <cluster>.alive.*, noting heard
	stop     chan struct{}
	wg       sync.WaitGroup

	// The heartbeat goroutine's own.
	beatFails int  // heartbeats failed in a row
	recheck   bool // our presence lapsed; our claims are not checked yet

	mu       sync.Mutex
	closed   bool
	opened   bool
	rooms    map[string]*room // by room key (encoded name)
	members  map[proto.PeerID]*member
	live     map[string][]string  // live instances and their relay URLs
	heard    map[string]time.Time // when each instance last pulsed on core NATS
	doubts   []doubt              // claim writes of unknown outcome, settled by settleDoubts
	reaping  map[string]bool      // instances whose reap is pending
	presence uint64               // revision of our presence key
}

// room is a room with members held by this instance. Guarded by Hub.mu.
type room struct {
	name, key string
	sub       *nats.Subscription
	members   map[proto.PeerID]*member
	joining   int // joins in progress, which keep the room
	// offsets is a hint of the room's members' address offsets (from the
	// last listing and the events since), so that a join here need not
	// list the room before it claims; the claim itself stays atomic.
	offsets map[proto.PeerID]int
}

// member is a peer held by this instance. Guarded by Hub.mu.
type member struct {
	id      proto.PeerID
	room    *room
	info    proto.PeerInfo
	key     string // its claim
	rev     uint64 // the claim's revision as we last wrote it
	seq     uint64 // the claim's first revision: its age
	sink    signal.Sink
	grace   *time.Timer
	joining bool
	pending []event // while joining
	gone    bool
}

// claim is the value of r.<room>.a.<n>.
type claim struct {
	ID   proto.PeerID `json:"id"`
	Role proto.Role   `json:"role"`
	Kind proto.Kind   `json:"kind,omitempty"`
	Inst string       `json:"inst"`
	// Seq is the claim's first revision, kept when a resume elsewhere
	// rewrites it; 0 in a claim never rewritten (its revision is its seq).
	Seq uint64 `json:"seq,omitempty"`
}

// presence is the value of i.<instance>.
type presence struct {
	Relay []string `json:"relay,omitempty"`
}

// clusterCfg is the value of cfg.
type clusterCfg struct {
	Subnet   netip.Prefix `json:"subnet"`
	MaxPeers int          `json:"max_peers"`
}

// Headers of the core NATS messages.
const (
	hInst = "Pl-Inst" // the instance that published
	hEv   = "Pl-Ev"   // joined, left, signal, evict
	hPeer = "Pl-Peer" // the member the event is about
	hSeq  = "Pl-Seq"  // joined: the member's seq; left, evict: the claim revision
	hRoom = "Pl-Room" // signal: the room key, checked by the receiver
	hRole = "Pl-Role"
	hKind = "Pl-Kind"
	hIP   = "Pl-IP"
)

type event struct {
	ev   string
	peer proto.PeerInfo
	seq  uint64
	b    []byte // the encoded proto message
}

// New checks cfg and returns a Hub; nothing touches NATS before Open.
func New(cfg Config) (*Hub, error) {
	if cfg.Conn == nil {
		return nil, errors.New("natshub: a NATS connection is required")
	}
	if cfg.Cluster == "" {
		cfg.Cluster = "peerlan"
	}
	if !nameRE.MatchString(cfg.Cluster) {
		return nil, fmt.Errorf("natshub: cluster name %q: use 1-64 letters, digits, '-' or '_'", cfg.Cluster)
	}
	var suffix [4]byte
	_, _ = rand.Read(suffix[:])
	sfx := base64.RawURLEncoding.EncodeToString(suffix[:])
	if cfg.Instance == "" {
		cfg.Instance = "signal"
	}
	if !nameRE.MatchString(cfg.Instance) || len(cfg.Instance) > 48 {
		return nil, fmt.Errorf("natshub: instance name %q: use 1-48 letters, digits, '-' or '_'", cfg.Instance)
	}
	if cfg.PresenceTTL == 0 {
		cfg.PresenceTTL = 6 * time.Second
	}
	if cfg.PresenceTTL < time.Second {
		return nil, fmt.Errorf("natshub: presence TTL %v: at least 1s (NATS counts TTLs in seconds)", cfg.PresenceTTL)
	}
	cfg.PresenceTTL = time.Duration(math.Ceil(cfg.PresenceTTL.Seconds())) * time.Second
	if cfg.Replicas == 0 {
		cfg.Replicas = 1
	}
	if cfg.Replicas < 1 || cfg.Replicas > 5 {
		return nil, fmt.Errorf("natshub: replicas %d: 1 to 5", cfg.Replicas)
	}
	if cfg.MaxBucketBytes == 0 {
		cfg.MaxBucketBytes = 256 << 20
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 5 * time.Second
	}
	if cfg.StartTimeout == 0 {
		cfg.StartTimeout = 30 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	inst := cfg.Instance + "-" + sfx
	return &Hub{
		cfg:     cfg,
		inst:    inst,
		log:     cfg.Logger.With("instance", inst, "cluster", cfg.Cluster),
		rooms:   make(map[string]*room),
		members: make(map[proto.PeerID]*member),
		live:    make(map[string][]string),
		heard:   make(map[string]time.Time),
		reaping: make(map[string]bool),
	}, nil
}

// Instance is this instance's name in the directory.
func (h *Hub) Instance() string { return h.inst }

// Open connects the Hub to the directory; it is what signal.Config.Hub
// takes. A Hub opens once.
func (h *Hub) Open(hc signal.HubConfig) (signal.Hub, error) {
	h.mu.Lock()
	if h.opened {
		h.mu.Unlock()
		return nil, errors.New("natshub: a Hub serves one Server")
	}
	h.opened = true
	h.mu.Unlock()
	h.hc = hc
	h.maxIdx = signal.MaxGuestIndex(hc.Subnet, hc.MaxPeersPerRoom)
	js, err := jetstream.New(h.cfg.Conn)
	if err != nil {
		return nil, fmt.Errorf("natshub: jetstream: %w", err)
	}
	h.js = js
	bucket := jetstream.KeyValueConfig{
		Bucket:       h.cfg.Cluster,
		Description:  "peerlan signaling: rooms shared by several servers",
		MaxValueSize: maxValue,
		History:      1,
		MaxBytes:     h.cfg.MaxBucketBytes,
		Storage:      jetstream.FileStorage,
		Replicas:     h.cfg.Replicas,
		// Markers make an expired presence key visible to watchers; it
		// also enables per-key TTLs (NATS server 2.11 or newer).
		LimitMarkerTTL: h.cfg.PresenceTTL,
	}
	deadline := time.Now().Add(h.cfg.StartTimeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), h.cfg.Timeout)
		h.kv, err = js.CreateOrUpdateKeyValue(ctx, bucket)
		cancel()
		if err == nil {
			break
		}
		if time.Now().After(deadline) || errors.Is(err, jetstream.ErrLimitMarkerTTLNotSupported) {
			return nil, fmt.Errorf("natshub: directory bucket %q (needs NATS server 2.11 or newer with JetStream): %w", h.cfg.Cluster, err)
		}
		h.log.Info("directory bucket not ready; retrying", "err", err)
		time.Sleep(500 * time.Millisecond)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*h.cfg.Timeout)
	defer cancel()
	if err := h.checkClusterConfig(ctx); err != nil {
		return nil, err
	}
	h.ch = make(chan *nats.Msg, dispatchQueue)
	h.stop = make(chan struct{})
	// Before any member exists, so that no signal to one is lost.
	h.peerSub, err = h.cfg.Conn.ChanSubscribe(h.cfg.Cluster+".peer.*", h.ch)
	if err != nil {
		return nil, fmt.Errorf("natshub: subscribe: %w", err)
	}
	h.aliveSub, err = h.cfg.Conn.Subscribe(h.cfg.Cluster+".alive.*", h.noteAlive)
	if err != nil {
		_ = h.peerSub.Unsubscribe()
		return nil, fmt.Errorf("natshub: subscribe: %w", err)
	}
	unsubscribe := func() {
		_ = h.peerSub.Unsubscribe()
		_ = h.aliveSub.Unsubscribe()
	}
	if err := h.announcePresence(ctx); err != nil {
		unsubscribe()
		return nil, err
	}
	w, err := h.kv.WatchFiltered(context.Background(), []string{"i.*"})
	if err != nil {
		unsubscribe()
		return nil, fmt.Errorf("natshub: watch presence: %w", err)
	}
	// The initial presence list, before any join needs it.
	for e := range w.Updates() {
		if e == nil {
			break
		}
		h.notePresence(e)
	}
	h.pulse()
	h.wg.Add(5)
	go h.dispatch()
	go h.watchPresence(w)
	go h.heartbeat()
	go h.every(h.cfg.PresenceTTL/3, h.pulse)
	go h.every(h.cfg.PresenceTTL/3, func() {
		h.sweep()
		h.settleDoubts()
	})
	h.log.Info("joined the signaling cluster", "presence_ttl", h.cfg.PresenceTTL, "replicas", h.cfg.Replicas)
	return h, nil
}

// getLatest reads key's value from the stream's leader. The bucket's own Get
// may be answered by a replica that lags behind (direct get), which would
// let a reader miss a write it has already seen acknowledged.
//
// A stream without a leader (an election after its node died) answers
// nothing: the request is asked again every requestAttempt, so that a read
// succeeds about as soon as the new leader is elected instead of when ctx
// expires.
func (h *Hub) getLatest(ctx context.Context, key string) (val []byte, rev uint64, found bool, err error) {
	for {
		actx, cancel := context.WithTimeout(ctx, requestAttempt)
		val, rev, found, err = h.getLatestOnce(actx, key)
		cancel()
		if err == nil || ctx.Err() != nil || !(errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrNoResponders)) {
			return val, rev, found, err
		}
		select {
		case <-ctx.Done():
			return val, rev, found, err
		case <-time.After(requestAttempt / 10):
		}
	}
}

// requestAttempt bounds one try of a read that is retried (getLatest).
const requestAttempt = time.Second

func (h *Hub) getLatestOnce(ctx context.Context, key string) (val []byte, rev uint64, found bool, err error) {
	req, _ := json.Marshal(map[string]string{"last_by_subj": "$KV." + h.cfg.Cluster + "." + key})
	msg, err := h.cfg.Conn.RequestWithContext(ctx, "$JS.API.STREAM.MSG.GET.KV_"+h.cfg.Cluster, req)
	if err != nil {
		return nil, 0, false, err
	}
	var resp struct {
		Error *struct {
			Code        int    `json:"code"`
			Description string `json:"description"`
		} `json:"error"`
		Message *struct {
			Seq  uint64 `json:"seq"`
			Hdrs []byte `json:"hdrs"`
			Data []byte `json:"data"`
		} `json:"message"`
	}
	if err := json.Unmarshal(msg.Data, &resp); err != nil {
		return nil, 0, false, err
	}
	switch {
	case resp.Error != nil && resp.Error.Code == 404:
		return nil, 0, false, nil
	case resp.Error != nil:
		return nil, 0, false, fmt.Errorf("natshub: get %s: %s", key, resp.Error.Description)
	case resp.Message == nil:
		return nil, 0, false, fmt.Errorf("natshub: get %s: empty answer", key)
	}
	if h := string(resp.Message.Hdrs); strings.Contains(h, "KV-Operation:") || strings.Contains(h, "Nats-Marker-Reason:") {
		return nil, resp.Message.Seq, false, nil // deleted, purged or expired
	}
	return resp.Message.Data, resp.Message.Seq, true, nil
}

func (h *Hub) checkClusterConfig(ctx context.Context) error {
	want := clusterCfg{Subnet: h.hc.Subnet, MaxPeers: h.hc.MaxPeersPerRoom}
	b, _ := json.Marshal(want)
	if _, err := h.kv.Create(ctx, "cfg", b); err == nil || !errors.Is(err, jetstream.ErrKeyExists) {
		if err != nil {
			return fmt.Errorf("natshub: cluster settings: %w", err)
		}
		return nil
	}
	// Another instance created the key, yet right after an election (or on
	// a loaded host) the leader may answer "not found" for a moment: the
	// create's refusal is proof the key exists, so read again.
	var (
		v     []byte
		found bool
		err   error
	)
	for wait := 50 * time.Millisecond; ; wait = min(2*wait, time.Second) {
		v, _, found, err = h.getLatest(ctx, "cfg")
		if err == nil && found {
			break
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("natshub: cluster settings: not readable (%v, found %v): %w", err, found, ctx.Err())
		case <-time.After(wait):
		}
	}
	var have clusterCfg
	if err := json.Unmarshal(v, &have); err != nil {
		return fmt.Errorf("natshub: cluster settings: %w", err)
	}
	if have != want {
		return fmt.Errorf("natshub: cluster %q runs with subnet %v and %d peers per room; this server has %v and %d: every instance must share them",
			h.cfg.Cluster, have.Subnet, have.MaxPeers, want.Subnet, want.MaxPeers)
	}
	return nil
}

func (h *Hub) presenceValue() []byte {
	b, _ := json.Marshal(presence{Relay: h.cfg.Relay})
	return b
}

// announcePresence creates our presence key.
func (h *Hub) announcePresence(ctx context.Context) error {
	rev, err := h.kv.Create(ctx, "i."+h.inst, h.presenceValue(), jetstream.KeyTTL(h.cfg.PresenceTTL))
	if err != nil {
		return fmt.Errorf("natshub: announce presence: %w", err)
	}
	h.mu.Lock()
	h.presence = rev
	h.mu.Unlock()
	return nil
}

// heartbeat refreshes our presence key every PresenceTTL/3. Finding it
// gone, it announces it again and has recheckClaims find out whether the
// others reaped our members meanwhile.
func (h *Hub) heartbeat() {
	defer h.wg.Done()
	every := h.cfg.PresenceTTL / 3
	t := time.NewTimer(every)
	defer t.Stop()
	for {
		select {
		case <-h.stop:
			return
		case <-t.C:
		}
		if h.beat() {
			t.Reset(every)
		} else {
			// Soon: a stream without a leader refuses at once, and the
			// sooner we heartbeat after the new leader is elected, the
			// less likely our presence lapses.
			t.Reset(min(every, retryBeat))
		}
		if h.recheck {
			h.recheck = !h.recheckClaims()
		}
	}
}

// retryBeat is how soon a failed heartbeat is tried again.
const retryBeat = 250 * time.Millisecond

// beat refreshes our presence key once; false when it did not.
func (h *Hub) beat() bool {
	h.mu.Lock()
	rev := h.presence
	h.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), h.cfg.Timeout)
	m := nats.NewMsg("$KV." + h.cfg.Cluster + ".i." + h.inst)
	m.Data = h.presenceValue()
	ack, err := h.js.PublishMsg(ctx, m, jetstream.WithMsgTTL(h.cfg.PresenceTTL), jetstream.WithExpectLastSequencePerSubject(rev))
	cancel()
	var apiErr *jetstream.APIError
	switch {
	case err == nil:
		h.mu.Lock()
		h.presence = ack.Sequence
		h.mu.Unlock()
		if h.beatFails > 0 {
			h.log.Info("presence heartbeat works again", "failed", h.beatFails)
			h.beatFails = 0
		}
		return true
	case errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence || apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant):
		h.log.Warn("presence lapsed (the directory missed our heartbeats for longer than the presence TTL); announcing it again")
		// Present again before checking the claims, so that those of
		// peers resuming here are not taken for a dead instance's.
		ctx, cancel := context.WithTimeout(context.Background(), h.cfg.Timeout)
		err := h.announcePresence(ctx)
		cancel()
		if err != nil {
			h.log.Error("presence not restored; retrying", "err", err)
			return false
		}
		h.recheck = true
		return true
	default:
		if h.beatFails == 0 {
			h.log.Warn("presence heartbeat failed; retrying", "err", err)
		}
		h.beatFails++
		return false
	}
}

// recheckClaims follows a lapse of our presence. If the others heard our
// pulse all along (the directory alone stalled, as in a JetStream leader
// election), our claims are intact and nothing happens. If we were cut off,
// they reaped our claims and announced our peers left: those peers are
// evicted so that they resume and are announced again. False when the
// directory could not be read, to be tried again.
func (h *Hub) recheckClaims() bool {
	ctx, cancel := context.WithTimeout(context.Background(), 10*h.cfg.Timeout)
	defer cancel()
	all, err := h.list(ctx, "r.*.a.*", maxClaims)
	if err != nil {
		h.log.Warn("checking our claims after the presence lapse failed; retrying", "err", err)
		return false
	}
	held := make(map[string]entry, len(all))
	for _, e := range all {
		held[e.key] = e
	}
	h.mu.Lock()
	var sinks []signal.Sink
	for _, m := range h.members {
		if m.joining {
			continue // claimed after the lapse, or fails its own join
		}
		if e, ok := held[m.key]; ok && e.c.ID == m.id && e.c.Inst == h.inst {
			continue
		}
		if m.sink != nil {
			sinks = append(sinks, m.sink)
		}
		h.dropLocked(m)
	}
	h.mu.Unlock()
	if len(sinks) > 0 {
		h.log.Error("peers lost their claims while our presence lapsed (cut off from the cluster); evicting them so they resume", "peers", len(sinks))
	} else {
		h.log.Info("presence restored; every claim is still ours")
	}
	for _, s := range sinks {
		s.Evict(errPresenceLost)
	}
	return true
}

var errPresenceLost = errors.New("natshub: presence lost")

// pulse publishes <cluster>.alive.<instance> on core NATS; Open has it
// sent every PresenceTTL/3. The presence key lives in JetStream, which
// holds every write during a leader election (seconds after a node died)
// and may then expire the presence of instances that are alive; the pulse
// keeps flowing, and the others reap no instance they still hear (see
// heardLately). It has a goroutine of its own: a sweep waits on the
// directory, and a late pulse could make us look dead.
func (h *Hub) pulse() {
	if err := h.cfg.Conn.Publish(h.cfg.Cluster+".alive."+h.inst, nil); err != nil {
		h.log.Warn("pulse not sent", "err", err)
	}
}

// every calls f every d until the Hub closes; Open runs it on a goroutine
// counted in wg.
func (h *Hub) every(d time.Duration, f func()) {
	defer h.wg.Done()
	t := time.NewTicker(d)
	defer t.Stop()
	for {
		select {
		case <-h.stop:
			return
		case <-t.C:
		}
		f()
	}
}

// doubt is a write of our claim whose outcome we do not know: no answer
// came (a stream electing its leader drops writes without a word), yet it
// may have landed. A claim that landed for a join that then failed would
// name a member nobody holds, listed in every welcome and never reaped, as
// its instance lives; settleDoubts removes it.
type doubt struct {
	key string
	id  proto.PeerID
	at  time.Time
}

// Bounds on doubts: how many are kept, and how long one is retried while
// the directory cannot be read.
const (
	maxDoubts = 4096
	doubtLife = 10 * time.Minute
)

// noteDoubt records the write of id's claim at key when err leaves its
// outcome unknown: no answer, rather than a refusal.
func (h *Hub) noteDoubt(key string, id proto.PeerID, err error) {
	if err == nil || !(errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout) ||
		errors.Is(err, nats.ErrConnectionClosed) || errors.Is(err, nats.ErrConnectionReconnecting)) {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.doubts) >= maxDoubts {
		h.log.Warn("too many claim writes of unknown outcome; forgetting the oldest", "key", h.doubts[0].key)
		h.doubts = h.doubts[1:]
	}
	h.doubts = append(h.doubts, doubt{key: key, id: id, at: time.Now()})
}

// settleDoubts reads each doubtful claim again: one that landed, names us,
// and belongs to no member we hold is released (and announced left, in case
// a welcome listed it meanwhile).
func (h *Hub) settleDoubts() {
	h.mu.Lock()
	ds := h.doubts
	h.doubts = nil
	h.mu.Unlock()
	var again []doubt
	for _, d := range ds {
		ctx, cancel := context.WithTimeout(context.Background(), h.cfg.Timeout)
		val, rev, found, err := h.getLatest(ctx, d.key)
		cancel()
		if err != nil {
			if time.Since(d.at) < doubtLife {
				again = append(again, d)
			}
			continue
		}
		var c claim
		if !found || json.Unmarshal(val, &c) != nil || c.ID != d.id || c.Inst != h.inst {
			continue // it did not land, or is someone else's now
		}
		h.mu.Lock()
		m := h.members[d.id]
		h.mu.Unlock()
		switch {
		case m != nil && m.joining:
			again = append(again, d) // a resume may be taking it over now
			continue
		case m != nil && m.key == d.key:
			continue // a later join of the member holds it
		}
		if h.release(entry{key: d.key, rev: rev, c: c}, true) {
			h.log.Info("released a claim written by a join that failed", "key", d.key, "peer", d.id)
		}
	}
	h.mu.Lock()
	h.doubts = append(again, h.doubts...)
	h.mu.Unlock()
}

// sweep checks every instance we know of against its pulse and, for one
// that fell silent, against the directory, so that death is noticed even
// when the presence watch missed the expiry: a KV watch may stall for
// good across a leader election (seen in TestDirectoryLeaderDies). An
// instance heard but missing from our view is looked up too, for its relay.
func (h *Hub) sweep() {
	h.mu.Lock()
	var silent, unseen []string
	for inst, at := range h.heard {
		if time.Since(at) > 2*h.cfg.PresenceTTL {
			delete(h.heard, inst)
		}
	}
	for inst := range h.live {
		if at, ok := h.heard[inst]; inst != h.inst && (!ok || time.Since(at) > h.cfg.PresenceTTL) {
			silent = append(silent, inst)
		}
	}
	for inst, at := range h.heard {
		if _, ok := h.live[inst]; !ok && !h.reaping[inst] {
			if time.Since(at) <= h.cfg.PresenceTTL {
				unseen = append(unseen, inst)
			} else {
				silent = append(silent, inst)
			}
		}
	}
	h.mu.Unlock()
	for _, inst := range silent {
		ctx, cancel := context.WithTimeout(context.Background(), h.cfg.Timeout)
		_, found, err := h.readPresence(ctx, inst)
		cancel()
		if err == nil && !found && !h.heardLately(inst) {
			h.instanceGone(inst, "silent, and its presence is gone")
		}
	}
	for _, inst := range unseen {
		ctx, cancel := context.WithTimeout(context.Background(), h.cfg.Timeout)
		p, found, err := h.readPresence(ctx, inst)
		cancel()
		if err == nil && found {
			h.mu.Lock()
			if _, ok := h.live[inst]; !ok {
				h.live[inst] = p.Relay
			}
			h.mu.Unlock()
		}
	}
}

// noteAlive records another instance's pulse.
func (h *Hub) noteAlive(m *nats.Msg) {
	inst := strings.TrimPrefix(m.Subject, h.cfg.Cluster+".alive.")
	if inst == h.inst || !nameRE.MatchString(inst) {
		return
	}
	h.mu.Lock()
	h.heard[inst] = time.Now()
	h.mu.Unlock()
}

// heardLately reports whether inst pulsed within the presence TTL.
func (h *Hub) heardLately(inst string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	at, ok := h.heard[inst]
	return ok && time.Since(at) <= h.cfg.PresenceTTL
}

// watchPresence follows the instances' presence keys: relays for the
// welcome, and expiries, which reap the dead instance's members. A watch
// that ends is made again; while there is none, the sweep (run every PresenceTTL/3 by Open)
// still notices dead instances.
func (h *Hub) watchPresence(w jetstream.KeyWatcher) {
	defer h.wg.Done()
	for {
		ended := h.followPresence(w)
		_ = w.Stop()
		if !ended {
			return
		}
		for {
			select {
			case <-h.stop:
				return
			case <-time.After(time.Second):
			}
			var err error
			if w, err = h.kv.WatchFiltered(context.Background(), []string{"i.*"}); err == nil {
				h.log.Info("presence watch made again")
				break
			}
			h.log.Warn("presence watch not made again; retrying", "err", err)
		}
	}
}

// followPresence hands w's updates to notePresence until we stop (false)
// or w ends (true).
func (h *Hub) followPresence(w jetstream.KeyWatcher) bool {
	for {
		select {
		case <-h.stop:
			return false
		case e, ok := <-w.Updates():
			if !ok {
				h.log.Warn("presence watch ended; making it again")
				return true
			}
			if e != nil {
				h.notePresence(e)
			}
		}
	}
}

func (h *Hub) notePresence(e jetstream.KeyValueEntry) {
	inst := strings.TrimPrefix(e.Key(), "i.")
	if e.Operation() == jetstream.KeyValuePut {
		var p presence
		_ = json.Unmarshal(e.Value(), &p)
		h.mu.Lock()
		_, known := h.live[inst]
		h.live[inst] = p.Relay
		h.mu.Unlock()
		if !known && inst != h.inst {
			h.log.Info("instance present", "other", inst, "relay", p.Relay)
		}
		return
	}
	if inst == h.inst {
		h.mu.Lock()
		delete(h.live, inst)
		h.mu.Unlock()
		return // the heartbeat notices and recovers
	}
	h.instanceGone(inst, "presence expired")
}

// instanceGone reaps inst's members after the resume grace, unless by then
// it is present again or still pulses. Its peers get the grace of any peer
// whose connection broke, counted from now: a takeover on another instance
// may still be on its way (a JetStream leader election after a node died
// holds writes for seconds, presence expiry included).
func (h *Hub) instanceGone(inst, why string) {
	h.mu.Lock()
	delete(h.live, inst)
	delete(h.heard, inst) // a pulse from now on means it is back
	if h.closed || h.reaping[inst] {
		h.mu.Unlock()
		return
	}
	h.reaping[inst] = true
	h.wg.Add(1)
	h.mu.Unlock()
	h.log.Info("instance gone; reaping its peers after the resume grace", "other", inst, "why", why, "grace", h.hc.ResumeGrace)
	go func() {
		defer h.wg.Done()
		defer func() {
			h.mu.Lock()
			delete(h.reaping, inst)
			h.mu.Unlock()
		}()
		wait, told := h.hc.ResumeGrace, false
		for {
			select {
			case <-h.stop:
				return
			case <-time.After(wait):
			}
			switch {
			case h.isLive(inst):
				h.log.Info("instance present again; not reaping", "other", inst)
				return
			case h.heardLately(inst):
				// Alive, and its heartbeat will announce it again once
				// the directory takes writes; check until either happens.
				if !told {
					h.log.Info("instance's presence lapsed but it still pulses; not reaping", "other", inst)
					told = true
				}
				wait = h.cfg.PresenceTTL / 3
				continue
			}
			h.reapInstance(inst)
			return
		}
	}()
}

func (h *Hub) isLive(inst string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	_, ok := h.live[inst]
	return ok
}

// isDead reports whether inst has no presence: not in our view of the
// directory and, asked again of the stream leader, not there either (our
// view may lag behind an instance that has just started), and it has not
// pulsed lately.
func (h *Hub) isDead(ctx context.Context, inst string) bool {
	if h.isLive(inst) || h.heardLately(inst) {
		return false
	}
	_, found, err := h.readPresence(ctx, inst)
	return err == nil && !found
}

// readPresence asks the stream leader for inst's presence.
func (h *Hub) readPresence(ctx context.Context, inst string) (p presence, found bool, err error) {
	val, _, found, err := h.getLatest(ctx, "i."+inst)
	if err == nil && found {
		err = json.Unmarshal(val, &p)
	}
	return p, found, err
}

// OtherRelay returns the TURN URLs of one other live instance (the same
// one while it lives, so a peer's welcomes agree), or nil.
func (h *Hub) OtherRelay() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	best := ""
	for inst, r := range h.live {
		if inst != h.inst && len(r) > 0 && (best == "" || inst < best) {
			best = inst
		}
	}
	return h.live[best]
}

// entry is one claim as read from the bucket.
type entry struct {
	key string
	rev uint64
	c   claim
}

func (e entry) seq() uint64 {
	if e.c.Seq != 0 {
		return e.c.Seq
	}
	return e.rev
}

// list reads the current claims under filter, at most limit of them.
func (h *Hub) list(ctx context.Context, filter string, limit int) ([]entry, error) {
	w, err := h.kv.WatchFiltered(ctx, []string{filter}, jetstream.IgnoreDeletes())
	if err != nil {
		return nil, err
	}
	defer func() { _ = w.Stop() }()
	var out []entry
	for {
		select {
		case e, ok := <-w.Updates():
			if !ok {
				return out, errors.New("natshub: watch ended")
			}
			if e == nil {
				return out, nil
			}
			if e.Operation() != jetstream.KeyValuePut {
				continue
			}
			var c claim
			if json.Unmarshal(e.Value(), &c) != nil {
				continue
			}
			if len(out) >= limit {
				return out, fmt.Errorf("natshub: more than %d claims under %s", limit, filter)
			}
			out = append(out, entry{key: e.Key(), rev: e.Revision(), c: c})
		case <-ctx.Done():
			return out, ctx.Err()
		}
	}
}

func roomKey(name string) string { return base64.RawURLEncoding.EncodeToString([]byte(name)) }

func claimKey(rk string, idx int) string { return "r." + rk + ".a." + strconv.Itoa(idx) }

// claimIndex parses the offset out of a claim key.
func claimIndex(key string) int {
	i := strings.LastIndexByte(key, '.')
	n, err := strconv.Atoi(key[i+1:])
	if err != nil {
		return -1
	}
	return n
}

func (h *Hub) roomSubject(rk string) string       { return h.cfg.Cluster + ".room." + rk }
func (h *Hub) peerSubject(id proto.PeerID) string { return h.cfg.Cluster + ".peer." + string(id) }

func (h *Hub) info(e entry) proto.PeerInfo {
	ip := signal.AddrAt(h.hc.Subnet, claimIndex(e.key))
	return proto.PeerInfo{ID: e.c.ID, Role: e.c.Role, Kind: e.c.Kind, IP: ip}
}

// validID: ids come from this package's peers or from signed resume
// tokens; checked anyway before they become a subject.
var idRE = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// Join implements signal.Hub.
func (h *Hub) Join(ctx context.Context, req signal.JoinRequest, sink signal.Sink) (signal.Joined, error) {
	rk := roomKey(req.Room)
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return signal.Joined{}, signal.ErrClosed
	}
	rm := h.rooms[rk]
	if rm == nil {
		if len(h.rooms) >= h.hc.MaxRooms {
			h.mu.Unlock()
			return signal.Joined{}, signal.ErrTooManyRooms
		}
		sub, err := h.cfg.Conn.ChanSubscribe(h.roomSubject(rk), h.ch)
		if err != nil {
			h.mu.Unlock()
			return signal.Joined{}, fmt.Errorf("%w: %v", signal.ErrHubUnavailable, err)
		}
		rm = &room{name: req.Room, key: rk, sub: sub, members: make(map[proto.PeerID]*member)}
		h.rooms[rk] = rm
		h.countsLocked()
	}
	rm.joining++
	h.mu.Unlock()
	defer func() {
		h.mu.Lock()
		rm.joining--
		h.maybeDropRoomLocked(rm)
		h.mu.Unlock()
	}()

	if req.Resume != nil {
		if j, ok, err := h.reattach(ctx, rm, req, sink); ok || err != nil {
			return j, err
		}
	}
	id := signal.NewPeerID()
	how := "new"
	var want netip.Addr
	if req.Resume != nil {
		id, want, how = req.Resume.ID, req.Resume.IP, "resume"
	}
	if !idRE.MatchString(string(id)) {
		return signal.Joined{}, fmt.Errorf("%w: bad peer id", signal.ErrUnknownPeer)
	}
	m, err := h.register(rm, id, sink)
	if err != nil {
		return signal.Joined{}, err
	}
	c := claim{ID: id, Role: req.Role, Kind: req.Kind, Inst: h.inst}
	e, err := h.claim(ctx, rm, c, want)
	if err != nil {
		h.unregister(m)
		return signal.Joined{}, err
	}
	peers, err := h.peers(ctx, rm, e.rev, id)
	if err != nil {
		h.unregister(m)
		h.release(e, false)
		return signal.Joined{}, err
	}
	info := h.finish(m, e, peers)
	h.announce(rm, event{ev: "joined", peer: info, seq: e.rev})
	return signal.Joined{ID: id, IP: info.IP, How: how, Peers: peers}, nil
}

// reattach takes over a member still held somewhere (here or on another
// instance) when req resumes it. ok is false when there is nothing to take
// over and the caller joins afresh.
func (h *Hub) reattach(ctx context.Context, rm *room, req signal.JoinRequest, sink signal.Sink) (signal.Joined, bool, error) {
	id := req.Resume.ID
	idx := 1
	if req.Role != proto.RoleGateway {
		idx = signal.AddrIndex(h.hc.Subnet, req.Resume.IP)
		if idx < 2 || idx > h.maxIdx {
			return signal.Joined{}, false, nil
		}
	}
	key := claimKey(rm.key, idx)
	val, rev, found, err := h.getLatest(ctx, key)
	if err != nil {
		return signal.Joined{}, false, fmt.Errorf("%w: %v", signal.ErrHubUnavailable, err)
	}
	var c claim
	if !found || json.Unmarshal(val, &c) != nil || c.ID != id || c.Role != req.Role {
		return signal.Joined{}, false, nil
	}
	old := entry{key: key, rev: rev, c: c}

	// Held here already: swap the sink.
	h.mu.Lock()
	if lm := h.members[id]; lm != nil && !lm.joining && lm.room == rm && c.Inst == h.inst {
		prev := lm.sink
		lm.sink = sink
		if lm.grace != nil {
			lm.grace.Stop()
			lm.grace = nil
		}
		lm.info.Kind = req.Kind
		h.mu.Unlock()
		if prev != nil {
			prev.Evict(signal.ErrReplaced)
		}
		peers, err := h.peers(ctx, rm, math.MaxUint64, id)
		if err != nil {
			return signal.Joined{}, true, err
		}
		return signal.Joined{ID: id, IP: lm.info.IP, How: "reattach", Peers: peers}, true, nil
	}
	h.mu.Unlock()

	m, err := h.register(rm, id, sink)
	if err != nil {
		return signal.Joined{}, false, err
	}
	nc := claim{ID: id, Role: c.Role, Kind: req.Kind, Inst: h.inst, Seq: old.seq()}
	b, _ := json.Marshal(nc)
	rev, err = h.kv.Update(ctx, key, b, old.rev)
	if err != nil {
		h.noteDoubt(key, id, err)
		h.unregister(m)
		if errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			return signal.Joined{}, false, nil // removed or taken meanwhile: join afresh
		}
		return signal.Joined{}, false, fmt.Errorf("%w: %v", signal.ErrHubUnavailable, err)
	}
	e := entry{key: key, rev: rev, c: nc}
	// The instance that held it lets go (it may be gone: nothing listens).
	ev := nats.NewMsg(h.peerSubject(id))
	ev.Header.Set(hInst, h.inst)
	ev.Header.Set(hEv, "evict")
	ev.Header.Set(hSeq, strconv.FormatUint(rev, 10))
	if err := h.cfg.Conn.PublishMsg(ev); err != nil {
		h.log.Warn("evict notice not sent", "peer", id, "err", err)
	}
	peers, err := h.peers(ctx, rm, math.MaxUint64, id)
	if err != nil {
		h.unregister(m)
		return signal.Joined{}, true, err
	}
	info := h.finish(m, e, peers)
	h.log.Info("peer taken over from another instance", "room", rm.name, "peer", id, "from", c.Inst)
	return signal.Joined{ID: id, IP: info.IP, How: "reattach", Peers: peers}, true, nil
}

// register makes a joining member, known to the dispatcher before it claims
// anything, so no signal sent to it is lost.
func (h *Hub) register(rm *room, id proto.PeerID, sink signal.Sink) (*member, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return nil, signal.ErrClosed
	}
	if old := h.members[id]; old != nil {
		// A stale local record of this id (held in grace in another room
		// of ours, or racing a second resume): the newest join wins.
		if old.sink != nil {
			old.sink.Evict(signal.ErrReplaced)
		}
		h.dropLocked(old)
	}
	m := &member{id: id, room: rm, sink: sink, joining: true}
	h.members[id] = m
	rm.members[id] = m
	h.countsLocked()
	return m, nil
}

func (h *Hub) unregister(m *member) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.members[m.id] == m {
		h.dropLocked(m)
	}
}

// dropLocked forgets a local member without touching the directory.
func (h *Hub) dropLocked(m *member) {
	if m.gone {
		return
	}
	m.gone = true
	if m.grace != nil {
		m.grace.Stop()
		m.grace = nil
	}
	if h.members[m.id] == m {
		delete(h.members, m.id)
	}
	delete(m.room.members, m.id)
	m.sink = nil
	m.pending = nil
	h.maybeDropRoomLocked(m.room)
	h.countsLocked()
}

func (h *Hub) maybeDropRoomLocked(rm *room) {
	if len(rm.members) > 0 || rm.joining > 0 || h.rooms[rm.key] != rm {
		return
	}
	_ = rm.sub.Unsubscribe()
	delete(h.rooms, rm.key)
	h.countsLocked()
}

func (h *Hub) countsLocked() {
	if h.hc.Counts != nil {
		h.hc.Counts(len(h.rooms), len(h.members))
	}
}

// claim creates the member's claim: the gateway's .1, or the lowest free
// guest offset (want's first, when free).
func (h *Hub) claim(ctx context.Context, rm *room, c claim, want netip.Addr) (entry, error) {
	b, _ := json.Marshal(c)
	create := func(idx int) (entry, error) {
		key := claimKey(rm.key, idx)
		rev, err := h.kv.Create(ctx, key, b)
		h.noteDoubt(key, c.ID, err)
		return entry{key: key, rev: rev, c: c}, err
	}
	if c.Role == proto.RoleGateway {
		for try := 0; try < 2; try++ {
			e, err := create(1)
			if err == nil {
				return e, nil
			}
			if !errors.Is(err, jetstream.ErrKeyExists) {
				return entry{}, fmt.Errorf("%w: %v", signal.ErrHubUnavailable, err)
			}
			if try == 0 && h.reapStale(ctx, claimKey(rm.key, 1)) {
				continue
			}
		}
		return entry{}, signal.ErrGatewayTaken
	}
	order := make([]int, 0, h.maxIdx+1)
	if i := signal.AddrIndex(h.hc.Subnet, want); i >= 2 && i <= h.maxIdx {
		order = append(order, i)
	}
	for i := 2; i <= h.maxIdx; i++ {
		order = append(order, i)
	}
	// First by the hint, when there is one; then, if that found nothing,
	// by a listing of the room.
	h.mu.Lock()
	var used map[int]bool
	if rm.offsets != nil {
		used = make(map[int]bool, len(rm.offsets))
		for _, i := range rm.offsets {
			used[i] = true
		}
	}
	h.mu.Unlock()
	for pass := 0; pass < 2; pass++ {
		if used == nil || pass == 1 {
			held, err := h.list(ctx, "r."+rm.key+".a.*", h.maxIdx+2)
			if err != nil {
				return entry{}, fmt.Errorf("%w: %v", signal.ErrHubUnavailable, err)
			}
			used = make(map[int]bool, len(held))
			for _, e := range held {
				if h.isDead(ctx, e.c.Inst) && h.reap(e) {
					continue
				}
				used[claimIndex(e.key)] = true
			}
			pass = 1
		}
		for _, i := range order {
			if used[i] {
				continue
			}
			used[i] = true
			e, err := create(i)
			if err == nil {
				return e, nil
			}
			if !errors.Is(err, jetstream.ErrKeyExists) {
				return entry{}, fmt.Errorf("%w: %v", signal.ErrHubUnavailable, err)
			}
		}
	}
	return entry{}, signal.ErrRoomFull
}

// peers lists the room's members older than seq, other than self, reaping
// those of dead instances on the way.
func (h *Hub) peers(ctx context.Context, rm *room, seq uint64, self proto.PeerID) ([]proto.PeerInfo, error) {
	held, err := h.list(ctx, "r."+rm.key+".a.*", h.maxIdx+2)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", signal.ErrHubUnavailable, err)
	}
	out := make([]proto.PeerInfo, 0, len(held))
	offsets := make(map[proto.PeerID]int, len(held))
	for _, e := range held {
		if e.c.ID != self && h.isDead(ctx, e.c.Inst) && h.reap(e) {
			continue
		}
		offsets[e.c.ID] = claimIndex(e.key)
		if e.c.ID == self || e.seq() >= seq {
			continue
		}
		out = append(out, h.info(e))
	}
	h.mu.Lock()
	rm.offsets = offsets
	h.mu.Unlock()
	return out, nil
}

// finish completes a join: the member now takes events, first those that
// came while it joined, by the newcomer rule.
func (h *Hub) finish(m *member, e entry, peers []proto.PeerInfo) proto.PeerInfo {
	h.mu.Lock()
	defer h.mu.Unlock()
	m.info = h.info(e)
	m.key, m.rev, m.seq = e.key, e.rev, e.seq()
	m.joining = false
	listed := make(map[proto.PeerID]bool, len(peers))
	for _, p := range peers {
		listed[p.ID] = true
	}
	pend := m.pending
	m.pending = nil
	for _, ev := range pend {
		if ev.ev == "joined" && listed[ev.peer.ID] {
			continue
		}
		h.deliverLocked(m, ev)
	}
	return m.info
}

// deliverLocked passes a room event to one member by the newcomer rule:
// peer-joined only of younger members.
func (h *Hub) deliverLocked(m *member, ev event) {
	if m.sink == nil || ev.peer.ID == m.id {
		return
	}
	if m.joining {
		if len(m.pending) < pendingMax {
			m.pending = append(m.pending, ev)
		}
		return
	}
	if ev.ev == "joined" {
		if ev.seq <= m.seq {
			return
		}
		m.sink.Deliver(proto.TypeOf(&proto.PeerJoined{}), ev.b)
		return
	}
	m.sink.Deliver(proto.TypeOf(&proto.PeerLeft{}), ev.b)
}

// announce tells the room, here and on every other instance.
func (h *Hub) announce(rm *room, ev event) {
	var msg any = &proto.PeerLeft{ID: ev.peer.ID}
	if ev.ev == "joined" {
		msg = &proto.PeerJoined{Peer: ev.peer}
	}
	b, err := proto.Encode(msg)
	if err != nil {
		h.log.Error("encode", "err", err)
		return
	}
	ev.b = b
	nm := nats.NewMsg(h.roomSubject(rm.key))
	nm.Header.Set(hInst, h.inst)
	nm.Header.Set(hEv, ev.ev)
	nm.Header.Set(hPeer, string(ev.peer.ID))
	nm.Header.Set(hSeq, strconv.FormatUint(ev.seq, 10))
	nm.Header.Set(hRole, string(ev.peer.Role))
	nm.Header.Set(hKind, string(ev.peer.Kind))
	nm.Header.Set(hIP, ev.peer.IP.String())
	nm.Data = b
	if err := h.cfg.Conn.PublishMsg(nm); err != nil {
		h.log.Warn("room event not published", "room", rm.name, "event", ev.ev, "err", err)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if lr := h.rooms[rm.key]; lr != nil {
		h.noteOffsetLocked(lr, ev)
		for _, m := range lr.members {
			h.deliverLocked(m, ev)
		}
	}
}

// noteOffsetLocked keeps a room's offset hint up to date with an event.
func (h *Hub) noteOffsetLocked(rm *room, ev event) {
	if rm.offsets == nil {
		return
	}
	if ev.ev == "joined" {
		if i := signal.AddrIndex(h.hc.Subnet, ev.peer.IP); i > 0 {
			rm.offsets[ev.peer.ID] = i
		}
		return
	}
	delete(rm.offsets, ev.peer.ID)
}

// Signal implements signal.Hub.
func (h *Hub) Signal(roomName string, from, to proto.PeerID, b []byte) error {
	rk := roomKey(roomName)
	h.mu.Lock()
	if f := h.members[from]; f == nil || f.room.key != rk {
		h.mu.Unlock()
		return signal.ErrUnknownPeer
	}
	if t := h.members[to]; t != nil {
		defer h.mu.Unlock()
		if t.room.key != rk || t.sink == nil || t.joining {
			return signal.ErrUnknownPeer
		}
		t.sink.Deliver(proto.TypeSignal, b)
		return nil
	}
	h.mu.Unlock()
	if !idRE.MatchString(string(to)) {
		return signal.ErrUnknownPeer
	}
	// Another instance's member, or no one: a signal to an id that is not
	// in the room is dropped by the receiver (or finds no subscriber).
	nm := nats.NewMsg(h.peerSubject(to))
	nm.Header.Set(hInst, h.inst)
	nm.Header.Set(hEv, "signal")
	nm.Header.Set(hRoom, rk)
	nm.Data = b
	if err := h.cfg.Conn.PublishMsg(nm); err != nil {
		return fmt.Errorf("%w: %v", signal.ErrHubUnavailable, err)
	}
	return nil
}

// dispatch handles every message from NATS, in arrival order.
func (h *Hub) dispatch() {
	defer h.wg.Done()
	for {
		select {
		case <-h.stop:
			return
		case m := <-h.ch:
			h.handle(m)
		}
	}
}

func (h *Hub) handle(nm *nats.Msg) {
	if nm.Header.Get(hInst) == h.inst {
		return // our own, delivered locally already
	}
	switch ev := nm.Header.Get(hEv); ev {
	case "signal":
		id := proto.PeerID(strings.TrimPrefix(nm.Subject, h.cfg.Cluster+".peer."))
		h.mu.Lock()
		defer h.mu.Unlock()
		t := h.members[id]
		if t == nil || t.sink == nil || t.joining || t.room.key != nm.Header.Get(hRoom) {
			return
		}
		t.sink.Deliver(proto.TypeSignal, nm.Data)
	case "evict":
		id := proto.PeerID(strings.TrimPrefix(nm.Subject, h.cfg.Cluster+".peer."))
		rev, _ := strconv.ParseUint(nm.Header.Get(hSeq), 10, 64)
		h.mu.Lock()
		t := h.members[id]
		if t == nil || t.joining || t.rev >= rev {
			h.mu.Unlock()
			return
		}
		sink := t.sink
		h.dropLocked(t)
		h.mu.Unlock()
		h.log.Info("peer resumed on another instance", "peer", id, "by", nm.Header.Get(hInst))
		if sink != nil {
			sink.Evict(signal.ErrReplaced)
		}
	case "joined", "left":
		rk := strings.TrimPrefix(nm.Subject, h.cfg.Cluster+".room.")
		seq, _ := strconv.ParseUint(nm.Header.Get(hSeq), 10, 64)
		ip, _ := netip.ParseAddr(nm.Header.Get(hIP))
		e := event{ev: ev, seq: seq, b: nm.Data, peer: proto.PeerInfo{
			ID: proto.PeerID(nm.Header.Get(hPeer)), Role: proto.Role(nm.Header.Get(hRole)),
			Kind: proto.Kind(nm.Header.Get(hKind)), IP: ip}}
		h.mu.Lock()
		rm := h.rooms[rk]
		if rm == nil {
			h.mu.Unlock()
			return
		}
		h.noteOffsetLocked(rm, e)
		for _, m := range rm.members {
			h.deliverLocked(m, e)
		}
		// Another instance released a claim we still hold: it reaped us
		// while we were cut off (we missed its word then) or around our
		// reconnection. Our member must resume to be announced again.
		var sink signal.Sink
		if t := rm.members[e.peer.ID]; ev == "left" && t != nil && !t.joining && t.rev <= seq {
			sink = t.sink
			h.dropLocked(t)
		}
		h.mu.Unlock()
		if sink != nil {
			h.log.Warn("another instance announced our peer left (its claim was reaped); evicting it so it resumes", "peer", e.peer.ID, "by", nm.Header.Get(hInst))
			sink.Evict(errPresenceLost)
		}
	}
}

// Detach implements signal.Hub.
func (h *Hub) Detach(roomName string, id proto.PeerID, sink signal.Sink, leave bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	m := h.members[id]
	if h.closed || m == nil || m.sink != sink || m.room.name != roomName {
		return
	}
	m.sink = nil
	if leave {
		h.goRemove(m, "left")
		return
	}
	h.log.Info("peer disconnected; holding its id and address for resume", "room", roomName, "peer", id, "grace", h.hc.ResumeGrace)
	m.grace = time.AfterFunc(h.hc.ResumeGrace, func() {
		h.mu.Lock()
		defer h.mu.Unlock()
		if !h.closed && !m.gone && m.sink == nil {
			h.goRemove(m, "resume grace expired")
		}
	})
}

// goRemove forgets m here and, in the background, deletes its claim and
// announces it left, unless another instance has taken it over.
func (h *Hub) goRemove(m *member, why string) {
	e := entry{key: m.key, rev: m.rev, c: claim{ID: m.id}}
	rm := m.room
	info := m.info
	h.dropLocked(m)
	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
		if h.release(e, true) {
			h.log.Info("peer left", "room", rm.name, "peer", info.ID, "ip", info.IP, "why", why)
		}
	}()
}

// release removes a claim at the revision we know; with announce, the
// member is announced left when the delete succeeded.
func (h *Hub) release(e entry, announce bool) bool {
	ctx, cancel := context.WithTimeout(context.Background(), h.cfg.Timeout)
	defer cancel()
	// A purge, not a delete: the bucket keeps no tombstone of it once its
	// marker expires, so rooms that come and go do not fill the bucket
	// (which refuses writes when full).
	if err := h.kv.Purge(ctx, e.key, jetstream.LastRevision(e.rev), jetstream.PurgeTTL(h.cfg.PresenceTTL)); err != nil {
		if !errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			h.log.Warn("claim not released", "key", e.key, "err", err)
		}
		h.noteDoubt(e.key, e.c.ID, err)
		return false
	}
	if announce {
		rk := strings.SplitN(strings.TrimPrefix(e.key, "r."), ".", 2)[0]
		name, _ := base64.RawURLEncoding.DecodeString(rk)
		h.announce(&room{name: string(name), key: rk}, event{ev: "left", peer: proto.PeerInfo{ID: e.c.ID}, seq: e.rev})
	}
	return true
}

// reap releases a dead instance's claim and announces its member left;
// false when it was not released (someone else did, or it was taken over).
func (h *Hub) reap(e entry) bool {
	if !h.release(e, true) {
		return false
	}
	h.log.Info("peer left", "peer", e.c.ID, "key", e.key, "why", "its instance is gone", "other", e.c.Inst)
	return true
}

// reapStale reaps the claim at key when its instance is dead.
func (h *Hub) reapStale(ctx context.Context, key string) bool {
	val, rev, found, err := h.getLatest(ctx, key)
	if err != nil {
		return false
	}
	if !found {
		return true
	}
	var c claim
	if json.Unmarshal(val, &c) != nil || !h.isDead(ctx, c.Inst) {
		return false
	}
	return h.reap(entry{key: key, rev: rev, c: c})
}

// reapInstance reaps every claim of a dead instance.
func (h *Hub) reapInstance(inst string) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*h.cfg.Timeout)
	defer cancel()
	all, err := h.list(ctx, "r.*.a.*", maxClaims)
	if err != nil {
		h.log.Error("reaping a dead instance: listing failed", "other", inst, "err", err)
	}
	n := 0
	for _, e := range all {
		if e.c.Inst == inst && h.reap(e) {
			n++
		}
	}
	if n > 0 {
		h.log.Info("reaped a dead instance's peers", "other", inst, "peers", n)
	}
}

// Close implements signal.Hub. Claims and presence stay: the presence key
// expires after PresenceTTL, and peers that did not resume elsewhere by then
// are announced left by the survivors.
func (h *Hub) Close() error {
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return nil
	}
	h.closed = true
	opened := h.stop != nil
	for _, m := range h.members {
		h.dropLocked(m)
	}
	for _, rm := range h.rooms {
		_ = rm.sub.Unsubscribe()
	}
	if h.peerSub != nil {
		_ = h.peerSub.Unsubscribe()
	}
	if h.aliveSub != nil {
		_ = h.aliveSub.Unsubscribe()
	}
	h.rooms = map[string]*room{}
	h.mu.Unlock()
	if opened {
		close(h.stop)
	}
	h.wg.Wait()
	h.log.Info("left the signaling cluster; this instance's presence expires", "after", h.cfg.PresenceTTL)
	return nil
}
