//go:build linux

package gateway

import (
	"encoding/hex"
	"net"
	"testing"
)

func TestGratuitousARP(t *testing.T) {
	mac := net.HardwareAddr{0x02, 0x11, 0x22, 0x33, 0x44, 0x55}
	got := hex.EncodeToString(gratuitousARP(mac, [4]byte{10, 86, 0, 1}))
	want := "ffffffffffff" + "021122334455" + "0806" + // Ethernet
		"0001" + "0800" + "06" + "04" + "0001" + // ARP request, Ethernet/IPv4
		"021122334455" + "0a560001" + "000000000000" + "0a560001" // from .1 for .1
	if got != want {
		t.Errorf("frame\n got %s\nwant %s", got, want)
	}
}
