// Package portfwd forwards host sockets to guest addresses: it is how tools
// on a gateway's host reach a guest of the room (bin/gateway -forward).
//
// A Spec names one forward, "tcp:127.0.0.1:8080=10.86.0.2:80" in its flag
// form (ParseSpec, Spec.String): connections to 127.0.0.1:8080 on the host
// are proxied to port 80 of the guest 10.86.0.2; "udp:..." does the same
// for datagrams. ":PORT" as the host address listens on every address of
// the host. Spec.CheckSubnet checks a guest address against the room's
// subnet once it is known.
//
// The Forwarder listens on the host's own stack and reaches guests through
// a DialFunc: in kernel mode a net.Dialer (the host routes the room subnet
// through the gateway's TAP, which holds .1), in userspace mode the
// userspace stack's dialer. Its life is New, Start (binds every listener or
// none), Close (ends every listener, connection and session, and waits for
// their goroutines).
//
// # Why a proxy, not nftables DNAT
//
//   - It works the same in both gateway modes: the userspace stack has no
//     nftables to rewrite addresses with.
//   - It reaches guests from the host's own loopback: DNAT of locally
//     originated traffic to 127.0.0.1 needs route_localnet and output-chain
//     rules, and would route loopback-sourced packets out of the TAP.
//   - It needs no extra firewall state: the gateway's table keeps refusing
//     every connection from the uplink to the room (its
//     flows_internet_to_guest stay refused), and the proxy's own connections
//     to guests are the host's, answered through the existing
//     established/related rule.
//
// The cost: a guest sees the gateway's address (.1) as the client's, never
// the real client's; and each TCP connection is two sockets on the host.
//
// # TCP
//
// Each accepted connection dials the guest (Config.DialTimeout) and is
// copied both ways through 64 KiB buffers. An EOF from one side becomes a
// half-close (CloseWrite) of the other, so request-then-shutdown clients
// still get their answer; an error closes both. At most Config.MaxConns
// connections per forward are open: one more is closed at once and
// counted as refused.
//
// # UDP
//
// Each client address gets a session with its own connected UDP socket to
// the guest, so the guest's replies go back to the client that caused
// them. At most Config.MaxSessions sessions per forward; datagrams from
// one more client are dropped and counted as refused. A session with no
// datagram either way for Config.UDPIdle ends. Datagrams are read into
// 64 KiB buffers (the largest IPv4 datagram).
//
// # Counters
//
// Per forward (label forward="tcp:127.0.0.1:8080=10.86.0.2:80"), as Stats
// and, when Config.Registerer is set, as metrics:
//
//	peerlan_gateway_forward_accepted_total       connections accepted / sessions opened
//	peerlan_gateway_forward_refused_total        turned away at the limit
//	peerlan_gateway_forward_dial_failures_total  dials to the guest that failed
//	peerlan_gateway_forward_bytes_total{direction="to_guest"|"from_guest"}
//	peerlan_gateway_forward_active               open connections / sessions
//
// Refusals and dial failures are logged at most once per 10 s per forward,
// with the count of the lines held back, so a flood cannot flood the log.
package portfwd
