//go:build !js

package peer

import (
	"net"
	"sync"
	"time"

	"github.com/peerlan/peerlan/internal/sockbuf"
	"github.com/pion/transport/v4"
	"github.com/pion/transport/v4/stdnet"
)

// bufferedNet is the host's network stack with larger UDP socket buffers
// (see package sockbuf for why) whose UDP sockets move runs of datagrams
// in one system call where the system can (see batchUDP), and whose list of
// interfaces follows the host's: pion's stdnet reads it once, so a peer
// whose address changed (a laptop on another network) would gather its old
// address for every later session and never link up again.
type bufferedNet struct {
	*stdnet.Net // listening and dialing

	mu        sync.Mutex
	ifaces    *stdnet.Net // the latest snapshot of the interfaces
	refreshed time.Time
}

// interfacesMaxAge bounds how stale the interface list may be when a
// session gathers candidates (gathering asks once per session).
const interfacesMaxAge = 500 * time.Millisecond

func newBufferedNet() (transport.Net, error) {
	n, err := stdnet.NewNet()
	if err != nil {
		return nil, err
	}
	return &bufferedNet{Net: n, ifaces: n, refreshed: time.Now()}, nil
}

// snapshot returns a current view of the interfaces. stdnet's refresh is
// not safe against concurrent readers, so each refresh is a new snapshot.
func (n *bufferedNet) snapshot() *stdnet.Net {
	n.mu.Lock()
	defer n.mu.Unlock()
	if time.Since(n.refreshed) > interfacesMaxAge {
		if fresh, err := stdnet.NewNet(); err == nil {
			n.ifaces = fresh
		}
		n.refreshed = time.Now()
	}
	return n.ifaces
}

func (n *bufferedNet) Interfaces() ([]*transport.Interface, error) { return n.snapshot().Interfaces() }

func (n *bufferedNet) InterfaceByIndex(i int) (*transport.Interface, error) {
	return n.snapshot().InterfaceByIndex(i)
}

func (n *bufferedNet) InterfaceByName(name string) (*transport.Interface, error) {
	return n.snapshot().InterfaceByName(name)
}

func (n *bufferedNet) ListenUDP(network string, laddr *net.UDPAddr) (transport.UDPConn, error) {
	c, err := n.Net.ListenUDP(network, laddr)
	if err != nil {
		return nil, err
	}
	sockbuf.Enlarge(c)
	return batchUDP(c), nil
}

func (n *bufferedNet) ListenPacket(network, address string) (net.PacketConn, error) {
	c, err := n.Net.ListenPacket(network, address)
	if err == nil {
		sockbuf.Enlarge(c)
	}
	return c, err
}
