// Package qemuport is a peer.Port on QEMU's own socket network backends, so
// that a QEMU guest joins a room with no TAP device and no root:
//
//   - stream: QEMU's -netdev stream (QEMU 7.2+) connects to a unix socket on
//     which the port listens. Each frame on the stream is a 4-byte big-endian
//     length followed by that many bytes of Ethernet frame (QEMU's
//     net/stream.c framing, the same as -netdev socket).
//
//     qemu ... -netdev stream,id=n0,server=off,addr.type=unix,addr.path=PATH
//
//   - dgram: QEMU's -netdev dgram sends one frame per datagram from its own
//     bound unix socket (local.path) to the port's (remote.path = PATH); the
//     port answers to the address the last datagram came from.
//
//     qemu ... -netdev dgram,id=n0,local.type=unix,local.path=QEMU.sock,remote.type=unix,remote.path=PATH
//
// The port outlives QEMU: when QEMU exits or is restarted, the new
// connection (stream) or the new sender (dgram) replaces the old one and the
// switch never notices; frames for a guest that is not there are dropped
// (peer.ErrDropped). The socket file is created 0600 (only this user may
// attach a guest), a stale file that nothing listens on is removed at start,
// and Close removes the file.
package qemuport

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync/atomic"
	"syscall"

	"github.com/peerlan/peerlan/peer"
)

// Mode is QEMU's backend kind.
type Mode int

const (
	Stream Mode = iota // -netdev stream: length-prefixed frames on a connection
	Dgram              // -netdev dgram: one frame per datagram
)

func (m Mode) String() string {
	if m == Dgram {
		return "dgram"
	}
	return "stream"
}

// Config says where the port listens.
type Config struct {
	Mode Mode
	// Path is the unix socket the port binds: QEMU's addr.path (stream) or
	// remote.path (dgram).
	Path string
	// Connect (Stream only) makes the port the client: QEMU listens
	// (-netdev stream,server=on,...) and the port connects to Path, and
	// connects again whenever the connection ends, so that either side may
	// restart (QEMU 7.2's stream client does not reconnect).
	Connect bool
	// Logger may be nil.
	Logger *slog.Logger
}

// ParseAddr parses the -qemu flag: "unix:PATH" or "stream:unix:PATH" for
// -netdev stream with QEMU as the client, "connect:unix:PATH" for -netdev
// stream with QEMU as the server, "dgram:unix:PATH" for -netdev dgram.
func ParseAddr(s string) (Config, error) {
	var c Config
	rest := s
	switch {
	case strings.HasPrefix(rest, "stream:"):
		rest = strings.TrimPrefix(rest, "stream:")
	case strings.HasPrefix(rest, "connect:"):
		c.Connect, rest = true, strings.TrimPrefix(rest, "connect:")
	case strings.HasPrefix(rest, "dgram:"):
		c.Mode, rest = Dgram, strings.TrimPrefix(rest, "dgram:")
	}
	path, ok := strings.CutPrefix(rest, "unix:")
	if !ok || path == "" {
		return c, fmt.Errorf("qemuport: %q: want unix:PATH, stream:unix:PATH, connect:unix:PATH or dgram:unix:PATH", s)
	}
	c.Path = path
	return c, nil
}

// Errors.
var (
	errInUse     = errors.New("qemuport: socket is in use by another process")
	errNotSocket = errors.New("qemuport: path exists and is not a socket (not removed)")
)

// Port is a QEMU guest's network backend as a peer.Port.
type Port interface {
	Read(b []byte) (int, error)
	Write(b []byte) (int, error)
	Close() error
	// Stats returns the port's counters.
	Stats() Stats
}

var (
	_ peer.Port = Port(nil)
	_ Port      = (*streamPort)(nil)
)

// Stats counts a port's frames and events.
type Stats struct {
	RxFrames uint64 `json:"rx_frames"` // from the guest
	TxFrames uint64 `json:"tx_frames"` // to the guest
	// TxDropped counts frames from the switch not delivered: no guest
	// attached, or the guest not keeping up.
	TxDropped uint64 `json:"tx_dropped"`
	// RxDropped counts guest frames dropped: longer than the reader's
	// buffer or than peer.MaxFrameSize.
	RxDropped uint64 `json:"rx_dropped"`
	// Connects counts guest connections (stream) or new sender addresses
	// (dgram) seen.
	Connects uint64 `json:"connects"`
}

// counters are a port's Stats as they are counted.
type counters struct {
	rxFrames, txFrames, rxDropped, txDropped, connects atomic.Uint64
}

// Stats returns a snapshot of the counters.
func (c *counters) Stats() Stats {
	return Stats{RxFrames: c.rxFrames.Load(), TxFrames: c.txFrames.Load(), TxDropped: c.txDropped.Load(),
		RxDropped: c.rxDropped.Load(), Connects: c.connects.Load()}
}

// Listen creates the socket at cfg.Path and returns the port; with
// cfg.Connect it returns at once and connects to QEMU's socket in the
// background.
func Listen(cfg Config) (Port, error) {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	log = log.With("component", "qemuport", "mode", cfg.Mode.String(), "path", cfg.Path)
	if cfg.Connect && cfg.Mode == Stream {
		return connectStream(cfg.Path, log), nil
	}
	if err := removeStale(cfg.Path, cfg.Mode); err != nil {
		return nil, err
	}
	if cfg.Mode == Dgram {
		return listenDgram(cfg.Path, log)
	}
	p, err := listenStream(cfg.Path, log)
	if err != nil {
		return nil, err // not a nil *streamPort in a non-nil Port
	}
	return p, nil
}

// removeStale removes a socket file at path that nothing is bound to, and
// refuses a live one or a file that is not a socket.
func removeStale(path string, mode Mode) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("qemuport: %w", err)
	}
	if fi.Mode()&os.ModeSocket == 0 {
		return fmt.Errorf("%w: %s", errNotSocket, path)
	}
	network := "unix"
	if mode == Dgram {
		network = "unixgram"
	}
	c, err := net.Dial(network, path)
	if err == nil {
		c.Close()
		return fmt.Errorf("%w: %s", errInUse, path)
	}
	if errors.Is(err, syscall.EPROTOTYPE) { // a live socket of the other kind
		return fmt.Errorf("%w: %s", errInUse, path)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		return fmt.Errorf("qemuport: probing %s: %w", path, err)
	}
	if err := os.Remove(path); err != nil {
		return fmt.Errorf("qemuport: removing stale socket: %w", err)
	}
	return nil
}
