#!/bin/sh
# udhcpc event script for e2e tests: applies a lease to the interface inside
# the test's network namespace (address, MTU, default route) and prints it on
# one line for the test to parse. Unlike Debian's default script it leaves
# /etc/resolv.conf alone, which the namespace shares with the host.
case "$1" in
deconfig)
	ip addr flush dev "$interface"
	ip link set "$interface" up
	;;
bound|renew)
	ip addr flush dev "$interface"
	ip addr add "$ip/$mask" dev "$interface"
	[ -n "$mtu" ] && ip link set "$interface" mtu "$mtu"
	for r in $router; do
		ip route replace default via "$r" dev "$interface"
		break
	done
	echo "peerlan-lease ip=$ip mask=$mask router=$router mtu=$mtu dns=$dns"
	;;
esac
exit 0
