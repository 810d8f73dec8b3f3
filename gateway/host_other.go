//go:build !linux

package gateway

import (
	"context"
	"net/netip"
)

// Host is the gateway's host side; it is only implemented on Linux.
type Host struct{}

// SetupHost fails on this platform: the gateway needs nftables and Linux
// per-interface sysctls.
func SetupHost(ctx context.Context, cfg HostConfig) (*Host, error) {
	if _, err := cfg.withDefaults(); err != nil {
		return nil, err
	}
	return nil, errUnsupportedOS
}

// CheckHost fails on this platform, after checking the configuration.
func CheckHost(cfg HostConfig) error {
	if _, err := cfg.withDefaults(); err != nil {
		return err
	}
	return errUnsupportedOS
}

// Announce fails on this platform.
func (h *Host) Announce() error { return errUnsupportedOS }

// Close does nothing.
func (h *Host) Close() error { return nil }

// GatewayAddr returns the zero address.
func (h *Host) GatewayAddr() netip.Addr { return netip.Addr{} }

// Subnet returns the zero prefix.
func (h *Host) Subnet() netip.Prefix { return netip.Prefix{} }

// LAN returns "".
func (h *Host) LAN() string { return "" }

// Uplink returns "".
func (h *Host) Uplink() string { return "" }

// Table returns "".
func (h *Host) Table() string { return "" }

// Counters fails on this platform.
func (h *Host) Counters(ctx context.Context) (Counters, error) { return Counters{}, errUnsupportedOS }
