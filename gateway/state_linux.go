//go:build linux

package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// The state directory holds, per LAN interface:
//
//	gateway-<lan>.lock  held (OFD write lock) while that gateway runs
//	gateway-<lan>.json  the host changes that gateway made, written before
//	                    making them and removed after undoing them
//
// and gateway.lock, held briefly while a gateway sets up or tears down, so
// that gateways sharing an uplink agree on who restores its sysctl.

const (
	stateVersion    = 1
	maxStateSize    = 64 << 10
	dirLockWait     = 30 * time.Second
	lockPollPeriod  = 20 * time.Millisecond
	sysctlForwarder = "forwarding"
)

// hostState records every change a gateway makes to the host.
type hostState struct {
	Version int    `json:"version"`
	LAN     string `json:"lan"`
	Table   string `json:"table"`
	PID     int    `json:"pid"`
	Started string `json:"started"`
	// Sysctls are per-interface IPv4 settings with the host's original value.
	Sysctls []sysctlChange `json:"sysctls,omitempty"`
	// Address is set when the gateway assigned .1 to the LAN interface.
	Address *ifaceChange `json:"address,omitempty"`
	// LinkUp is set when the gateway brought the LAN interface up.
	LinkUp *ifaceChange `json:"link_up,omitempty"`
}

// ifaceChange names an interface by name and index: an interface recreated
// under the same name (a TAP after a crash) gets a new index, and a change
// recorded for the old one is then not ours to undo.
type ifaceChange struct {
	Interface string       `json:"interface"`
	Ifindex   int          `json:"ifindex"`
	Prefix    netip.Prefix `json:"prefix,omitzero"`
}

type sysctlChange struct {
	Interface string `json:"interface"`
	Ifindex   int    `json:"ifindex"`
	Key       string `json:"key"`
	// Previous is the value before any peerlan gateway changed it; a gateway
	// sharing the interface with another one inherits that one's Previous.
	Previous string `json:"previous"`
}

func (c sysctlChange) same(o sysctlChange) bool {
	return c.Interface == o.Interface && c.Ifindex == o.Ifindex && c.Key == o.Key
}

func statePath(dir, lan string) string   { return filepath.Join(dir, "gateway-"+lan+".json") }
func lanLockPath(dir, lan string) string { return filepath.Join(dir, "gateway-"+lan+".lock") }
func dirLockPath(dir string) string      { return filepath.Join(dir, "gateway.lock") }

// validate rejects a state file that would make teardown touch anything but
// this LAN's own table and per-interface forwarding switches.
func (s *hostState) validate(lan string) error {
	if s.Version != stateVersion {
		return fmt.Errorf("version %d, want %d", s.Version, stateVersion)
	}
	if s.LAN != lan || s.Table != tableName(lan) {
		return fmt.Errorf("records LAN %q table %q, want %q %q", s.LAN, s.Table, lan, tableName(lan))
	}
	for _, c := range s.Sysctls {
		if validIfName(c.Interface) != nil || c.Key != sysctlForwarder || (c.Previous != "0" && c.Previous != "1") {
			return fmt.Errorf("unexpected sysctl entry %+v", c)
		}
	}
	for _, c := range []*ifaceChange{s.Address, s.LinkUp} {
		if c != nil && c.Interface != lan {
			return fmt.Errorf("unexpected interface change %+v", *c)
		}
	}
	if s.Address != nil && (!s.Address.Prefix.IsValid() || !s.Address.Prefix.Addr().Is4()) {
		return fmt.Errorf("unexpected address %v", s.Address.Prefix)
	}
	return nil
}

// readState loads a state file; (nil, nil) when there is none.
func readState(path string) (*hostState, error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errStateFile, err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxStateSize+1))
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", errStateFile, path, err)
	}
	if len(data) > maxStateSize {
		return nil, fmt.Errorf("%w: %s larger than %d bytes", errStateFile, path, maxStateSize)
	}
	var s hostState
	if err := json.Unmarshal(data, &s); err != nil {
		return nil, fmt.Errorf("%w: %s: %w (inspect and delete it to start)", errStateFile, path, err)
	}
	return &s, nil
}

// writeState replaces the state file atomically and durably.
func writeState(path string, s *hostState) error {
	data, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return fmt.Errorf("%w: %w", errStateFile, err)
	}
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("%w: %w", errStateFile, err)
	}
	_, werr := f.Write(append(data, '\n'))
	serr := f.Sync()
	cerr := f.Close()
	if err := errors.Join(werr, serr, cerr); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("%w: writing %s: %w", errStateFile, tmp, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("%w: %w", errStateFile, err)
	}
	return syncDir(filepath.Dir(path))
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("%w: %w", errStateFile, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("%w: sync %s: %w", errStateFile, dir, err)
	}
	return nil
}

// lockFile takes an OFD write lock on path, creating it. With wait it polls
// until ctx is done; without, a held lock yields errAlreadyRunning. OFD locks
// belong to the open file, so two Hosts in one process also exclude each
// other, and the kernel drops the lock when the process dies.
func lockFile(ctx context.Context, path string, wait bool) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errStateFile, err)
	}
	lk := unix.Flock_t{Type: unix.F_WRLCK, Whence: io.SeekStart}
	for {
		err := unix.FcntlFlock(f.Fd(), unix.F_OFD_SETLK, &lk)
		if err == nil {
			return f, nil
		}
		if !errors.Is(err, unix.EAGAIN) && !errors.Is(err, unix.EACCES) {
			f.Close()
			return nil, fmt.Errorf("%w: lock %s: %w", errStateFile, path, err)
		}
		if !wait {
			f.Close()
			return nil, fmt.Errorf("%w: %s is locked", errAlreadyRunning, path)
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, fmt.Errorf("%w: waiting for %s: %w", errStateFile, path, ctx.Err())
		case <-time.After(lockPollPeriod):
		}
	}
}

// lockHeld reports whether some open file holds a lock on path, without taking it.
func lockHeld(path string) bool {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return false
	}
	defer f.Close()
	lk := unix.Flock_t{Type: unix.F_WRLCK, Whence: io.SeekStart}
	if err := unix.FcntlFlock(f.Fd(), unix.F_OFD_GETLK, &lk); err != nil {
		return false
	}
	return lk.Type != unix.F_UNLCK
}

// otherStates returns the state files of the other LANs in dir, with whether
// their gateway is running. Unreadable files are skipped: they are the other
// gateway's to recover.
func otherStates(dir, lan string) (live, all []*hostState) {
	paths, _ := filepath.Glob(filepath.Join(dir, "gateway-*.json"))
	for _, p := range paths {
		other := strings.TrimSuffix(strings.TrimPrefix(filepath.Base(p), "gateway-"), ".json")
		if other == lan || validIfName(other) != nil {
			continue
		}
		s, err := readState(p)
		if err != nil || s == nil || s.validate(other) != nil {
			continue
		}
		all = append(all, s)
		if lockHeld(lanLockPath(dir, other)) {
			live = append(live, s)
		}
	}
	return live, all
}

// sysctlPath is the per-interface IPv4 switch in /proc.
func sysctlPath(iface, key string) string {
	return filepath.Join("/proc/sys/net/ipv4/conf", iface, key)
}

func readSysctl(iface, key string) (string, error) {
	b, err := os.ReadFile(sysctlPath(iface, key))
	if err != nil {
		return "", fmt.Errorf("gateway: reading %s: %w", sysctlPath(iface, key), err)
	}
	return strings.TrimSpace(string(b)), nil
}

func writeSysctl(iface, key, value string) error {
	if err := os.WriteFile(sysctlPath(iface, key), []byte(value+"\n"), 0o644); err != nil {
		return fmt.Errorf("gateway: writing %s: %w", sysctlPath(iface, key), err)
	}
	return nil
}

// sameInterface reports whether name still is the interface with index ifindex.
func sameInterface(name string, ifindex int) bool {
	ifi, err := net.InterfaceByName(name)
	return err == nil && ifi.Index == ifindex
}
