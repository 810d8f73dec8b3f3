// Command gateway is a peerlan room's exit node: an ordinary peer of the
// room (DESIGN.md invariant 7) whose local port is a TAP device holding the
// room's .1 address. Guests' traffic to the internet leaves through the
// host's uplink, masqueraded, under an egress policy enforced in an nftables
// table of the gateway's own; DNS is forwarded on .1. Every host change is
// undone when it stops, and after a crash on the next start.
//
// Start-up order: check privileges and nft, create the TAP, join the room as
// its gateway (the signaling server's welcome carries the room subnet), then
// set up the host for that subnet (address .1/prefix on the TAP, forwarding,
// nftables), then serve DNS, the -forward proxies and /metrics. Shutdown
// runs in reverse: port forwards, DNS forwarder, host, then the mesh (which
// leaves the room and removes the TAP).
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	ossignal "os/signal"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/pion/webrtc/v4"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/peerlan/peerlan/gateway"
	"github.com/peerlan/peerlan/gateway/portfwd"
	"github.com/peerlan/peerlan/internal/cli"
	"github.com/peerlan/peerlan/internal/resumefile"
	"github.com/peerlan/peerlan/peer"
	"github.com/peerlan/peerlan/peer/tap"
	"github.com/peerlan/peerlan/signal/proto"
)

// tokenEnv holds the gateway token when neither -token-file nor -token is
// given: unlike a flag, the environment is not visible in ps.
const tokenEnv = "PEERLAN_GATEWAY_TOKEN"

func main() { os.Exit(run(os.Args[1:])) }

type options struct {
	signal, room, token, tokenFile, relay         string
	tap, uplink, stateDir, rate                   string
	mtu                                           int
	dns, allow, forward                           cli.List
	ice, iceInterfaces                            cli.List
	iceLoopback, offload, userspace, largePackets bool
	udpPorts, metricsAddr                         string
	statusEvery                                   time.Duration
	logLevel, logFormat                           string
}

// config is options parsed and validated.
type config struct {
	o         options
	token     string
	relay     peer.RelayPolicy
	transport *peer.TransportConfig
	extraICE  []webrtc.ICEServer
	host      gateway.HostConfig
	upstreams []netip.AddrPort
	forwards  []portfwd.Spec
}

func run(args []string) int {
	fs := flag.NewFlagSet("gateway", flag.ContinueOnError)
	var o options
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), `Usage: gateway -room NAME -token-file FILE [flags]

Joins a peerlan room as its gateway and routes the room to the internet
through this host: a TAP device gets the room's .1 address (the subnet comes
from the signaling server), the room is masqueraded out of the uplink by an
nftables table of the gateway's own, guests may not reach loopback, private,
CGNAT, link-local, multicast or cloud-metadata destinations (nor this host,
except DNS and ping on .1) unless -allow opens them, and DNS on .1 is
forwarded to the upstream resolvers. Everything is undone on SIGINT/SIGTERM,
and after a crash on the next start. Needs root (CAP_NET_ADMIN) and nft.
With -forward, tools on this host reach guests' ports through proxies.

With -userspace it needs none of that: a userspace TCP/IP stack takes .1 in
the room and relays each guest flow through an ordinary socket of this
process, under the same egress policy, rate limit and DNS forwarding; it is
slower than the kernel's NAT (see -userspace).

The gateway token comes from -token-file, -token or the environment
variable %s; mint one with
  signal token -room NAME -gateway -secret-file FILE

Flags:
`, tokenEnv)
		fs.PrintDefaults()
	}
	fs.StringVar(&o.signal, "signal", "ws://127.0.0.1:8080/signal", "signaling server `URL` (ws:// or wss://), or several comma-separated (instances of one cluster):\nthe session stays on one and fails over to the next when it goes away")
	fs.StringVar(&o.room, "room", "", "room `name` to serve (required)")
	fs.StringVar(&o.tokenFile, "token-file", "", "`file` holding the room's gateway token (recommended: not visible in ps)")
	fs.StringVar(&o.token, "token", "", "the room's gateway `token` (visible in ps; prefer -token-file or $"+tokenEnv+")")
	fs.StringVar(&o.relay, "relay", "all", "relay `policy`: all (direct first, TURN as fallback), relay (always TURN), direct (never TURN)")
	fs.StringVar(&o.tap, "tap", "peerlan-gw0", "TAP device `name` (gets the room's .1 address)")
	fs.IntVar(&o.mtu, "mtu", peer.DefaultGuestMTU, "MTU of the TAP device (with -userspace: of the stack); match the guests' (bin/peer -mtu)")
	fs.StringVar(&o.uplink, "uplink", "", "uplink `interface` to masquerade out of (default: the interface of the IPv4 default route)")
	fs.Var(&o.dns, "dns", "upstream DNS `resolvers` (comma-separated ADDR or ADDR:PORT; default: the nameservers of /etc/resolv.conf)")
	fs.Var(&o.allow, "allow", "comma-separated IPv4 `prefixes` guests may reach although the egress policy blocks them by default")
	fs.StringVar(&o.rate, "rate", "", "per-guest bandwidth `limit` in each direction, e.g. 20mbit, 5MB, 1MiB, 250000 (bytes/s); empty: no limit")
	fs.Var(&o.forward, "forward", "port `forwards` from this host to guests, as tcp:HOSTADDR=GUESTIP:PORT or udp:...; repeat the flag or\n"+
		"separate with commas. HOSTADDR is IP:PORT, or :PORT for every address of the host (reachable from its networks).\n"+
		"Guests see the connections come from .1. E.g. -forward tcp:127.0.0.1:8080=10.86.0.2:80,udp:127.0.0.1:5353=10.86.0.2:53")
	fs.StringVar(&o.stateDir, "state-dir", gateway.DefaultStateDir, "`dir` for the lock, the crash-recovery files and the room's resume token (a restarted gateway takes .1 back at once);\nwith -userspace only the resume token, default $XDG_RUNTIME_DIR/peerlan")
	fs.StringVar(&o.metricsAddr, "metrics", "", "serve /metrics (Prometheus), /status (JSON) and /healthz on this `host:port` (loopback recommended)")
	fs.DurationVar(&o.statusEvery, "status-every", 30*time.Second, "period of the status lines in the logs (0 disables)")
	fs.Var(&o.ice, "ice", "extra STUN/TURN `URLs` (comma-separated) besides the signaling server's")
	fs.Var(&o.iceInterfaces, "ice-interfaces", "only gather host candidates on these `interfaces` (comma-separated; the TAP is always left out)")
	fs.BoolVar(&o.iceLoopback, "ice-loopback", false, "also gather loopback candidates (peers on one host)")
	fs.BoolVar(&o.offload, "offload", true, "TCP segmentation and checksum offload on the TAP: 64 KiB super-frames to and from the host's\nstack, carried as they are to native peers that take them (browsers get segments); -offload=false for plain frames")
	fs.BoolVar(&o.largePackets, "large-packets", true, "links to other native peers send SCTP packets of up to 8,000 bytes where a probe finds the path\ncarries them (as IP fragments on Ethernet) instead of pion/webrtc's 1,200 (make bench: 1.8x the\nthroughput on one host, 1.1x across Ethernet); false: standard packets (links to browsers always are)")
	fs.BoolVar(&o.userspace, "userspace", false, "no root, TAP or nftables: guests' TCP/UDP ends in a userspace stack (gVisor) and leaves through\nthis process's sockets; -tap, -uplink and -offload do not apply; about as fast as kernel NAT\n(make bench: BenchmarkGatewayThroughput); no ping beyond .1, IPv4 TCP/UDP only")
	fs.StringVar(&o.udpPorts, "udp-ports", "", "local UDP port `range` for WebRTC, as MIN-MAX (default: any)")
	fs.StringVar(&o.logLevel, "log-level", "info", "log `level`: debug, info, warn, error")
	fs.StringVar(&o.logFormat, "log-format", "text", "log `format`: text or json")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "gateway: unexpected argument %q (see -h)\n", fs.Arg(0))
		return 2
	}
	log, err := cli.NewLogger(o.logLevel, o.logFormat)
	if err != nil {
		fmt.Fprintln(os.Stderr, "gateway:", err)
		return 2
	}
	cli.TuneGC()
	if o.userspace {
		if err := userspaceFlags(fs, &o); err != nil {
			fmt.Fprintln(os.Stderr, "gateway:", err, "(see -h)")
			return 2
		}
	}
	cfg, err := parse(o, log)
	if err != nil {
		fmt.Fprintln(os.Stderr, "gateway:", err, "(see -h)")
		return 2
	}
	run := serve
	if o.userspace {
		run = serveUserspace
	}
	if err := run(cfg, log); err != nil {
		log.Error("gateway: " + err.Error())
		return 1
	}
	return 0
}

// parse validates the flags; it touches nothing but the token file.
func parse(o options, log *slog.Logger) (*config, error) {
	c := &config{o: o}
	if o.room == "" {
		return nil, errors.New("-room is required")
	}
	if !proto.ValidRoomName(o.room) {
		return nil, fmt.Errorf("-room %q: letters, digits, '.', '_' and '-' only", o.room)
	}
	tok, err := readToken(o, log)
	if err != nil {
		return nil, err
	}
	c.token = tok
	if c.relay, err = peer.ParseRelayPolicy(o.relay); err != nil {
		return nil, err
	}
	if !tap.ValidName(o.tap) {
		return nil, fmt.Errorf("-tap %q: %w", o.tap, tap.ErrBadName)
	}
	c.transport = &peer.TransportConfig{Interfaces: o.iceInterfaces, IncludeLoopback: o.iceLoopback, StandardPackets: !o.largePackets}
	if o.udpPorts != "" {
		var err error
		if c.transport.UDPPortMin, c.transport.UDPPortMax, err = cli.ParsePortRange("-udp-ports", "50000-50100", o.udpPorts); err != nil {
			return nil, err
		}
	}
	// The TAP carries the room: candidates on it would route the mesh
	// through itself.
	allowed, tapName := slices.Clone(o.iceInterfaces), o.tap
	c.transport.Tune = func(se *webrtc.SettingEngine) {
		se.SetInterfaceFilter(func(name string) bool {
			return name != tapName && (len(allowed) == 0 || slices.Contains(allowed, name))
		})
	}
	if len(o.ice) > 0 {
		c.extraICE = []webrtc.ICEServer{{URLs: o.ice}}
	}
	for _, s := range o.dns {
		ap, err := parseUpstream(s)
		if err != nil {
			return nil, err
		}
		c.upstreams = append(c.upstreams, ap)
	}
	c.host = gateway.HostConfig{LAN: o.tap, Uplink: o.uplink, StateDir: o.stateDir, Logger: log}
	for _, s := range o.allow {
		p, err := parsePrefix(s)
		if err != nil {
			return nil, fmt.Errorf("-allow: %w", err)
		}
		c.host.Allow = append(c.host.Allow, p)
	}
	if c.host.GuestRateLimit, err = parseRate(o.rate); err != nil {
		return nil, err
	}
	if o.metricsAddr != "" {
		if _, _, err := net.SplitHostPort(o.metricsAddr); err != nil {
			return nil, fmt.Errorf("-metrics %q: want host:port", o.metricsAddr)
		}
	}
	if o.mtu < 576 || o.mtu > 1500 {
		return nil, fmt.Errorf("-mtu %d: want 576 to 1500", o.mtu)
	}
	for _, s := range o.forward {
		sp, err := portfwd.ParseSpec(s)
		if err != nil {
			return nil, fmt.Errorf("-forward: %w", err)
		}
		c.forwards = append(c.forwards, sp)
	}
	if len(c.forwards) > portfwd.MaxSpecs {
		return nil, fmt.Errorf("-forward: %d forwards, at most %d", len(c.forwards), portfwd.MaxSpecs)
	}
	return c, nil
}

// readToken picks the gateway token: -token-file, then -token, then the
// environment; one is required.
func readToken(o options, log *slog.Logger) (string, error) {
	t, err := cli.ReadToken("-token-file", o.tokenFile, "-token", o.token, tokenEnv, log)
	if err == nil && t == "" {
		err = fmt.Errorf("a gateway token is required: -token-file, $%s or -token (mint one with `signal token -room NAME -gateway`)", tokenEnv)
	}
	return t, err
}

func parseUpstream(s string) (netip.AddrPort, error) {
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return ap, nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("-dns %q: want ADDR or ADDR:PORT", s)
	}
	return netip.AddrPortFrom(a, 53), nil
}

func parsePrefix(s string) (netip.Prefix, error) {
	if p, err := netip.ParsePrefix(s); err == nil {
		return p, nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%q is neither a prefix nor an address", s)
	}
	return netip.PrefixFrom(a, a.BitLen()), nil
}

var rateRE = regexp.MustCompile(`^([0-9]+(?:\.[0-9]+)?)\s*([a-zA-Z]*)(?:/s)?$`)

// rateUnits maps a -rate unit (lower case) to bytes per second.
var rateUnits = map[string]float64{
	"": 1, "b": 1, "kb": 1e3, "mb": 1e6, "gb": 1e9, "kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30,
	"bit": 1.0 / 8, "kbit": 1e3 / 8, "mbit": 1e6 / 8, "gbit": 1e9 / 8,
}

// parseRate parses a bandwidth in bytes/s: a number with an optional unit
// (B, kB, MB, GB, KiB, MiB, GiB, bit, kbit, mbit, gbit; "/s" optional).
func parseRate(s string) (uint64, error) {
	if s == "" || s == "0" {
		return 0, nil
	}
	m := rateRE.FindStringSubmatch(strings.TrimSpace(s))
	if m == nil {
		return 0, fmt.Errorf("-rate %q: want a number with a unit, e.g. 20mbit or 5MB", s)
	}
	unit := strings.ToLower(m[2])
	if unit == "b" && m[2] == "b" {
		return 0, fmt.Errorf("-rate %q: say bit or B", s)
	}
	mult, ok := rateUnits[unit]
	if !ok {
		return 0, fmt.Errorf("-rate %q: unknown unit %q (B, kB, MB, GB, KiB, MiB, GiB, kbit, mbit, gbit)", s, m[2])
	}
	v, _ := strconv.ParseFloat(m[1], 64)
	r := uint64(v * mult)
	if r < gateway.MinGuestRateLimit {
		return 0, fmt.Errorf("-rate %q is %d bytes/s, below the minimum of %d", s, r, gateway.MinGuestRateLimit)
	}
	return r, nil
}

// joinPoll is how often the mesh status is read while waiting for the
// signaling server's welcome.
const joinPoll = 50 * time.Millisecond

func serve(c *config, log *slog.Logger) error {
	if err := gateway.CheckHost(c.host); err != nil {
		return err
	}
	ctx, stop := ossignal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	var ln net.Listener
	if c.o.metricsAddr != "" {
		var err error
		if ln, err = net.Listen("tcp", c.o.metricsAddr); err != nil {
			return fmt.Errorf("-metrics: %w", err)
		}
		defer ln.Close()
	}

	dev, err := tap.Open(tap.Config{Name: c.o.tap, MTU: c.o.mtu, Offload: c.o.offload})
	if err != nil {
		return err
	}
	log.Info("TAP device ready", "tap", dev.Name(), "mtu", c.o.mtu, "offload", c.o.offload)
	statusEvery := c.o.statusEvery
	if statusEvery == 0 {
		statusEvery = -1
	}
	resume := resumefile.New(c.o.stateDir, c.o.room, log)
	mesh, err := peer.NewMesh(peer.MeshConfig{
		Signal: c.o.signal, Room: c.o.room, Token: c.token, Role: proto.RoleGateway, Relay: c.relay, Resume: resume.Load(),
		Local: dev, DisableDHCP: true, GuestMTU: c.o.mtu, ICEServers: c.extraICE, Transport: c.transport,
		DisableOffload: !c.o.offload, Logger: log, StatusEvery: statusEvery,
	})
	if err != nil {
		dev.Close()
		return err
	}
	// The mesh outlives ctx: it is stopped last, after the host is restored.
	meshCtx, stopMesh := context.WithCancel(context.Background())
	meshDone := make(chan error, 1)
	go func() { meshDone <- mesh.Run(meshCtx) }()
	stopMeshWait := func() error {
		stopMesh()
		return <-meshDone // the mesh has left the room and closed the TAP
	}

	subnet, err := waitJoined(ctx, mesh, meshDone, log)
	if err != nil || ctx.Err() != nil {
		return errors.Join(err, stopMeshWait())
	}
	if err := checkForwards(c.forwards, subnet); err != nil {
		return errors.Join(err, stopMeshWait())
	}

	hc := c.host
	hc.Subnet = subnet
	host, err := gateway.SetupHost(ctx, hc)
	if err != nil {
		return errors.Join(err, stopMeshWait())
	}
	fwd, err := gateway.NewDNSForwarder(ctx, gateway.DNSConfig{
		Listen: netip.AddrPortFrom(host.GatewayAddr(), 53), Interface: host.LAN(), Upstreams: c.upstreams, Logger: log,
	})
	if err != nil {
		return errors.Join(err, host.Close(), stopMeshWait())
	}
	var forwards *portfwd.Forwarder // started once the metrics registry exists
	teardown := func() error {
		var errs []error
		if forwards != nil {
			forwards.Close() // first: no new connection reaches a guest while the rest goes
		}
		if err := fwd.Close(); err != nil {
			errs = append(errs, fmt.Errorf("closing the DNS forwarder: %w", err))
		}
		if err := host.Close(); err != nil {
			errs = append(errs, fmt.Errorf("restoring the host (state kept for the next start): %w", err))
		}
		if err := stopMeshWait(); err != nil {
			errs = append(errs, err)
		}
		return errors.Join(errs...)
	}

	reg := prometheus.NewRegistry()
	metrics, err := gateway.NewMetrics(reg, host, fwd)
	if err == nil {
		err = registerMeshMetrics(reg, mesh)
	}
	if err == nil {
		var d net.Dialer
		forwards, err = startForwards(c.forwards, d.DialContext, reg, log)
	}
	if err != nil {
		return errors.Join(err, teardown())
	}
	if ln != nil {
		hs := serveHTTP(ln, reg, mesh, host, fwd, log)
		defer hs.Close()
	}
	log.Info("gateway ready", "room", c.o.room, "subnet", host.Subnet(), "address", host.GatewayAddr(),
		"tap", host.LAN(), "uplink", host.Uplink(), "table", "inet "+host.Table(), "dns", fwd.Addr(),
		"upstreams", fwd.Upstreams(), "allow", c.host.Allow, "rate_bytes_per_s", c.host.GuestRateLimit)

	runErr := watch(ctx, mesh, meshDone, host, metrics, resume, c.o.statusEvery, log)
	if errors.Is(runErr, errMeshStopped) {
		runErr = nil // teardown returns the mesh's own error
	}
	log.Info("stopping: closing the port forwards and the DNS forwarder, restoring the host, leaving the room")
	err = errors.Join(runErr, teardown())
	if err == nil {
		log.Info("stopped; host restored")
	}
	return err
}

// checkForwards checks each -forward's guest against the room subnet, which
// is known only once the gateway has joined.
func checkForwards(specs []portfwd.Spec, subnet netip.Prefix) error {
	for _, sp := range specs {
		if err := sp.CheckSubnet(subnet); err != nil {
			return fmt.Errorf("-forward: %w", err)
		}
	}
	return nil
}

// startForwards starts the -forward proxies (nil without any). Guests are
// dialed with dial: in kernel mode through the host's own stack, which
// routes the room subnet through the TAP holding .1; with -userspace
// through the userspace stack.
func startForwards(specs []portfwd.Spec, dial portfwd.DialFunc, reg prometheus.Registerer, log *slog.Logger) (*portfwd.Forwarder, error) {
	if len(specs) == 0 {
		return nil, nil
	}
	for _, sp := range specs {
		if sp.AllAddresses() {
			log.Warn("forward listens on every address of the host: whoever reaches this host reaches the guest",
				"forward", sp.String())
		}
	}
	f, err := portfwd.New(specs, dial, portfwd.Config{Logger: log, Registerer: reg})
	if err != nil {
		return nil, err
	}
	if err := f.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("-forward: %w", err)
	}
	return f, nil
}

// waitJoined waits for the signaling server's welcome and returns the room
// subnet. It returns early when ctx ends (nil error) or when the server
// refuses the gateway for good (a bad token: the error names the server's
// code). A taken gateway role or an unreachable server are retried by the
// mesh with backoff meanwhile.
func waitJoined(ctx context.Context, mesh *peer.Mesh, meshDone chan error, log *slog.Logger) (netip.Prefix, error) {
	t := time.NewTicker(joinPoll)
	defer t.Stop()
	hint := time.After(10 * time.Second)
	for {
		select {
		case <-ctx.Done():
			return netip.Prefix{}, nil
		case err := <-meshDone:
			meshDone <- err
			var se *proto.Error
			if errors.As(err, &se) {
				return netip.Prefix{}, fmt.Errorf("the signaling server refused us as the room's gateway: %s: %s", se.Code, se.Message)
			}
			if err == nil {
				err = errors.New("mesh stopped before joining")
			}
			return netip.Prefix{}, err
		case <-hint:
			st := mesh.Status()
			log.Warn("not joined yet; still trying", "signal", st.Signal)
		case <-t.C:
			st := mesh.Status()
			if !st.IP.IsValid() || !st.Prefix.IsValid() {
				continue
			}
			subnet := st.Prefix.Masked()
			if st.Role != proto.RoleGateway || st.IP != st.Gateway || st.IP != subnet.Addr().Next() {
				return netip.Prefix{}, fmt.Errorf("the signaling server gave us %v in %v with gateway %v; want the subnet's first address",
					st.IP, st.Prefix, st.Gateway)
			}
			log.Info("joined room as its gateway", "id", st.ID, "subnet", subnet, "address", st.IP)
			return subnet, nil
		}
	}
}

var errMeshStopped = errors.New("mesh stopped")

// watch runs until ctx ends (nil), the mesh stops (errMeshStopped; its error
// stays in meshDone), or the room's subnet changes under us (the server
// restarted with another -subnet; the host is set up for the old one). It
// logs the status line, announces .1 to newly linked peers and keeps the
// saved resume token current.
func watch(ctx context.Context, mesh *peer.Mesh, meshDone chan error, host lanGateway, m statusLiner,
	resume *resumefile.File, every time.Duration, log *slog.Logger) error {
	check := time.NewTicker(announcePoll)
	defer check.Stop()
	announced := map[proto.PeerID]bool{} // peers whose current link heard our gratuitous ARP
	var status <-chan time.Time
	if every > 0 {
		t := time.NewTicker(every)
		defer t.Stop()
		status = t.C
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-meshDone:
			if err == nil {
				err = errors.New("the mesh stopped unexpectedly")
			}
			meshDone <- err // for teardown
			return errMeshStopped
		case <-check.C:
			st := mesh.Status()
			if p := st.Prefix; p.IsValid() && p.Masked() != host.Subnet() {
				return fmt.Errorf("the room's subnet changed from %v to %v (signaling server restarted with another -subnet); restart the gateway",
					host.Subnet(), p)
			}
			announceToNewLinks(st, announced, host, log)
			resume.Save(mesh.ResumeToken()) // each welcome brings a fresh one
		case <-status:
			sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			open, peers := openLinks(mesh.Status())
			log.Info("gateway status", "peers", peers, "open", open, "traffic", m.Status(sctx))
			cancel()
		}
	}
}

// announcer is the gateway's .1: a gateway.Host or a userspace.Gateway.
type announcer interface {
	Announce() error
	GatewayAddr() netip.Addr
}

// lanGateway is what watch needs of the gateway's side of the room.
type lanGateway interface {
	announcer
	Subnet() netip.Prefix
}

// statusLiner renders the traffic part of the status line (gateway.Metrics).
type statusLiner interface {
	Status(ctx context.Context) string
}

// announcePoll is how often watch looks at the mesh: for newly opened links
// and a changed subnet.
const announcePoll = 250 * time.Millisecond

// announceToNewLinks sends a gratuitous ARP for .1 when a link has opened
// since the last call, so that a guest that knew a previous gateway (another
// TAP, another MAC address) switches to ours at once. announced holds the
// peers with an open link that were covered; it is updated.
func announceToNewLinks(st peer.MeshStatus, announced map[proto.PeerID]bool, host announcer, log *slog.Logger) {
	fresh := false
	open := make(map[proto.PeerID]bool, len(st.Peers))
	for _, p := range st.Peers {
		if p.State == "open" {
			open[p.ID] = true
			fresh = fresh || !announced[p.ID]
		}
	}
	for id := range announced {
		if !open[id] {
			delete(announced, id) // a link that reopens is announced to again
		}
	}
	if !fresh {
		return
	}
	if err := host.Announce(); err != nil {
		log.Warn("announcing the gateway's address", "err", err)
		return
	}
	for id := range open {
		announced[id] = true
	}
	log.Debug("sent a gratuitous ARP", "address", host.GatewayAddr(), "open_links", len(open))
}

func openLinks(st peer.MeshStatus) (open, all int) {
	for _, p := range st.Peers {
		if p.State == "open" {
			open++
		}
	}
	return open, len(st.Peers)
}

// registerMeshMetrics adds the mesh's figures under peerlan_gateway_ names.
func registerMeshMetrics(reg prometheus.Registerer, mesh *peer.Mesh) error {
	peers := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "peerlan_gateway_peers",
		Help: "Peers of the room the gateway has an open link to.",
	}, func() float64 { open, _ := openLinks(mesh.Status()); return float64(open) })
	for _, c := range []prometheus.Collector{peers, collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{})} {
		if err := reg.Register(c); err != nil {
			return fmt.Errorf("registering metrics: %w", err)
		}
	}
	return nil
}

// gatewayStatus is the JSON of GET /status.
type gatewayStatus struct {
	Mesh      peer.MeshStatus  `json:"mesh"`
	Subnet    netip.Prefix     `json:"subnet"`
	Address   netip.Addr       `json:"address"`
	TAP       string           `json:"tap"`
	Uplink    string           `json:"uplink"`
	Table     string           `json:"table"`
	DNS       netip.AddrPort   `json:"dns"`
	Upstreams []netip.AddrPort `json:"upstreams"`
}

func serveHTTP(ln net.Listener, reg *prometheus.Registry, mesh *peer.Mesh, host *gateway.Host, fwd *gateway.DNSForwarder, log *slog.Logger) *http.Server {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(gatewayStatus{
			Mesh: mesh.Status(), Subnet: host.Subnet(), Address: host.GatewayAddr(), TAP: host.LAN(),
			Uplink: host.Uplink(), Table: "inet " + host.Table(), DNS: fwd.Addr(), Upstreams: fwd.Upstreams(),
		})
	})
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go hs.Serve(ln)
	log.Info("metrics endpoint", "url", "http://"+ln.Addr().String()+"/metrics")
	return hs
}
