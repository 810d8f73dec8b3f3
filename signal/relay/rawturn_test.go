package relay

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/pion/stun/v3"
)

// rawTURN speaks just enough TURN over UDP, by hand, to send attributes a
// library client would normalise away: pion's client (like most) encodes
// ::ffff:127.0.0.1 as an IPv4 XOR-PEER-ADDRESS, while an attacker can send
// the IPv6 family with a mapped address in it.
type rawTURN struct {
	tb     testing.TB
	conn   net.PacketConn
	server net.Addr
	creds  creds
	realm  stun.Realm
	nonce  stun.Nonce
}

func (r *rawTURN) roundTrip(setters ...stun.Setter) *stun.Message {
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
	r.tb.Fatalf("no response to %s", msg.Type)
	return nil
}

func (r *rawTURN) auth() []stun.Setter {
	return []stun.Setter{
		stun.NewUsername(r.creds.user), r.realm, r.nonce,
		stun.NewLongTermIntegrity(r.creds.user, r.realm.String(), r.creds.pass),
		stun.Fingerprint,
	}
}

// allocate performs the long-term credential dance and allocates.
func (r *rawTURN) allocate() {
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

// createPermissionV6 asks for a permission to addr encoded as IPv6 and
// reports whether the server granted it.
func (r *rawTURN) createPermissionV6(addr netip.Addr) bool {
	r.tb.Helper()
	setters := []stun.Setter{
		stun.TransactionID,
		stun.NewType(stun.MethodCreatePermission, stun.ClassRequest),
		xorPeerAddressV6{addr: addr, port: 3480},
	}
	res := r.roundTrip(append(setters, r.auth()...)...)
	var code stun.ErrorCodeAttribute
	if res.Type.Class == stun.ClassErrorResponse && code.GetFrom(res) == nil && code.Code == stun.CodeStaleNonce {
		_ = r.nonce.GetFrom(res)
		return r.createPermissionV6(addr)
	}
	return res.Type.Class == stun.ClassSuccessResponse
}

func (r *rawTURN) String() string { return fmt.Sprintf("raw TURN client to %s", r.server) }

// A mapped address sent as IPv6 must be unmapped before classification:
// netip reports ::ffff:127.0.0.1 as neither loopback nor private.
func TestRawIPv6PeerAddressForms(t *testing.T) {
	cfg := loopbackConfig(t)
	s := startServer(t, cfg)
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	r := &rawTURN{tb: t, conn: pc, server: s.Addrs().UDP[0], creds: mint("alice", time.Hour)}
	r.allocate()
	for _, tc := range []struct {
		addr  string
		class AddrClass
	}{
		{"::ffff:127.0.0.2", ClassLoopback},
		{"::ffff:10.0.0.1", ClassPrivate},
		{"::ffff:169.254.169.254", ClassLinkLocal},
		{"::1", ClassLoopback},
		{"::", ClassUnspecified},
		{"fe80::1", ClassLinkLocal},
		{"64:ff9b::a00:1", ClassTranslated},
	} {
		before := refusals(s, "permission-"+string(tc.class))
		if r.createPermissionV6(netip.MustParseAddr(tc.addr)) {
			t.Errorf("permission to %s granted", tc.addr)
		}
		if got := refusals(s, "permission-"+string(tc.class)); got != before+1 {
			t.Errorf("%s: refusals{permission-%s} %v -> %v", tc.addr, tc.class, before, got)
		}
	}
	// The same encoding of a global address is granted, so the refusals
	// above are about the addresses, not the encoding.
	if !r.createPermissionV6(netip.MustParseAddr("::ffff:192.0.2.1")) {
		t.Error("permission to ::ffff:192.0.2.1 refused")
	}
}
