package gateway

import (
	"errors"
	"os"
	"strings"
	"testing"
)

func TestParseNftCounters(t *testing.T) {
	// Captured from nft 1.0.6 after loading testdata/ruleset_default.nft
	// (two values edited to be non-zero).
	data, err := os.ReadFile("testdata/counters.json")
	if err != nil {
		t.Fatal(err)
	}
	raw, err := parseNftCounters(data, "peerlan_gw_tap0")
	if err != nil {
		t.Fatal(err)
	}
	if len(raw) != len(DropReasons)+4 {
		t.Errorf("%d counters, want %d", len(raw), len(DropReasons)+4)
	}
	c := countersFrom(raw)
	if c.Drops[DropMetadata] != 3 || c.GuestToInternet != (Traffic{Packets: 12, Bytes: 794}) {
		t.Errorf("counters %+v", c)
	}
	if got := c.String(); got != "out 794B/12 pkts, in 0B/0 pkts, flows 0 out/0 in, drops metadata=3" {
		t.Errorf("String() = %q", got)
	}
	if other, _ := parseNftCounters(data, "someone_else"); len(other) != 0 {
		t.Errorf("counters of another table picked up: %v", other)
	}
}

func TestParseNftJSONErrors(t *testing.T) {
	for _, in := range []string{"", "{", `{"other": []}`, `[1,2]`} {
		if _, err := parseNftJSON([]byte(in)); !errors.Is(err, errNft) {
			t.Errorf("parseNftJSON(%q) err = %v, want errNft", in, err)
		}
	}
}

func TestBoundedBuffer(t *testing.T) {
	b := &boundedBuffer{max: 4}
	b.Write([]byte("ab"))
	b.Write([]byte("cdef"))
	if b.String() != "abcd" || !b.overflow {
		t.Errorf("got %q overflow=%v", b.String(), b.overflow)
	}
}

func TestHumanBytes(t *testing.T) {
	for n, want := range map[uint64]string{0: "0B", 1023: "1023B", 1536: "1.5KiB", 5 << 20: "5.0MiB", 3 << 40: "3.0TiB"} {
		if got := humanBytes(n); got != want {
			t.Errorf("humanBytes(%d) = %s, want %s", n, got, want)
		}
	}
}

func FuzzParseNftCounters(f *testing.F) {
	if data, err := os.ReadFile("testdata/counters.json"); err == nil {
		f.Add(string(data))
	}
	f.Add(`{"nftables":[{"counter":{"family":"inet","table":"t","name":"drop_ipv6","packets":1,"bytes":2}}]}`)
	f.Fuzz(func(t *testing.T, in string) {
		raw, err := parseNftCounters([]byte(in), "t")
		if err != nil {
			return
		}
		for name, c := range raw {
			if c.Table != "t" || c.Family != "inet" || c.Name != name {
				t.Fatalf("foreign counter %+v under %q", c, name)
			}
		}
		s := countersFrom(raw).String()
		if strings.Contains(s, "%!") {
			t.Fatalf("bad format: %s", s)
		}
	})
}
