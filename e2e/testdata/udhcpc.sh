#!/bin/sh
# udhcpc event script for e2e tests: applies a lease to the interface inside
# the test's network namespace (address, MTU, default route) and prints it on
# one line for the test to parse. Unlike Debian's default script it leaves
# /etc/resolv.conf alone, which the namespace shares with the host. Each
# event runs ip once (-batch), so that the script costs little of the time
# from start to lease that BenchmarkNativeFirstPing measures.
case "$1" in
deconfig)
	printf 'addr flush dev %s\nlink set %s up\n' "$interface" "$interface" | ip -batch -
	;;
bound|renew)
	{
		echo "addr flush dev $interface"
		echo "addr add $ip/$mask dev $interface"
		[ -n "$mtu" ] && echo "link set $interface mtu $mtu"
		for r in $router; do
			echo "route replace default via $r dev $interface"
			break
		done
	} | ip -batch -
	echo "peerlan-lease ip=$ip mask=$mask router=$router mtu=$mtu dns=$dns"
	;;
esac
exit 0
