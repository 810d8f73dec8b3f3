package relaytest

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/pion/stun/v3"
)

// RawClient speaks just enough TURN over UDP, by hand, to send attributes a
// library client would normalise away or never send: pion's client (like
// most) encodes ::ffff:127.0.0.1 as an IPv4 XOR-PEER-ADDRESS, and coturn's
// turnutils_uclient does not ask an IPv4 relay for IPv6 peers at all, while
// an attacker can send the IPv6 family with any address in it.
type RawClient struct {
	tb                 testing.TB
	conn               net.PacketConn
	server             net.Addr
	username, password string
	realm              stun.Realm
	nonce              stun.Nonce
}

// NewRawClient returns a client that talks from conn to the TURN server at
// server with a long-term credential.
func NewRawClient(tb testing.TB, conn net.PacketConn, server net.Addr, username, password string) *RawClient {
	return &RawClient{tb: tb, conn: conn, server: server, username: username, password: password}
}

func (r *RawClient) roundTrip(setters ...stun.Setter) *stun.Message {
	r.tb.Helper()
	msg := stun.MustBuild(setters...)
	buf := make([]byte, 1500)
	for range 10 {
		if _, err := r.conn.WriteTo(msg.Raw, r.server); err != nil {
			r.tb.Fatal(err)
		}
		_ = r.conn.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		n, _, err := r.conn.ReadFrom(buf)
		if err != nil {
			continue
		}
		res := &stun.Message{Raw: append([]byte(nil), buf[:n]...)}
		if err := res.Decode(); err != nil || res.TransactionID != msg.TransactionID {
			continue
		}
		return res
	}
	r.tb.Fatalf("%s: no response to %s", r, msg.Type)
	return nil
}

func (r *RawClient) auth() []stun.Setter {
	return []stun.Setter{
		stun.NewUsername(r.username), r.realm, r.nonce,
		stun.NewLongTermIntegrity(r.username, r.realm.String(), r.password),
		stun.Fingerprint,
	}
}

// Allocate performs the long-term credential dance and allocates a UDP
// relay, failing the test if the server refuses. It returns the relayed
// address.
func (r *RawClient) Allocate() netip.AddrPort {
	r.tb.Helper()
	udp := stun.RawAttribute{Type: stun.AttrRequestedTransport, Value: []byte{17, 0, 0, 0}}
	allocateType := stun.NewType(stun.MethodAllocate, stun.ClassRequest)
	res := r.roundTrip(stun.TransactionID, allocateType, udp, stun.Fingerprint)
	if err := r.nonce.GetFrom(res); err != nil {
		r.tb.Fatalf("no nonce in %s: %v", res, err)
	}
	if err := r.realm.GetFrom(res); err != nil {
		r.tb.Fatalf("no realm in %s: %v", res, err)
	}
	res = r.roundTrip(append([]stun.Setter{stun.TransactionID, allocateType, udp}, r.auth()...)...)
	if res.Type.Class != stun.ClassSuccessResponse {
		r.tb.Fatalf("allocate: %s", res)
	}
	var relayed stun.XORMappedAddress
	if err := relayed.GetFromAs(res, stun.AttrXORRelayedAddress); err != nil {
		r.tb.Fatalf("allocate: no relayed address in %s: %v", res, err)
	}
	a, _ := netip.AddrFromSlice(relayed.IP)
	return netip.AddrPortFrom(a.Unmap(), uint16(relayed.Port)) //nolint:gosec // a UDP port
}

// ChannelBind binds channel number to peer and reports whether the server
// granted it. Call Allocate first.
func (r *RawClient) ChannelBind(peer netip.AddrPort, number uint16) bool {
	r.tb.Helper()
	addr := &stun.XORMappedAddress{IP: peer.Addr().AsSlice(), Port: int(peer.Port())}
	setters := []stun.Setter{
		stun.TransactionID,
		stun.NewType(stun.MethodChannelBind, stun.ClassRequest),
		xorPeerAddress{addr},
		stun.RawAttribute{Type: stun.AttrChannelNumber, Value: []byte{byte(number >> 8), byte(number), 0, 0}},
	}
	return r.granted(setters...)
}

// xorPeerAddress is XOR-PEER-ADDRESS in the family of its address.
type xorPeerAddress struct{ a *stun.XORMappedAddress }

func (x xorPeerAddress) AddTo(m *stun.Message) error {
	return x.a.AddToAs(m, stun.AttrXORPeerAddress)
}

// Receive returns the next datagram the server sends, raw, or an error
// after d.
func (r *RawClient) Receive(d time.Duration) ([]byte, error) {
	buf := make([]byte, 2048)
	_ = r.conn.SetReadDeadline(time.Now().Add(d))
	n, _, err := r.conn.ReadFrom(buf)
	return buf[:n], err
}

// stunMagicCookie is RFC 5389's fixed header value (unexported by pion).
const stunMagicCookie = 0x2112A442

// xorPeerAddressV6 encodes XOR-PEER-ADDRESS with the IPv6 family whatever
// addr holds (RFC 5389 §15.2).
type xorPeerAddressV6 struct {
	addr netip.Addr
	port uint16
}

func (x xorPeerAddressV6) AddTo(m *stun.Message) error {
	v := make([]byte, 20)
	v[1] = 0x02 // IPv6
	binary.BigEndian.PutUint16(v[2:4], x.port^uint16(stunMagicCookie>>16))
	var mask [16]byte
	binary.BigEndian.PutUint32(mask[0:4], stunMagicCookie)
	copy(mask[4:], m.TransactionID[:])
	a := x.addr.As16()
	for i := range a {
		v[4+i] = a[i] ^ mask[i]
	}
	m.Add(stun.AttrXORPeerAddress, v)
	return nil
}

// CreatePermissionV6 asks for a permission to addr encoded as IPv6 (an
// IPv4 address in its mapped form) and reports whether the server granted
// it. Call Allocate first.
func (r *RawClient) CreatePermissionV6(addr netip.Addr) bool {
	r.tb.Helper()
	setters := []stun.Setter{
		stun.TransactionID,
		stun.NewType(stun.MethodCreatePermission, stun.ClassRequest),
		xorPeerAddressV6{addr: addr, port: 3480},
	}
	return r.granted(setters...)
}

// granted sends an authenticated request built from setters, again with
// the fresh nonce if the server calls the current one stale, and reports
// whether the server granted it.
func (r *RawClient) granted(setters ...stun.Setter) bool {
	r.tb.Helper()
	res := r.roundTrip(append(setters, r.auth()...)...)
	var code stun.ErrorCodeAttribute
	if res.Type.Class == stun.ClassErrorResponse && code.GetFrom(res) == nil && code.Code == stun.CodeStaleNonce {
		_ = r.nonce.GetFrom(res)
		res = r.roundTrip(append(setters, r.auth()...)...)
	}
	return res.Type.Class == stun.ClassSuccessResponse
}

func (r *RawClient) String() string { return fmt.Sprintf("raw TURN client to %s", r.server) }
