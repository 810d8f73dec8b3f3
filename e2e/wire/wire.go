// Package wire is a network cable with delay and loss made in userspace, for
// tests on kernels without netem: a TUN device in each of two network
// namespaces, and per direction a goroutine that reads each IP packet and a
// goroutine that writes it on the other side once its delay has passed,
// dropping a configured fraction. The TUNs carry the kernel's offloaded TCP
// super-packets (IFF_VNET_HDR), as a NIC with TSO and GRO would, so the wire
// costs little CPU per byte and a TCP stream over it is limited by the delay
// and loss, not by the cable.
package wire

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/peerlan/peerlan/internal/rtnl"
)

// Config says how the wire treats packets; the zero value is a plain cable.
type Config struct {
	// Delay is added to every packet in each direction.
	Delay time.Duration
	// Loss is the fraction (0 to 1) of packets dropped in each direction.
	Loss float64
	// QueueLen bounds the packets in flight per direction; beyond it the
	// wire drops (a router's tail drop). Default 16384.
	QueueLen int
}

// End is one end of a wire: a namespace, the device's name and its address.
type End struct {
	Netns string       // as in `ip netns`; must exist
	Name  string       // device name, at most 15 bytes
	Addr  netip.Prefix // address and on-link prefix of this end
}

// Wire is a running cable; Close removes both devices.
type Wire struct {
	cfg  Config
	a, b *os.File
	wg   sync.WaitGroup
	done chan struct{}

	// Packets carried and dropped (both directions).
	Carried, Dropped atomic.Uint64
}

const vnetHdrLen = 10

// New connects a and b. Both namespaces must exist; the devices are
// created in them, addressed and brought up.
func New(a, b End, cfg Config) (*Wire, error) {
	if cfg.Loss < 0 || cfg.Loss > 1 || cfg.Delay < 0 {
		return nil, errors.New("wire: loss must be 0 to 1 and delay not negative")
	}
	if cfg.QueueLen == 0 {
		cfg.QueueLen = 16384
	}
	w := &Wire{cfg: cfg, done: make(chan struct{})}
	var err error
	if w.a, err = openIn(a); err != nil {
		return nil, err
	}
	if w.b, err = openIn(b); err != nil {
		w.a.Close()
		return nil, err
	}
	seed := uint64(time.Now().UnixNano())
	w.wg.Add(2)
	go w.carry(w.a, w.b, rand.New(rand.NewPCG(seed, 1)))
	go w.carry(w.b, w.a, rand.New(rand.NewPCG(seed, 2)))
	return w, nil
}

// openIn creates the TUN of e inside its namespace and configures it.
func openIn(e End) (*os.File, error) {
	var f *os.File
	err := rtnl.InNamespace(e.Netns, func() (err error) {
		f, err = openTUN(e.Name)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("wire: %s in %s: %w", e.Name, e.Netns, err)
	}
	for _, args := range [][]string{
		{"addr", "add", e.Addr.String(), "dev", e.Name},
		{"link", "set", "dev", e.Name, "up"},
	} {
		if out, err := exec.Command("ip", append([]string{"-n", e.Netns}, args...)...).CombinedOutput(); err != nil {
			f.Close()
			return nil, fmt.Errorf("wire: ip %s: %v: %s", strings.Join(args, " "), err, out)
		}
	}
	return f, nil
}

func openTUN(name string) (*os.File, error) {
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if err != nil {
		return nil, err
	}
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		unix.Close(fd)
		return nil, err
	}
	ifr.SetUint16(unix.IFF_TUN | unix.IFF_NO_PI | unix.IFF_VNET_HDR)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		unix.Close(fd)
		return nil, err
	}
	const csum, tso4, tso6, tsoECN = 0x01, 0x02, 0x04, 0x08
	if err := unix.IoctlSetInt(fd, unix.TUNSETOFFLOAD, csum|tso4|tso6|tsoECN); err != nil {
		unix.Close(fd)
		return nil, err
	}
	return os.NewFile(uintptr(fd), "/dev/net/tun"), nil
}

// packet is one packet in flight: its header and bytes, and when it is due.
type packet struct {
	due time.Time
	b   []byte
}

// bufs recycles packet buffers: a super-packet with its header.
var bufs = sync.Pool{New: func() any { return make([]byte, vnetHdrLen+65536) }}

// carry moves packets from src to dst, each after the delay, some dropped.
func (w *Wire) carry(src, dst *os.File, rng *rand.Rand) {
	defer w.wg.Done()
	q := make(chan packet, w.cfg.QueueLen)
	w.wg.Add(1)
	go w.deliver(dst, q)
	defer close(q)
	for {
		b := bufs.Get().([]byte)
		n, err := src.Read(b[:cap(b)])
		if err != nil {
			return
		}
		if w.cfg.Loss > 0 && rng.Float64() < w.cfg.Loss {
			w.Dropped.Add(1)
			bufs.Put(b)
			continue
		}
		select {
		case q <- packet{due: time.Now().Add(w.cfg.Delay), b: b[:n]}:
		default:
			w.Dropped.Add(1)
			bufs.Put(b)
		}
	}
}

// deliver writes each packet of q to dst when it is due, in order.
func (w *Wire) deliver(dst *os.File, q <-chan packet) {
	defer w.wg.Done()
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	for p := range q {
		if d := time.Until(p.due); d > 0 {
			t.Reset(d)
			select {
			case <-t.C:
			case <-w.done:
				return
			}
		}
		if _, err := dst.Write(p.b); err == nil {
			w.Carried.Add(1)
		}
		bufs.Put(p.b[:cap(p.b)])
	}
}

// Close removes the devices and waits for the wire's goroutines.
func (w *Wire) Close() error {
	close(w.done)
	err := errors.Join(w.a.Close(), w.b.Close())
	w.wg.Wait()
	return err
}
