//go:build !linux

package gateway

import (
	"fmt"
	"os"
)

// runHelper exists for TestMain; the namespace helpers are Linux-only.
func runHelper(role string) int {
	fmt.Fprintf(os.Stderr, "helper role %q needs Linux\n", role)
	return 2
}
