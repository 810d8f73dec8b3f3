//go:build !js

package peer

import (
	"net"

	"github.com/pion/transport/v4"
	"github.com/pion/transport/v4/stdnet"
)

// udpSocketBuffer is the receive and send buffer asked for on every UDP
// socket ICE opens. The kernel's default (about 208 KiB) overflows under a
// burst of full-size frames: measured here, about one TCP retransmission in
// six over the mesh was a UDP receive-buffer drop (RcvbufErrors). The kernel
// caps the request at net.core.rmem_max/wmem_max, so this never needs
// privileges; it only takes what the host allows.
const udpSocketBuffer = 4 << 20

// bufferedNet is the host's network stack with larger UDP socket buffers.
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
	if err == nil {
		setSocketBuffers(c)
	}
	return c, err
}

func (n bufferedNet) ListenPacket(network, address string) (net.PacketConn, error) {
	c, err := n.Net.ListenPacket(network, address)
	if err == nil {
		setSocketBuffers(c)
	}
	return c, err
}

// setSocketBuffers enlarges c's buffers where it can; failure is harmless
// (the kernel default stays).
func setSocketBuffers(c any) {
	if b, ok := c.(interface {
		SetReadBuffer(int) error
		SetWriteBuffer(int) error
	}); ok {
		_ = b.SetReadBuffer(udpSocketBuffer)
		_ = b.SetWriteBuffer(udpSocketBuffer)
	}
}
