package proto

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
)

// ProtocolVersion is the version of the wire protocol described in the
// package documentation. A join with another version is refused.
const ProtocolVersion = 1

// Message types.
const (
	TypeJoin       = "join"
	TypeWelcome    = "welcome"
	TypePeerJoined = "peer-joined"
	TypePeerLeft   = "peer-left"
	TypeSignal     = "signal"
	TypeLeave      = "leave"
	TypeError      = "error"
	TypeICEServers = "ice-servers"
)

// PeerID is a server-issued peer identity: 22 characters of base64url
// carrying 128 random bits.
type PeerID string

// Role is what a peer is in its room.
type Role string

// Roles.
const (
	RoleGuest   Role = "guest"
	RoleGateway Role = "gateway"
)

// Valid reports whether r is one of the roles above.
func (r Role) Valid() bool { return r == RoleGuest || r == RoleGateway }

// Kind is what software a peer runs, as it says in its join: shown to the
// other peers (the page's peer list), never used for a security decision
// (native peers use it to pick which transport to offer a peer first). "" is
// unknown (a peer older than the field).
type Kind string

// Kinds.
const (
	KindBrowser Kind = "browser" // the wasm peer in a web page
	KindNative  Kind = "native"  // a native program: bin/peer, bin/gateway
)

// Valid reports whether k is one of the kinds above.
func (k Kind) Valid() bool { return k == KindBrowser || k == KindNative }

// PeerInfo describes a member of a room.
type PeerInfo struct {
	ID   PeerID     `json:"id"`
	Role Role       `json:"role"`
	IP   netip.Addr `json:"ip"`
	Kind Kind       `json:"kind,omitempty"`
}

// ICEServer is one STUN or TURN server, in the shape of the browser's
// RTCIceServer.
type ICEServer struct {
	URLs       []string `json:"urls"`
	Username   string   `json:"username,omitempty"`
	Credential string   `json:"credential,omitempty"`
}

// Limits are the server's limits that a well-behaved peer stays within.
type Limits struct {
	MaxMessageBytes   int     `json:"max_message_bytes"`
	MessagesPerSecond float64 `json:"messages_per_second"`
	Burst             int     `json:"burst"`
	MaxPeersPerRoom   int     `json:"max_peers_per_room"`
	// KeepaliveMillis is the server's ping period, so that a client can
	// tell a dead connection from a quiet one soon (0: not announced).
	KeepaliveMillis int64 `json:"keepalive_ms,omitempty"`
}

// Join is the first message of a peer.
type Join struct {
	Type   string `json:"type"`
	V      int    `json:"v"`
	Room   string `json:"room"`
	Role   Role   `json:"role,omitempty"`
	Token  string `json:"token,omitempty"`
	Resume string `json:"resume,omitempty"`
	// Kind is what the peer runs; the server passes a valid one on in
	// PeerInfo and drops any other value.
	Kind Kind `json:"kind,omitempty"`
}

// Welcome answers a successful Join.
type Welcome struct {
	Type       string       `json:"type"`
	V          int          `json:"v"`
	ID         PeerID       `json:"id"`
	Resume     string       `json:"resume"`
	Room       string       `json:"room"`
	Role       Role         `json:"role"`
	IP         netip.Addr   `json:"ip"`
	Prefix     netip.Prefix `json:"prefix"`
	Gateway    netip.Addr   `json:"gateway"`
	Peers      []PeerInfo   `json:"peers"`
	ICEServers []ICEServer  `json:"ice_servers"`
	Limits     Limits       `json:"limits"`
}

// ICEServers replaces the ICE servers of the welcome with fresh ones (new
// TURN credentials) while a peer stays joined. Links negotiated from then on
// use them.
type ICEServers struct {
	Type       string      `json:"type"`
	ICEServers []ICEServer `json:"ice_servers"`
}

// PeerJoined announces a new member of the room.
type PeerJoined struct {
	Type string   `json:"type"`
	Peer PeerInfo `json:"peer"`
}

// PeerLeft announces that a member left the room.
type PeerLeft struct {
	Type string `json:"type"`
	ID   PeerID `json:"id"`
}

// Signal carries an opaque payload between two peers of a room. A peer sets
// To; the server replaces it with From on delivery.
type Signal struct {
	Type string          `json:"type"`
	To   PeerID          `json:"to,omitempty"`
	From PeerID          `json:"from,omitempty"`
	Data json.RawMessage `json:"data"`
}

// Leave tells the server to release the peer's id and address now.
type Leave struct {
	Type string `json:"type"`
}

// Error reports a problem with something the peer sent. It is also a Go error.
type Error struct {
	Type    string    `json:"type"`
	Code    ErrorCode `json:"code"`
	Message string    `json:"message"`
	Fatal   bool      `json:"fatal"`
}

func (e *Error) Error() string { return fmt.Sprintf("signal: %s: %s", e.Code, e.Message) }

// ErrorCode is a stable, machine-readable error reason.
type ErrorCode string

// Error codes. Codes marked fatal close the connection after the error.
const (
	CodeBadJSON        ErrorCode = "bad-json"         // not one JSON object with a string "type"
	CodeUnknownType    ErrorCode = "unknown-type"     // a "type" this server does not know
	CodeTooLarge       ErrorCode = "too-large"        // fatal: message over MaxMessageBytes
	CodeBinary         ErrorCode = "binary-message"   // fatal: binary WebSocket message; the server never carries frames
	CodeNotJoined      ErrorCode = "not-joined"       // a message other than join before join
	CodeAlreadyJoined  ErrorCode = "already-joined"   // a second join on one connection
	CodeBadVersion     ErrorCode = "bad-version"      // fatal: unsupported protocol version
	CodeBadRoom        ErrorCode = "bad-room"         // fatal: room name not valid (see ValidRoomName)
	CodeBadRole        ErrorCode = "bad-role"         // fatal: unknown role
	CodeTokenRequired  ErrorCode = "token-required"   // fatal: the room or role needs a token
	CodeTokenInvalid   ErrorCode = "token-invalid"    // fatal: token malformed or signature wrong
	CodeTokenExpired   ErrorCode = "token-expired"    // fatal: token past its expiry
	CodeTokenWrongRoom ErrorCode = "token-wrong-room" // fatal: token issued for another room or role
	CodeGatewayTaken   ErrorCode = "gateway-taken"    // fatal: the room already has a gateway
	CodeRoomFull       ErrorCode = "room-full"        // fatal: peers per room, or addresses, exhausted
	CodeTooManyRooms   ErrorCode = "too-many-rooms"   // fatal: the server holds its maximum of rooms
	CodeRateLimited    ErrorCode = "rate-limited"     // message dropped: over the per-connection rate
	CodeUnknownPeer    ErrorCode = "unknown-peer"     // signal to an id that is not in the sender's room
	CodeBadSignal      ErrorCode = "bad-signal"       // signal without "to" or "data", or to oneself
	CodeShuttingDown   ErrorCode = "shutting-down"    // fatal: the server is stopping
)

// ValidRoomName reports whether name may name a room: 1 to 64 characters of
// letters, digits, '.', '_' and '-', starting with a letter or digit (ASCII
// only: `^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`). It is written out rather than
// a regexp so that the browser build of a peer does not link package regexp
// (about 260 kB of wasm) for it.
func ValidRoomName(name string) bool {
	if len(name) == 0 || len(name) > 64 {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case i > 0 && (c == '.' || c == '_' || c == '-'):
		default:
			return false
		}
	}
	return true
}

var errNotObject = errors.New("signal: message is not a JSON object with a string \"type\"")

// Decode parses one wire message into a pointer to its type's struct (*Join,
// *Welcome, *ICEServers, *PeerJoined, *PeerLeft, *Signal, *Leave or *Error).
// It returns an *Error with CodeBadJSON or CodeUnknownType for input it
// cannot accept.
func Decode(b []byte) (any, error) {
	var head struct {
		Type *string `json:"type"`
	}
	if err := json.Unmarshal(b, &head); err != nil || head.Type == nil {
		return nil, &Error{Type: TypeError, Code: CodeBadJSON, Message: describeJSONError(err)}
	}
	var m any
	switch *head.Type {
	case TypeJoin:
		m = new(Join)
	case TypeWelcome:
		m = new(Welcome)
	case TypeICEServers:
		m = new(ICEServers)
	case TypePeerJoined:
		m = new(PeerJoined)
	case TypePeerLeft:
		m = new(PeerLeft)
	case TypeSignal:
		m = new(Signal)
	case TypeLeave:
		m = new(Leave)
	case TypeError:
		m = new(Error)
	default:
		return nil, &Error{Type: TypeError, Code: CodeUnknownType, Message: fmt.Sprintf("unknown message type %.40q", *head.Type)}
	}
	if err := json.Unmarshal(b, m); err != nil {
		return nil, &Error{Type: TypeError, Code: CodeBadJSON, Message: describeJSONError(err)}
	}
	return m, nil
}

func describeJSONError(err error) string {
	if err == nil {
		return errNotObject.Error()
	}
	msg := err.Error()
	if len(msg) > 200 {
		msg = msg[:200]
	}
	return "malformed message: " + msg
}

// Encode marshals a message. It fills in the Type field from the message's Go
// type so callers cannot send a mislabeled message.
func Encode(m any) ([]byte, error) {
	switch m := m.(type) {
	case *Join:
		m.Type = TypeJoin
	case *Welcome:
		m.Type = TypeWelcome
	case *ICEServers:
		m.Type = TypeICEServers
	case *PeerJoined:
		m.Type = TypePeerJoined
	case *PeerLeft:
		m.Type = TypePeerLeft
	case *Signal:
		m.Type = TypeSignal
	case *Leave:
		m.Type = TypeLeave
	case *Error:
		m.Type = TypeError
	default:
		return nil, fmt.Errorf("signal: cannot encode %T", m)
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(m); err != nil {
		return nil, fmt.Errorf("signal: encode: %w", err)
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

// TypeOf returns the wire type of a decoded or to-be-encoded message, or
// "unknown" for other values.
func TypeOf(m any) string {
	switch m.(type) {
	case *Join:
		return TypeJoin
	case *Welcome:
		return TypeWelcome
	case *ICEServers:
		return TypeICEServers
	case *PeerJoined:
		return TypePeerJoined
	case *PeerLeft:
		return TypePeerLeft
	case *Signal:
		return TypeSignal
	case *Leave:
		return TypeLeave
	case *Error:
		return TypeError
	}
	return "unknown"
}
