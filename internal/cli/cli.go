// Package cli holds what peerlan's commands share: logging set-up and flag
// types. Libraries do not import it.
package cli

import (
	"fmt"
	"log/slog"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
)

// NewLogger returns a logger writing to stderr at level ("debug", "info",
// "warn", "error") in format ("text" or "json").
func NewLogger(level, format string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("-log-level %q: want debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: l}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(os.Stderr, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(os.Stderr, opts)), nil
	}
	return nil, fmt.Errorf("-log-format %q: want text or json", format)
}

// List is a comma-separated list flag; repeating the flag appends.
type List []string

func (l *List) String() string { return strings.Join(*l, ",") }

// Set implements flag.Value.
func (l *List) Set(s string) error {
	for _, v := range strings.Split(s, ",") {
		if v = strings.TrimSpace(v); v != "" {
			*l = append(*l, v)
		}
	}
	return nil
}

// ParsePortRange parses a port range flag value "MIN-MAX" (1 <= MIN <= MAX
// <= 65535). flagName and example only shape the error message, e.g.
// `-udp-ports "9-1": want MIN-MAX, e.g. 50000-50100`.
func ParsePortRange(flagName, example, s string) (lo, hi uint16, err error) {
	a, b, ok := strings.Cut(s, "-")
	x, err1 := strconv.ParseUint(a, 10, 16)
	y, err2 := strconv.ParseUint(b, 10, 16)
	if !ok || err1 != nil || err2 != nil || x == 0 || x > y {
		return 0, 0, fmt.Errorf("%s %q: want MIN-MAX, e.g. %s", flagName, s, example)
	}
	return uint16(x), uint16(y), nil
}

// DataPathGCPercent is the garbage collector's target for commands that
// carry frames (bin/peer, bin/gateway), unless GOGC says otherwise. pion's
// WebRTC stack allocates for every packet, so collection is a fifth of a
// peer's CPU at Go's default of 100; at 400 the same iperf3 stream took a
// third less CPU per megabyte (two pion peers on loopback: 31 -> 21 ms/MB)
// and ran 25% faster between two bin/peer namespaces, for a heap that stays
// a few tens of megabytes.
const DataPathGCPercent = 400

// TuneGC applies DataPathGCPercent unless the GOGC environment variable is
// set, and returns the percentage in effect.
func TuneGC() int {
	if v, ok := os.LookupEnv("GOGC"); ok {
		if n, err := strconv.Atoi(v); err == nil {
			return n
		}
		return 100
	}
	debug.SetGCPercent(DataPathGCPercent)
	return DataPathGCPercent
}

// ReadToken picks a token from the first of these that is set: the file
// (a token file, trimmed; the recommended way), the flag's value (visible
// in ps, so it warns) or the environment variable env. It returns "" when
// none is set. fileFlag and valueFlag name the flags in messages.
func ReadToken(fileFlag, file, valueFlag, value, env string, log *slog.Logger) (string, error) {
	if file != "" && value != "" {
		return "", fmt.Errorf("give either %s or %s, not both", fileFlag, valueFlag)
	}
	switch {
	case file != "":
		b, err := os.ReadFile(file)
		if err != nil {
			return "", fmt.Errorf("%s: %w", fileFlag, err)
		}
		if t := strings.TrimSpace(string(b)); t != "" {
			return t, nil
		}
		return "", fmt.Errorf("%s %s is empty", fileFlag, file)
	case value != "":
		log.Warn(valueFlag + " is visible to every user in the process list; prefer " + fileFlag + " or $" + env)
		return value, nil
	}
	return strings.TrimSpace(os.Getenv(env)), nil
}
