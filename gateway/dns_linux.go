//go:build linux

package gateway

import (
	"errors"
	"fmt"
	"syscall"

	"golang.org/x/sys/unix"
)

// bindToDevice returns a socket Control function that restricts the socket
// to one interface, or nil when iface is empty.
func bindToDevice(iface string) func(network, address string, c syscall.RawConn) error {
	if iface == "" {
		return nil
	}
	return func(network, address string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			serr = unix.SetsockoptString(int(fd), unix.SOL_SOCKET, unix.SO_BINDTODEVICE, iface)
		})
		if err = errors.Join(err, serr); err != nil {
			return fmt.Errorf("binding to %s: %w", iface, err)
		}
		return nil
	}
}
