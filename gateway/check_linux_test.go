//go:build linux

package gateway

import (
	"errors"
	"os"
	"testing"
)

func TestCheckHost(t *testing.T) {
	if err := CheckHost(HostConfig{LAN: "bad/name"}); !errors.Is(err, errInvalidConfig) {
		t.Errorf("bad LAN name: err = %v, want errInvalidConfig", err)
	}
	if err := CheckHost(HostConfig{LAN: "tap0", NftPath: "/nonexistent/nft"}); !errors.Is(err, errNftMissing) {
		t.Errorf("missing nft: err = %v, want errNftMissing", err)
	}
	err := CheckHost(HostConfig{LAN: "tap0", NftPath: os.Args[0]}) // any executable stands for nft
	if hasNetAdmin := checkNetAdmin() == nil; hasNetAdmin != (err == nil) {
		t.Errorf("CheckHost = %v, with CAP_NET_ADMIN %v", err, hasNetAdmin)
	}
}
