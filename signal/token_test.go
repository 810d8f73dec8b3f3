package signal_test

import (
	"bytes"
	"errors"
	"net/netip"
	"reflect"
	"testing"
	"time"

	"github.com/peerlan/peerlan/signal"
	"github.com/peerlan/peerlan/signal/proto"
	"github.com/peerlan/peerlan/signal/signaltest"
)

func TestTokens_Unit(t *testing.T) {
	s, err := signal.NewSigner(signaltest.Secret)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Unix(1_700_000_000, 0)
	c := signal.Claims{Kind: signal.TokenResume, Room: "lab", Expires: now.Add(time.Hour).Unix(), ID: "id", Role: proto.RoleGuest, IP: netip.MustParseAddr("10.86.0.9")}
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
