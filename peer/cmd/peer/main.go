// Command peer attaches a Linux TAP device or a QEMU guest's socket network
// backend to a peerlan room: the host, a network namespace, QEMU/UML guests
// on a bridge, or one QEMU guest with no TAP at all become guests of the LAN,
// exchanging frames directly with browser tabs and other peers over WebRTC.
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
	"net/http/pprof"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/pion/webrtc/v4"

	"github.com/peerlan/peerlan/internal/cli"
	"github.com/peerlan/peerlan/internal/resumefile"
	"github.com/peerlan/peerlan/peer"
	"github.com/peerlan/peerlan/peer/qemuport"
	"github.com/peerlan/peerlan/peer/tap"
)

func main() { os.Exit(run(os.Args[1:])) }

// tokenEnv holds the join token when neither -token-file nor -token is given.
const tokenEnv = "PEERLAN_TOKEN"

type options struct {
	signal, room, token, relay         string
	tokenFile                          string
	tap                                tap.Config
	qemu                               string          // -qemu: a QEMU socket backend instead of the TAP
	qemuCfg                            qemuport.Config // -qemu parsed
	mtu, maxBuffered                   int
	iceInterfaces, ice                 cli.List
	iceLoopback, offload, largePackets bool
	udpPorts, statusAddr               string
	stateDir                           string
	pprof                              bool
	logLevel, logFormat                string
	statusEvery                        time.Duration
}

func run(args []string) int {
	fs := flag.NewFlagSet("peer", flag.ContinueOnError)
	var o options
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), `Usage: peer -room NAME [flags]

Attaches a TAP device to a peerlan room. Frames travel directly to the other
peers over WebRTC data channels; the signaling server only introduces them.
The TAP's host side gets its address by DHCP from this peer (e.g. udhcpc -i
peerlan0), or bridge it (-bridge) so that VMs on the bridge join the LAN.
Needs CAP_NET_ADMIN (root) for the TAP device. A room's join token comes
from -token-file, -token or the environment variable %s.

With -qemu the local port is a QEMU guest's network backend instead of a TAP
(no root, no TAP; not with -tap, -bridge or -netns). The peer listens on the
unix socket PATH (created 0600, removed on exit; a restarted QEMU reconnects),
or with connect: connects to QEMU's:
  -qemu unix:PATH (or stream:unix:PATH), for QEMU 7.2+
      -netdev stream,id=n0,server=off,addr.type=unix,addr.path=PATH
  -qemu connect:unix:PATH, QEMU listening (either side may restart):
      -netdev stream,id=n0,server=on,addr.type=unix,addr.path=PATH
  -qemu dgram:unix:PATH
      -netdev dgram,id=n0,local.type=unix,local.path=QEMU.sock,remote.type=unix,remote.path=PATH
with e.g. -device virtio-net-pci,netdev=n0. The guest gets its address by DHCP.

Flags:
`, tokenEnv)
		fs.PrintDefaults()
	}
	fs.StringVar(&o.signal, "signal", "ws://127.0.0.1:8080/signal", "signaling server `URL` (ws:// or wss://), or several comma-separated (instances of one cluster):\nthe session stays on one and fails over to the next when it goes away")
	fs.StringVar(&o.room, "room", "", "room `name` to join (required)")
	fs.StringVar(&o.tokenFile, "token-file", "", "`file` holding the room's join token, when the room needs one (not visible in ps)")
	fs.StringVar(&o.token, "token", "", "the room's join `token` (visible in ps; prefer -token-file or $"+tokenEnv+")")
	fs.StringVar(&o.relay, "relay", "all", "relay `policy`: all (direct first, TURN as fallback), relay (always TURN), direct (never TURN)")
	fs.StringVar(&o.tap.Name, "tap", "peerlan0", "TAP device `name`")
	fs.StringVar(&o.tap.Bridge, "bridge", "", "add the TAP to this existing Linux `bridge`")
	fs.StringVar(&o.tap.Netns, "netns", "", "move the TAP into this network `namespace` (as in ip netns)")
	fs.StringVar(&o.qemu, "qemu", "", "attach a QEMU guest instead of a TAP: `unix:PATH` (-netdev stream), connect:unix:PATH (stream, QEMU listening) or dgram:unix:PATH (-netdev dgram); see above")
	fs.IntVar(&o.mtu, "mtu", peer.DefaultGuestMTU, "interface MTU offered to the guest by DHCP (and set on the TAP)")
	fs.BoolVar(&o.offload, "offload", true, "TCP segmentation and checksum offload: the TAP hands over 64 KiB super-frames, and links to\nother native peers carry them as they are (browsers get segments); -offload=false for plain frames")
	fs.BoolVar(&o.largePackets, "large-packets", true, "links to other native peers send SCTP packets of up to 8,000 bytes where a probe finds the path\ncarries them (as IP fragments on Ethernet) instead of pion/webrtc's 1,200 (make bench: 1.8x the\nthroughput on one host, 1.1x across Ethernet); false: standard packets (links to browsers always are)")
	fs.IntVar(&o.maxBuffered, "max-buffered", peer.DefaultMaxBuffered, "per-link send buffer in `bytes`: above it the link waits for the buffer to drain (frames queue in the\nswitch, which drops its oldest when full), and drops a frame only after 100 ms without drain")
	fs.Var(&o.ice, "ice", "extra STUN/TURN `URLs` (comma-separated) besides the signaling server's")
	fs.Var(&o.iceInterfaces, "ice-interfaces", "only gather host candidates on these `interfaces` (comma-separated; lo allowed)")
	fs.BoolVar(&o.iceLoopback, "ice-loopback", false, "also gather loopback candidates (peers on one host)")
	fs.StringVar(&o.udpPorts, "udp-ports", "", "local UDP port `range` for WebRTC, as MIN-MAX (default: any)")
	fs.StringVar(&o.stateDir, "state-dir", "", "keep the room's resume token in this `dir`, so that a restarted peer (after a crash or kill -9)\ntakes its id and address back at once; one dir per peer process (default: none, a restart joins afresh)")
	fs.StringVar(&o.statusAddr, "status", "", "serve GET /status (JSON) on this `host:port` (loopback recommended)")
	fs.BoolVar(&o.pprof, "pprof", false, "also serve Go's profiler at /debug/pprof/ on the -status address")
	fs.DurationVar(&o.statusEvery, "status-every", 30*time.Second, "period of the status line in the logs (0 disables)")
	fs.StringVar(&o.logLevel, "log-level", "info", "log `level`: debug, info, warn, error")
	fs.StringVar(&o.logFormat, "log-format", "text", "log `format`: text or json")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "peer: unexpected argument %q (see -h)\n", fs.Arg(0))
		return 2
	}
	if o.qemu != "" {
		var clash []string
		fs.Visit(func(f *flag.Flag) {
			if f.Name == "tap" || f.Name == "bridge" || f.Name == "netns" {
				clash = append(clash, "-"+f.Name)
			}
		})
		if len(clash) > 0 {
			fmt.Fprintf(os.Stderr, "peer: -qemu replaces the TAP device: it cannot be used with %s\n", strings.Join(clash, ", "))
			return 2
		}
		var err error
		if o.qemuCfg, err = qemuport.ParseAddr(o.qemu); err != nil {
			fmt.Fprintln(os.Stderr, "peer: -qemu:", err)
			return 2
		}
	}
	if o.pprof && o.statusAddr == "" {
		fmt.Fprintln(os.Stderr, "peer: -pprof needs -status ADDR")
		return 2
	}
	if o.room == "" {
		fmt.Fprintln(os.Stderr, "peer: -room is required (see -h)")
		return 2
	}
	log, err := cli.NewLogger(o.logLevel, o.logFormat)
	if err != nil {
		fmt.Fprintln(os.Stderr, "peer:", err)
		return 2
	}
	cli.TuneGC()
	if err := serve(o, log); err != nil {
		log.Error("peer: " + err.Error())
		return 1
	}
	return 0
}

func serve(o options, log *slog.Logger) error {
	relay, err := peer.ParseRelayPolicy(o.relay)
	if err != nil {
		return err
	}
	token, err := cli.ReadToken("-token-file", o.tokenFile, "-token", o.token, tokenEnv, log)
	if err != nil {
		return err
	}
	tc := &peer.TransportConfig{Interfaces: o.iceInterfaces, IncludeLoopback: o.iceLoopback, StandardPackets: !o.largePackets}
	if o.udpPorts != "" {
		if tc.UDPPortMin, tc.UDPPortMax, err = cli.ParsePortRange("-udp-ports", "50000-50100", o.udpPorts); err != nil {
			return err
		}
	}
	var extra []webrtc.ICEServer
	if len(o.ice) > 0 {
		extra = []webrtc.ICEServer{{URLs: o.ice}}
	}
	dev, tapName, err := openLocal(o, log)
	if err != nil {
		return err
	}
	statusEvery := o.statusEvery
	if statusEvery == 0 {
		statusEvery = -1
	}
	var resume *resumefile.File
	if o.stateDir != "" {
		resume = resumefile.New(o.stateDir, o.room, log)
	}
	saved := resume.Load()
	mesh, err := peer.NewMesh(peer.MeshConfig{
		Signal: o.signal, Room: o.room, Token: token, Relay: relay, Resume: saved,
		Local: dev, GuestMTU: o.mtu, MaxBuffered: o.maxBuffered, ICEServers: extra, Transport: tc, DisableOffload: !o.offload,
		Logger: log, StatusEvery: statusEvery,
	})
	if err != nil {
		dev.Close()
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if o.statusAddr != "" {
		hs, err := serveStatus(o.statusAddr, o.pprof, mesh, dev, log)
		if err != nil {
			dev.Close()
			return err
		}
		defer hs.Close()
	}
	if resume != nil {
		// A restarted QEMU port is the same socket: the guest kept its
		// address and needs no new DHCP run.
		go followWelcomes(ctx, mesh, resume, saved != "" && o.tap.Bridge == "" && o.qemu == "", tapName, o.tap.Netns, log)
	}
	err = mesh.Run(ctx)
	log.Info("stopped")
	return err
}

// openLocal opens the local port: the TAP device (and returns the name the
// kernel gave it), or with -qemu the QEMU guest's socket.
func openLocal(o options, log *slog.Logger) (port peer.Port, tapName string, err error) {
	if o.qemu != "" {
		cfg := o.qemuCfg
		cfg.Logger = log
		p, err := qemuport.Listen(cfg)
		if err != nil {
			return nil, "", err
		}
		log.Info("QEMU port ready", "mode", cfg.Mode.String(), "socket", cfg.Path, "mtu", o.mtu)
		return p, "", nil
	}
	o.tap.MTU = o.mtu
	o.tap.Offload = o.offload
	dev, err := tap.Open(o.tap)
	if err != nil {
		return nil, "", err
	}
	log.Info("TAP device ready", "tap", dev.Name(), "bridge", o.tap.Bridge, "netns", o.tap.Netns, "mtu", o.mtu, "offload", o.offload)
	return dev, dev.Name(), nil
}

// followWelcomes, until ctx ends, saves the mesh's resume token whenever a
// welcome brought a new one, and after a restart with a saved
// identity (restarted) tells once the address is back that the TAP is a new
// device without it: the DHCP client that configured the old one has to run
// again (it usually exited with the old device).
func followWelcomes(ctx context.Context, mesh *peer.Mesh, f *resumefile.File, restarted bool, tapName, netns string, log *slog.Logger) {
	t := time.NewTicker(resumeSavePoll)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		f.Save(mesh.ResumeToken())
		if !restarted {
			continue
		}
		if st := mesh.Status(); st.IP.IsValid() {
			restarted = false
			cmd := "udhcpc -i " + tapName
			if netns != "" {
				cmd = "ip netns exec " + netns + " " + cmd
			}
			log.Warn("restarted with the saved identity: the TAP is a new device without an address; run its DHCP client again (e.g. "+cmd+") to get the same lease back",
				"tap", tapName, "ip", st.IP)
		}
	}
}

// resumeSavePoll is how soon after a welcome its resume token is on disk.
const resumeSavePoll = 250 * time.Millisecond

// status is GET /status: the mesh's status and, with -qemu, the QEMU
// port's counters (a guest that is not attached shows as tx_dropped).
type status struct {
	peer.MeshStatus
	QEMU *qemuport.Stats `json:"qemu,omitempty"`
}

func serveStatus(addr string, withPprof bool, mesh *peer.Mesh, local peer.Port, log *slog.Logger) (*http.Server, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("-status: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		st := status{MeshStatus: mesh.Status()}
		if q, ok := local.(qemuport.Port); ok {
			qs := q.Stats()
			st.QEMU = &qs
		}
		_ = json.NewEncoder(w).Encode(st)
	})
	if withPprof {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go hs.Serve(ln)
	log.Info("status endpoint", "url", "http://"+ln.Addr().String()+"/status")
	return hs, nil
}
