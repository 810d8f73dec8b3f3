//go:build !linux

package gateway

import (
	"fmt"
	"syscall"
)

// bindToDevice is Linux-only; elsewhere an interface binding is refused
// rather than silently dropped, since it is what keeps the forwarder closed.
func bindToDevice(iface string) func(network, address string, c syscall.RawConn) error {
	if iface == "" {
		return nil
	}
	return func(string, string, syscall.RawConn) error {
		return fmt.Errorf("%w: binding to an interface is only supported on Linux", errDNSConfig)
	}
}
