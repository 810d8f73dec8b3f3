package peer

import (
	"log/slog"
	"net/netip"
	"sort"
	"time"

	"github.com/peerlan/peerlan/signal/proto"
)

// MeshStatus is a snapshot of a Mesh for logs, the page's network panel and
// tests. Its JSON form is what the browser API's lan.status() returns.
type MeshStatus struct {
	ID      proto.PeerID `json:"id"`
	Room    string       `json:"room"`
	Role    proto.Role   `json:"role"`
	Relay   RelayPolicy  `json:"relay"`
	IP      netip.Addr   `json:"ip"`
	Prefix  netip.Prefix `json:"prefix"`
	Gateway netip.Addr   `json:"gateway"`
	// GatewayPeer is the id of the room's gateway peer, if one is present.
	GatewayPeer proto.PeerID `json:"gateway_peer,omitempty"`
	// GuestMACs are the MAC addresses learned on the local port.
	GuestMACs []string `json:"guest_macs"`
	// Signal is "connecting", "connected", "reconnecting" or "closed".
	Signal string `json:"signal"`
	// SignalURL is the signaling server that last welcomed this peer, one
	// of MeshConfig.Signal's URLs.
	SignalURL string `json:"signal_url,omitempty"`
	// Error is why the mesh stopped, when it did.
	Error string       `json:"error,omitempty"`
	Peers []LinkStatus `json:"peers"`
	// Drops totals the switch's dropped frames by reason.
	Drops SwitchDrops `json:"drops"`
}

// LinkStatus describes the link to one remote peer.
type LinkStatus struct {
	ID   proto.PeerID `json:"id"`
	IP   netip.Addr   `json:"ip"`
	Role proto.Role   `json:"role"`
	// Kind is what the peer runs, as the server passed it on ("browser",
	// "native"; "" when unknown).
	Kind proto.Kind `json:"kind,omitempty"`
	// State is "waiting", "connecting", "open" or "failed".
	State string `json:"state"`
	// Path is the candidate type of the selected pair: "host", "srflx",
	// "prflx" or "relay" ("relay" when either side is relayed), or "" while
	// unknown.
	Path            string  `json:"path"`
	LocalCandidate  string  `json:"local_candidate,omitempty"`
	RemoteCandidate string  `json:"remote_candidate,omitempty"`
	RTTMillis       float64 `json:"rtt_ms"`
	// OpenMillis is how long the current session took from its start to an
	// open data channel.
	OpenMillis float64 `json:"open_ms"`
	RxBytes    uint64  `json:"rx_bytes"`
	TxBytes    uint64  `json:"tx_bytes"`
	RxFrames   uint64  `json:"rx_frames"`
	TxFrames   uint64  `json:"tx_frames"`
	// Drops counts frames to or from this peer that were dropped: switch
	// drops on its port plus send-buffer and oversize drops of the channel.
	Drops uint64 `json:"drops"`
	// Offload: the link carries offloaded frames (TCP super-frames) both
	// ways, which only native peers negotiate.
	Offload bool `json:"offload,omitempty"`
	// Transport is what carries the open link: "webrtc" (pion/webrtc or
	// the browser: 1,200-byte SCTP packets) or "native/N" (package
	// nativertc, between native peers, sending N-byte SCTP packets).
	Transport string `json:"transport,omitempty"`
	Error     string `json:"error,omitempty"`
}

// pairInfo is what a link knows of its selected candidate pair.
type pairInfo struct {
	local, remote string // candidate types
	rtt           time.Duration
}

func (p pairInfo) path() string {
	switch {
	case p.local == "" && p.remote == "":
		return ""
	case p.local == "relay" || p.remote == "relay":
		return "relay"
	case p.local == "host" && p.remote == "host":
		return "host"
	case p.local == "srflx" || p.remote == "srflx":
		return "srflx"
	}
	return p.remote
}

// Status returns a snapshot of the mesh. Safe for concurrent use.
func (m *Mesh) Status() MeshStatus {
	m.mu.Lock()
	defer m.mu.Unlock()
	s := m.status
	s.Peers = append([]LinkStatus(nil), m.status.Peers...)
	s.GuestMACs = append([]string(nil), m.status.GuestMACs...)
	return s
}

// ResumeToken returns the token that lets a later run of this peer take
// back its id and address (MeshConfig.Resume): the last welcome's, or
// MeshConfig.Resume before the first.
// It is a credential, so it is not part of Status. Safe for concurrent use.
func (m *Mesh) ResumeToken() string { return m.client.ResumeToken() }

// publishStatus rebuilds the snapshot from the event loop's state.
func (m *Mesh) publishStatus() {
	st := m.sw.Stats()
	ports := make(map[string]SwitchPortStats, len(st.Ports))
	for _, p := range st.Ports {
		ports[p.Name] = p
	}
	peers := make([]LinkStatus, 0, len(m.links))
	var gateway proto.PeerID
	for _, l := range m.links {
		ls := LinkStatus{
			ID: l.info.ID, IP: l.info.IP, Role: l.info.Role, Kind: l.info.Kind, State: string(l.state),
			Path: l.pair.path(), LocalCandidate: l.pair.local, RemoteCandidate: l.pair.remote,
			RTTMillis: float64(l.pair.rtt.Microseconds()) / 1000, OpenMillis: float64(l.openedIn.Microseconds()) / 1000,
			Error: l.lastError, Offload: l.offload && l.state == linkOpen,
		}
		if l.state == linkOpen && l.sess != nil {
			ls.Transport = l.sess.transport()
		}
		if p, ok := ports[portName(l.info.ID)]; ok {
			ls.RxBytes, ls.TxBytes, ls.RxFrames, ls.TxFrames = p.RxBytes, p.TxBytes, p.RxFrames, p.TxFrames
			ls.Drops = p.Drops.Total()
		}
		if l.port != nil {
			ls.Drops += l.port.counters.busy.Load() + l.port.counters.oversize.Load()
		}
		if l.info.Role == proto.RoleGateway {
			gateway = l.info.ID
		}
		peers = append(peers, ls)
	}
	sort.Slice(peers, func(i, j int) bool { return peers[i].IP.Less(peers[j].IP) })
	var macs []string
	for _, e := range m.sw.MACTable() {
		if e.Port == localPortName {
			macs = append(macs, e.MAC.String())
		}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.status.Signal = m.signalState
	m.status.Peers = peers
	m.status.GatewayPeer = gateway
	m.status.GuestMACs = macs
	m.status.Drops = st.Drops
}

// logStatus writes the periodic status line.
func (m *Mesh) logStatus() {
	s := m.Status()
	open, relayed := 0, 0
	var rx, tx uint64
	paths := map[string]int{}
	for _, p := range s.Peers {
		if p.State == string(linkOpen) {
			open++
			paths[p.Path]++
			if p.Path == "relay" {
				relayed++
			}
		}
		rx += p.RxBytes
		tx += p.TxBytes
	}
	m.log.Info("status", "ip", s.IP, "signal", s.Signal, "peers", len(s.Peers), "open", open,
		slog.Group("paths", "host", paths["host"], "srflx", paths["srflx"], "prflx", paths["prflx"], "relay", relayed),
		"rx_bytes", rx, "tx_bytes", tx, "drops", s.Drops.Total())
}
