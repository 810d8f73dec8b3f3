//go:build js

package peer

// offloadSupported: a browser's link carries plain frames only (the page's
// guest has no offloads, and Chrome's channel is the slower side anyway).
const offloadSupported = false

// setOffload does nothing in the browser: offload is never negotiated.
func setOffload(*linkPort, bool) {}
