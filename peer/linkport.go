package peer

import "sync/atomic"

// linkPortCounters are what a link port counts beyond the switch's view.
type linkPortCounters struct {
	busy     atomic.Uint64 // frames dropped because the link could not keep up (send buffer or queue full; in the browser also a full inbox)
	oversize atomic.Uint64 // messages from the remote peer larger than a frame, dropped
}

// maxLinkMessage is the largest data channel message a link reads. Honest
// peers send at most MaxFrameSize, or an offload header and a super-frame
// on an offload link; anything up to this is read and dropped when it does
// not fit, and a larger message ends the link (SCTP cannot skip it).
const maxLinkMessage = 80 << 10
