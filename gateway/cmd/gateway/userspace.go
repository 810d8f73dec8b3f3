package main

// The -userspace code path: the room's .1 is a userspace stack
// (gateway/userspace) instead of a TAP with the host's routing and
// nftables, so no privilege is needed and nothing on the host changes.

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
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/peerlan/peerlan/gateway"
	"github.com/peerlan/peerlan/gateway/portfwd"
	"github.com/peerlan/peerlan/gateway/userspace"
	"github.com/peerlan/peerlan/internal/resumefile"
	"github.com/peerlan/peerlan/peer"
	"github.com/peerlan/peerlan/peer/ether"
	"github.com/peerlan/peerlan/signal/proto"
)

// kernelOnlyFlags configure the host's TAP, routing or NAT, which
// -userspace has none of; setting one with it is refused.
var kernelOnlyFlags = []string{"tap", "uplink", "offload"}

// userspaceFlags refuses the kernel-only flags and picks a state directory
// an unprivileged user can write when -state-dir is not given (it holds only
// the resume token: there is no host change to undo).
func userspaceFlags(fs *flag.FlagSet, o *options) error {
	var bad []string
	stateDir := false
	fs.Visit(func(f *flag.Flag) {
		if slices.Contains(kernelOnlyFlags, f.Name) {
			bad = append(bad, "-"+f.Name)
		}
		stateDir = stateDir || f.Name == "state-dir"
	})
	if len(bad) > 0 {
		return fmt.Errorf("%s: no TAP device or host routing with -userspace", strings.Join(bad, ", "))
	}
	o.offload = false
	if !stateDir {
		o.stateDir = userStateDir()
	}
	return nil
}

// userStateDir is $XDG_RUNTIME_DIR/peerlan, else the user's cache directory.
func userStateDir() string {
	if d := os.Getenv("XDG_RUNTIME_DIR"); d != "" {
		return filepath.Join(d, "peerlan")
	}
	if d, err := os.UserCacheDir(); err == nil {
		return filepath.Join(d, "peerlan")
	}
	return filepath.Join(os.TempDir(), fmt.Sprintf("peerlan-%d", os.Getuid()))
}

// serveUserspace is serve for -userspace: join with a port that drops
// frames until the room's subnet is known (it comes in the welcome), then
// build the stack for that subnet behind it; -forward dials guests through
// the stack. Shutdown: port forwards, the stack (DNS and every relayed
// flow), then the mesh.
func serveUserspace(c *config, log *slog.Logger) error {
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
	statusEvery := c.o.statusEvery
	if statusEvery == 0 {
		statusEvery = -1
	}
	port := newLatePort()
	resume := resumefile.New(c.o.stateDir, c.o.room, log)
	mesh, err := peer.NewMesh(peer.MeshConfig{
		Signal: c.o.signal, Room: c.o.room, Token: c.token, Role: proto.RoleGateway, Relay: c.relay, Resume: resume.Load(),
		Local: port, DisableDHCP: true, GuestMTU: c.o.mtu, ICEServers: c.extraICE, Transport: c.transport,
		Logger: log, StatusEvery: statusEvery,
	})
	if err != nil {
		port.Close()
		return err
	}
	meshCtx, stopMesh := context.WithCancel(context.Background())
	meshDone := make(chan error, 1)
	go func() { meshDone <- mesh.Run(meshCtx) }()
	stopMeshWait := func() error {
		stopMesh()
		return <-meshDone // the mesh has left the room and closed the port
	}

	subnet, err := waitJoined(ctx, mesh, meshDone, log)
	if err != nil || ctx.Err() != nil {
		return errors.Join(err, stopMeshWait())
	}
	if err := checkForwards(c.forwards, subnet); err != nil {
		return errors.Join(err, stopMeshWait())
	}
	g, err := userspace.New(ctx, userspace.Config{
		Subnet: subnet, MTU: c.o.mtu, Allow: c.host.Allow, RateLimit: c.host.GuestRateLimit, Offload: true,
		DNS: gateway.DNSConfig{Upstreams: c.upstreams, Logger: log}, Logger: log,
	})
	if err != nil {
		return errors.Join(err, stopMeshWait())
	}
	port.attach(g)
	var forwards *portfwd.Forwarder // started once the metrics registry exists
	teardown := func() error {
		var errs []error
		if forwards != nil {
			forwards.Close() // first: no new connection reaches a guest while the rest goes
		}
		if err := g.Close(); err != nil {
			errs = append(errs, fmt.Errorf("closing the userspace stack: %w", err))
		}
		if err := stopMeshWait(); err != nil {
			errs = append(errs, err)
		}
		return errors.Join(errs...)
	}

	reg := prometheus.NewRegistry()
	_, err = userspace.NewCollector(reg, g)
	if err == nil {
		err = registerMeshMetrics(reg, mesh)
	}
	if err == nil {
		forwards, err = startForwards(c.forwards, g.DialGuest, reg, log)
	}
	if err != nil {
		return errors.Join(err, teardown())
	}
	if ln != nil {
		hs := serveUserspaceHTTP(ln, reg, mesh, g, log)
		defer hs.Close()
	}
	dns := g.DNS()
	log.Info("gateway ready", "room", c.o.room, "subnet", g.Subnet(), "address", g.GatewayAddr(), "mode", "userspace",
		"mac", g.MAC(), "dns", dns.Addr(), "upstreams", dns.Upstreams(), "allow", c.host.Allow,
		"rate_bytes_per_s", c.host.GuestRateLimit)

	runErr := watch(ctx, mesh, meshDone, g, userspaceStatus{g}, resume, c.o.statusEvery, log)
	if errors.Is(runErr, errMeshStopped) {
		runErr = nil // teardown returns the mesh's own error
	}
	log.Info("stopping: closing the port forwards and the userspace stack, leaving the room")
	err = errors.Join(runErr, teardown())
	if err == nil {
		log.Info("stopped")
	}
	return err
}

// userspaceStatus renders the stack's counters for the status line.
type userspaceStatus struct{ g *userspace.Gateway }

func (s userspaceStatus) Status(context.Context) string { return s.g.Stats().String() }

// latePort is the mesh's local port before the stack exists: frames from
// the room are dropped and Read waits, until attach hands it the stack.
type latePort struct {
	g         atomic.Pointer[userspace.Gateway]
	ready     chan struct{}
	closed    chan struct{}
	closeOnce sync.Once
}

func newLatePort() *latePort {
	return &latePort{ready: make(chan struct{}), closed: make(chan struct{})}
}

// attach makes g the port's frames' source and sink; called once.
func (p *latePort) attach(g *userspace.Gateway) {
	p.g.Store(g)
	close(p.ready)
}

func (p *latePort) Read(b []byte) (int, error) {
	n, _, err := p.readOffload(b, false)
	return n, err
}

// Offloads is true: the switch asks once, before the stack exists, and the
// stack is always built with Config.Offload.
func (p *latePort) Offloads() bool { return true }

func (p *latePort) ReadOffload(b []byte) (int, ether.Offload, error) { return p.readOffload(b, true) }

func (p *latePort) readOffload(b []byte, offload bool) (int, ether.Offload, error) {
	select {
	case <-p.ready:
		if offload {
			return p.g.Load().ReadOffload(b)
		}
		n, err := p.g.Load().Read(b)
		return n, ether.Offload{}, err
	case <-p.closed:
		return 0, ether.Offload{}, net.ErrClosed
	}
}

func (p *latePort) Write(b []byte) (int, error) { return p.WriteOffload(b, ether.Offload{}) }

func (p *latePort) WriteOffload(b []byte, o ether.Offload) (int, error) {
	if g := p.g.Load(); g != nil {
		return g.WriteOffload(b, o)
	}
	select {
	case <-p.closed:
		return 0, net.ErrClosed
	default:
		return len(b), nil // no stack yet: nothing to deliver to
	}
}

var _ peer.OffloadPort = (*latePort)(nil)

func (p *latePort) Close() error {
	var err error
	p.closeOnce.Do(func() {
		close(p.closed)
		if g := p.g.Load(); g != nil {
			err = g.Close()
		}
	})
	return err
}

// userspaceGatewayStatus is the JSON of GET /status with -userspace.
type userspaceGatewayStatus struct {
	Mesh      peer.MeshStatus  `json:"mesh"`
	Mode      string           `json:"mode"`
	Subnet    netip.Prefix     `json:"subnet"`
	Address   netip.Addr       `json:"address"`
	MAC       string           `json:"mac"`
	DNS       netip.AddrPort   `json:"dns"`
	Upstreams []netip.AddrPort `json:"upstreams"`
	Traffic   userspace.Stats  `json:"traffic"`
}

func serveUserspaceHTTP(ln net.Listener, reg *prometheus.Registry, mesh *peer.Mesh, g *userspace.Gateway, log *slog.Logger) *http.Server {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(userspaceGatewayStatus{
			Mesh: mesh.Status(), Mode: "userspace", Subnet: g.Subnet(), Address: g.GatewayAddr(), MAC: g.MAC().String(),
			DNS: g.DNS().Addr(), Upstreams: g.DNS().Upstreams(), Traffic: g.Stats(),
		})
	})
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go hs.Serve(ln)
	log.Info("metrics endpoint", "url", "http://"+ln.Addr().String()+"/metrics")
	return hs
}
