package signal

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/netip"
	"strings"
	"time"

	"github.com/peerlan/peerlan/signal/proto"
)

// Tokens are bearer credentials signed by the server secret:
//
//	pl1.<base64url(JSON claims)>.<base64url(HMAC-SHA256(key, "pl1." + claims))>
//
// The claims name what the token is for (kind), the room, and its expiry, so
// that a token for one room or purpose is refused for any other. Resume
// tokens also carry the peer's id, role and address: they are stateless, so a
// restarted server holding the same secret honours them.

// TokenKind says what a token authorises.
type TokenKind string

// Token kinds.
const (
	TokenJoin    TokenKind = "join"    // join a room that requires a token
	TokenGateway TokenKind = "gateway" // take the gateway role in a room
	TokenResume  TokenKind = "resume"  // get an earlier id and address back
)

const tokenPrefix = "pl1."

// maxTokenLen bounds what Verify will even look at.
const maxTokenLen = 1024

// Token verification errors.
var (
	ErrTokenInvalid   = errors.New("signal: token malformed or not signed by this server")
	ErrTokenExpired   = errors.New("signal: token expired")
	ErrTokenWrongRoom = errors.New("signal: token issued for another room or purpose")
)

// Claims are the signed content of a token.
type Claims struct {
	Kind    TokenKind    `json:"k"`
	Room    string       `json:"r"`
	Expires int64        `json:"e"` // unix seconds
	ID      proto.PeerID `json:"i,omitempty"`
	Role    proto.Role   `json:"o,omitempty"`
	IP      netip.Addr   `json:"a,omitzero"`
}

// Signer mints and verifies tokens with a key derived from the server secret.
type Signer struct {
	key []byte
}

// NewSigner returns a Signer for secret, which must hold at least 16 bytes.
func NewSigner(secret []byte) (*Signer, error) {
	if len(secret) < 16 {
		return nil, errors.New("signal: secret must be at least 16 bytes")
	}
	// Derive a purpose-bound key so the same secret can serve other uses
	// (such as TURN credentials) without one forging the other.
	m := hmac.New(sha256.New, secret)
	m.Write([]byte("peerlan token key v1"))
	return &Signer{key: m.Sum(nil)}, nil
}

// Mint returns a signed token for c.
func (s *Signer) Mint(c Claims) string {
	body, _ := json.Marshal(c) // Claims always marshals
	enc := base64.RawURLEncoding.EncodeToString(body)
	return tokenPrefix + enc + "." + base64.RawURLEncoding.EncodeToString(s.mac(enc))
}

// MintFor is Mint for a join or gateway token valid for ttl from now.
func (s *Signer) MintFor(kind TokenKind, room string, ttl time.Duration, now time.Time) string {
	return s.Mint(Claims{Kind: kind, Room: room, Expires: now.Add(ttl).Unix()})
}

func (s *Signer) mac(encClaims string) []byte {
	m := hmac.New(sha256.New, s.key)
	m.Write([]byte(tokenPrefix))
	m.Write([]byte(encClaims))
	return m.Sum(nil)
}

// Verify checks token's signature and expiry and that it was issued for kind
// and room, and returns its claims.
func (s *Signer) Verify(token string, kind TokenKind, room string, now time.Time) (Claims, error) {
	var c Claims
	if len(token) > maxTokenLen || !strings.HasPrefix(token, tokenPrefix) {
		return c, ErrTokenInvalid
	}
	enc, sig, ok := strings.Cut(token[len(tokenPrefix):], ".")
	if !ok {
		return c, ErrTokenInvalid
	}
	got, err := base64.RawURLEncoding.DecodeString(sig)
	if err != nil || !hmac.Equal(got, s.mac(enc)) {
		return c, ErrTokenInvalid
	}
	body, err := base64.RawURLEncoding.DecodeString(enc)
	if err != nil || json.Unmarshal(body, &c) != nil {
		return c, ErrTokenInvalid
	}
	if c.Kind != kind || c.Room != room {
		return c, ErrTokenWrongRoom
	}
	if now.Unix() >= c.Expires {
		return c, ErrTokenExpired
	}
	return c, nil
}

// tokenErrorCode maps a verification error to its wire code.
func tokenErrorCode(err error) proto.ErrorCode {
	switch {
	case errors.Is(err, ErrTokenExpired):
		return proto.CodeTokenExpired
	case errors.Is(err, ErrTokenWrongRoom):
		return proto.CodeTokenWrongRoom
	default:
		return proto.CodeTokenInvalid
	}
}
