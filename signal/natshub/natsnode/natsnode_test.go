package natsnode_test

import (
	"errors"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/peerlan/peerlan/signal/natshub/natshubtest"
	"github.com/peerlan/peerlan/signal/natshub/natsnode"
)

func start(t *testing.T, name, password string) *natsnode.Node {
	t.Helper()
	n, err := natsnode.Start(natsnode.Config{Name: name, Listen: "127.0.0.1:0", StoreDir: t.TempDir(), Password: password})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(n.Close)
	return n
}

// TestPasswordGuardsClients: with a password, a client without it (or with
// another) is refused; with it, it is served.
func TestPasswordGuardsClients(t *testing.T) {
	n := start(t, "a", "right")
	for _, opts := range [][]nats.Option{nil, {nats.UserInfo(natsnode.User, "wrong")}} {
		if nc, err := nats.Connect(n.ClientURL(), opts...); err == nil {
			nc.Close()
			t.Fatalf("a client with options %v was served", opts)
		} else if !errors.Is(err, nats.ErrAuthorization) {
			t.Fatalf("refused with %v, want an authorization error", err)
		}
	}
	nc, err := nats.Connect(n.ClientURL(), nats.UserInfo(natsnode.User, "right"))
	if err != nil {
		t.Fatalf("the client with the password: %v", err)
	}
	nc.Close()
}

// TestPasswordGuardsRoutes: two nodes sharing a password route to each
// other; a third with another password, configured with routes to both and
// they to it, is kept out.
func TestPasswordGuardsRoutes(t *testing.T) {
	addrs := natshubtest.FreeAddrs(t, 3)
	routes := func(self int) (r []string) {
		for i, a := range addrs {
			if i != self {
				r = append(r, (&url.URL{Scheme: "nats-route", Host: a}).String())
			}
		}
		return r
	}
	nodes := make([]*natsnode.Node, 3)
	errs := make([]error, 3)
	var wg sync.WaitGroup
	for i, pw := range []string{"shared", "shared", "other"} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			nodes[i], errs[i] = natsnode.Start(natsnode.Config{Name: string(rune('a' + i)), Listen: "127.0.0.1:0",
				ClusterListen: addrs[i], Routes: routes(i), StoreDir: t.TempDir(), Password: pw})
		}()
	}
	wg.Wait()
	for i, n := range nodes {
		if n == nil && i == 2 {
			// A node that no route will take may not get ready at all
			// (its JetStream waits for a cluster): refused either way.
			t.Logf("node c did not start: %v", errs[i])
			continue
		}
		if n == nil {
			t.Fatalf("node %c: %v", 'a'+i, errs[i])
		}
		t.Cleanup(n.Close)
	}
	a, b, c := nodes[0], nodes[1], nodes[2]
	deadline := time.Now().Add(20 * time.Second)
	for a.Server().NumRoutes() == 0 || b.Server().NumRoutes() == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("nodes sharing the password did not route: a %d, b %d routes", a.Server().NumRoutes(), b.Server().NumRoutes())
		}
		time.Sleep(50 * time.Millisecond)
	}
	// c dialled both when it started, as they dialled each other; give
	// its attempts (and theirs to c) a moment more, then it must be alone.
	time.Sleep(2 * time.Second)
	if c != nil {
		if got := c.Server().NumRoutes(); got != 0 {
			t.Fatalf("the node with another password has %d routes", got)
		}
	}
	for _, n := range []*natsnode.Node{a, b} {
		rz, err := n.Server().Routez(nil)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range rz.Routes {
			if r.RemoteName == "c" {
				t.Fatalf("%s routes to the node with another password", n.Server().Name())
			}
		}
	}
}
