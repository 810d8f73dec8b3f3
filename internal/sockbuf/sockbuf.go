// Package sockbuf enlarges UDP socket buffers for the sockets that carry
// the LAN's traffic: ICE sockets in peers, listener and relay sockets in
// the TURN server.
//
// The kernel's default (about 208 KiB) overflows under a burst of
// full-size datagrams. Measured here, about one TCP retransmission in six
// over the mesh was a UDP receive-buffer drop (RcvbufErrors); coturn asks
// for 2 MiB on its server sockets for the same reason. The kernel caps a
// request at net.core.rmem_max/wmem_max, so asking never needs privileges:
// a socket gets what the host allows.
package sockbuf

// Size is the receive and send buffer asked for.
const Size = 4 << 20

// Enlarge asks for Size-byte buffers on c if c is a socket that has them
// (a *net.UDPConn does; a pion/transport vnet conn does not). Failure is
// harmless: the kernel default stays.
func Enlarge(c any) {
	if b, ok := c.(interface {
		SetReadBuffer(int) error
		SetWriteBuffer(int) error
	}); ok {
		_ = b.SetReadBuffer(Size)
		_ = b.SetWriteBuffer(Size)
	}
}
