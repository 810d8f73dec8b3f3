//go:build !js

package peer

import (
	"net"

	"github.com/peerlan/peerlan/internal/sockbuf"
	"github.com/pion/transport/v4"
	"github.com/pion/transport/v4/stdnet"
)

// bufferedNet is the host's network stack with larger UDP socket buffers
// (see package sockbuf for why) whose UDP sockets move runs of datagrams
// in one system call where the system can (see batchUDP).
type bufferedNet struct{ *stdnet.Net }

func newBufferedNet() (transport.Net, error) {
	n, err := stdnet.NewNet()
	if err != nil {
		return nil, err
	}
	return bufferedNet{n}, nil
}

func (n bufferedNet) ListenUDP(network string, laddr *net.UDPAddr) (transport.UDPConn, error) {
	c, err := n.Net.ListenUDP(network, laddr)
	if err != nil {
		return nil, err
	}
	sockbuf.Enlarge(c)
	return batchUDP(c), nil
}

func (n bufferedNet) ListenPacket(network, address string) (net.PacketConn, error) {
	c, err := n.Net.ListenPacket(network, address)
	if err == nil {
		sockbuf.Enlarge(c)
	}
	return c, err
}
