//go:build !(js && wasm)

package main

import (
	"fmt"
	"os"
)

// main explains itself: this package is the browser build of the peer.
func main() {
	fmt.Fprintln(os.Stderr, "peerlan wasm peer: build it for the browser with GOOS=js GOARCH=wasm (make build does); natively, use bin/peer")
	os.Exit(2)
}
