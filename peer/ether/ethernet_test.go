package ether

import (
	"encoding/json"
	"errors"
	"testing"
)

func TestMAC(t *testing.T) {
	tests := []struct {
		mac                       MAC
		group, bcast, local, zero bool
		str                       string
	}{
		{MAC{0x52, 0x54, 0, 0x12, 0x34, 0x56}, false, false, true, false, "52:54:00:12:34:56"},
		{MAC{0x00, 0x1b, 0x21, 0, 0, 1}, false, false, false, false, "00:1b:21:00:00:01"},
		{MAC{0x01, 0x00, 0x5e, 0, 0, 0xfb}, true, false, false, false, "01:00:5e:00:00:fb"},
		{Broadcast, true, true, true, false, "ff:ff:ff:ff:ff:ff"},
		{MAC{}, false, false, false, true, "00:00:00:00:00:00"},
	}
	for _, tt := range tests {
		if tt.mac.IsGroup() != tt.group || tt.mac.IsBroadcast() != tt.bcast ||
			tt.mac.IsLocal() != tt.local || tt.mac.IsZero() != tt.zero || tt.mac.String() != tt.str {
			t.Errorf("%v: group %v bcast %v local %v zero %v", tt.mac,
				tt.mac.IsGroup(), tt.mac.IsBroadcast(), tt.mac.IsLocal(), tt.mac.IsZero())
		}
	}
}

func TestEthernet(t *testing.T) {
	frame := readHex(t, "arp_request.hex")
	e, err := ParseEthernet(frame)
	if err != nil {
		t.Fatal(err)
	}
	if e.Dst() != Broadcast || e.Src() != (MAC{0x52, 0x54, 0, 0x12, 0x34, 0x56}) || e.Type() != TypeARP {
		t.Fatalf("dst %v src %v type %#04x", e.Dst(), e.Src(), e.Type())
	}
	if len(e.Payload()) != ARPLen {
		t.Fatalf("payload %d bytes", len(e.Payload()))
	}
	e.SetDst(MAC{2, 0, 0, 0, 0, 1})
	e.SetSrc(MAC{2, 0, 0, 0, 0, 2})
	e.SetType(TypeIPv6)
	if e.Dst() != (MAC{2, 0, 0, 0, 0, 1}) || e.Src() != (MAC{2, 0, 0, 0, 0, 2}) || e.Type() != TypeIPv6 {
		t.Fatal("setters did not round-trip")
	}
	if _, err := ParseEthernet(frame[:HeaderLen-1]); !errors.Is(err, ErrShort) {
		t.Fatalf("13 bytes: %v", err)
	}
}

func TestParseMAC(t *testing.T) {
	good := map[string]MAC{
		"02:00:5e:10:00:01": {2, 0, 0x5e, 0x10, 0, 1},
		"FF-FF-FF-ff-ff-ff": Broadcast,
	}
	for s, want := range good {
		if m, err := ParseMAC(s); err != nil || m != want {
			t.Errorf("%q: %v %v", s, m, err)
		}
	}
	for _, s := range []string{"", "02:00:5e:10:00", "02:00:5e:10:00:01:", "02:00-5e:10:00:01", "02:00:5g:10:00:01", "0200.5e10.0001xx"} {
		if _, err := ParseMAC(s); err == nil {
			t.Errorf("%q accepted", s)
		}
	}
	m := MAC{0x52, 0x54, 0, 0x12, 0x34, 0x56}
	j, err := json.Marshal(struct{ MAC MAC }{m})
	if err != nil || string(j) != `{"MAC":"52:54:00:12:34:56"}` {
		t.Fatalf("json %s %v", j, err)
	}
	var back struct{ MAC MAC }
	if err := json.Unmarshal(j, &back); err != nil || back.MAC != m {
		t.Fatalf("json round trip %v %v", back.MAC, err)
	}
}

func FuzzParseMAC(f *testing.F) {
	f.Add("02:00:5e:10:00:01")
	f.Add("ff-ff-ff-ff-ff-ff")
	f.Fuzz(func(t *testing.T, s string) {
		m, err := ParseMAC(s)
		if err != nil {
			return
		}
		if back, err := ParseMAC(m.String()); err != nil || back != m {
			t.Fatalf("%q -> %v does not round-trip", s, m)
		}
	})
}
