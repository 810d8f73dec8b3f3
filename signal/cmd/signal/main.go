// Command signal runs peerlan's signaling server: it serves the page, the
// signaling WebSocket, /healthz and /metrics on one address.
//
//	signal [flags]                 serve
//	signal token -room R [flags]   print a join or gateway token for room R
//
// With -turn-udp, -turn-tcp or -turn-tls it also runs peerlan's embedded TURN
// relay (package signal/relay), and every welcome carries freshly minted TURN
// REST credentials for it (username "<expiry>:<peer id>"). The same TURN
// secret (-turn-secret-file) also mints credentials for external turn: URLs
// given with -ice, so a coturn with use-auth-secret and static-auth-secret
// set to that secret can serve instead of, or beside, the embedded relay.
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/peerlan/peerlan/internal/cli"
	peersignal "github.com/peerlan/peerlan/signal"
	"github.com/peerlan/peerlan/signal/proto"
	"github.com/peerlan/peerlan/web"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "token" {
		os.Exit(tokenCmd(os.Args[2:]))
	}
	os.Exit(serveCmd(os.Args[1:]))
}

type serveFlags struct {
	addr, path, subnet, secretFile, webDir, logLevel, logFormat string
	tokenRooms, origins, ice                                    cli.List
	cfg                                                         peersignal.Config
	turn                                                        turnFlags
	tls                                                         tlsFlags
	nats                                                        natsFlags
}

func serveCmd(args []string) int {
	fs := flag.NewFlagSet("signal", flag.ContinueOnError)
	var f serveFlags
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), `Usage: signal [flags]
       signal token -room NAME [-gateway] [-ttl D] -secret-file F

Serves peerlan's signaling WebSocket, the page (at /), /healthz and /metrics
on one address (-addr), over plain HTTP or, with -tls-cert/-tls-key or
-acme-domain, over HTTPS (the page) and WSS (the WebSocket). Behind a reverse
proxy that ends TLS, leave both off (README, "Behind a reverse proxy").
The server only introduces peers; Ethernet frames never pass through it.
The page's files are served with ETags (revalidated on every load, sent
again only when changed) and, when the browser takes them, as the .br/.gz
variants that make build puts beside them.
With -turn-udp/-turn-tcp/-turn-tls it also runs the embedded TURN relay
(peerlan_turn_* metrics), used when peers cannot reach each other directly;
each welcome carries TURN REST credentials (username expiry:peer-id) for it
and for external turn: URLs in -ice (coturn with use-auth-secret and the
-turn-secret-file secret as static-auth-secret).
With -nats URL (an external NATS cluster) or -nats-embed (a NATS node in this
process, routed to the other instances' with -nats-routes) rooms span several
instances: peers may join through any of them and resume on any other. Every
instance must then share -secret-file (and -turn-secret-file, so that each
welcome may list another instance's relay after this one's), -subnet and
-max-peers (README, "Several servers").

Flags:
`)
		fs.PrintDefaults()
	}
	fs.StringVar(&f.addr, "addr", "127.0.0.1:8080", "`host:port` to listen on (0.0.0.0:8080 or :8080: every address)")
	fs.StringVar(&f.path, "path", "/signal", "URL `path` of the signaling WebSocket")
	fs.StringVar(&f.subnet, "subnet", peersignal.DefaultSubnet.String(), "IPv4 `prefix` of every room (/16 to /29); .1 is the gateway's")
	fs.StringVar(&f.secretFile, "secret-file", "", "`file` holding the secret that signs tokens (created with a random secret if missing);\nempty: a random secret per run, so tokens and resumes do not survive a restart\n(env PEERLAN_SECRET overrides); the instances of a cluster (-nats, -nats-embed) must share it")
	fs.Var(&f.tokenRooms, "token-rooms", "comma-separated room name `patterns` (path.Match, * = all) that need a join token")
	fs.Var(&f.origins, "origins", "comma-separated browser `origins` (https://host[:port]) allowed besides the server's own; * allows any")
	fs.Var(&f.ice, "ice", "comma-separated external STUN/TURN `URLs` handed to peers (stun:host:port, turn:host:port?transport=udp);\nturn: and turns: URLs get minted TURN REST credentials when -turn-secret-file is set")
	fs.StringVar(&f.webDir, "web-dir", "", "serve the page from this `dir` instead of the embedded copy (development)")
	fs.IntVar(&f.cfg.MaxMessageBytes, "max-message", 64<<10, "largest accepted signaling message in `bytes`")
	fs.IntVar(&f.cfg.MaxPeersPerRoom, "max-peers", 64, "peers per room (the subnet also bounds it)")
	fs.IntVar(&f.cfg.MaxRooms, "max-rooms", 10000, "rooms held at once")
	fs.IntVar(&f.cfg.MaxConnections, "max-conns", 10000, "open WebSocket connections")
	fs.Float64Var(&f.cfg.MessagesPerSecond, "rate", 50, "messages per second per connection (token bucket rate)")
	fs.IntVar(&f.cfg.Burst, "burst", 100, "token bucket size: messages a connection may send at once")
	fs.IntVar(&f.cfg.SendQueue, "send-queue", 64, "messages queued to a connection before it is dropped as a slow reader")
	fs.DurationVar(&f.cfg.KeepaliveInterval, "keepalive", 5*time.Second, "WebSocket ping `interval`")
	fs.DurationVar(&f.cfg.KeepaliveTimeout, "keepalive-timeout", 15*time.Second, "silence after which a peer is considered dead")
	fs.DurationVar(&f.cfg.ResumeGrace, "resume-grace", 10*time.Second, "how long a vanished peer keeps its id and address")
	fs.StringVar(&f.logLevel, "log-level", "info", "log `level`: debug, info, warn, error")
	fs.StringVar(&f.logFormat, "log-format", "text", "log `format`: text or json")
	f.turn.register(fs)
	f.tls.register(fs)
	f.nats.register(fs)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "signal: unexpected argument %q (see -h)\n", fs.Arg(0))
		return 2
	}
	log, err := cli.NewLogger(f.logLevel, f.logFormat)
	if err != nil {
		fmt.Fprintln(os.Stderr, "signal:", err)
		return 2
	}
	if f.nats.instance == "" {
		f.nats.instance = defaultInstance(f.addr)
	}
	if f.nats.enabled() {
		log = log.With("instance", f.nats.instance)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := serve(ctx, f, log, nil); err != nil {
		log.Error("signal: " + err.Error())
		return 1
	}
	return 0
}

// serve runs the server until ctx ends. onListen, when set, is told the
// listener's address once it accepts (tests listen on port 0).
func serve(ctx context.Context, f serveFlags, log *slog.Logger, onListen func(net.Addr)) error {
	ts, err := f.tls.setup(f.secretFile, log)
	if err != nil {
		return err
	}
	cfg := f.cfg
	cfg.Path = f.path
	cfg.Logger = log
	cfg.TokenRooms = f.tokenRooms
	cfg.AllowedOrigins = f.origins
	subnet, err := netip.ParsePrefix(f.subnet)
	if err != nil {
		return fmt.Errorf("-subnet: %w", err)
	}
	cfg.Subnet = subnet
	secret, err := loadSecret(f.secretFile, true)
	if err != nil {
		return err
	}
	if secret == nil {
		log.Warn("no -secret-file: using a random secret; tokens and resumes will not survive a restart")
	}
	cfg.Secret = secret
	reg := prometheus.NewRegistry()
	// The runtime's and the process's own series (go_goroutines,
	// process_resident_memory_bytes, ...): what an operator watches for leaks.
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	cfg.Registry = reg
	turnSrv, ice, err := setupTURN(f.turn, f.ice, log, reg)
	if err != nil {
		return err
	}
	if turnSrv != nil {
		defer turnSrv.Close()
	}
	if f.nats.enabled() {
		ns, err := f.nats.setup(log, turnURLs(f.turn, turnSrv), secret)
		if err != nil {
			return err
		}
		defer ns.close()
		cfg.Hub = ns.hub.Open
		if ice != nil && turnSrv != nil && f.turn.secretFile != "" {
			ice = withOtherRelay(ice, ns.hub.OtherRelay)
		}
		info := prometheus.NewGauge(prometheus.GaugeOpts{Namespace: "peerlan", Subsystem: "signal", Name: "instance_info",
			Help:        "1, labelled with this instance's name in its cluster.",
			ConstLabels: prometheus.Labels{"instance": ns.hub.Instance(), "cluster": f.nats.cluster}})
		info.Set(1)
		reg.MustRegister(info)
	}
	cfg.ICEServers = ice
	if ice != nil {
		// Fresh credentials well before the welcome's run out, so links
		// negotiated late in a long stay still reach the relay.
		cfg.ICERefresh = f.turn.ttl / 2
	}
	var static fs.FS = web.FS()
	if f.webDir != "" {
		static = os.DirFS(f.webDir)
	}
	cfg.Static = static

	srv, err := peersignal.New(cfg)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", f.addr)
	if err != nil {
		srv.Close()
		return fmt.Errorf("listen: %w", err)
	}
	hs := &http.Server{Handler: srv, ReadHeaderTimeout: 10 * time.Second, ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelDebug)}
	errc := make(chan error, 1)
	if ts != nil {
		// ServeTLS adds h2 and http/1.1 to the protocols; the WebSocket
		// stays on HTTP/1.1 (net/http leaves RFC 8441 off by default).
		hs.TLSConfig = ts.config
		go func() { errc <- hs.ServeTLS(ln, "", "") }()
	} else {
		go func() { errc <- hs.Serve(ln) }()
	}
	page, ws, all := pageURLs(ln.Addr(), ts)
	attrs := []any{"page", page + "/", "signal", ws + cfg.Path, "metrics", page + "/metrics", "subnet", subnet}
	if all {
		attrs = append(attrs, "listening", fmt.Sprintf("on every address, port %d", portOf(ln.Addr().String())))
	}
	if ts != nil && ts.acme != nil {
		attrs = append(attrs, "acme", strings.Join(ts.names, ","))
		if portOf(ln.Addr().String()) != 443 {
			log.Warn("-acme-domain: the CA validates on port 443 of each name; forward it to this listener", "addr", ln.Addr().String())
		}
	}
	log.Info("peerlan signaling server listening", attrs...)
	if onListen != nil {
		onListen(ln.Addr())
	}
	select {
	case err := <-errc:
		srv.Close()
		return err
	case <-ctx.Done():
	}
	log.Info("shutting down; peers are told to go away and resume elsewhere")
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = hs.Shutdown(sctx) // stops accepting; hijacked WebSockets are closed by srv.Close
	err = srv.Close()
	if turnSrv != nil {
		// Explicitly here (the deferred Close is then a no-op) so that a
		// failure to close is reported.
		err = errors.Join(err, turnSrv.Close())
	}
	return err
}

// defaultInstance names an instance after its host and port.
func defaultInstance(addr string) string {
	host, _ := os.Hostname()
	name := []byte(host)
	for i, c := range name {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			name[i] = '-'
		}
	}
	if len(name) == 0 {
		name = []byte("signal")
	}
	if len(name) > 32 {
		name = name[:32]
	}
	return fmt.Sprintf("%s-%d", name, portOf(addr))
}

// loadSecret returns the secret from PEERLAN_SECRET or file, creating the
// file with a random secret when create is set and it does not exist. An
// empty file name and no environment variable yield nil.
func loadSecret(file string, create bool) ([]byte, error) {
	if s := os.Getenv("PEERLAN_SECRET"); s != "" {
		return []byte(s), nil
	}
	return loadSecretFile(file, create)
}

// loadSecretFile is loadSecret without the environment variable.
func loadSecretFile(file string, create bool) ([]byte, error) {
	if file == "" {
		return nil, nil
	}
	b, err := os.ReadFile(file)
	if errors.Is(err, os.ErrNotExist) && create {
		var raw [32]byte
		if _, err := rand.Read(raw[:]); err != nil {
			return nil, err
		}
		if b, err = createSecretFile(file, []byte(hex.EncodeToString(raw[:])+"\n")); err != nil {
			return nil, fmt.Errorf("create secret file: %w", err)
		}
	} else if err != nil {
		return nil, fmt.Errorf("secret file: %w", err)
	}
	secret := []byte(strings.TrimSpace(string(b)))
	if len(secret) < 16 {
		return nil, fmt.Errorf("secret file %s: the secret must be at least 16 characters", file)
	}
	return secret, nil
}

// createSecretFile publishes b as file unless another process got there
// first, and returns the secret that file then holds. Instances of a cluster
// started at once on one secret file must not each keep their own secret: the
// content is written to a temporary file and hard-linked into place, which
// fails if file exists, so a reader never sees a partial secret either.
func createSecretFile(file string, b []byte) ([]byte, error) {
	tmp, err := os.CreateTemp(filepath.Dir(file), ".secret-*")
	if err != nil {
		return nil, err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return nil, err
	}
	if err := tmp.Close(); err != nil {
		return nil, err
	}
	if err := os.Link(tmp.Name(), file); errors.Is(err, os.ErrExist) {
		return os.ReadFile(file)
	} else if err != nil {
		return nil, err
	}
	return b, nil
}

func tokenCmd(args []string) int {
	fs := flag.NewFlagSet("signal token", flag.ContinueOnError)
	room := fs.String("room", "", "room `name` the token is for (required)")
	gateway := fs.Bool("gateway", false, "mint a gateway token (default: a join token)")
	ttl := fs.Duration("ttl", 24*time.Hour, "validity")
	secretFile := fs.String("secret-file", "", "`file` holding the server's secret (or env PEERLAN_SECRET)")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: signal token -room NAME [-gateway] [-ttl D] -secret-file F\n\nPrints a token signed with the server's secret.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if !proto.ValidRoomName(*room) {
		fmt.Fprintln(os.Stderr, "signal token: -room must name a room (letters, digits, '.', '_', '-')")
		return 2
	}
	if *ttl <= 0 {
		fmt.Fprintln(os.Stderr, "signal token: -ttl must be positive")
		return 2
	}
	secret, err := loadSecret(*secretFile, false)
	if err == nil && secret == nil {
		err = errors.New("give -secret-file (the same as the server's) or set PEERLAN_SECRET")
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "signal token:", err)
		return 1
	}
	signer, err := peersignal.NewSigner(secret)
	if err != nil {
		fmt.Fprintln(os.Stderr, "signal token:", err)
		return 1
	}
	kind := peersignal.TokenJoin
	if *gateway {
		kind = peersignal.TokenGateway
	}
	fmt.Println(signer.MintFor(kind, *room, *ttl, time.Now()))
	return 0
}
