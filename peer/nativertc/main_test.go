//go:build !js

package nativertc

import (
	"testing"

	"go.uber.org/goleak"
)

// Every session the tests open is closed by then: Close must leave none of
// pion's goroutines (ICE, DTLS, SCTP) or the probe's behind.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
