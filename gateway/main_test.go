package gateway

import (
	"os"
	"testing"

	"go.uber.org/goleak"
)

// helperEnv selects a helper role when the test binary re-executes itself
// inside a network namespace (see helper_linux_test.go).
const helperEnv = "PEERLAN_GATEWAY_TEST_HELPER"

func TestMain(m *testing.M) {
	if role := os.Getenv(helperEnv); role != "" {
		os.Exit(runHelper(role))
	}
	goleak.VerifyTestMain(m)
}
