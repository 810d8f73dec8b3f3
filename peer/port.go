package peer

import "github.com/peerlan/peerlan/peer/ether"

// Port is one port of a Switch: a full-duplex carrier of whole Ethernet frames
// (destination MAC first, no preamble, no FCS). A TAP device, a data channel
// to a remote peer and the browser guest's NIC are all Ports; the switch knows
// nothing else about them.
//
// Contract:
//   - Read blocks until one frame is available, copies it into b and returns
//     its length. A frame longer than b is dropped by the port, never split
//     across calls. Read is called by one goroutine at a time.
//   - Write sends exactly one frame. It must not retain b after it returns and
//     must not block for long: a port that cannot keep up drops the frame
//     (counting it) and returns ErrDropped, as a congested Ethernet port would.
//     Write is called by one goroutine at a time, concurrently with Read.
//   - Close unblocks pending Read and Write calls. After Close, Read and Write
//     return an error (net.ErrClosed where the port can choose). Close may be
//     called more than once and from any goroutine.
//
// Any error from Read other than a dropped-frame condition ends the port: the
// switch stops reading from it and removes it.
type Port interface {
	Read(b []byte) (n int, err error)
	Write(b []byte) (n int, err error)
	Close() error
}

// MaxFrameSize is the largest Ethernet frame (without FCS) peerlan carries:
// a 1500-byte payload, a 14-byte header and one 802.1Q tag.
const MaxFrameSize = ether.MaxFrameLen

// OffloadPort is a Port that also carries offloaded frames: frames that still
// need a checksum completed or, as TCP super-frames of up to
// ether.MaxOffloadFrameSize bytes, cutting into segments (the ether.Offload
// beside each frame says which). A TAP device opened with offloads and a link
// to a peer that negotiated them are OffloadPorts. The switch moves
// offloaded frames between OffloadPorts as they are and does the work itself
// before a frame leaves by a port that is not one, so a TCP stream between
// two such ports costs one frame per 64 KiB instead of per 1514 bytes.
//
// Contract, beyond Port's:
//   - Offloads reports whether the port carries offloaded frames. The switch
//     asks once, when the port is added; when false the port is treated as
//     a plain Port and the methods below are not called.
//   - ReadOffload is Read that may return an offloaded frame and its work.
//     The switch calls it instead of Read; b holds MaxOffloadFrameSize.
//   - WriteOffload is Write for a frame with work o still to do (o may be
//     zero). It must not retain b.
type OffloadPort interface {
	Port
	Offloads() bool
	ReadOffload(b []byte) (n int, o ether.Offload, err error)
	WriteOffload(b []byte, o ether.Offload) (n int, err error)
}

// MaxOffloadFrameSize is the largest offloaded frame a port may carry.
const MaxOffloadFrameSize = ether.MaxOffloadFrameSize
