package peer

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
const MaxFrameSize = 1518
