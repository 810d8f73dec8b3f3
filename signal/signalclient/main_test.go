package signalclient_test

import (
	"testing"

	"go.uber.org/goleak"
)

// The client is tested against the real server (signal/signaltest).

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
