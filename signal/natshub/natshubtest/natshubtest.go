// Package natshubtest starts a real embedded NATS server and signaling
// servers that share rooms through it (package signal/natshub), for tests
// and benchmarks. Every helper fails the test it was given rather than
// returning an error; everything started is stopped by t.Cleanup.
package natshubtest

import (
	"fmt"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/peerlan/peerlan/signal"
	"github.com/peerlan/peerlan/signal/natshub"
	"github.com/peerlan/peerlan/signal/natshub/natsnode"
	"github.com/peerlan/peerlan/signal/signaltest"
)

// PresenceTTL is the presence TTL Instance gives its Hub: short, so that
// tests of a dead instance take seconds.
const PresenceTTL = 2 * time.Second

// StartNode starts an embedded NATS server with JetStream in a temporary
// directory, on a random loopback port.
func StartNode(t testing.TB) *natsnode.Node {
	t.Helper()
	n, err := natsnode.Start(natsnode.Config{
		Name: "test", Listen: "127.0.0.1:0", StoreDir: t.TempDir(),
		Logger: signaltest.Logger(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(n.Close)
	return n
}

// StartNodes starts n embedded NATS servers routed to each other (one
// JetStream cluster), named n0, n1, ...; it returns once every node
// accepts clients.
func StartNodes(t testing.TB, n int) []*natsnode.Node {
	t.Helper()
	addrs := FreeAddrs(t, n)
	nodes := make([]*natsnode.Node, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	// At once: a node's JetStream waits for a quorum of its peers.
	for i := range nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			nodes[i], errs[i] = natsnode.Start(natsnode.Config{
				Name: fmt.Sprintf("n%d", i), Listen: "127.0.0.1:0", StoreDir: t.TempDir(),
				ClusterListen: addrs[i], Routes: addrs, ReadyTimeout: 30 * time.Second,
				Logger: signaltest.Logger(t).With("node", i),
			})
		}()
	}
	wg.Wait()
	for i, nd := range nodes {
		if errs[i] != nil {
			t.Fatalf("node %d: %v", i, errs[i])
		}
		t.Cleanup(nd.Close)
	}
	return nodes
}

// FreeAddrs returns n loopback addresses (host:port) that were free a
// moment ago, for servers that must know each other's addresses before
// any of them listens (a NATS cluster's routes).
func FreeAddrs(t testing.TB, n int) []string {
	t.Helper()
	addrs := make([]string, n)
	for i := range addrs {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addrs[i] = ln.Addr().String()
		ln.Close()
	}
	return addrs
}

// Instance is one signaling server of a cluster.
type Instance struct {
	*signaltest.Server
	Hub  *natshub.Hub
	Conn *nats.Conn
}

// Start starts a signaling server sharing rooms through the NATS server at
// url as instance name. hmod and mod, when not nil, change the Hub's and the
// Server's configuration first.
func Start(t testing.TB, url, name string, hmod func(*natshub.Config), mod func(*signal.Config)) *Instance {
	t.Helper()
	nc, err := nats.Connect(url, nats.Name(name), nats.MaxReconnects(-1))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	hc := natshub.Config{Conn: nc, Instance: name, PresenceTTL: PresenceTTL, Logger: signaltest.Logger(t).With("instance", name)}
	if hmod != nil {
		hmod(&hc)
	}
	h, err := natshub.New(hc)
	if err != nil {
		t.Fatal(err)
	}
	ts := signaltest.Start(t, func(c *signal.Config) {
		c.Hub = h.Open
		c.Logger = hc.Logger
		if mod != nil {
			mod(c)
		}
	})
	return &Instance{Server: ts, Hub: h, Conn: nc}
}

// Cluster starts n instances on one new NATS server.
func Cluster(t testing.TB, n int, mod func(*signal.Config)) []*Instance {
	t.Helper()
	return ClusterWith(t, n, nil, mod)
}

// ClusterWith is Cluster with hmod changing each Hub's configuration.
func ClusterWith(t testing.TB, n int, hmod func(*natshub.Config), mod func(*signal.Config)) []*Instance {
	t.Helper()
	node := StartNode(t)
	out := make([]*Instance, n)
	for i := range out {
		out[i] = Start(t, node.ClientURL(), string(rune('a'+i)), hmod, mod)
	}
	return out
}

// Kill stops an instance abruptly, as if its process died: its NATS
// connection goes first, so it neither heartbeats nor hands anything over,
// then its listener and connections.
func (in *Instance) Kill() {
	in.Conn.Close()
	in.Stop()
}

// Front is a TCP forwarder standing in for a load balancer in front of the
// instances: clients dial its one address and land on its current target.
type Front struct {
	ln     net.Listener
	mu     sync.Mutex
	target string
	conns  map[net.Conn]struct{}
	held   chan struct{} // while not nil, the target's bytes wait; closed to release them
}

// StartFront listens on loopback and forwards to target (host:port).
func StartFront(t testing.TB, target string) *Front {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &Front{ln: ln, target: target, conns: map[net.Conn]struct{}{}}
	go f.serve()
	t.Cleanup(func() {
		ln.Close()
		f.Hold(false)
		f.Switch("")
	})
	return f
}

// Addr is the front's own address (host:port).
func (f *Front) Addr() string { return f.ln.Addr().String() }

// URL is the signaling URL through the front.
func (f *Front) URL() string { return "ws://" + f.ln.Addr().String() + "/signal" }

// Switch sends new connections to target and cuts the current ones, as a
// balancer does when a backend dies.
func (f *Front) Switch(target string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.target = target
	for c := range f.conns {
		c.Close()
	}
	clear(f.conns)
}

func (f *Front) serve() {
	for {
		c, err := f.ln.Accept()
		if err != nil {
			return
		}
		f.mu.Lock()
		target := f.target
		f.mu.Unlock()
		b, err := net.DialTimeout("tcp", target, 5*time.Second)
		if err != nil {
			c.Close()
			continue
		}
		f.mu.Lock()
		f.conns[c], f.conns[b] = struct{}{}, struct{}{}
		f.mu.Unlock()
		go func() { _, _ = io.Copy(b, c); b.Close() }()
		go func() { _, _ = io.Copy(f.gate(c), b); c.Close() }()
	}
}

// Hold makes the target's bytes wait (hold true) or lets them through
// again (false): the client's requests arrive and are acted on, but their
// answers do not come back until released, as when a server is slow to
// answer or an answer is lost.
func (f *Front) Hold(hold bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	switch {
	case hold && f.held == nil:
		f.held = make(chan struct{})
	case !hold && f.held != nil:
		close(f.held)
		f.held = nil
	}
}

// gate is w, waiting before each write while the front holds.
func (f *Front) gate(w io.Writer) io.Writer { return gatedWriter{f, w} }

type gatedWriter struct {
	f *Front
	w io.Writer
}

func (g gatedWriter) Write(p []byte) (int, error) {
	g.f.mu.Lock()
	held := g.f.held
	g.f.mu.Unlock()
	if held != nil {
		<-held
	}
	return g.w.Write(p)
}

// Addr is the instance's HTTP address (host:port), a Front's target.
func (in *Instance) Addr() string { return in.HTTP.Listener.Addr().String() }
