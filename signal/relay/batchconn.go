package relay

import (
	"net"
	"runtime"

	"golang.org/x/net/ipv4"
)

// batchSize is how many datagrams one system call on a listener moves at
// most, each way.
const batchSize = 32

// batchConn is a UDP listener socket that reads in batches (recvmmsg on
// Linux) and sends in batches the datagrams its own read loop queues
// (sendmmsg). pion's read loop asks for one datagram at a time; under load
// one system call then carries many of them, which is where the relay's
// time goes (a profile under iperf3 showed half its CPU in sendto and
// recvfrom).
//
// ReadFrom and queue belong to the one read loop pion runs on the socket;
// flushes happen in that loop before it waits for input, so a queued
// datagram waits at most for the rest of the batch read with it. WriteTo,
// for pion's other goroutines, sends at once and may run concurrently.
type batchConn struct {
	*net.UDPConn
	io        *ipv4.PacketConn
	batchSend bool        // whether this socket takes the addresses x/net writes (see newBatchConn)
	onDrop    func(n int) // counts queued datagrams the kernel refused

	in         []ipv4.Message // the last batch read
	next, read int            // in[next:read] are still to be returned

	out    []ipv4.Message // queued datagrams, out[:queued]
	queued int
}

func newBatchConn(c *net.UDPConn, onDrop func(int)) *batchConn {
	bc := &batchConn{UDPConn: c, io: ipv4.NewPacketConn(c), onDrop: onDrop}
	// x/net writes an IPv4 destination as AF_INET even on an AF_INET6
	// socket. Linux sends it from a dual-stack socket as it would send the
	// mapped form; other systems may refuse it there, so they batch sends
	// on IPv4 sockets only.
	la, _ := c.LocalAddr().(*net.UDPAddr)
	bc.batchSend = runtime.GOOS == "linux" || la != nil && la.IP.To4() != nil
	bc.in = make([]ipv4.Message, batchSize)
	bc.out = make([]ipv4.Message, batchSize)
	for i := range batchSize {
		bc.in[i].Buffers = [][]byte{make([]byte, datagramSize)}
		bc.out[i].Buffers = [][]byte{make([]byte, datagramSize)}
	}
	return bc
}

// ReadFrom returns the next datagram of the current batch, or sends what
// is queued and reads the next batch, waiting for at least one datagram.
// A datagram longer than datagramSize comes back truncated to it, which
// pion drops as longer than it reads.
func (c *batchConn) ReadFrom(p []byte) (int, net.Addr, error) {
	if c.next == c.read {
		c.flush()
		n, err := c.io.ReadBatch(c.in, 0)
		if err != nil {
			return 0, nil, err
		}
		c.next, c.read = 0, n
	}
	m := &c.in[c.next]
	c.next++
	return copy(p, m.Buffers[0][:m.N]), m.Addr, nil
}

// sendBuffer returns a buffer for the next datagram to queue, or nil when
// this socket does not batch its sends. Only the read loop calls it.
func (c *batchConn) sendBuffer() []byte {
	if !c.batchSend {
		return nil
	}
	if c.queued == len(c.out) {
		c.flush()
	}
	b := c.out[c.queued].Buffers[0]
	return b[:cap(b)]
}

// queue sends the first n bytes of the buffer sendBuffer returned to addr
// with the next flush.
func (c *batchConn) queue(n int, addr *net.UDPAddr) {
	m := &c.out[c.queued]
	m.Buffers[0] = m.Buffers[0][:n]
	m.Addr = addr
	c.queued++
}

// flush sends the queued datagrams. A datagram the kernel refuses (an
// unreachable client, a full buffer) is dropped and counted, as a failed
// send of pion's would be logged and forgotten; the rest still go.
func (c *batchConn) flush() {
	for sent := 0; sent < c.queued; {
		n, err := c.io.WriteBatch(c.out[sent:c.queued], 0)
		if err != nil || n == 0 {
			c.onDrop(1)
			n = 1
		}
		sent += n
	}
	c.queued = 0
}
