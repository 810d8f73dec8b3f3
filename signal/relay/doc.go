// Package relay is peerlan's embedded TURN relay (DESIGN.md invariant 8:
// "TURN is a fallback, never a hole"). It wraps pion/turn v4; the signaling
// server mints credentials with MintCredential and lists Server.ICEURLs in
// its welcome. It does not depend on package signal.
//
// # Credentials
//
// TURN REST scheme, as coturn's use-auth-secret/static-auth-secret speaks
// it, so an external coturn with the same secret accepts the same
// credentials:
//
//	username = "<unix expiry seconds>:<user>"   (user: the peer id)
//	password = base64(HMAC-SHA1(secret, username))
//
// The AuthHandler parses the username (at most 256 bytes, decimal expiry,
// non-empty user), refuses it when expired or when the realm is not the
// server's, and returns MD5(username:realm:password); pion/turn then checks
// the request's MESSAGE-INTEGRITY in constant time. CheckCredential is the
// same check for a username/password pair. One secret at a time: pion asks
// for one key per request, so a relay cannot try several secrets.
//
// # No relaying into private space
//
// CreatePermission and ChannelBind go through a PermissionHandler that
// normalises the peer address (NormalizeAddr: IPv4-mapped IPv6 unmapped,
// zone dropped, malformed → unspecified; net/netip does not report
// ::ffff:127.0.0.1 as loopback, so unmapping matters) and refuses every
// class of ClassifyAddr but ClassGlobal. Two exceptions: the relay's own
// RelayIP, so clients of one relay reach each other's relayed addresses,
// and Config.AllowPeers for labs. Writes are checked again per datagram:
// a write to RelayIP at a port that is not a live allocation's (the TURN
// listeners, other services on the host) is dropped, as is a write to a refused class, in
// case a permission ever got past the handler. Datagrams from peers without
// a permission are dropped before pion sees them.
//
// # Bounds
//
//   - MaxAllocationsPerUser (default 128: a peer of a 64-peer room holds one
//     allocation per RTCPeerConnection and TURN URL). Counted from pion's
//     allocation events; the QuotaHandler also reserves a slot for each
//     Allocate in flight (by client address, for pendingTTL), so concurrent
//     Allocates over many TCP connections cannot overshoot.
//   - MaxPermissionsPerAllocation (default 64 distinct peer IPs per client
//     transport address; a WebRTC allocation serves one remote peer).
//   - MaxAllocationLifetime (default 12h), enforced by closing the relay
//     socket, which makes pion delete the allocation. pion/turn has no knob:
//     it grants each Allocate/Refresh the requested lifetime if under one
//     hour, else 10 minutes. Credential expiry is the first bound, since a
//     Refresh with an expired credential is refused.
//   - TCP/TLS: MaxConns (1024) concurrent connections (Accept blocks beyond,
//     rather than failing: pion's accept loop stops at the first error),
//     HandshakeTimeout (10s) to finish TLS and send the first bytes,
//     ConnIdleTimeout (11m; clients refresh permissions every 5 minutes) and
//     a 10s write timeout so a client that stops reading cannot stall its
//     allocation. Accepted connections are closed on Close (pion does not).
//   - Relay ports in [MinPort, MaxPort] (default 49152-65535), picked at
//     random and scanned from there, at most 16 bind attempts.
//
// pion/turn v4 relays over UDP and IPv4 only (no RFC 6062 TCP relaying, no
// IPv6 relayed addresses), so RelayIP must be IPv4. It answers a refused
// CreatePermission with an error response without an error code and a
// refused ChannelBind with 401 (RFC 5766 would say 403); clients see a
// failure either way.
//
// # Metrics
//
//	peerlan_turn_allocations                         gauge
//	peerlan_turn_allocations_total                   counter
//	peerlan_turn_allocation_lifetime_exceeded_total  counter
//	peerlan_turn_relayed_bytes_total{direction}      client-to-peer, peer-to-client (payload bytes)
//	peerlan_turn_relayed_packets_total{direction}
//	peerlan_turn_refusals_total{reason}              auth, quota, permission-quota, permission-<class>
//	peerlan_turn_dropped_packets_total{reason}       no-permission, own-address, refused-peer,
//	                                                 inbox-full, send-failed
package relay
