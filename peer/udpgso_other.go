//go:build !js && !linux

package peer

import "github.com/pion/transport/v4"

// batchUDP returns c: segmentation offload is Linux's.
func batchUDP(c transport.UDPConn) transport.UDPConn { return c }
