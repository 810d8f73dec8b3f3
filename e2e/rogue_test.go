//go:build linux

package e2e

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/peerlan/peerlan/internal/rtnl"
	"github.com/peerlan/peerlan/peer"
	"github.com/peerlan/peerlan/peer/ether"
)

// TestNativeRogueGuest is issue 13's L3 guard proof: a rogue guest in a
// room of two victims claims a victim's address by gratuitous ARP (busybox
// arping -U), pings with a victim's address as its source, and sends a
// DHCP offer and an IPv6 router advertisement, none of which it was
// assigned to send. The victims' ARP caches, addresses and ICMP counters
// stay as they were, and their peers count each refusal by reason.
func TestNativeRogueGuest(t *testing.T) {
	RequireCommands(t, "ping", "udhcpc", "busybox")
	sig := StartSignal(t)
	room := "rogue-" + randomSuffix(4)
	var peers []*NativePeer
	for _, name := range []string{"victim-a", "victim-b", "rogue"} {
		peers = append(peers, StartPeer(t, sig, room, NewNamespace(t, name)))
	}
	a, b, r := peers[0], peers[1], peers[2]
	var leases []Lease
	for _, p := range peers {
		p.WaitLinks(t, 2, 30*time.Second)
		leases = append(leases, LeaseDHCP(t, p.NS, p.TAP))
	}
	ipA, ipB, ipR := leases[0].Addr.Addr(), leases[1].Addr.Addr(), leases[2].Addr.Addr()
	macA, macR := tapMAC(t, a), tapMAC(t, r)
	Ping(t, b.NS, ipA, 2) // b learns a's MAC
	if got := neighMAC(t, b.NS, ipA); got != macA {
		t.Fatalf("b's neighbour entry for %s is %s, want a's %s", ipA, got, macA)
	}
	echosBefore := icmpInEchos(t, b.NS)

	// 1. Gratuitous ARP claiming a's address, with the real tool (which
	// wants the address configured).
	r.NS.MustRun("ip", "addr", "add", ipA.String()+"/32", "dev", r.TAP)
	r.NS.MustRun("busybox", "arping", "-U", "-c", "3", "-I", r.TAP, "-s", ipA.String(), ipA.String())
	// 2. Pings with a's address as the source (b's MAC given, since the
	// rogue's ARP for it, from a's address too, is refused).
	r.NS.MustRun("ip", "neigh", "replace", ipB.String(), "lladdr", tapMAC(t, b).String(), "dev", r.TAP, "nud", "permanent")
	r.NS.Run("ping", "-c", "3", "-i", "0.2", "-W", "1", "-I", ipA.String(), ipB.String())
	// 3. A DHCP offer and an IPv6 router advertisement, which no client of
	// the rogue's prompted (every peer answers its own guest's DHCP), so
	// they are sent raw.
	inject(t, r, dhcpOfferFrame(macR, ipR), routerAdvertFrame(macR))

	time.Sleep(time.Second) // SLAAC would have configured the prefix by now
	if got := neighMAC(t, b.NS, ipA); got != macA {
		t.Errorf("b's neighbour entry for %s became %s (the rogue is %s), want a's %s", ipA, got, macR, macA)
	}
	if n := icmpInEchos(t, b.NS); n != echosBefore {
		t.Errorf("b's guest received %d echo requests from the spoofed source", n-echosBefore)
	}
	if out := b.NS.MustRun("ip", "-6", "addr", "show", "dev", b.TAP); strings.Contains(out, "2001:db8:") {
		t.Errorf("b's guest took an address from the rogue's router advertisement:\n%s", out)
	}
	if out := b.NS.MustRun("ip", "-6", "route", "show", "default"); strings.TrimSpace(out) != "" {
		t.Errorf("b's guest took a default route from the rogue's router advertisement: %s", out)
	}
	Ping(t, b.NS, ipA, 3)
	Ping(t, a.NS, ipB, 3)
	if l := LeaseDHCP(t, b.NS, b.TAP); l.Addr != leases[1].Addr {
		t.Errorf("b's DHCP lease is %v after the rogue's offer, want %v", l.Addr, leases[1].Addr)
	}

	for _, victim := range []*NativePeer{a, b} {
		waitCond(t, 5*time.Second, victim.Name+" to count every refusal", func() bool {
			d := victim.Status(t).Drops
			// Only b was sent the spoofed pings; the rest was broadcast.
			spoofed := victim != b || d[peer.DropIPSource] > 0
			return d[peer.DropARPSpoof] > 0 && spoofed && d[peer.DropRogueDHCP] > 0 && d[peer.DropRogueRouter] > 0
		})
		d := victim.Status(t).Drops
		t.Logf("%s refused: arp-spoof %d, ip-source %d, rogue-dhcp %d, rogue-router %d", victim.Name,
			d[peer.DropARPSpoof], d[peer.DropIPSource], d[peer.DropRogueDHCP], d[peer.DropRogueRouter])
	}
}

func tapMAC(t *testing.T, p *NativePeer) ether.MAC {
	t.Helper()
	m, err := ether.ParseMAC(strings.TrimSpace(p.NS.MustRun("cat", "/sys/class/net/"+p.TAP+"/address")))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// neighMAC returns the MAC of ip in ns's neighbour table ("" when none).
func neighMAC(t *testing.T, ns *Namespace, ip netip.Addr) ether.MAC {
	t.Helper()
	f := strings.Fields(ns.MustRun("ip", "neigh", "show", ip.String()))
	for i := 0; i+1 < len(f); i++ {
		if f[i] == "lladdr" {
			m, err := ether.ParseMAC(f[i+1])
			if err != nil {
				t.Fatal(err)
			}
			return m
		}
	}
	return ether.MAC{}
}

// icmpInEchos reads the echo requests ns's kernel has received.
func icmpInEchos(t *testing.T, ns *Namespace) int {
	t.Helper()
	var names []string
	for _, line := range strings.Split(ns.MustRun("cat", "/proc/net/snmp"), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || f[0] != "Icmp:" {
			continue
		}
		if names == nil {
			names = f
			continue
		}
		for i, n := range names {
			if n == "InEchos" && i < len(f) {
				v, err := strconv.Atoi(f[i])
				if err != nil {
					t.Fatal(err)
				}
				return v
			}
		}
	}
	t.Fatal("no Icmp InEchos in /proc/net/snmp")
	return 0
}

// inject writes raw frames to p's TAP from inside its namespace, as its
// guest would send them.
func inject(t *testing.T, p *NativePeer, frames ...[]byte) {
	t.Helper()
	err := rtnl.InNamespace(p.NS.Name, func() error {
		ifc, err := net.InterfaceByName(p.TAP)
		if err != nil {
			return err
		}
		proto := uint16(unix.ETH_P_ALL)<<8 | uint16(unix.ETH_P_ALL)>>8 // network order
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW, int(proto))
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		to := &unix.SockaddrLinklayer{Ifindex: ifc.Index, Protocol: proto}
		for _, f := range frames {
			if err := unix.Sendto(fd, f, 0, to); err != nil {
				return fmt.Errorf("send %d bytes: %w", len(f), err)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("inject frames into %s: %v", p.TAP, err)
	}
}

// dhcpOfferFrame is a broadcast DHCPOFFER from src (its own address, so
// that only the DHCP rule refuses it) of 192.0.2.50 with itself as router.
func dhcpOfferFrame(mac ether.MAC, src netip.Addr) []byte {
	bootp := make([]byte, 240, 300)
	bootp[0], bootp[1], bootp[2] = 2, 1, 6 // BOOTREPLY, Ethernet
	copy(bootp[16:20], []byte{192, 0, 2, 50})
	copy(bootp[236:240], []byte{99, 130, 83, 99})
	s := src.As4()
	bootp = append(bootp, 53, 1, 2, 54, 4, s[0], s[1], s[2], s[3], 3, 4, s[0], s[1], s[2], s[3], 1, 4, 255, 255, 255, 0, 255)
	udp := make([]byte, 8, 8+len(bootp))
	binary.BigEndian.PutUint16(udp[0:2], 67)
	binary.BigEndian.PutUint16(udp[2:4], 68)
	binary.BigEndian.PutUint16(udp[4:6], uint16(8+len(bootp)))
	udp = append(udp, bootp...)
	ip := make([]byte, 20, 20+len(udp))
	ip[0], ip[8], ip[9] = 0x45, 64, 17
	binary.BigEndian.PutUint16(ip[2:4], uint16(20+len(udp)))
	copy(ip[12:16], s[:])
	copy(ip[16:20], []byte{255, 255, 255, 255})
	binary.BigEndian.PutUint16(ip[10:12], ^ether.Checksum(ip, 0))
	return ethernetFrame(ether.Broadcast, mac, ether.TypeIPv4, append(ip, udp...))
}

// routerAdvertFrame is a valid router advertisement from a link-local
// address of mac to all nodes, for the prefix 2001:db8:1::/64 with
// autonomous configuration and a default route.
func routerAdvertFrame(mac ether.MAC) []byte {
	src := netip.AddrFrom16([16]byte{0xfe, 0x80, 8: mac[0] ^ 2, mac[1], mac[2], 0xff, 0xfe, mac[3], mac[4], mac[5]})
	dst := netip.MustParseAddr("ff02::1")
	ra := []byte{134, 0, 0, 0, 64, 0, 0x07, 0x08, 0, 0, 0, 0, 0, 0, 0, 0} // lifetime 1800 s
	pio := make([]byte, 32)
	pio[0], pio[1], pio[2], pio[3] = 3, 4, 64, 0xc0 // prefix information, on-link, autonomous
	binary.BigEndian.PutUint32(pio[4:8], 86400)
	binary.BigEndian.PutUint32(pio[8:12], 14400)
	copy(pio[16:], netip.MustParseAddr("2001:db8:1::").AsSlice())
	sll := append([]byte{1, 1}, mac[:]...) // source link-layer address
	msg := append(append(ra, pio...), sll...)
	pseudo := make([]byte, 0, 40)
	pseudo = append(append(pseudo, src.AsSlice()...), dst.AsSlice()...)
	pseudo = binary.BigEndian.AppendUint32(pseudo, uint32(len(msg)))
	pseudo = append(pseudo, 0, 0, 0, 58)
	binary.BigEndian.PutUint16(msg[2:4], ^ether.Checksum(msg, ether.Checksum(pseudo, 0)))
	ip := make([]byte, 40, 40+len(msg))
	ip[0], ip[6], ip[7] = 0x60, 58, 255
	binary.BigEndian.PutUint16(ip[4:6], uint16(len(msg)))
	copy(ip[8:24], src.AsSlice())
	copy(ip[24:40], dst.AsSlice())
	return ethernetFrame(ether.MAC{0x33, 0x33, 0, 0, 0, 1}, mac, ether.TypeIPv6, append(ip, msg...))
}

func ethernetFrame(dst, src ether.MAC, typ uint16, payload []byte) []byte {
	b := make([]byte, ether.HeaderLen+len(payload))
	e := ether.Ethernet(b)
	e.SetDst(dst)
	e.SetSrc(src)
	e.SetType(typ)
	copy(b[ether.HeaderLen:], payload)
	return b
}
