// Command wsrelay runs the benchmarks' WebSocket-relay baseline (package
// wsrelay): `wsrelay serve -addr HOST:PORT` is the relay, `wsrelay tap -url
// ws://HOST:PORT/ -tap NAME [-netns NS]` attaches a TAP device to it. Not a
// product: no authentication, no limits; for measuring peerlan against.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"

	"github.com/peerlan/peerlan/e2e/wsrelay"
	"github.com/peerlan/peerlan/peer/tap"
)

func main() { os.Exit(run(os.Args[1:])) }

func run(args []string) int {
	if len(args) == 0 || (args[0] != "serve" && args[0] != "tap") {
		fmt.Fprintln(os.Stderr, "usage: wsrelay serve -addr HOST:PORT | wsrelay tap -url ws://HOST:PORT/ -tap NAME [-netns NS] [-mtu N]")
		return 2
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	fs := flag.NewFlagSet("wsrelay "+args[0], flag.ContinueOnError)
	var err error
	switch args[0] {
	case "serve":
		addr := fs.String("addr", "127.0.0.1:8090", "listen `address`")
		if fs.Parse(args[1:]) != nil {
			return 2
		}
		err = serve(ctx, log, *addr)
	case "tap":
		url := fs.String("url", "ws://127.0.0.1:8090/", "relay `URL`")
		var cfg tap.Config
		fs.StringVar(&cfg.Name, "tap", "wsrelay0", "TAP device `name`")
		fs.StringVar(&cfg.Netns, "netns", "", "move the TAP into this network `namespace`")
		fs.IntVar(&cfg.MTU, "mtu", 1500, "TAP `MTU`")
		if fs.Parse(args[1:]) != nil {
			return 2
		}
		var dev *tap.Device
		if dev, err = tap.Open(cfg); err == nil {
			log.Info("tap attached", "tap", dev.Name(), "url", *url)
			err = wsrelay.Bridge(ctx, *url, dev)
			dev.Close()
		}
	}
	if err != nil {
		log.Error("wsrelay", "err", err)
		return 1
	}
	return 0
}

func serve(ctx context.Context, log *slog.Logger, addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	log.Info("relay listening", "addr", ln.Addr().String())
	srv := &http.Server{Handler: wsrelay.NewServer(log)}
	go func() { <-ctx.Done(); srv.Close() }()
	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
