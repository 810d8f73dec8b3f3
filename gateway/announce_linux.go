//go:build linux

package gateway

import (
	"fmt"
	"net"

	"github.com/peerlan/peerlan/peer/ether"
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
	frame := make([]byte, ether.ARPFrameLen)
	if _, err := ether.BuildGratuitousARP(frame, ether.MAC(ifi.HardwareAddr), h.GatewayAddr()); err != nil {
		return fmt.Errorf("gateway: gratuitous ARP for %v: %w", h.GatewayAddr(), err)
	}
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

func htons(v uint16) uint16 { return v<<8 | v>>8 }
