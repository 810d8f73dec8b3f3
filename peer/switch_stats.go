package peer

import (
	"encoding/json"
	"strconv"
	"time"

	"github.com/peerlan/peerlan/peer/ether"
)

// PortKind says what sits behind a switch port, which decides where the
// frames it brings may go (see Switch).
type PortKind uint8

const (
	// PortKindLocal is this peer's own guest (a TAP device or the browser
	// emulator's NIC). Its frames are trusted and may go anywhere.
	PortKindLocal PortKind = iota + 1
	// PortKindLink is a remote peer of the mesh. Its frames go only to local
	// ports (split horizon) and are checked against spoofing.
	PortKindLink
)

func (k PortKind) String() string {
	switch k {
	case PortKindLocal:
		return "local"
	case PortKindLink:
		return "link"
	}
	return "PortKind(" + strconv.Itoa(int(k)) + ")"
}

// MarshalText encodes the kind as "local" or "link" (for the page's JSON).
func (k PortKind) MarshalText() ([]byte, error) { return []byte(k.String()), nil }

// DropReason says why the switch dropped a frame. Ingress reasons are counted
// on the port the frame arrived on, egress reasons on the port it was meant
// to leave by.
type DropReason uint8

const (
	// DropRunt (ingress): shorter than an Ethernet header (14 bytes).
	DropRunt DropReason = iota
	// DropOversize (ingress): longer than MaxFrameSize.
	DropOversize
	// DropGroupSource (ingress): a multicast or broadcast source MAC,
	// which no station may use.
	DropGroupSource
	// DropZeroSource (ingress): the all-zero source MAC.
	DropZeroSource
	// DropSpoofedSource (ingress): a link used a source MAC currently
	// learned on another port.
	DropSpoofedSource
	// DropMACLimit (ingress): a new source MAC on a port that already has
	// SwitchConfig.MaxMACsPerPort learned addresses.
	DropMACLimit
	// DropBroadcastBudget (ingress): a broadcast or multicast frame from a
	// link beyond the link's budget.
	DropBroadcastBudget
	// DropFiltered (ingress): unicast to a MAC learned on the port it came
	// from, or from a link to a MAC learned on another link (split horizon).
	DropFiltered
	// DropQueueFull (egress): the oldest queued frame was discarded to
	// make room, because the port's writer is not keeping up.
	DropQueueFull
	// DropPortBusy (egress): the port's Write returned ErrDropped.
	DropPortBusy
	// DropWriteError (egress): the port's Write failed with another error.
	DropWriteError
	// DropBadOffload (ingress): an offloaded frame whose offload header
	// does not fit it (see ether.Offload.Check).
	DropBadOffload
	// DropIPSource (ingress): IPv4 from a link with a source other than the
	// remote peer's address (see L3Guard), or no valid IPv4 header.
	DropIPSource
	// DropARPSpoof (ingress): ARP from a link that claims another address
	// or MAC than the remote peer's, or is malformed.
	DropARPSpoof
	// DropRogueDHCP (ingress): a DHCP or DHCPv6 server message from a link
	// other than the gateway's.
	DropRogueDHCP
	// DropRogueRouter (ingress): an IPv6 router advertisement or redirect
	// from a link other than the gateway's, or IPv6 whose headers could hide
	// one.
	DropRogueRouter
	// DropTagged (ingress): a VLAN-tagged frame from a guarded link.
	DropTagged

	numDropReasons
)

var dropReasonNames = [numDropReasons]string{
	DropRunt:            "runt",
	DropOversize:        "oversize",
	DropGroupSource:     "group-source",
	DropZeroSource:      "zero-source",
	DropSpoofedSource:   "spoofed-source",
	DropMACLimit:        "mac-limit",
	DropBroadcastBudget: "broadcast-budget",
	DropFiltered:        "filtered",
	DropQueueFull:       "queue-full",
	DropPortBusy:        "port-busy",
	DropWriteError:      "write-error",
	DropBadOffload:      "bad-offload",
	DropIPSource:        "ip-source",
	DropARPSpoof:        "arp-spoof",
	DropRogueDHCP:       "rogue-dhcp",
	DropRogueRouter:     "rogue-router",
	DropTagged:          "vlan-tagged",
}

func (r DropReason) String() string {
	if r < numDropReasons {
		return dropReasonNames[r]
	}
	return "DropReason(" + strconv.Itoa(int(r)) + ")"
}

// SwitchDrops counts dropped frames, indexed by DropReason.
type SwitchDrops [numDropReasons]uint64

// Total returns the sum over all reasons.
func (d SwitchDrops) Total() uint64 {
	var t uint64
	for _, n := range d {
		t += n
	}
	return t
}

// MarshalJSON encodes the counts as an object keyed by reason name, e.g.
// {"runt":0,"oversize":2,...}, in DropReason order.
func (d SwitchDrops) MarshalJSON() ([]byte, error) {
	b := make([]byte, 0, 24*len(d))
	b = append(b, '{')
	for r, n := range d {
		if r > 0 {
			b = append(b, ',')
		}
		b = strconv.AppendQuote(b, DropReason(r).String())
		b = append(b, ':')
		b = strconv.AppendUint(b, n, 10)
	}
	return append(b, '}'), nil
}

// UnmarshalJSON decodes what MarshalJSON encodes; reasons it does not know
// (from a newer peer) are ignored.
func (d *SwitchDrops) UnmarshalJSON(b []byte) error {
	var m map[string]uint64
	if err := json.Unmarshal(b, &m); err != nil {
		return err
	}
	*d = SwitchDrops{}
	for r := range d {
		d[r] = m[DropReason(r).String()]
	}
	return nil
}

// SwitchPortStats are the counters of one port. Rx counts every frame read
// from the port, including those then dropped; Tx counts frames the port's
// Write accepted.
type SwitchPortStats struct {
	Name     string
	Kind     PortKind
	RxFrames uint64
	RxBytes  uint64
	TxFrames uint64
	TxBytes  uint64
	Queued   int // frames waiting in the port's queue right now
	MACs     int // MAC addresses currently learned on the port
	Drops    SwitchDrops
}

// SwitchStats is a snapshot of a switch's counters.
type SwitchStats struct {
	Ports []SwitchPortStats // current ports, sorted by name
	// Drops totals every drop since NewSwitch, removed ports included.
	Drops SwitchDrops
	MACs  int // entries in the MAC table, expired ones not yet swept included
}

// SwitchMAC is one learned entry of the MAC table.
type SwitchMAC struct {
	MAC  ether.MAC
	Port string
	Kind PortKind
	Age  time.Duration // since the last frame from MAC
}
