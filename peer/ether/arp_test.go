package ether

import (
	"bytes"
	"encoding/hex"
	"errors"
	"net/netip"
	"testing"
)

var (
	guestMAC   = MAC{0x52, 0x54, 0, 0x12, 0x34, 0x56}
	serviceMAC = MAC{0x02, 0x70, 0x6c, 0, 0, 1}
)

func TestParseARPCapture(t *testing.T) {
	e, _ := ParseEthernet(readHex(t, "arp_request.hex"))
	a, err := ParseARP(e.Payload())
	if err != nil {
		t.Fatal(err)
	}
	if a.Op() != ARPRequest || a.SenderMAC() != guestMAC || a.TargetMAC() != (MAC{}) ||
		a.SenderIP() != netip.MustParseAddr("192.0.2.2") || a.TargetIP() != netip.MustParseAddr("192.0.2.1") {
		t.Fatalf("op %d sha %v spa %v tha %v tpa %v", a.Op(), a.SenderMAC(), a.SenderIP(), a.TargetMAC(), a.TargetIP())
	}
}

func TestBuildARPReply(t *testing.T) {
	frame := readHex(t, "arp_request.hex")
	e, _ := ParseEthernet(frame)
	req, _ := ParseARP(e.Payload())

	check := func(out []byte) {
		t.Helper()
		re, err := ParseEthernet(out)
		if err != nil {
			t.Fatal(err)
		}
		if re.Dst() != guestMAC || re.Src() != serviceMAC || re.Type() != TypeARP {
			t.Fatalf("ethernet dst %v src %v type %#04x", re.Dst(), re.Src(), re.Type())
		}
		rep, err := ParseARP(re.Payload())
		if err != nil {
			t.Fatal(err)
		}
		if rep.Op() != ARPReply || rep.SenderMAC() != serviceMAC || rep.SenderIP() != netip.MustParseAddr("192.0.2.1") ||
			rep.TargetMAC() != guestMAC || rep.TargetIP() != netip.MustParseAddr("192.0.2.2") {
			t.Fatalf("reply op %d sha %v spa %v tha %v tpa %v", rep.Op(), rep.SenderMAC(), rep.SenderIP(), rep.TargetMAC(), rep.TargetIP())
		}
	}

	out := make([]byte, 64)
	n, err := BuildARPReply(out, req, serviceMAC)
	if err != nil || n != ARPFrameLen {
		t.Fatalf("n %d err %v", n, err)
	}
	check(out[:n])

	// Building in place over the request itself must work too.
	n, err = BuildARPReply(frame, req, serviceMAC)
	if err != nil {
		t.Fatal(err)
	}
	check(frame[:n])

	if _, err := BuildARPReply(make([]byte, ARPFrameLen-1), req, serviceMAC); !errors.Is(err, ErrShort) {
		t.Fatalf("short buffer: %v", err)
	}
	// frame now holds a reply: answering a reply is refused.
	rep, _ := ParseARP(frame[HeaderLen:])
	if _, err := BuildARPReply(out, rep, serviceMAC); !errors.Is(err, ErrMalformed) {
		t.Fatalf("reply to a reply: %v", err)
	}
}

func TestParseARPErrors(t *testing.T) {
	good := readHex(t, "arp_request.hex")[HeaderLen:]
	for i, want := range map[int]error{1: ErrMalformed, 3: ErrMalformed, 4: ErrMalformed, 5: ErrMalformed} {
		b := append([]byte(nil), good...)
		b[i]++
		if _, err := ParseARP(b); !errors.Is(err, want) {
			t.Errorf("byte %d changed: %v", i, err)
		}
	}
	if _, err := ParseARP(good[:ARPLen-1]); !errors.Is(err, ErrShort) {
		t.Errorf("27 bytes: %v", err)
	}
}

func TestBuildGratuitousARP(t *testing.T) {
	hw := MAC{0x52, 0x54, 0x00, 0x12, 0x34, 0x56}
	b := bytes.Repeat([]byte{0xee}, ARPFrameLen+8) // stale bytes must not leak into the frame
	n, err := BuildGratuitousARP(b, hw, netip.MustParseAddr("10.77.0.23"))
	if err != nil || n != ARPFrameLen {
		t.Fatalf("n %d err %v", n, err)
	}
	// As Linux's arping -U writes it: broadcast request, sender = target IP.
	want, _ := hex.DecodeString("ffffffffffff" + "525400123456" + "0806" +
		"0001" + "0800" + "06" + "04" + "0001" + "525400123456" + "0a4d0017" + "000000000000" + "0a4d0017")
	if !bytes.Equal(b[:n], want) {
		t.Fatalf("frame %x\nwant  %x", b[:n], want)
	}
	if _, err := BuildGratuitousARP(b[:ARPFrameLen-1], hw, netip.MustParseAddr("10.77.0.23")); !errors.Is(err, ErrShort) {
		t.Errorf("short buffer: %v", err)
	}
	if _, err := BuildGratuitousARP(b, hw, netip.MustParseAddr("2001:db8::1")); !errors.Is(err, ErrMalformed) {
		t.Errorf("IPv6 address: %v", err)
	}
}
