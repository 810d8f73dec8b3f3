package main

import (
	"os/exec"
	"strings"
	"testing"
)

// TestDeps keeps heavy packages out of the browser build (DESIGN.md:
// gopacket and gVisor stay out of peer/ and wasm/), as tailscale's
// cmd/derper TestDeps does for its binary.
//
// The server's packages are banned too: the peer speaks to the signaling
// server through signal/signalclient and signal/proto, which link nothing of
// it (with the server's package the module was 13.98 MB raw and 3.38 MB
// gzip -9; without, 7.73 MB and 2.11 MB), and regexp, which the room-name
// check alone brought in (7.23 MB and 1.98 MB without). What stays, and why:
// net, crypto/tls and crypto/x509 come with pion (webrtc, ice, dtls, stun and
// turn share files, and types such as net.Conn and tls.Certificate, between
// their native and js builds) and are not ours to cut; net/url parses the
// signaling URL; encoding/json carries the protocol.
func TestDeps(t *testing.T) {
	cmd := exec.Command("go", "list", "-deps", ".")
	cmd.Env = append(cmd.Environ(), "GOOS=js", "GOARCH=wasm")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list -deps for js/wasm: %v", err)
	}
	// Each entry bans a package and those below it ("net/http" bans
	// net/http/httptrace, not net/httpfoo); one ending in "/" bans a prefix.
	banned := []string{
		"github.com/google/gopacket", "github.com/gopacket/", "gvisor.dev/", "github.com/songgao/water",
		// Server only: the signaling server, its TURN relay and what they link.
		"github.com/peerlan/peerlan/signal/relay", "github.com/prometheus/", "google.golang.org/protobuf",
		"github.com/gorilla/websocket", "net/http",
		// About 260 kB of wasm, for nothing a peer needs.
		"regexp",
	}
	for _, dep := range strings.Fields(string(out)) {
		if dep == "github.com/peerlan/peerlan/signal" { // its subpackages proto and signalclient are the client's
			t.Errorf("the wasm peer depends on the signaling server (%s)", dep)
		}
		for _, b := range banned {
			if dep == b || strings.HasPrefix(dep, strings.TrimSuffix(b, "/")+"/") {
				t.Errorf("the wasm peer depends on %s", dep)
			}
		}
	}
}
