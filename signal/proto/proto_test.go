package proto_test

import (
	"bytes"
	"errors"
	"regexp"
	"testing"

	"github.com/peerlan/peerlan/signal/proto"
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
		m, err := proto.Decode(b)
		if err != nil {
			var e *proto.Error
			if !errors.As(err, &e) || (e.Code != proto.CodeBadJSON && e.Code != proto.CodeUnknownType) {
				t.Fatalf("Decode error not a protocol error: %v", err)
			}
			return
		}
		// What decodes re-encodes, and decodes again to the same value.
		enc, err := proto.Encode(m)
		if err != nil {
			t.Fatalf("re-encode %T: %v", m, err)
		}
		m2, err := proto.Decode(enc)
		if err != nil {
			t.Fatalf("decode of re-encoded %s: %v", enc, err)
		}
		enc2, _ := proto.Encode(m2)
		if !bytes.Equal(enc, enc2) {
			t.Fatalf("round trip changed %s into %s", enc, enc2)
		}
	})
}

func TestEncodeSetsType(t *testing.T) {
	b, err := proto.Encode(&proto.PeerLeft{Type: "welcome", ID: "x"})
	if err != nil {
		t.Fatal(err)
	}
	m, err := proto.Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := m.(*proto.PeerLeft); !ok {
		t.Fatalf("mislabeled message decoded as %T", m)
	}
	if _, err := proto.Encode(struct{}{}); err == nil {
		t.Fatal("encoded an unknown type")
	}
}

func TestRoomNames(t *testing.T) {
	good := []string{"a", "lab-42", "A.b_c", "0" + string(bytes.Repeat([]byte("x"), 63))}
	bad := []string{"", "-a", ".a", "a/b", "a b", "é", "0" + string(bytes.Repeat([]byte("x"), 64)), "a\n"}
	for _, n := range good {
		if !proto.ValidRoomName(n) {
			t.Errorf("%q refused", n)
		}
	}
	for _, n := range bad {
		if proto.ValidRoomName(n) {
			t.Errorf("%q accepted", n)
		}
	}
}

// FuzzRoomNames checks ValidRoomName against the pattern it spells out.
func FuzzRoomNames(f *testing.F) {
	re := regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)
	for _, s := range []string{"a", "lab-42", "-a", "a/b", "é", "a\n", "", string(bytes.Repeat([]byte("x"), 65))} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		if got, want := proto.ValidRoomName(name), re.MatchString(name); got != want {
			t.Fatalf("ValidRoomName(%q) = %v, the pattern says %v", name, got, want)
		}
	})
}
