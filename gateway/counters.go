package gateway

import (
	"fmt"
	"strings"
)

// Traffic is a packet and byte count.
type Traffic struct {
	Packets uint64
	Bytes   uint64
}

// Counters is a snapshot of the gateway table's named counters. They start at
// zero each time SetupHost loads the table.
type Counters struct {
	// GuestToInternet counts packets forwarded from the room out of the uplink.
	GuestToInternet Traffic
	// InternetToGuest counts return traffic forwarded to the room.
	InternetToGuest Traffic
	// FlowsGuestToInternet counts connections guests opened (conntrack new).
	FlowsGuestToInternet uint64
	// FlowsInternetToGuest counts connections the outside tried to open to a
	// guest. The gateway does no port forwarding, so each is also a drop
	// with reason DropUnsolicited.
	FlowsInternetToGuest uint64
	// Drops counts dropped packets per reason (see DropReasons).
	Drops map[string]uint64
}

// countersFrom maps nft's named counters to a snapshot.
func countersFrom(raw map[string]nftCounter) Counters {
	c := Counters{
		GuestToInternet:      Traffic{raw[counterGuestToInternet].Packets, raw[counterGuestToInternet].Bytes},
		InternetToGuest:      Traffic{raw[counterInternetToGuest].Packets, raw[counterInternetToGuest].Bytes},
		FlowsGuestToInternet: raw[counterFlowsGuestToInternet].Packets,
		FlowsInternetToGuest: raw[counterFlowsInternetToGuest].Packets,
		Drops:                make(map[string]uint64, len(DropReasons)),
	}
	for _, r := range DropReasons {
		c.Drops[r] = raw["drop_"+r].Packets
	}
	return c
}

// String renders the snapshot for a status line: traffic both ways, flows,
// and the non-zero drops.
func (c Counters) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "out %s/%d pkts, in %s/%d pkts, flows %d out/%d in",
		humanBytes(c.GuestToInternet.Bytes), c.GuestToInternet.Packets,
		humanBytes(c.InternetToGuest.Bytes), c.InternetToGuest.Packets,
		c.FlowsGuestToInternet, c.FlowsInternetToGuest)
	var drops []string
	for _, r := range DropReasons {
		if n := c.Drops[r]; n > 0 {
			drops = append(drops, fmt.Sprintf("%s=%d", r, n))
		}
	}
	if len(drops) == 0 {
		b.WriteString(", no drops")
	} else {
		b.WriteString(", drops " + strings.Join(drops, " "))
	}
	return b.String()
}

func humanBytes(n uint64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%dB", n)
	}
	div, exp := uint64(unit), 0
	for m := n / unit; m >= unit && exp < 4; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f%ciB", float64(n)/float64(div), "KMGTP"[exp])
}
