//go:build linux

package gateway

import (
	"encoding/binary"
	"fmt"
	"net"

	"golang.org/x/sys/unix"
)

// Announce sends a gratuitous ARP for .1 out of the LAN interface: an ARP
// request from .1 for .1, to broadcast. Guests that hold another MAC address
// for .1 (a gateway that was restarted has a new TAP, hence a new address)
// update their neighbour entry at once instead of after it goes stale, which
// can take most of a minute. Linux sends none when an address is added to an
// interface that is already up. The command calls it whenever a link to a
// peer opens, since frames sent before reach nobody.
func (h *Host) Announce() error {
	ifi, err := net.InterfaceByName(h.cfg.LAN)
	if err != nil {
		return fmt.Errorf("%w: %q", errLANNotFound, h.cfg.LAN)
	}
	if len(ifi.HardwareAddr) != 6 {
		return fmt.Errorf("gateway: %s has no Ethernet address", ifi.Name)
	}
	frame := gratuitousARP(ifi.HardwareAddr, h.GatewayAddr().As4())
	// Protocol 0: the socket only sends.
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("gateway: packet socket: %w", err)
	}
	defer unix.Close(fd)
	to := &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ARP), Ifindex: ifi.Index, Halen: 6}
	copy(to.Addr[:], frame[0:6])
	if err := unix.Sendto(fd, frame, 0, to); err != nil {
		return fmt.Errorf("gateway: sending a gratuitous ARP on %s: %w", ifi.Name, err)
	}
	return nil
}

// gratuitousARP builds the Ethernet frame of an ARP request from ip to ip.
func gratuitousARP(mac net.HardwareAddr, ip [4]byte) []byte {
	f := make([]byte, 42)
	copy(f[0:6], []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	copy(f[6:12], mac)
	binary.BigEndian.PutUint16(f[12:14], unix.ETH_P_ARP)
	a := f[14:]
	binary.BigEndian.PutUint16(a[0:2], 1)      // hardware type Ethernet
	binary.BigEndian.PutUint16(a[2:4], 0x0800) // protocol IPv4
	a[4], a[5] = 6, 4
	binary.BigEndian.PutUint16(a[6:8], 1) // request
	copy(a[8:14], mac)
	copy(a[14:18], ip[:])
	// target hardware address stays zero
	copy(a[24:28], ip[:])
	return f
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }
