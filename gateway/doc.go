// Package gateway is the host side of a peerlan gateway: the peer whose
// local port is a TAP device holding the room's .1 address (DESIGN.md
// invariant 7). It routes the room to the internet and back, and nothing
// else.
//
// The package knows no WebRTC and no TAP: it takes the LAN interface by
// name. The command wires it up:
//
//	tap := water.New(...)                           // the LAN interface
//	host, err := gateway.SetupHost(ctx, gateway.HostConfig{LAN: tap.Name()})
//	fwd, err := gateway.NewDNSForwarder(ctx, gateway.DNSConfig{
//		Listen: netip.AddrPortFrom(host.GatewayAddr(), 53), Interface: host.LAN()})
//	metrics, err := gateway.NewMetrics(registry, host, fwd)
//	... run the mesh with the TAP as local port; log metrics.Status(ctx) now and then ...
//	fwd.Close(); host.Close()                       // in this order; then close the TAP
//
// # Host setup
//
// SetupHost assigns .1/prefix to the LAN interface, brings it up, switches on
// IPv4 forwarding for the LAN and the uplink only, and loads one nftables
// table, "inet peerlan_gw_<lan>", through the nft CLI (`nft -f -`, read back
// with `nft -j`). It never touches another table, the global
// net.ipv4.ip_forward switch, or iptables.
//
// Per-interface forwarding is enough: for IPv4 the kernel decides whether to
// route a packet by the forwarding switch of the interface it arrived on
// (IN_DEV_FORWARD in ip_route_input_slow). Guests' packets arrive on the
// LAN, their replies on the uplink, so net.ipv4.conf.<lan>.forwarding and
// net.ipv4.conf.<uplink>.forwarding are switched on and all/default stay as
// they were; the namespace tests check both that traffic flows and that the
// global switch is unchanged. Turning the uplink's switch on would also let
// the host route anything else arriving there; when the gateway is the one
// that turned it on, its table drops forwarded uplink packets that are not
// NAT return traffic ("uplink" drops), so the host does not become a router
// for the uplink's network as a side effect.
//
// Crash safety: before changing anything, SetupHost writes the changes it is
// about to make (address, link state, each sysctl with its previous value,
// the table name) to <StateDir>/gateway-<lan>.json, and holds an OFD lock on
// gateway-<lan>.lock while running. On the next start a leftover state file
// is undone first (table deleted, sysctls restored, address removed), and the
// ruleset itself is loaded as "create, delete, create" in one transaction, so
// a restart after kill -9 leaves exactly one copy of the rules. A change is
// undone only on the interface it was made on (name and index): a TAP
// recreated after a crash is a new interface. Gateways for several rooms may
// share an uplink: the uplink's original forwarding value passes from one
// state file to the next, and it is restored by the last gateway to stop.
//
// SetupHost refuses to start, before changing anything, without
// CAP_NET_ADMIN, without nft, without the LAN or uplink interface, without a
// default route when no uplink is named, when a gateway for the same LAN
// runs, and when the room subnet overlaps a route on any other interface.
//
// # Egress policy
//
// Everything a guest sends is checked in prerouting, before the kernel splits
// it into traffic for the host (input) and traffic to route (forward), so
// each drop is counted under its reason even where the kernel would have
// discarded the packet anyway (loopback and 0.0.0.0/8 destinations are
// martians). IPv6 from the LAN is dropped: only IPv4 is routed, and an
// unrouted IPv6 would otherwise still reach the host's own services over
// link-local addresses. Guests may reach the gateway host only for DNS (UDP
// and TCP 53) and ICMP echo on .1: ping to the router is what people try
// first when the network misbehaves, and the kernel's reply costs little
// (echo requests are limited to 100/s for all guests together). Every other
// address of the host is closed, including its public one. The allow list
// opens prefixes for forwarding and, within them, the host's own addresses;
// forwarding still only leaves through the uplink, so an allowed prefix
// must be routed there. Connections from the outside toward guests are
// dropped (no port forwarding). With GuestRateLimit set, each guest
// address gets a token bucket per direction in a dynamic set (the kernel's
// byte-mode bucket holds one second of the rate).
//
// The ruleset for LAN tap0, uplink eth0, the default subnet, no allow list,
// no rate limit and the uplink guard on (testdata/ruleset_default.nft; with
// a rate limit and an allow list see testdata/ruleset_full.nft):
//
//	table inet peerlan_gw_tap0
//	delete table inet peerlan_gw_tap0
//	table inet peerlan_gw_tap0 {
//		comment "peerlan gateway: room 10.86.0.0/24 on tap0, uplink eth0"
//		counter drop_ipv6 {}            # one named counter per drop reason,
//		...                             # see DropReasons
//		counter guest_to_internet {}    # accepted traffic and new flows
//		counter internet_to_guest {}
//		counter flows_guest_to_internet {}
//		counter flows_internet_to_guest {}
//		set allow { type ipv4_addr; flags interval; }
//
//		chain prerouting {              # everything guests send
//			type filter hook prerouting priority filter; policy accept;
//			iifname "tap0" jump guest_in
//		}
//		chain guest_in {
//			meta nfproto ipv6 counter name "drop_ipv6" drop
//			ip daddr { 255.255.255.255, 10.86.0.255 } counter name "drop_broadcast" drop
//			ip daddr 224.0.0.0/4 counter name "drop_multicast" drop
//			ip saddr != 10.86.0.0/24 counter name "drop_spoofed" drop
//			ip daddr 10.86.0.1 return       # decided in guest_to_host
//			ip daddr @allow return          # the allow list precedes the drops
//			ip daddr 0.0.0.0/8 counter name "drop_zeronet" drop
//			ip daddr 127.0.0.0/8 counter name "drop_loopback" drop
//			ip daddr { 10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16 } counter name "drop_private" drop
//			ip daddr 100.64.0.0/10 counter name "drop_cgnat" drop
//			ip daddr 169.254.169.254 counter name "drop_metadata" drop
//			ip daddr 169.254.0.0/16 counter name "drop_linklocal" drop
//			ip daddr 240.0.0.0/4 counter name "drop_reserved" drop
//		}
//
//		chain input {                   # guests to the host itself
//			type filter hook input priority filter; policy accept;
//			iifname "tap0" jump guest_to_host
//		}
//		chain guest_to_host {
//			ct state established,related accept
//			ip daddr 10.86.0.1 udp dport 53 accept
//			ip daddr 10.86.0.1 tcp dport 53 accept
//			ip daddr 10.86.0.1 icmp type echo-request limit rate 100/second burst 100 packets accept
//			ip daddr @allow accept
//			counter name "drop_host" drop
//		}
//
//		chain forward {
//			type filter hook forward priority filter; policy accept;
//			iifname "tap0" jump guest_to_internet
//			oifname "tap0" jump internet_to_guest
//			iifname "eth0" ct status ! snat counter name "drop_uplink" drop  # only if we enabled eth0's forwarding
//		}
//		chain guest_to_internet {
//			ct state invalid counter name "drop_invalid" drop
//			# with GuestRateLimit: update @rate_out { ip saddr limit rate over N bytes/second } counter name "drop_ratelimit" drop
//			oifname != "eth0" counter name "drop_route" drop
//			ct state new counter name "flows_guest_to_internet"
//			counter name "guest_to_internet" accept
//		}
//		chain internet_to_guest {
//			ct state invalid counter name "drop_invalid" drop
//			# with GuestRateLimit: update @rate_in { ip daddr limit rate over N bytes/second } counter name "drop_ratelimit" drop
//			ct state established,related counter name "internet_to_guest" accept
//			ct state new counter name "flows_internet_to_guest"
//			counter name "drop_unsolicited" drop
//		}
//
//		chain postrouting {
//			type nat hook postrouting priority srcnat; policy accept;
//			oifname "eth0" ip saddr 10.86.0.0/24 masquerade
//		}
//	}
//
// Accepting in this table cannot override a drop in another one (every base
// chain on a hook sees the packet). SetupHost logs a warning when another
// table's forward chain drops by default, as Docker's and firewalld's do.
//
// # DNS
//
// NewDNSForwarder serves .1:53 over UDP and TCP and forwards each query, with
// a fresh random ID, to the host's resolvers; it keeps no cache. Its sockets
// are bound to the LAN interface (SO_BINDTODEVICE), so it answers nobody
// else even if another network routes to .1. UDP is capped at 1232 bytes both
// ways (DNS Flag Day 2020): a truncated upstream answer is retried over TCP,
// and an answer too large for the guest gets the TC bit, so the guest retries
// over TCP. The default upstreams come from /etc/resolv.conf. A loopback
// nameserver such as systemd-resolved's 127.0.0.53 is kept when it answers:
// the gateway runs in the host's namespace, and the stub carries the host's
// resolver configuration. It is skipped when it does not answer (the
// gateway runs in a namespace or container that shares the file but not the
// host's loopback), and if that leaves nothing, the resolvers
// systemd-resolved itself uses are read from /run/systemd/resolve/resolv.conf.
// Note that forwarding to the host's stub also answers guests from the host's
// local names (/etc/hosts, split-DNS domains); name Upstreams explicitly to
// avoid that.
//
// # Metrics
//
// NewMetrics registers a collector that runs `nft -j list counters table inet
// peerlan_gw_<lan>` when scraped (shared by scrapes within a second) and
// exports peerlan_gateway_forwarded_{bytes,packets}_total{direction},
// peerlan_gateway_flows_total{direction}, peerlan_gateway_policy_drops_total{reason}
// and the forwarder's peerlan_gateway_dns_* counters. Metrics.Status renders
// the same figures as one log line.
package gateway
