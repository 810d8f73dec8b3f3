//go:build !linux

package tap

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
