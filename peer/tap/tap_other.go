//go:build !linux

package tap

import "github.com/peerlan/peerlan/peer/ether"

// Device is a TAP device; unavailable on this platform.
type Device struct{}

// Open reports ErrUnsupported.
func Open(Config) (*Device, error) { return nil, ErrUnsupported }

// Name returns "".
func (d *Device) Name() string { return "" }

// Read reports ErrUnsupported.
func (d *Device) Read([]byte) (int, error) { return 0, ErrUnsupported }

// Write reports ErrUnsupported.
func (d *Device) Write([]byte) (int, error) { return 0, ErrUnsupported }

// Close does nothing.
func (d *Device) Close() error { return nil }

// Offloads reports false.
func (d *Device) Offloads() bool { return false }

// ReadOffload reports ErrUnsupported.
func (d *Device) ReadOffload([]byte) (int, ether.Offload, error) {
	return 0, ether.Offload{}, ErrUnsupported
}

// WriteOffload reports ErrUnsupported.
func (d *Device) WriteOffload([]byte, ether.Offload) (int, error) { return 0, ErrUnsupported }
