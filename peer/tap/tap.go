// Package tap attaches a Linux TAP device to peerlan: a Device is a
// peer.Port, so the host's network stack (or a bridge with QEMU/UML guests
// on it, or a network namespace) becomes a guest of the LAN.
package tap

import "errors"

// Errors that name what the operator must fix.
var (
	ErrNoTUN        = errors.New("tap: /dev/net/tun is missing: load the tun module (modprobe tun) or run where TUN/TAP devices are available")
	ErrNotPermitted = errors.New("tap: creating a TAP device needs CAP_NET_ADMIN: run as root, or grant it with setcap cap_net_admin+ep")
	ErrBusy         = errors.New("tap: the TAP name is in use by another process")
	ErrBadName      = errors.New("tap: interface names are 1-15 characters without '/', ':' or white space")
	ErrUnsupported  = errors.New("tap: TAP devices are supported on Linux only")
)

// Config says which TAP to create and where to put it.
type Config struct {
	// Name of the device; default "peerlan0".
	Name string
	// MTU of the device; default 1500.
	MTU int
	// Bridge, when set, names an existing Linux bridge the TAP joins, so
	// that every guest on the bridge is on the LAN.
	Bridge string
	// Netns, when set, names a network namespace (as in `ip netns`) the TAP
	// is created in (Bridge, if set, is looked up there too); the device
	// works from this process wherever it lives.
	Netns string
	// Offload opens the device with the kernel's checksum and TCP
	// segmentation offloads (IFF_VNET_HDR): TCP streams then cross it as
	// super-frames of up to 64 KiB (see Device).
	Offload bool
}

// ValidName reports whether s is a usable Linux interface name.
func ValidName(s string) bool {
	if len(s) == 0 || len(s) > 15 {
		return false
	}
	for _, r := range s {
		if r == '/' || r == ':' || r <= ' ' || r == 0x7f {
			return false
		}
	}
	return true
}
