//go:build linux

package e2e

import (
	"encoding/binary"
	"net"
	"net/netip"
	"slices"
	"testing"
)

func TestMergeFeatureFlags(t *testing.T) {
	in := []string{
		"--headless",
		"--enable-features=NetworkService,NetworkServiceInProcess",
		"--disable-features=Translate,BlinkGenPropertyTrees",
		"--no-sandbox",
		"--disable-features=WebRtcHideLocalIpsWithMdns,Translate",
		"--enable-features=IntensiveWakeUpThrottling:grace_period_seconds/5",
		"about:blank",
	}
	want := []string{
		"--headless",
		"--enable-features=NetworkService,NetworkServiceInProcess,IntensiveWakeUpThrottling:grace_period_seconds/5",
		"--disable-features=Translate,BlinkGenPropertyTrees,WebRtcHideLocalIpsWithMdns",
		"--no-sandbox",
		"about:blank",
	}
	if got := mergeFeatureFlags(in); !slices.Equal(got, want) {
		t.Errorf("mergeFeatureFlags:\n got %q\nwant %q", got, want)
	}
	plain := []string{"--headless", "about:blank"}
	if got := mergeFeatureFlags(plain); !slices.Equal(got, plain) {
		t.Errorf("mergeFeatureFlags changed args without feature flags: %q", got)
	}
}

func TestInetChecksum(t *testing.T) {
	// RFC 1071's example: the one's complement sum of these words is ddf2.
	b := []byte{0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7}
	if got := inetChecksum(b); got != ^uint16(0xddf2) {
		t.Errorf("inetChecksum = %#04x, want %#04x", got, ^uint16(0xddf2))
	}
	// A header with its checksum in place sums to zero.
	hdr := []byte{0x45, 0, 0, 0x54, 0, 0, 0x40, 0, 0x40, 1, 0, 0, 10, 86, 0, 7, 10, 86, 0, 9}
	binary.BigEndian.PutUint16(hdr[10:12], inetChecksum(hdr))
	if got := inetChecksum(hdr); got != 0 {
		t.Errorf("checksum over a checksummed header = %#04x, want 0", got)
	}
}

func TestScriptedHostAnswers(t *testing.T) {
	h := &scriptedHost{mac: net.HardwareAddr{2, 0, 0x5e, 0, 0, 9}, ip: netip.MustParseAddr("10.86.0.9")}
	guest := net.HardwareAddr{0, 0x22, 0x15, 1, 2, 3}

	arp := make([]byte, 42)
	copy(arp[0:6], []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	copy(arp[6:12], guest)
	binary.BigEndian.PutUint16(arp[12:14], 0x0806)
	copy(arp[14:22], []byte{0, 1, 8, 0, 6, 4, 0, 1})
	copy(arp[22:28], guest)
	copy(arp[28:32], []byte{10, 86, 0, 7})
	copy(arp[38:42], []byte{10, 86, 0, 9})
	r, kind := h.answer(arp)
	if kind != "arp" || len(r) != 42 {
		t.Fatalf("ARP request answered with %q, %d bytes", kind, len(r))
	}
	if binary.BigEndian.Uint16(r[20:22]) != 2 || net.HardwareAddr(r[0:6]).String() != guest.String() ||
		net.HardwareAddr(r[22:28]).String() != h.mac.String() || netip.AddrFrom4([4]byte(r[28:32])) != h.ip ||
		netip.AddrFrom4([4]byte(r[38:42])) != netip.MustParseAddr("10.86.0.7") {
		t.Errorf("bad ARP reply % x", r)
	}
	arp[41] = 10 // another address: not ours
	if r, _ := h.answer(arp); r != nil {
		t.Errorf("answered an ARP request for another address")
	}

	ping := make([]byte, 14+20+16)
	copy(ping[0:6], h.mac)
	copy(ping[6:12], guest)
	binary.BigEndian.PutUint16(ping[12:14], 0x0800)
	ip := ping[14:]
	copy(ip, []byte{0x45, 0, 0, 36, 0, 1, 0x40, 0, 64, 1, 0, 0, 10, 86, 0, 7, 10, 86, 0, 9})
	binary.BigEndian.PutUint16(ip[10:12], inetChecksum(ip[:20]))
	icmp := ip[20:36]
	copy(icmp, []byte{8, 0, 0, 0, 0x12, 0x34, 0, 1, 'p', 'e', 'e', 'r', 'l', 'a', 'n', '!'})
	binary.BigEndian.PutUint16(icmp[2:4], inetChecksum(icmp))
	r, kind = h.answer(ping)
	if kind != "echo" || len(r) != len(ping) {
		t.Fatalf("echo request answered with %q, %d bytes", kind, len(r))
	}
	rip := r[14:]
	if inetChecksum(rip[:20]) != 0 || inetChecksum(rip[20:36]) != 0 {
		t.Errorf("echo reply checksums do not verify: % x", rip)
	}
	if rip[20] != 0 || netip.AddrFrom4([4]byte(rip[12:16])) != h.ip || netip.AddrFrom4([4]byte(rip[16:20])) != netip.MustParseAddr("10.86.0.7") ||
		string(rip[28:36]) != "peerlan!" || net.HardwareAddr(r[0:6]).String() != guest.String() {
		t.Errorf("bad echo reply % x", r)
	}
}
