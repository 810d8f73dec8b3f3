#!/bin/sh
# udhcpc event script for peer's DHCP test (TestDHCPUdhcpcOnTAP): applies the
# lease with ip(8), like Debian's default script but without touching
# /etc/resolv.conf, then appends what udhcpc received to $PEERLAN_DHCP_OUT.
# The line is written last, so a test that sees it knows the interface is
# configured.
case "$1" in
deconfig)
	ip -4 addr flush dev "$interface"
	ip link set dev "$interface" up
	;;
bound|renew)
	if [ "$1" = bound ]; then
		ip -4 addr flush dev "$interface"
	fi
	ip addr replace "$ip/$mask" broadcast "$broadcast" dev "$interface"
	if [ -n "$mtu" ]; then
		ip link set dev "$interface" mtu "$mtu"
	fi
	for r in $router; do
		ip route replace default via "$r" dev "$interface"
	done
	;;
esac
echo "$1 ip=$ip mask=$mask subnet=$subnet broadcast=$broadcast router=$router dns=$dns mtu=$mtu lease=$lease serverid=$serverid" >>"$PEERLAN_DHCP_OUT"
exit 0
