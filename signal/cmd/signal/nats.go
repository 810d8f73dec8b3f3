package main

import (
	"crypto/rand"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/peerlan/peerlan/internal/cli"
	"github.com/peerlan/peerlan/signal/natshub"
	"github.com/peerlan/peerlan/signal/natshub/natsnode"
)

// natsFlags choose where rooms live: in this process (no flag), or shared
// with the other instances of a cluster over NATS (-nats or -nats-embed).
type natsFlags struct {
	url, cluster, instance     string
	embed                      bool
	listen, clusterAddr, store string
	routes                     cli.List
	presenceTTL                time.Duration
	replicas                   int
}

func (n *natsFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&n.url, "nats", "", "share rooms with other instances through the NATS server(s) at these comma-separated `URLs`\n(nats://host:4222; NATS 2.11 or newer with JetStream); every instance must use the same\n-secret-file (resume tokens are checked by any instance), -subnet and -max-peers")
	fs.BoolVar(&n.embed, "nats-embed", false, "share rooms with other instances through a NATS node embedded in this process\n(JetStream in -nats-store; -nats-routes joins the other instances' nodes; clients and routes must present\na password derived from -secret-file, so only instances sharing it join)")
	fs.StringVar(&n.listen, "nats-listen", "127.0.0.1:4222", "with -nats-embed: `host:port` where the embedded node accepts NATS clients")
	fs.StringVar(&n.clusterAddr, "nats-cluster-listen", "127.0.0.1:6222", "with -nats-embed and -nats-routes: `host:port` where the node accepts routes from the others")
	fs.Var(&n.routes, "nats-routes", "with -nats-embed: comma-separated cluster `addresses` (host:port of -nats-cluster-listen)\nof the other instances' nodes; every node may list all of them, itself included")
	fs.StringVar(&n.store, "nats-store", "", "with -nats-embed: `dir` for the node's JetStream files (required)")
	fs.StringVar(&n.cluster, "nats-cluster", "peerlan", "cluster `name`: names the NATS cluster, the directory bucket and the subjects, so that several\npeerlan clusters can share one NATS")
	fs.StringVar(&n.instance, "instance", "", "this instance's `name` in logs, metrics and the directory (letters, digits, - and _);\ndefault: the host name and the port of -addr, e.g. myhost-8080; unique in a cluster")
	fs.DurationVar(&n.presenceTTL, "presence-ttl", 6*time.Second, "with -nats/-nats-embed: how long after an instance dies the others notice (whole seconds);\nits peers are announced left a -resume-grace later, unless they resume on another instance first")
	fs.IntVar(&n.replicas, "nats-replicas", 0, "replicas of the directory bucket; default: 3 with -nats-embed and routes to two or more\nother nodes, else 1")
}

func (n natsFlags) enabled() bool { return n.url != "" || n.embed }

// natsSetup is what setup started, to be stopped in reverse order.
type natsSetup struct {
	hub  *natshub.Hub
	conn *nats.Conn
	node *natsnode.Node
}

func (s *natsSetup) close() {
	if s.conn != nil {
		// Drain delivers what is in flight; the Hub has stopped already.
		_ = s.conn.Drain()
		s.conn.Close()
	}
	if s.node != nil {
		s.node.Close()
	}
}

// setup connects to NATS (or starts the embedded node) and makes the Hub;
// relay is this instance's TURN URLs, published to the others; secret is
// the server's (nil: none given), from which an embedded node's password
// is derived.
func (n natsFlags) setup(log *slog.Logger, relay []string, secret []byte) (*natsSetup, error) {
	switch {
	case n.url != "" && n.embed:
		return nil, errors.New("-nats and -nats-embed: choose one (an external NATS, or a node in this process)")
	case !n.embed && (len(n.routes) > 0 || n.store != ""):
		return nil, errors.New("-nats-routes and -nats-store need -nats-embed")
	case n.embed && n.store == "":
		return nil, errors.New("-nats-embed needs -nats-store DIR for its JetStream files")
	case n.replicas < 0 || n.replicas > 5:
		return nil, fmt.Errorf("-nats-replicas %d: 1 to 5", n.replicas)
	case n.embed && len(n.routes) > 0 && secret == nil:
		return nil, errors.New("-nats-embed with -nats-routes needs -secret-file (or PEERLAN_SECRET): the instances share it, and it authenticates their nodes to each other")
	}
	replicas := n.replicas
	if replicas == 0 {
		// Three copies once there are three nodes, so the directory
		// survives one; fewer nodes cannot keep a quorum of two anyway.
		replicas = 1
		if others := slices.DeleteFunc(slices.Clone(n.routes), func(r string) bool { return r == n.clusterAddr }); n.embed && len(others) >= 2 {
			replicas = 3
		}
	}
	s := &natsSetup{}
	var opts []nats.Option
	url := n.url
	if n.embed {
		pw, err := nodePassword(secret)
		if err != nil {
			return nil, err
		}
		cfg := natsnode.Config{Name: n.instance, Listen: n.listen, Cluster: n.cluster, StoreDir: n.store, Routes: n.routes,
			Password: pw, Logger: log}
		if len(n.routes) > 0 {
			cfg.ClusterListen = n.clusterAddr
		}
		node, err := natsnode.Start(cfg)
		if err != nil {
			return nil, fmt.Errorf("-nats-embed: %w", err)
		}
		s.node = node
		url = node.ClientURL()
		opts = append(opts, nats.InProcessServer(node.Server()), nats.UserInfo(natsnode.User, pw))
		log.Info("embedded NATS node running", "clients", node.ClientURL(), "cluster", n.cluster, "routes", n.routes, "store", n.store)
	}
	opts = append(opts,
		nats.Name("peerlan-signal "+n.instance),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(time.Second),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil { // nil: our own Drain at shutdown
				log.Warn("NATS disconnected; reconnecting", "err", err)
			}
		}),
		nats.ReconnectHandler(func(c *nats.Conn) { log.Info("NATS reconnected", "server", c.ConnectedUrl()) }),
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
			subj := ""
			if sub != nil {
				subj = sub.Subject
			}
			log.Warn("NATS error", "subject", subj, "err", err)
		}),
	)
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		s.close()
		return nil, fmt.Errorf("-nats %s: %w", url, err)
	}
	s.conn = nc
	hub, err := natshub.New(natshub.Config{
		Conn: nc, Cluster: n.cluster, Instance: n.instance, PresenceTTL: n.presenceTTL,
		Replicas: replicas, Relay: relay, Logger: log,
	})
	if err != nil {
		s.close()
		return nil, err
	}
	s.hub = hub
	return s, nil
}

// nodePassword is the password of an embedded node's clients and routes:
// derived from the server secret (natsnode.PasswordFrom). Without a secret
// (one node, no routes) it is random: only this process connects.
func nodePassword(secret []byte) (string, error) {
	if secret == nil {
		secret = make([]byte, 32)
		if _, err := rand.Read(secret); err != nil {
			return "", fmt.Errorf("-nats-embed: a random node password: %w", err)
		}
	}
	return natsnode.PasswordFrom(secret), nil
}
