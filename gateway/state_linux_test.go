//go:build linux

package gateway

import (
	"context"
	"errors"
	"net/netip"
	"os"
	"testing"
)

func sampleState(lan string) *hostState {
	return &hostState{
		Version: stateVersion,
		LAN:     lan,
		Table:   tableName(lan),
		PID:     42,
		Sysctls: []sysctlChange{{"up0", 3, sysctlForwarder, "0"}},
		Address: &ifaceChange{Interface: lan, Ifindex: 7, Prefix: netip.MustParsePrefix("10.86.0.1/24")},
		LinkUp:  &ifaceChange{Interface: lan, Ifindex: 7},
	}
}

func TestStateRoundTrip(t *testing.T) {
	path := statePath(t.TempDir(), "tap0")
	if s, err := readState(path); s != nil || err != nil {
		t.Fatalf("missing file: %v, %v", s, err)
	}
	want := sampleState("tap0")
	if err := writeState(path, want); err != nil {
		t.Fatal(err)
	}
	got, err := readState(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := got.validate("tap0"); err != nil {
		t.Fatal(err)
	}
	if got.Address.Prefix != want.Address.Prefix || got.Sysctls[0] != want.Sysctls[0] || got.LinkUp.Ifindex != 7 {
		t.Errorf("round trip: got %+v", got)
	}
	if err := os.WriteFile(path, []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := readState(path); !errors.Is(err, errStateFile) {
		t.Errorf("corrupt file: err = %v", err)
	}
}

func TestStateValidateRejectsForeignChanges(t *testing.T) {
	for name, edit := range map[string]func(*hostState){
		"other LAN":        func(s *hostState) { s.LAN = "tap1" },
		"other table":      func(s *hostState) { s.Table = "filter" },
		"other sysctl":     func(s *hostState) { s.Sysctls[0].Key = "../../../kernel/panic" },
		"sysctl path":      func(s *hostState) { s.Sysctls[0].Interface = "../all" },
		"odd value":        func(s *hostState) { s.Sysctls[0].Previous = "2" },
		"other interface":  func(s *hostState) { s.Address.Interface = "eth0" },
		"IPv6 address":     func(s *hostState) { s.Address.Prefix = netip.MustParsePrefix("fd00::1/64") },
		"unknown version":  func(s *hostState) { s.Version = 99 },
		"link of other if": func(s *hostState) { s.LinkUp.Interface = "eth0" },
	} {
		t.Run(name, func(t *testing.T) {
			s := sampleState("tap0")
			edit(s)
			if err := s.validate("tap0"); err == nil {
				t.Error("accepted")
			}
		})
	}
}

func TestLocks(t *testing.T) {
	dir := t.TempDir()
	path := lanLockPath(dir, "tap0")
	if lockHeld(path) {
		t.Fatal("missing lock file reported held")
	}
	f, err := lockFile(context.Background(), path, false)
	if err != nil {
		t.Fatal(err)
	}
	if !lockHeld(path) {
		t.Error("held lock not reported")
	}
	// OFD locks exclude a second open file even in the same process.
	if _, err := lockFile(context.Background(), path, false); !errors.Is(err, errAlreadyRunning) {
		t.Errorf("second lock: err = %v, want errAlreadyRunning", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := lockFile(ctx, path, true); err == nil {
		t.Error("waiting lock ignored its cancelled context")
	}
	f.Close()
	if lockHeld(path) {
		t.Error("lock still reported after close")
	}
}

func TestOtherStates(t *testing.T) {
	dir := t.TempDir()
	for _, lan := range []string{"tap0", "tap1", "tap2"} {
		if err := writeState(statePath(dir, lan), sampleState(lan)); err != nil {
			t.Fatal(err)
		}
	}
	os.WriteFile(statePath(dir, "bad"), []byte("nonsense"), 0o600)
	lock, err := lockFile(context.Background(), lanLockPath(dir, "tap1"), false)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Close()
	live, all := otherStates(dir, "tap0")
	if len(all) != 2 || len(live) != 1 || live[0].LAN != "tap1" {
		t.Errorf("live %d, all %d; want tap1 live and tap2 stale", len(live), len(all))
	}
	if !sharedWith(live, sysctlChange{"up0", 3, sysctlForwarder, "1"}) {
		t.Error("uplink change of the live gateway not recognised")
	}
	if sharedWith(live, sysctlChange{"up0", 4, sysctlForwarder, "0"}) {
		t.Error("a recreated interface (new index) counted as shared")
	}
}
