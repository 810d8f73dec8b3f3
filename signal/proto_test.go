package signal_test

import (
	"bytes"
	"errors"
	"net/netip"
	"reflect"
	"testing"
	"time"

	"github.com/peerlan/peerlan/signal"
)

func FuzzDecode(f *testing.F) {
	for _, s := range []string{
		`{"type":"join","v":1,"room":"lab-42","role":"guest","token":"t","resume":"r"}`,
		`{"type":"welcome","v":1,"id":"abc","resume":"r","room":"lab","role":"guest","ip":"10.86.0.3","prefix":"10.86.0.0/24","gateway":"10.86.0.1","peers":[{"id":"x","role":"gateway","ip":"10.86.0.1"}],"ice_servers":[{"urls":["stun:a"]}],"limits":{"max_message_bytes":65536}}`,
		`{"type":"peer-joined","peer":{"id":"q","role":"guest","ip":"10.86.0.4"}}`,
		`{"type":"peer-left","id":"q"}`,
		`{"type":"signal","to":"q","data":{"kind":"offer","sdp":"v=0"}}`,
		`{"type":"leave"}`,
		`{"type":"error","code":"unknown-peer","message":"m","fatal":false}`,
		`{"type":"welcome","ip":"999.1.1.1"}`,
		`{"type":7}`, `[]`, `null`, `{"type":"join","v":"1"}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := signal.Decode(b)
		if err != nil {
			var e *signal.Error
			if !errors.As(err, &e) || (e.Code != signal.CodeBadJSON && e.Code != signal.CodeUnknownType) {
				t.Fatalf("Decode error not a protocol error: %v", err)
			}
			return
		}
		// What decodes re-encodes, and decodes again to the same value.
		enc, err := signal.Encode(m)
		if err != nil {
			t.Fatalf("re-encode %T: %v", m, err)
		}
		m2, err := signal.Decode(enc)
		if err != nil {
			t.Fatalf("decode of re-encoded %s: %v", enc, err)
		}
		enc2, _ := signal.Encode(m2)
		if !bytes.Equal(enc, enc2) {
			t.Fatalf("round trip changed %s into %s", enc, enc2)
		}
	})
}

func TestEncodeSetsType(t *testing.T) {
	b, err := signal.Encode(&signal.PeerLeft{Type: "welcome", ID: "x"})
	if err != nil {
		t.Fatal(err)
	}
	m, err := signal.Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := m.(*signal.PeerLeft); !ok {
		t.Fatalf("mislabeled message decoded as %T", m)
	}
	if _, err := signal.Encode(struct{}{}); err == nil {
		t.Fatal("encoded an unknown type")
	}
}

func TestRoomNames(t *testing.T) {
	good := []string{"a", "lab-42", "A.b_c", "0" + string(bytes.Repeat([]byte("x"), 63))}
	bad := []string{"", "-a", ".a", "a/b", "a b", "é", "0" + string(bytes.Repeat([]byte("x"), 64)), "a\n"}
	for _, n := range good {
		if !signal.ValidRoomName(n) {
			t.Errorf("%q refused", n)
		}
	}
	for _, n := range bad {
		if signal.ValidRoomName(n) {
			t.Errorf("%q accepted", n)
		}
	}
}

func TestTokens_Unit(t *testing.T) {
	s, err := signal.NewSigner(testSecret)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Unix(1_700_000_000, 0)
	c := signal.Claims{Kind: signal.TokenResume, Room: "lab", Expires: now.Add(time.Hour).Unix(), ID: "id", Role: signal.RoleGuest, IP: netip.MustParseAddr("10.86.0.9")}
	tok := s.Mint(c)
	got, err := s.Verify(tok, signal.TokenResume, "lab", now)
	if err != nil || !reflect.DeepEqual(got, c) {
		t.Fatalf("Verify = %+v, %v", got, err)
	}
	for name, tc := range map[string]struct {
		tok  string
		kind signal.TokenKind
		room string
		at   time.Time
		want error
	}{
		"expired":    {tok, signal.TokenResume, "lab", now.Add(2 * time.Hour), signal.ErrTokenExpired},
		"wrong kind": {tok, signal.TokenGateway, "lab", now, signal.ErrTokenWrongRoom},
		"wrong room": {tok, signal.TokenResume, "lab2", now, signal.ErrTokenWrongRoom},
		"truncated":  {tok[:len(tok)-1], signal.TokenResume, "lab", now, signal.ErrTokenInvalid},
		"no prefix":  {tok[4:], signal.TokenResume, "lab", now, signal.ErrTokenInvalid},
		"huge":       {string(bytes.Repeat([]byte("a"), 5000)), signal.TokenResume, "lab", now, signal.ErrTokenInvalid},
	} {
		if _, err := s.Verify(tc.tok, tc.kind, tc.room, tc.at); !errors.Is(err, tc.want) {
			t.Errorf("%s: got %v want %v", name, err, tc.want)
		}
	}
	if _, err := signal.NewSigner([]byte("short")); err == nil {
		t.Fatal("short secret accepted")
	}
}
