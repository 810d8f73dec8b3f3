// Package userspace is a room's exit node without root, TAP or nftables: a
// userspace TCP/IP stack (gVisor's netstack, with
// github.com/containers/gvisor-tap-vsock's UDP forwarder) that is a
// peer.OffloadPort of the room's switch, owns the room's gateway address
// (.1) and MAC, and terminates guest TCP and UDP flows, opening an ordinary
// socket on the host for each.
//
// What it does:
//   - ARP and ping for .1, DNS on .1:53 (UDP and TCP) served by
//     gateway.DNSForwarder on the stack's own sockets, so -dns upstreams, the
//     forwarder's bounds and its counters are those of kernel mode;
//   - TCP and UDP from guests to the internet, each flow relayed through a
//     host socket (TCP by this package's forwarder, UDP by
//     gvisor-tap-vsock's); the host sees connections from the gateway
//     process, so no NAT, forwarding or firewall is needed. A guest's TCP
//     handshake completes only once the host's connect has; a failed,
//     refused or timed-out connect (Config.ConnectTimeout) resets it;
//   - the egress policy of kernel mode, gateway.GuestDropReason with the same
//     deny list (loopback, private, CGNAT, link-local, metadata, reserved,
//     multicast, broadcast) and Config.Allow, plus "only DNS and ping on
//     .1". The policy is enforced on frames entering the stack: a refused frame never reaches the stack,
//     and is counted by reason. Nothing a guest sends can reach the host's
//     own private networks or loopback unless Allow opens them;
//   - a token bucket per guest address and direction (Config.RateLimit),
//     over-limit frames dropped and counted;
//   - DialGuest: connections from the stack to a guest (port forwarding);
//   - bounds: Config.MaxFlows relayed flows, a bounded queue toward the
//     switch, and TCP connects waiting for the host bounded per guest
//     address (Config.MaxPendingPerGuest) and in all (Config.MaxPending),
//     each for at most Config.ConnectTimeout: a guest dialling unanswering
//     addresses fills only its own share, and its further connects are
//     reset and counted, while other guests' connect as usual.
//
// What it does not do:
//   - DHCP: the stack runs no DHCP server, and broadcast IPv4 from guests is
//     dropped before the stack, so a DHCPDISCOVER gets no answer here; every
//     peer answers its own guest (DESIGN.md invariant 6);
//   - ICMP beyond .1: an unprivileged process cannot send echo requests for
//     a guest, and a stack that answered them itself would lie, so guest
//     pings to other addresses are dropped (DropICMP);
//   - IPv6, IP fragments toward the internet, other IP protocols;
//   - offloads beyond TCP over IPv4: with Config.Offload the stack sends
//     TCP super-frames with partial checksums (gVisor's host GSO) and takes
//     guests' super-frames whole; everything else is one frame per call
//     (the stack's MTU is Config.MTU);
//   - a prompt end of idle UDP relays on Close: their host sockets close at
//     the library's 90 s idle timeout.
//
// Speed: every guest flow is a userspace TCP/IP stack plus a host socket, so
// it costs more CPU per byte than the kernel's NAT; docs/architecture.md has
// the measured ratio.
package userspace
