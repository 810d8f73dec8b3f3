package signal

import (
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"time"

	"github.com/peerlan/peerlan/signal/proto"
)

// Hub keeps the rooms: which peers are members of which room with which id
// and address, and carries peer-joined, peer-left and signal messages between
// them. The Server keeps the connections (WebSockets, tokens, rate limits,
// keepalives) and asks its Hub for everything about rooms. The default is an
// in-memory Hub (one Server holds every room); package signal/natshub shares
// rooms between several Servers over NATS.
//
// Contract, for every implementation:
//   - Join admits one member and attaches its Sink. Ids are unique among the
//     members of the Hub (cluster-wide for a shared Hub), guest addresses are
//     unique within a room, and only one gateway holds a room's .1.
//   - Every other member of the room is told of a new member (peer-joined)
//     and of a member that is gone for good (peer-left), exactly once each;
//     a member that joins after another lists it in Joined.Peers instead of
//     getting its peer-joined, so of two members exactly one is the newcomer
//     (DESIGN.md invariant 5: no glare).
//   - A Sink is called from the Hub's goroutines; its methods never block.
//     After Evict or Detach the Hub calls the Sink no more.
//   - Messages the Hub delivers are already encoded proto messages of at
//     most the Server's message size; a Hub never carries anything else.
//   - Errors from Join are the Err* values of this package (wrapped or not)
//     or ErrHubUnavailable for a backend failure.
//   - After Close every call returns ErrClosed (or does nothing).
type Hub interface {
	// Join admits a member to req.Room and attaches sink to it. With
	// req.Resume set, the member keeps the token's id and, when free, its
	// address; a member that is still held (within its resume grace, or
	// still connected elsewhere) is reattached: the old sink is evicted and
	// the others hear nothing.
	Join(ctx context.Context, req JoinRequest, sink Sink) (Joined, error)
	// Signal delivers b, an encoded proto.Signal, from member from to member
	// to of room. It returns ErrUnknownPeer when to is not a reachable
	// member of the room (a Hub that cannot tell may drop b instead).
	Signal(room string, from, to proto.PeerID, b []byte) error
	// Detach tells the Hub that sink's connection ended. With leave the
	// member is removed now; otherwise it keeps its id and address for the
	// resume grace period and is then removed. A sink that was evicted or
	// already detached is ignored.
	Detach(room string, id proto.PeerID, sink Sink, leave bool)
	// Close stops the Hub and waits for its goroutines. Members are not
	// announced as left: a shared Hub lets other instances take them over.
	Close() error
}

// Sink is where a Hub delivers a member's messages: its connection.
type Sink interface {
	// Deliver queues an encoded message of type typ for the peer; it never
	// blocks (a connection that cannot keep up is closed by its owner).
	Deliver(typ string, b []byte)
	// Evict ends the member's connection: why is ErrReplaced when another
	// connection resumed the member, or another error when the Hub lost the
	// member (the peer should reconnect and resume).
	Evict(why error)
}

// JoinRequest is a checked join: the Server has verified tokens already.
type JoinRequest struct {
	Room string
	Role proto.Role
	Kind proto.Kind
	// Resume, when not nil, is a verified resume token of this room and role.
	Resume *Claims
}

// Joined is a successful join.
type Joined struct {
	ID proto.PeerID
	IP netip.Addr
	// How is "new", "resume" (a fresh member with the token's id) or
	// "reattach" (a held member taken over by a new connection).
	How string
	// Peers are the room's other members this one must make offers to (all
	// of them for a reattach).
	Peers []proto.PeerInfo
}

// HubConfig is what the Server tells its Hub; NewHub functions take it.
type HubConfig struct {
	Subnet          netip.Prefix
	MaxPeersPerRoom int // members, the gateway included
	MaxRooms        int // rooms with members held by this Server
	ResumeGrace     time.Duration
	Logger          *slog.Logger
	// Counts, when set, is told the number of rooms and members this
	// Server holds whenever it changes (for its gauges).
	Counts func(rooms, members int)
}

// Hub errors. The Server maps them to protocol error codes.
var (
	ErrClosed         = errors.New("signal: the server is shutting down")
	ErrTooManyRooms   = errors.New("signal: too many rooms")
	ErrRoomFull       = errors.New("signal: room is full")
	ErrNoAddress      = errors.New("signal: no free address in the room")
	ErrGatewayTaken   = errors.New("signal: the room already has a gateway")
	ErrUnknownPeer    = errors.New("signal: no such peer in the room")
	ErrReplaced       = errors.New("signal: replaced by a newer connection")
	ErrHubUnavailable = errors.New("signal: room directory unavailable")
)

// GatewayAddr is the address of prefix's gateway, .1.
func GatewayAddr(prefix netip.Prefix) netip.Addr { return prefix.Addr().Next() }

// AddrIndex returns a's offset in prefix when a is an address a guest may
// hold (not the network, gateway or broadcast address), or -1.
func AddrIndex(prefix netip.Prefix, a netip.Addr) int {
	return (&addrPool{prefix: prefix, size: 1 << (32 - prefix.Bits())}).index(a)
}

// AddrAt returns the address at offset i of prefix.
func AddrAt(prefix netip.Prefix, i int) netip.Addr { return (&addrPool{prefix: prefix}).addr(i) }

// MaxGuestIndex is the highest offset a guest address may have in a room of
// prefix with at most maxPeers members: addresses are handed out lowest
// first, so with maxPeers members no guest ever needs a higher one. A shared
// Hub bounds a room cluster-wide by claiming only offsets 2..MaxGuestIndex.
func MaxGuestIndex(prefix netip.Prefix, maxPeers int) int {
	return min(maxPeers, 1<<(32-prefix.Bits())-2)
}

// NewPeerID returns a fresh random peer id: 128 bits in base64url.
func NewPeerID() proto.PeerID { return newPeerID() }
