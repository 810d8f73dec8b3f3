package main

import (
	"os/exec"
	"strings"
	"testing"
)

// TestDeps keeps heavy packages out of the browser build (DESIGN.md:
// gopacket and gVisor stay out of peer/ and wasm/), as tailscale's
// cmd/derper TestDeps does for its binary.
func TestDeps(t *testing.T) {
	cmd := exec.Command("go", "list", "-deps", ".")
	cmd.Env = append(cmd.Environ(), "GOOS=js", "GOARCH=wasm")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list -deps for js/wasm: %v", err)
	}
	banned := []string{"github.com/google/gopacket", "github.com/gopacket/", "gvisor.dev/", "github.com/songgao/water"}
	for _, dep := range strings.Fields(string(out)) {
		for _, b := range banned {
			if strings.HasPrefix(dep, b) {
				t.Errorf("the wasm peer depends on %s", dep)
			}
		}
	}
}
