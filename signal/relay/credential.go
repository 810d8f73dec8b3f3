package relay

import (
	"crypto/hmac"
	"crypto/md5"  //nolint:gosec // RFC 5389 long-term credentials are defined with MD5.
	"crypto/sha1" //nolint:gosec // the TURN REST scheme is defined with HMAC-SHA1.
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Credentials follow the TURN REST scheme (draft-uberti-behave-turn-rest),
// which coturn speaks as use-auth-secret / static-auth-secret:
//
//	username = "<unix expiry seconds>:<user>"
//	password = base64(HMAC-SHA1(secret, username))
//
// The signaling server mints them; any relay holding the same secret checks
// them without state, so an external coturn can replace this relay.
//
// TURN itself never carries the password: the client proves it knows the
// long-term key MD5("<username>:<realm>:<password>") (RFC 5389 §15.4) with
// MESSAGE-INTEGRITY, and pion/turn checks that HMAC in constant time.

// Credential errors. Callers of CheckCredential can tell them apart with
// errors.Is; the TURN server collapses them all into one refusal.
var (
	ErrCredentialMalformed = errors.New("relay: credential username is not <unix-expiry>:<user>")
	ErrCredentialExpired   = errors.New("relay: credential expired")
	ErrCredentialMismatch  = errors.New("relay: credential password does not match")
	errEmptySecret         = errors.New("relay: empty secret")
)

const (
	// maxUsernameLen bounds what is parsed. STUN allows 513 bytes; a minted
	// username is an expiry (at most 19 digits), a colon and a peer id.
	maxUsernameLen = 256
	// maxExpiryDigits keeps the expiry within int64 seconds.
	maxExpiryDigits = 18
)

// MintCredential returns a TURN REST credential for user that expires ttl
// after now (truncated to the second). A ttl <= 0 yields a credential that is
// already expired at now+1s. user should be short (the relay refuses
// usernames over 256 bytes) and should not be empty, since allocation quotas
// are counted per user.
func MintCredential(secret []byte, user string, ttl time.Duration, now time.Time) (username, password string) {
	username = strconv.FormatInt(now.Add(ttl).Unix(), 10) + ":" + user
	return username, restPassword(secret, username)
}

// ParseCredentialUsername splits a TURN REST username into its expiry and
// user parts. The user part may itself contain colons; it must not be empty.
func ParseCredentialUsername(username string) (expiry time.Time, user string, err error) {
	if len(username) > maxUsernameLen {
		return time.Time{}, "", fmt.Errorf("%w: longer than %d bytes", ErrCredentialMalformed, maxUsernameLen)
	}
	stamp, user, ok := strings.Cut(username, ":")
	if !ok || user == "" {
		return time.Time{}, "", fmt.Errorf("%w: %q", ErrCredentialMalformed, username)
	}
	if stamp == "" || len(stamp) > maxExpiryDigits || strings.Trim(stamp, "0123456789") != "" {
		return time.Time{}, "", fmt.Errorf("%w: bad expiry in %q", ErrCredentialMalformed, username)
	}
	secs, err := strconv.ParseInt(stamp, 10, 64)
	if err != nil {
		return time.Time{}, "", fmt.Errorf("%w: %w", ErrCredentialMalformed, err)
	}
	return time.Unix(secs, 0), user, nil
}

// CheckCredential verifies a username/password pair minted with secret, as a
// relay would, and returns the user part. A credential is valid up to and
// including its expiry second. The password is compared in constant time.
func CheckCredential(secret []byte, username, password string, now time.Time) (user string, err error) {
	if len(secret) == 0 {
		return "", errEmptySecret
	}
	expiry, user, err := ParseCredentialUsername(username)
	if err != nil {
		return "", err
	}
	if now.Unix() > expiry.Unix() {
		return "", fmt.Errorf("%w at %s", ErrCredentialExpired, expiry.UTC().Format(time.RFC3339))
	}
	if !hmac.Equal([]byte(password), []byte(restPassword(secret, username))) {
		return "", ErrCredentialMismatch
	}
	return user, nil
}

// longTermKey is what the TURN AuthHandler returns: the RFC 5389 long-term
// key for a REST credential that is well formed and unexpired at now. The
// client's MESSAGE-INTEGRITY is then checked against it by pion/turn.
func longTermKey(secret []byte, username, realm string, now time.Time) (user string, key []byte, err error) {
	expiry, user, err := ParseCredentialUsername(username)
	if err != nil {
		return "", nil, err
	}
	if now.Unix() > expiry.Unix() {
		return "", nil, fmt.Errorf("%w at %s", ErrCredentialExpired, expiry.UTC().Format(time.RFC3339))
	}
	h := md5.New() //nolint:gosec // see above
	h.Write([]byte(username + ":" + realm + ":" + restPassword(secret, username)))
	return user, h.Sum(nil), nil
}

func restPassword(secret []byte, username string) string {
	m := hmac.New(sha1.New, secret)
	m.Write([]byte(username))
	return base64.StdEncoding.EncodeToString(m.Sum(nil))
}
