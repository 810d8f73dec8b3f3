package signal

import (
	"context"
	"log/slog"
	"net/netip"
	"sync"
	"time"

	"github.com/peerlan/peerlan/signal/proto"
)

// memHub is the default Hub: every room in this process's memory, one lock.
// Because one lock orders every join, the newcomer rule needs no more.
type memHub struct {
	cfg HubConfig
	log *slog.Logger

	mu     sync.Mutex
	closed bool
	rooms  map[string]*room
	npeers int
}

// room is one LAN. Guarded by memHub.mu.
type room struct {
	name    string
	pool    *addrPool
	members map[proto.PeerID]*member
	gateway *member
}

// member is a peer in a room. sink is nil while the peer is within its
// resume grace period. Guarded by memHub.mu.
type member struct {
	id    proto.PeerID
	role  proto.Role
	kind  proto.Kind
	ip    netip.Addr
	room  *room
	sink  Sink
	grace *time.Timer
}

func (m *member) info() proto.PeerInfo {
	return proto.PeerInfo{ID: m.id, Role: m.role, IP: m.ip, Kind: m.kind}
}

// NewMemoryHub returns the in-memory Hub, the Server's default.
func NewMemoryHub(cfg HubConfig) (Hub, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &memHub{cfg: cfg, log: cfg.Logger, rooms: make(map[string]*room)}, nil
}

func (h *memHub) counts() {
	if h.cfg.Counts != nil {
		h.cfg.Counts(len(h.rooms), h.npeers)
	}
}

func (h *memHub) Join(_ context.Context, req JoinRequest, sink Sink) (Joined, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return Joined{}, ErrClosed
	}
	rm := h.rooms[req.Room]
	if rm == nil {
		if len(h.rooms) >= h.cfg.MaxRooms {
			return Joined{}, ErrTooManyRooms
		}
		rm = &room{name: req.Room, pool: newAddrPool(h.cfg.Subnet), members: make(map[proto.PeerID]*member)}
	}
	how := "new"
	var m *member
	if req.Resume != nil {
		m = rm.members[req.Resume.ID]
	}
	if m != nil {
		// The peer is still known: a reconnect within its grace period, or a
		// new connection replacing one that has not been noticed dead yet.
		how = "reattach"
		if m.grace != nil {
			m.grace.Stop()
			m.grace = nil
		}
		if old := m.sink; old != nil {
			old.Evict(ErrReplaced)
		}
	} else {
		if len(rm.members) >= h.cfg.MaxPeersPerRoom {
			return Joined{}, ErrRoomFull
		}
		m = &member{role: req.Role, room: rm}
		if req.Role == proto.RoleGateway {
			if rm.gateway != nil {
				return Joined{}, ErrGatewayTaken
			}
			m.ip = rm.pool.gateway
			rm.gateway = m
		} else {
			var want netip.Addr
			if req.Resume != nil {
				want = req.Resume.IP
			}
			ip, err := rm.pool.take(want)
			if err != nil {
				return Joined{}, ErrNoAddress
			}
			m.ip = ip
		}
		m.id = newPeerID()
		if req.Resume != nil {
			how = "resume"
			m.id = req.Resume.ID
		}
		if len(rm.members) == 0 {
			h.rooms[rm.name] = rm
			h.log.Info("room opened", "room", rm.name)
		}
		rm.members[m.id] = m
		h.npeers++
		h.counts()
	}
	m.kind = req.Kind
	m.sink = sink
	j := Joined{ID: m.id, IP: m.ip, How: how, Peers: make([]proto.PeerInfo, 0, len(rm.members)-1)}
	for _, o := range rm.members {
		if o != m {
			j.Peers = append(j.Peers, o.info())
		}
	}
	if how != "reattach" {
		h.broadcastLocked(rm, &proto.PeerJoined{Peer: m.info()}, m)
	}
	return j, nil
}

func (h *memHub) Signal(roomName string, from, to proto.PeerID, b []byte) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	rm := h.rooms[roomName]
	if rm == nil || rm.members[from] == nil {
		return ErrUnknownPeer
	}
	// Ids of other rooms are indistinguishable from ids that do not exist.
	t := rm.members[to]
	if t == nil || t.sink == nil {
		return ErrUnknownPeer
	}
	t.sink.Deliver(proto.TypeSignal, b)
	return nil
}

func (h *memHub) Detach(roomName string, id proto.PeerID, sink Sink, leave bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return
	}
	rm := h.rooms[roomName]
	if rm == nil {
		return
	}
	m := rm.members[id]
	if m == nil || m.sink != sink {
		return
	}
	m.sink = nil
	if leave {
		h.removeLocked(m, "left")
		return
	}
	h.log.Info("peer disconnected; holding its id and address for resume", "room", rm.name, "peer", m.id, "grace", h.cfg.ResumeGrace)
	m.grace = time.AfterFunc(h.cfg.ResumeGrace, func() { h.expire(m) })
}

// expire removes a member whose grace period ended without a resume.
func (h *memHub) expire(m *member) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed || m.sink != nil || m.room == nil {
		return
	}
	h.removeLocked(m, "resume grace expired")
}

// removeLocked takes m out of its room, releases its address and tells the
// others. Caller holds h.mu.
func (h *memHub) removeLocked(m *member, why string) {
	rm := m.room
	if rm == nil {
		return
	}
	if m.grace != nil {
		m.grace.Stop()
		m.grace = nil
	}
	delete(rm.members, m.id)
	if rm.gateway == m {
		rm.gateway = nil
	} else {
		rm.pool.release(m.ip)
	}
	m.room = nil
	h.npeers--
	h.log.Info("peer left", "room", rm.name, "peer", m.id, "ip", m.ip, "why", why)
	if len(rm.members) == 0 {
		delete(h.rooms, rm.name)
		h.log.Info("room closed", "room", rm.name)
		h.counts()
		return
	}
	h.counts()
	h.broadcastLocked(rm, &proto.PeerLeft{ID: m.id}, nil)
}

// broadcastLocked delivers msg to every connected member of rm but skip.
func (h *memHub) broadcastLocked(rm *room, msg any, skip *member) {
	b, err := proto.Encode(msg)
	if err != nil {
		h.log.Error("encode", "err", err)
		return
	}
	for _, o := range rm.members {
		if o != skip && o.sink != nil {
			o.sink.Deliver(proto.TypeOf(msg), b)
		}
	}
}

// Close drops every room and stops the grace timers.
func (h *memHub) Close() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.closed = true
	for _, rm := range h.rooms {
		for _, m := range rm.members {
			if m.grace != nil {
				m.grace.Stop()
			}
		}
	}
	return nil
}
