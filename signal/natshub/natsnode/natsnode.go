// Package natsnode runs an embedded NATS server (github.com/nats-io/
// nats-server/v2) with JetStream, so that a few bin/signal instances can
// share rooms (package signal/natshub) without a NATS service of their own:
// each instance runs one node and routes to the others.
package natsnode

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// Config configures a node. Zero fields take the documented defaults.
type Config struct {
	// Name is the node's server name, unique in the cluster (JetStream
	// needs it). Required.
	Name string
	// Listen is the client address ("host:port"); default "127.0.0.1:4222".
	// Port 0 picks a free port (as does 0 in ClusterListen).
	Listen string
	// Cluster is the cluster name; default "peerlan".
	Cluster string
	// ClusterListen, when set, is the address this node accepts routes
	// from other nodes on; needed with Routes.
	ClusterListen string
	// Routes are the other nodes' cluster addresses (nats-route://host:port
	// or host:port). Every node may list every other; routes to itself are
	// ignored by the server.
	Routes []string
	// StoreDir is where JetStream keeps its files. Required.
	StoreDir string
	// MaxStore bounds JetStream's file storage; default 1 GiB.
	MaxStore int64
	// ReadyTimeout bounds how long Start waits for the node to accept
	// clients; default 10 s.
	ReadyTimeout time.Duration
	// Password, when set, is required of every client (as user User) and
	// of every route, and presented on the routes this node dials (Routes
	// without credentials of their own get it), so that only processes
	// holding it join the cluster or speak on it: whoever can publish on
	// the NATS speaks for an instance. Empty: no authentication (tests,
	// a node on loopback only).
	Password string
	// Logger receives the server's logs; default slog.Default().
	Logger *slog.Logger
}

// User is the user name clients and routes authenticate as when
// Config.Password is set.
const User = "peerlan"

// PasswordFrom derives a node password from a secret that every instance of
// a cluster shares (bin/signal's -secret-file), so that their nodes accept
// each other and nothing else, and an operator holding the secret can
// connect to any of them.
func PasswordFrom(secret []byte) string {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte("peerlan embedded NATS node password v1"))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// Node is a running embedded server.
type Node struct {
	srv *server.Server
}

func splitHostPort(what, hp string) (string, int, error) {
	h, p, err := net.SplitHostPort(hp)
	if err != nil {
		return "", 0, fmt.Errorf("natsnode: %s %q: %w", what, hp, err)
	}
	n, err := strconv.Atoi(p)
	if err != nil || n < 0 || n > 65535 {
		return "", 0, fmt.Errorf("natsnode: %s %q: bad port", what, hp)
	}
	return h, n, nil
}

// Start starts a node and waits until it accepts clients.
func Start(cfg Config) (*Node, error) {
	if cfg.Name == "" {
		return nil, errors.New("natsnode: a node needs a name")
	}
	if cfg.StoreDir == "" {
		return nil, errors.New("natsnode: a node needs a store directory")
	}
	if cfg.Listen == "" {
		cfg.Listen = "127.0.0.1:4222"
	}
	if cfg.Cluster == "" {
		cfg.Cluster = "peerlan"
	}
	if cfg.MaxStore == 0 {
		cfg.MaxStore = 1 << 30
	}
	if cfg.ReadyTimeout == 0 {
		cfg.ReadyTimeout = 10 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	host, port, err := splitHostPort("listen address", cfg.Listen)
	if err != nil {
		return nil, err
	}
	if port == 0 {
		port = server.RANDOM_PORT // the server reads 0 as its default, 4222
	}
	opts := &server.Options{
		ServerName:        cfg.Name,
		Host:              host,
		Port:              port,
		JetStream:         true,
		StoreDir:          cfg.StoreDir,
		JetStreamMaxStore: cfg.MaxStore,
		// Bounded: one signaling message (64 KiB) plus headers fits easily.
		MaxPayload: 1 << 20,
		NoSigs:     true, // the command handles signals
	}
	if cfg.Password != "" {
		opts.Username, opts.Password = User, cfg.Password
	}
	if len(cfg.Routes) > 0 && cfg.ClusterListen == "" {
		return nil, errors.New("natsnode: routes need a cluster listen address")
	}
	if cfg.ClusterListen != "" {
		ch, cp, err := splitHostPort("cluster listen address", cfg.ClusterListen)
		if err != nil {
			return nil, err
		}
		if cp == 0 {
			cp = server.RANDOM_PORT
		}
		opts.Cluster = server.ClusterOpts{Name: cfg.Cluster, Host: ch, Port: cp}
		if cfg.Password != "" {
			opts.Cluster.Username, opts.Cluster.Password = User, cfg.Password
		}
		for _, r := range cfg.Routes {
			u, err := parseRoute(r)
			if err != nil {
				return nil, err
			}
			if cfg.Password != "" && u.User == nil {
				u.User = url.UserPassword(User, cfg.Password)
			}
			opts.Routes = append(opts.Routes, u)
		}
	}
	srv, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("natsnode: %w", err)
	}
	srv.SetLoggerV2(slogAdapter{cfg.Logger.With("nats", cfg.Name)}, false, false, false)
	srv.Start()
	if !srv.ReadyForConnections(cfg.ReadyTimeout) {
		srv.Shutdown()
		return nil, fmt.Errorf("natsnode: node %s not ready within %v", cfg.Name, cfg.ReadyTimeout)
	}
	return &Node{srv: srv}, nil
}

func parseRoute(r string) (*url.URL, error) {
	u, err := url.Parse(r)
	if err != nil || u.Host == "" {
		// A bare host:port.
		if _, _, herr := splitHostPort("route", r); herr != nil {
			return nil, herr
		}
		return &url.URL{Scheme: "nats-route", Host: r}, nil
	}
	if u.Scheme != "nats-route" && u.Scheme != "nats" {
		return nil, fmt.Errorf("natsnode: route %q: scheme must be nats-route", r)
	}
	return u, nil
}

// ClientURL is the URL clients connect to (nats://host:port).
func (n *Node) ClientURL() string { return n.srv.ClientURL() }

// ClusterAddr is the address routes connect to, or nil without a cluster.
func (n *Node) ClusterAddr() net.Addr {
	if a := n.srv.ClusterAddr(); a != nil {
		return a
	}
	return nil
}

// Server is the embedded server, for tests that inspect it.
func (n *Node) Server() *server.Server { return n.srv }

// Close stops the node and waits until it has stopped.
func (n *Node) Close() {
	n.srv.Shutdown()
	n.srv.WaitForShutdown()
}

// slogAdapter passes the server's printf-style logs to slog. Notices are
// Debug: the server is chatty at start and its own state is not ours to log.
type slogAdapter struct{ l *slog.Logger }

func (a slogAdapter) Noticef(f string, v ...any) { a.l.Debug(fmt.Sprintf(f, v...)) }
func (a slogAdapter) Warnf(f string, v ...any)   { a.l.Warn(fmt.Sprintf(f, v...)) }
func (a slogAdapter) Fatalf(f string, v ...any)  { a.l.Error(fmt.Sprintf(f, v...)) }
func (a slogAdapter) Errorf(f string, v ...any)  { a.l.Error(fmt.Sprintf(f, v...)) }
func (a slogAdapter) Debugf(f string, v ...any)  { a.l.Debug(fmt.Sprintf(f, v...)) }
func (a slogAdapter) Tracef(f string, v ...any)  { a.l.Debug(fmt.Sprintf(f, v...)) }
