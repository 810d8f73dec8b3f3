//go:build linux

package e2e

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"regexp"
	"testing"
	"time"

	"github.com/peerlan/peerlan/peer"
)

// BenchmarkNativeMeshEthernet is BenchmarkNativeMesh across an Ethernet
// path, as between two machines: the peers' processes run in two host
// namespaces joined by a veth of MTU 1500, so a native link's 8,000-byte
// SCTP packets cross it as IP fragments. Measured side by side, iperf3
// alternating between them: the mesh with large packets (the default), the
// mesh with -large-packets=false (pion/webrtc's 1,200-byte packets), and
// the WebSocket relay on host A with its clients on both hosts. Units as in
// BenchmarkNativeMesh; x-standard = large / standard packets.
func BenchmarkNativeMeshEthernet(b *testing.B) {
	RequireCommands(b, "ping", "iperf3", "udhcpc", "curl")
	hostA, hostB := NewNamespace(b, "eth-a"), NewNamespace(b, "eth-b")
	addrA, addrB := netip.MustParsePrefix("198.51.100.1/24"), netip.MustParsePrefix("198.51.100.2/24")
	VethPair(b, hostA, "wan0", addrA, hostB, "wan0", addrB)
	if out := hostA.MustRun("ip", "-o", "link", "show", "dev", "wan0"); !regexp.MustCompile(`mtu 1500 `).MatchString(out) {
		b.Fatalf("the wire's MTU is not Ethernet's: %s", out)
	}
	port := FreePort(b)
	sigURL := fmt.Sprintf("ws://%s:%d/signal", addrA.Addr(), port)
	sig := hostA.Start(Binary(b, "signal"), "-addr", fmt.Sprintf("%s:%d", addrA.Addr(), port))
	sig.WaitOutput(b, regexp.MustCompile(`listening`), 10*time.Second)

	large := startEthernetMesh(b, hostA, hostB, sigURL, "large")
	standard := startEthernetMesh(b, hostA, hostB, sigURL, "standard", "-large-packets=false")
	relay := startEthernetRelay(b, hostA, hostB, addrA.Addr())
	var l, s, r pathFigures
	for range benchRounds {
		l.add(large.iperf(b)...)
		s.add(standard.iperf(b)...)
		r.add(relay.iperf(b)...)
	}
	for _, m := range []*ethernetMesh{large, standard} {
		for _, h := range m.hosts {
			st := h.status(b)
			b.Logf("%s %s: drops %v; links %+v", m.name, h.host.Name, st.Drops, st.Peers)
		}
	}
	b.ReportMetric(l.mbps(), "mesh-Mbit/s")
	b.ReportMetric(s.mbps(), "mesh-standard-Mbit/s")
	b.ReportMetric(r.mbps(), "wsrelay-Mbit/s")
	b.ReportMetric(l.mbps()/r.mbps(), "x-wsrelay")
	b.ReportMetric(l.mbps()/s.mbps(), "x-standard")
	b.ReportMetric(float64(l.retransmits)/float64(l.runs), "retransmits/run")
	b.ReportMetric(float64(s.retransmits)/float64(s.runs), "standard-retransmits/run")
	b.ReportMetric(large.pingMedian(b), "mesh-rtt-ms")
	b.ReportMetric(relay.pingMedian(b), "wsrelay-rtt-ms")
}

// ethernetHost is a bin/peer process in a host namespace, its TAP in a
// guest namespace.
type ethernetHost struct {
	host, guest     *Namespace
	tap, statusAddr string
}

func (h ethernetHost) status(b *testing.B) peer.MeshStatus {
	out, err := h.host.Run("curl", "-sf", "http://"+h.statusAddr+"/status")
	var st peer.MeshStatus
	if err != nil || json.Unmarshal([]byte(out), &st) != nil {
		b.Fatalf("status of the peer in %s: %v %s", h.host.Name, err, out)
	}
	return st
}

type ethernetMesh struct {
	*benchPath
	name  string
	hosts [2]ethernetHost
}

// startEthernetMesh starts a peer on each host in a room of its own (extra
// flags for both), waits for the link and leases both guests' addresses.
func startEthernetMesh(b *testing.B, hostA, hostB *Namespace, sigURL, name string, extra ...string) *ethernetMesh {
	m := &ethernetMesh{name: name}
	room := "eth-" + name + "-" + randomSuffix(3)
	for i, host := range []*Namespace{hostA, hostB} {
		h := ethernetHost{host: host, guest: NewNamespace(b, "eth-"+name), tap: "pl" + randomSuffix(3),
			statusAddr: fmt.Sprintf("127.0.0.1:%d", FreePort(b))}
		args := append([]string{"-signal", sigURL, "-room", room, "-tap", h.tap, "-netns", h.guest.Name,
			"-ice-interfaces", "wan0", "-status", h.statusAddr, "-log-level", "warn"}, extra...)
		host.Start(Binary(b, "peer"), args...)
		m.hosts[i] = h
		if i == 0 {
			waitCond(b, 20*time.Second, "the first peer to join", func() bool {
				out, err := host.Run("curl", "-sf", "http://"+h.statusAddr+"/status")
				var st peer.MeshStatus
				return err == nil && json.Unmarshal([]byte(out), &st) == nil && st.Signal == "connected"
			})
		}
	}
	for _, h := range m.hosts {
		waitCond(b, 30*time.Second, name+" link to open", func() bool {
			out, err := h.host.Run("curl", "-sf", "http://"+h.statusAddr+"/status")
			var st peer.MeshStatus
			return err == nil && json.Unmarshal([]byte(out), &st) == nil && len(st.Peers) == 1 && st.Peers[0].State == "open"
		})
	}
	LeaseDHCP(b, m.hosts[0].guest, m.hosts[0].tap)
	lb := LeaseDHCP(b, m.hosts[1].guest, m.hosts[1].tap)
	m.benchPath = &benchPath{a: m.hosts[0].guest, c: m.hosts[1].guest, dst: lb.Addr.Addr()}
	StartIperfServer(b, m.hosts[1].guest, m.dst.String())
	return m
}

// startEthernetRelay runs the WebSocket relay on host A and a TAP client
// on each host, whose guests get static addresses.
func startEthernetRelay(b *testing.B, hostA, hostB *Namespace, relayAddr netip.Addr) *benchPath {
	bin := Binary(b, "wsrelay")
	port := FreePort(b)
	srv := hostA.Start(bin, "serve", "-addr", fmt.Sprintf("%s:%d", relayAddr, port))
	srv.WaitOutput(b, regexp.MustCompile(`relay listening`), 10*time.Second)
	url := fmt.Sprintf("ws://%s:%d/", relayAddr, port)
	addrs := []netip.Prefix{netip.MustParsePrefix("203.0.113.1/24"), netip.MustParsePrefix("203.0.113.2/24")}
	var guests [2]*Namespace
	for i, host := range []*Namespace{hostA, hostB} {
		guests[i] = NewNamespace(b, "eth-wsr")
		tapName := "wr" + randomSuffix(3)
		c := host.Start(bin, "tap", "-url", url, "-tap", tapName, "-netns", guests[i].Name)
		c.WaitOutput(b, regexp.MustCompile(`tap attached`), 10*time.Second)
		waitLinkUp(b, guests[i], tapName)
		guests[i].MustRun("ip", "addr", "add", addrs[i].String(), "dev", tapName)
	}
	p := &benchPath{a: guests[0], c: guests[1], dst: addrs[1].Addr()}
	Ping(b, guests[0], p.dst, 3)
	StartIperfServer(b, guests[1], p.dst.String())
	return p
}
