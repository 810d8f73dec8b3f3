package relay

import (
	"crypto/hmac"
	"crypto/md5"  //nolint:gosec // test of the RFC 5389 key
	"crypto/sha1" //nolint:gosec // test of the REST scheme
	"encoding/base64"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/pion/turn/v4"
)

var testSecret = []byte("0123456789abcdef-test-secret")

func TestMintCredentialFormat(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	username, password := MintCredential(testSecret, "peer-1", time.Hour, now)
	if want := "1700003600:peer-1"; username != want {
		t.Fatalf("username %q, want %q", username, want)
	}
	// Independent computation of the coturn scheme.
	m := hmac.New(sha1.New, testSecret)
	m.Write([]byte(username))
	if want := base64.StdEncoding.EncodeToString(m.Sum(nil)); password != want {
		t.Fatalf("password %q, want %q", password, want)
	}
}

// pion/turn's own TURN REST helper must agree with ours, so its clients and
// servers interoperate with credentials minted here.
func TestMintCredentialMatchesPion(t *testing.T) {
	username, password, err := turn.GenerateLongTermTURNRESTCredentials(string(testSecret), "peer-2", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	expiry, user, err := ParseCredentialUsername(username)
	if err != nil || user != "peer-2" {
		t.Fatalf("parse %q: user %q err %v", username, user, err)
	}
	u2, p2 := MintCredential(testSecret, "peer-2", 0, expiry)
	if u2 != username || p2 != password {
		t.Fatalf("mint = %q/%q, pion = %q/%q", u2, p2, username, password)
	}
}

func TestCheckCredential(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	username, password := MintCredential(testSecret, "alice", time.Minute, now)
	cases := []struct {
		name     string
		secret   []byte
		username string
		password string
		at       time.Time
		wantErr  error
	}{
		{"valid", testSecret, username, password, now, nil},
		{"valid at expiry second", testSecret, username, password, now.Add(time.Minute), nil},
		{"expired one second later", testSecret, username, password, now.Add(time.Minute + time.Second), ErrCredentialExpired},
		{"wrong password", testSecret, username, password[:len(password)-2] + "AA", now, ErrCredentialMismatch},
		{"other secret", []byte("another-secret-of-16+"), username, password, now, ErrCredentialMismatch},
		{"user changed", testSecret, strings.Replace(username, "alice", "mallory", 1), password, now, ErrCredentialMismatch},
		{"expiry changed", testSecret, "1800000000:alice", password, now, ErrCredentialMismatch},
		{"no colon", testSecret, "1700000060", password, now, ErrCredentialMalformed},
		{"empty user", testSecret, "1700000060:", password, now, ErrCredentialMalformed},
		{"empty expiry", testSecret, ":alice", password, now, ErrCredentialMalformed},
		{"signed expiry", testSecret, "+1700000060:alice", password, now, ErrCredentialMalformed},
		{"negative expiry", testSecret, "-1:alice", password, now, ErrCredentialMalformed},
		{"hex expiry", testSecret, "0x65:alice", password, now, ErrCredentialMalformed},
		{"overflowing expiry", testSecret, "9999999999999999999:alice", password, now, ErrCredentialMalformed},
		{"too long", testSecret, "1700000060:" + strings.Repeat("a", maxUsernameLen), password, now, ErrCredentialMalformed},
		{"empty", testSecret, "", password, now, ErrCredentialMalformed},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			user, err := CheckCredential(tc.secret, tc.username, tc.password, tc.at)
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("err = %v, want %v", err, tc.wantErr)
			}
			if tc.wantErr == nil && user != "alice" {
				t.Fatalf("user = %q", user)
			}
		})
	}
	if _, err := CheckCredential(nil, username, password, now); err == nil {
		t.Fatal("empty secret accepted")
	}
}

func TestUserMayContainColons(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	username, password := MintCredential(testSecret, "room:peer", time.Minute, now)
	user, err := CheckCredential(testSecret, username, password, now)
	if err != nil || user != "room:peer" {
		t.Fatalf("user %q err %v", user, err)
	}
}

// The key handed to pion is RFC 5389's MD5(username:realm:password), the
// same pion's GenerateAuthKey derives from the password.
func TestLongTermKey(t *testing.T) {
	now := time.Now()
	username, password := MintCredential(testSecret, "bob", time.Minute, now)
	user, key, err := longTermKey(testSecret, username, "peerlan", now)
	if err != nil || user != "bob" {
		t.Fatalf("user %q err %v", user, err)
	}
	want := md5.Sum([]byte(username + ":peerlan:" + password)) //nolint:gosec // test
	if string(key) != string(want[:]) {
		t.Fatalf("key %x, want %x", key, want)
	}
	if string(key) != string(turn.GenerateAuthKey(username, "peerlan", password)) {
		t.Fatal("key differs from pion's GenerateAuthKey")
	}
	if _, _, err := longTermKey(testSecret, username, "peerlan", now.Add(2*time.Minute)); !errors.Is(err, ErrCredentialExpired) {
		t.Fatalf("expired: err = %v", err)
	}
	if _, _, err := longTermKey(testSecret, "bob", "peerlan", now); !errors.Is(err, ErrCredentialMalformed) {
		t.Fatalf("malformed: err = %v", err)
	}
}

func FuzzParseCredentialUsername(f *testing.F) {
	for _, s := range []string{"1700000000:a", ":", "1:", "00000000000000000001:x", "1:a:b", "-1:a", "x:y"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		expiry, user, err := ParseCredentialUsername(s)
		if err != nil {
			return
		}
		if user == "" || len(s) > maxUsernameLen || expiry.Unix() < 0 {
			t.Fatalf("accepted %q: expiry %v user %q", s, expiry, user)
		}
		// A parsed username round-trips through minting.
		u, _ := MintCredential(testSecret, user, 0, expiry)
		e2, u2, err := ParseCredentialUsername(u)
		if err != nil || u2 != user || !e2.Equal(expiry) {
			t.Fatalf("round trip of %q: %q %v %v", s, u2, e2, err)
		}
	})
}
