package cli

import "testing"

func TestParsePortRange(t *testing.T) {
	lo, hi, err := ParsePortRange("-udp-ports", "50000-50100", "50000-50100")
	if err != nil || lo != 50000 || hi != 50100 {
		t.Fatalf("ParsePortRange = %d, %d, %v", lo, hi, err)
	}
	for _, bad := range []string{"", "5", "0-10", "10-9", "1-65536", "a-b", "-5"} {
		if _, _, err := ParsePortRange("-udp-ports", "50000-50100", bad); err == nil {
			t.Errorf("ParsePortRange(%q) accepted", bad)
		}
	}
	_, _, err = ParsePortRange("-turn-ports", "49152-65535", "9-1")
	if want := `-turn-ports "9-1": want MIN-MAX, e.g. 49152-65535`; err == nil || err.Error() != want {
		t.Errorf("error = %v, want %s", err, want)
	}
}
