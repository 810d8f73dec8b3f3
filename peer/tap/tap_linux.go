//go:build linux

package tap

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"

	"github.com/songgao/water"
)

// Device is a TAP device: one Ethernet frame per Read and Write. It
// satisfies peer.Port; Close removes the device (it is not persistent).
type Device struct {
	ifce *water.Interface
	name string
}

// Open creates the TAP device, brings it up and places it as cfg says.
func Open(cfg Config) (*Device, error) {
	if cfg.Name == "" {
		cfg.Name = "peerlan0"
	}
	if cfg.MTU == 0 {
		cfg.MTU = 1500
	}
	for _, n := range []string{cfg.Name, cfg.Bridge} {
		if n != "" && !ValidName(n) {
			return nil, fmt.Errorf("%w: %q", ErrBadName, n)
		}
	}
	if cfg.MTU < 576 || cfg.MTU > 1500 {
		return nil, fmt.Errorf("tap: MTU %d: want 576 to 1500", cfg.MTU)
	}
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		return nil, ErrNoTUN
	}
	ifce, err := water.New(water.Config{DeviceType: water.TAP, PlatformSpecificParams: water.PlatformSpecificParams{Name: cfg.Name}})
	if err != nil {
		switch {
		case errors.Is(err, syscall.EPERM), errors.Is(err, syscall.EACCES):
			return nil, ErrNotPermitted
		case errors.Is(err, syscall.EBUSY):
			return nil, fmt.Errorf("%w: %s", ErrBusy, cfg.Name)
		case errors.Is(err, syscall.EINVAL):
			return nil, fmt.Errorf("tap: %s exists and is not a TAP device: %w", cfg.Name, err)
		}
		return nil, fmt.Errorf("tap: create %s: %w", cfg.Name, err)
	}
	d := &Device{ifce: ifce, name: ifce.Name()}
	if err := d.place(cfg); err != nil {
		d.Close()
		return nil, err
	}
	return d, nil
}

func (d *Device) place(cfg Config) error {
	if err := ip("link", "set", "dev", d.name, "mtu", strconv.Itoa(cfg.MTU)); err != nil {
		return err
	}
	if cfg.Bridge != "" {
		if err := ip("link", "set", "dev", d.name, "master", cfg.Bridge); err != nil {
			return fmt.Errorf("tap: add %s to bridge %s: %w", d.name, cfg.Bridge, err)
		}
	}
	if cfg.Netns != "" {
		if err := ip("link", "set", "dev", d.name, "netns", cfg.Netns); err != nil {
			return fmt.Errorf("tap: move %s into namespace %s: %w", d.name, cfg.Netns, err)
		}
		return ip("-n", cfg.Netns, "link", "set", "dev", d.name, "up")
	}
	return ip("link", "set", "dev", d.name, "up")
}

func ip(args ...string) error {
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		if errors.Is(err, exec.ErrNotFound) {
			return errors.New("tap: the ip command (iproute2) is not installed")
		}
		return fmt.Errorf("%w: ip %s: %s", errCommandFailed, strings.Join(args, " "), strings.TrimSpace(string(out)))
	}
	return nil
}

// Name returns the device's name.
func (d *Device) Name() string { return d.name }

// Read reads one frame.
func (d *Device) Read(b []byte) (int, error) { return d.ifce.Read(b) }

// Write writes one frame. The kernel queues or drops; it does not block.
func (d *Device) Write(b []byte) (int, error) { return d.ifce.Write(b) }

// Close closes the device, which removes it.
func (d *Device) Close() error { return d.ifce.Close() }
