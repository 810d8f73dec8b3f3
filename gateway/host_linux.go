//go:build linux

package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// teardownTimeout bounds Close: deleting a table and writing a few files.
const teardownTimeout = 30 * time.Second

// rtTableMain is the kernel's main routing table.
const rtTableMain = 254

// Host is the gateway's host side: the LAN interface's address, per-interface
// IPv4 forwarding, and the nftables table that masquerades the room and
// enforces the egress policy. It is safe for concurrent use.
type Host struct {
	cfg    HostConfig
	nft    nft
	log    *slog.Logger
	table  string
	uplink string
	state  hostState
	// lanLock is held for the Host's lifetime: it marks this gateway as
	// running for crash recovery and for gateways sharing the uplink.
	lanLock *os.File

	closeOnce sync.Once
	closeErr  error
}

// SetupHost prepares the host for routing one room and returns once the
// ruleset is loaded and verified. It first undoes whatever a previous run for
// the same LAN interface left behind (after a crash), then records every
// change it is about to make in the state directory, then makes them. On
// error it has undone its own changes.
//
// It refuses, before changing anything (beyond undoing a previous run's
// leftovers), without CAP_NET_ADMIN, without the nft binary, when the LAN or
// uplink interface is missing, when no uplink is named and there is no
// default route, when another gateway runs for the same LAN, and when the
// subnet overlaps a route on another interface.
//
// Close the returned Host to undo everything; a process that dies instead
// leaves the state file for the next SetupHost with the same LAN and StateDir.
func SetupHost(ctx context.Context, cfg HostConfig) (*Host, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	nftc, err := lookupNft(cfg.NftPath)
	if err != nil {
		return nil, err
	}
	if err := checkNetAdmin(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
		return nil, fmt.Errorf("%w: %w", errStateFile, err)
	}
	lockCtx, cancel := context.WithTimeout(ctx, dirLockWait)
	defer cancel()
	dirLock, err := lockFile(lockCtx, dirLockPath(cfg.StateDir), true)
	if err != nil {
		return nil, err
	}
	defer dirLock.Close() // releases the lock
	lanLock, err := lockFile(ctx, lanLockPath(cfg.StateDir, cfg.LAN), false)
	if err != nil {
		return nil, err
	}
	h := &Host{cfg: cfg, nft: nftc, log: cfg.Logger.With("lan", cfg.LAN), table: tableName(cfg.LAN), lanLock: lanLock}
	if err := h.setup(ctx); err != nil {
		lanLock.Close()
		return nil, err
	}
	return h, nil
}

// CheckHost makes the refusals of SetupHost that need no room subnet and
// change nothing: an invalid configuration, a missing nft binary, a missing
// CAP_NET_ADMIN. A command calls it before it joins a room, so that it
// refuses at once instead of after the signaling server has welcomed it as
// the room's gateway. SetupHost makes the same checks again.
func CheckHost(cfg HostConfig) error {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return err
	}
	if _, err := lookupNft(cfg.NftPath); err != nil {
		return err
	}
	return checkNetAdmin()
}

func (h *Host) setup(ctx context.Context) error {
	if err := h.recoverStale(ctx); err != nil {
		return err
	}
	lan, err := net.InterfaceByName(h.cfg.LAN)
	if err != nil {
		return fmt.Errorf("%w: %q", errLANNotFound, h.cfg.LAN)
	}
	routes, err := listRoutes()
	if err != nil {
		return err
	}
	uplink, err := h.findUplink(routes)
	if err != nil {
		return err
	}
	if uplink.Index == lan.Index {
		return fmt.Errorf("%w: uplink and LAN are the same interface %q", errInvalidConfig, lan.Name)
	}
	h.uplink = uplink.Name
	if err := checkOverlap(h.cfg.Subnet, lan.Index, routes); err != nil {
		return err
	}

	st, guard, err := h.plan(lan, uplink)
	if err != nil {
		return err
	}
	h.state = st
	path := statePath(h.cfg.StateDir, h.cfg.LAN)
	if err := writeState(path, &h.state); err != nil {
		return err
	}
	if err := h.apply(ctx, guard); err != nil {
		if uerr := h.undo(context.WithoutCancel(ctx), &h.state); uerr != nil {
			h.log.Error("undoing a failed setup", "err", uerr, "state", path)
			return errors.Join(err, uerr)
		}
		os.Remove(path)
		return err
	}
	h.warnForwardPolicies(ctx)
	h.log.Info("gateway host ready", "subnet", h.cfg.Subnet, "address", h.GatewayAddr(), "uplink", h.uplink,
		"table", "inet "+h.table, "allow", len(h.cfg.Allow), "guest_rate_limit", h.cfg.GuestRateLimit)
	return nil
}

// recoverStale undoes what a gateway for this LAN that did not stop cleanly
// left behind.
func (h *Host) recoverStale(ctx context.Context) error {
	path := statePath(h.cfg.StateDir, h.cfg.LAN)
	st, err := readState(path)
	if err != nil {
		return err
	}
	if st == nil {
		// No record, but a table of our name could survive a lost state
		// directory (a tmpfs /run after a reboot cannot, but a custom dir can).
		// The name is ours by convention; the load below replaces it anyway.
		return nil
	}
	if err := st.validate(h.cfg.LAN); err != nil {
		return fmt.Errorf("%w: %s: %w (inspect and delete it to start)", errStateFile, path, err)
	}
	h.log.Warn("recovering from a gateway that did not stop cleanly", "pid", st.PID, "started", st.Started, "state", path)
	if err := h.undo(ctx, st); err != nil {
		return fmt.Errorf("gateway: recovering from %s: %w", path, err)
	}
	if err := os.Remove(path); err != nil {
		return fmt.Errorf("%w: %w", errStateFile, err)
	}
	return nil
}

// findUplink returns the configured uplink or the default route's interface.
func (h *Host) findUplink(routes []route) (*net.Interface, error) {
	if h.cfg.Uplink != "" {
		ifi, err := net.InterfaceByName(h.cfg.Uplink)
		if err != nil {
			return nil, fmt.Errorf("%w: %q", errUplinkNotFound, h.cfg.Uplink)
		}
		return ifi, nil
	}
	best := -1
	for i, r := range routes {
		if r.Table != rtTableMain || r.Dst.Bits() != 0 || r.Type != unix.RTN_UNICAST || r.OIF == 0 {
			continue
		}
		if best < 0 || r.Priority < routes[best].Priority {
			best = i
		}
	}
	if best < 0 {
		return nil, errNoDefaultRoute
	}
	ifi, err := net.InterfaceByIndex(routes[best].OIF)
	if err != nil {
		return nil, fmt.Errorf("%w: default route interface %d: %w", errUplinkNotFound, routes[best].OIF, err)
	}
	// The name goes into the ruleset: hold it to the same rules as a configured one.
	if err := validIfName(ifi.Name); err != nil {
		return nil, fmt.Errorf("%w: default route interface: %w; set Uplink", errInvalidConfig, err)
	}
	return ifi, nil
}

// checkOverlap refuses a subnet that shares addresses with a route on any
// interface but the LAN itself (default routes aside): the host would then
// reach part of that network through the room, or the room through it.
func checkOverlap(subnet netip.Prefix, lanIndex int, routes []route) error {
	for _, r := range routes {
		if r.Dst.Bits() == 0 || r.OIF == lanIndex || !r.Dst.Overlaps(subnet) {
			continue
		}
		dev := "no device"
		if ifi, err := net.InterfaceByIndex(r.OIF); err == nil {
			dev = "dev " + ifi.Name
		}
		return fmt.Errorf("%w: %v overlaps route %v (%s, table %s); choose another room subnet",
			errSubnetOverlap, subnet, r.Dst, dev, routeTableName(r.Table))
	}
	return nil
}

func routeTableName(id uint32) string {
	switch id {
	case rtTableMain:
		return "main"
	case unix.RT_TABLE_LOCAL:
		return "local"
	}
	return fmt.Sprint(id)
}

// plan reads the current host state and lists the changes to make.
func (h *Host) plan(lan, uplink *net.Interface) (hostState, bool, error) {
	st := hostState{
		Version: stateVersion,
		LAN:     h.cfg.LAN,
		Table:   h.table,
		PID:     os.Getpid(),
		Started: time.Now().UTC().Format(time.RFC3339),
	}
	want := netip.PrefixFrom(gatewayAddr(h.cfg.Subnet), h.cfg.Subnet.Bits())
	has, err := hasAddress(lan, want)
	if err != nil {
		return st, false, err
	}
	if !has {
		st.Address = &ifaceChange{Interface: lan.Name, Ifindex: lan.Index, Prefix: want}
	}
	if lan.Flags&net.FlagUp == 0 {
		st.LinkUp = &ifaceChange{Interface: lan.Name, Ifindex: lan.Index}
	}

	// Forwarding on the LAN lets guests' packets be routed; on the uplink it
	// lets the replies back in. The kernel checks the switch of the interface
	// a packet arrived on (IN_DEV_FORWARD), never the global one.
	lanFwd, err := readSysctl(lan.Name, sysctlForwarder)
	if err != nil {
		return st, false, err
	}
	if lanFwd != "1" {
		st.Sysctls = append(st.Sysctls, sysctlChange{lan.Name, lan.Index, sysctlForwarder, lanFwd})
	}
	upFwd, err := readSysctl(uplink.Name, sysctlForwarder)
	if err != nil {
		return st, false, err
	}
	upChange := sysctlChange{uplink.Name, uplink.Index, sysctlForwarder, upFwd}
	// Another gateway (running, or crashed and not yet recovered) may have
	// switched the uplink on already: its record holds the host's value.
	_, all := otherStates(h.cfg.StateDir, h.cfg.LAN)
	inherited := false
	for _, o := range all {
		for _, c := range o.Sysctls {
			if c.same(upChange) {
				upChange.Previous, inherited = c.Previous, true
			}
		}
	}
	if upFwd != "1" || inherited {
		st.Sysctls = append(st.Sysctls, upChange)
	}
	guard := upChange.Previous != "1"
	return st, guard, nil
}

// apply makes the recorded changes and loads the ruleset.
func (h *Host) apply(ctx context.Context, guardUplink bool) error {
	st := &h.state
	if c := st.Address; c != nil {
		if err := addrAdd(c.Ifindex, c.Prefix); err != nil {
			return fmt.Errorf("gateway: adding %v to %s: %w", c.Prefix, c.Interface, err)
		}
	}
	if c := st.LinkUp; c != nil {
		if err := linkSetUp(c.Ifindex, true); err != nil {
			return fmt.Errorf("gateway: bringing %s up: %w", c.Interface, err)
		}
	}
	for _, c := range st.Sysctls {
		if err := writeSysctl(c.Interface, c.Key, "1"); err != nil {
			return err
		}
	}
	rs := ruleset{
		Table:          h.table,
		LAN:            h.cfg.LAN,
		Uplink:         h.uplink,
		Subnet:         h.cfg.Subnet,
		Allow:          h.cfg.Allow,
		GuestRateLimit: h.cfg.GuestRateLimit,
		GuardUplink:    guardUplink,
	}
	if err := h.nft.load(ctx, rs.text()); err != nil {
		return err
	}
	return h.verify(ctx)
}

// verify reads the table back: a load that silently produced something else
// (another nft version's parser, a concurrent delete) must not pass as ready.
func (h *Host) verify(ctx context.Context) error {
	objs, err := h.nft.listTable(ctx, h.table)
	if err != nil {
		return fmt.Errorf("%w: %w", errRulesetNotLoaded, err)
	}
	chains, counters := 0, 0
	for _, o := range objs {
		switch {
		case o.Chain != nil:
			chains++
		case o.Counter != nil:
			counters++
		}
	}
	wantCounters := len(DropReasons) + 4
	if chains != expectedChains || counters != wantCounters {
		return fmt.Errorf("%w: table %s has %d chains and %d counters, want %d and %d",
			errRulesetNotLoaded, h.table, chains, counters, expectedChains, wantCounters)
	}
	return nil
}

// warnForwardPolicies points at the usual reason for "DNS works, nothing
// else does": another table's forward chain (Docker's, firewalld's) dropping
// by default. Accepting in our table cannot override a drop elsewhere.
func (h *Host) warnForwardPolicies(ctx context.Context) {
	chains, err := h.nft.chains(ctx)
	if err != nil {
		h.log.Debug("listing chains for the forward policy check", "err", err)
		return
	}
	for _, c := range chains {
		if c.Hook == "forward" && c.Policy == "drop" && c.Table != h.table {
			h.log.Warn("another forward chain drops by default; guests' traffic needs an accept rule there",
				"family", c.Family, "table", c.Table, "chain", c.Name)
		}
	}
}

// undo reverts the changes in st, skipping what is already gone. It keeps
// going after an error and returns all of them.
func (h *Host) undo(ctx context.Context, st *hostState) error {
	var errs []error
	if deleted, err := h.nft.deleteTable(ctx, st.Table); err != nil {
		errs = append(errs, err)
	} else if deleted {
		h.log.Info("deleted nftables table", "table", "inet "+st.Table)
	}
	live, _ := otherStates(h.cfg.StateDir, st.LAN)
	for i := len(st.Sysctls) - 1; i >= 0; i-- {
		c := st.Sysctls[i]
		if sharedWith(live, c) {
			h.log.Info("leaving sysctl to the gateway still using it", "interface", c.Interface, "key", c.Key)
			continue
		}
		if !sameInterface(c.Interface, c.Ifindex) {
			continue // gone or recreated: the value we changed went with it
		}
		if err := writeSysctl(c.Interface, c.Key, c.Previous); err != nil {
			errs = append(errs, err)
		}
	}
	if c := st.Address; c != nil && sameInterface(c.Interface, c.Ifindex) {
		if err := addrDel(c.Ifindex, c.Prefix); err != nil {
			errs = append(errs, fmt.Errorf("gateway: removing %v from %s: %w", c.Prefix, c.Interface, err))
		}
	}
	if c := st.LinkUp; c != nil && sameInterface(c.Interface, c.Ifindex) {
		if err := linkSetUp(c.Ifindex, false); err != nil {
			errs = append(errs, fmt.Errorf("gateway: bringing %s down: %w", c.Interface, err))
		}
	}
	return errors.Join(errs...)
}

func sharedWith(live []*hostState, c sysctlChange) bool {
	for _, o := range live {
		for _, oc := range o.Sysctls {
			if oc.same(c) {
				return true
			}
		}
	}
	return false
}

// Close undoes every host change SetupHost made: it deletes the table,
// restores the forwarding switches (unless another running gateway still
// relies on the uplink's), removes the address and puts the link back down if
// it was down. Close the DNSForwarder bound to the address first. Calling
// Close again returns the first call's result.
func (h *Host) Close() error {
	h.closeOnce.Do(func() { h.closeErr = h.teardown() })
	return h.closeErr
}

func (h *Host) teardown() error {
	defer h.lanLock.Close()
	lockCtx, cancelLock := context.WithTimeout(context.Background(), dirLockWait)
	defer cancelLock()
	// Undo even without the directory lock: leaving the host changed is
	// worse than racing another gateway's decision about a shared uplink.
	if dirLock, err := lockFile(lockCtx, dirLockPath(h.cfg.StateDir), true); err != nil {
		h.log.Warn("tearing down without the state directory lock", "err", err)
	} else {
		defer dirLock.Close()
	}
	ctx, cancel := context.WithTimeout(context.Background(), teardownTimeout)
	defer cancel()
	if err := h.undo(ctx, &h.state); err != nil {
		// Keep the state file: the next start retries.
		return err
	}
	if err := os.Remove(statePath(h.cfg.StateDir, h.cfg.LAN)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("%w: %w", errStateFile, err)
	}
	h.log.Info("gateway host restored")
	return nil
}

// GatewayAddr is the room's router and DNS address (.1), assigned to the LAN.
func (h *Host) GatewayAddr() netip.Addr { return gatewayAddr(h.cfg.Subnet) }

// Subnet is the room subnet being routed.
func (h *Host) Subnet() netip.Prefix { return h.cfg.Subnet }

// LAN is the LAN interface name.
func (h *Host) LAN() string { return h.cfg.LAN }

// Uplink is the interface the room is masqueraded out of.
func (h *Host) Uplink() string { return h.uplink }

// Table is the name of the gateway's nftables table (family inet).
func (h *Host) Table() string { return h.table }

// Counters reads the table's named counters.
func (h *Host) Counters(ctx context.Context) (Counters, error) {
	raw, err := h.nft.counters(ctx, h.table)
	if err != nil {
		return Counters{}, err
	}
	return countersFrom(raw), nil
}

func hasAddress(ifi *net.Interface, want netip.Prefix) (bool, error) {
	addrs, err := ifi.Addrs()
	if err != nil {
		return false, fmt.Errorf("gateway: addresses of %s: %w", ifi.Name, err)
	}
	for _, a := range addrs {
		ipn, ok := a.(*net.IPNet)
		if !ok {
			continue
		}
		addr, ok := netip.AddrFromSlice(ipn.IP)
		ones, _ := ipn.Mask.Size()
		if ok && netip.PrefixFrom(addr.Unmap(), ones) == want {
			return true, nil
		}
	}
	return false, nil
}

// checkNetAdmin requires CAP_NET_ADMIN in the effective set: netlink address
// changes, per-interface sysctls and nftables all need it.
func checkNetAdmin() error {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return fmt.Errorf("%w: capget: %w", errNotPrivileged, err)
	}
	if data[0].Effective&(1<<unix.CAP_NET_ADMIN) == 0 {
		return errNotPrivileged
	}
	return nil
}
