// Package relay is peerlan's embedded TURN relay (DESIGN.md invariant 8:
// "TURN is a fallback, never a hole"). It wraps pion/turn v4 with:
//
//   - TURN REST credentials: MintCredential makes "<unix-expiry>:<user>" /
//     base64(HMAC-SHA1(secret, username)) pairs, the scheme coturn's
//     use-auth-secret speaks, so an external coturn with the same
//     static-auth-secret accepts the same credentials. Expired, malformed
//     and wrong-realm credentials are refused.
//   - No relaying into private space: CreatePermission and ChannelBind to a
//     peer whose normalised address (IPv4-mapped IPv6 unmapped, zone
//     dropped) is loopback, RFC 1918, CGNAT, link-local, multicast,
//     unspecified, 0.0.0.0/8, broadcast, reserved, IPv6 unique-local,
//     site-local, or an IPv6 form that tunnels to IPv4 are refused
//     (ClassifyAddr); the relay's own RelayIP (at relay ports only) and
//     Config.AllowPeers are the exceptions.
//   - Bounds: allocations per user, permissions per allocation, an absolute
//     allocation lifetime, TCP/TLS connection count and idle/handshake
//     timeouts, relay ports within a range.
//   - Metrics (peerlan_turn_*): current and total allocations, relayed bytes
//     and packets by direction, refusals by reason (auth, quota,
//     permission-quota, permission-<class>), dropped datagrams by reason.
//
// The Server listens on the UDP, TCP and TLS addresses it is given (or on
// sockets passed in) and relays over UDP/IPv4, which is what pion/turn v4
// implements. It does not depend on package signal: the signaling server
// mints credentials with MintCredential and lists ICEURLs in its welcome.
package relay
