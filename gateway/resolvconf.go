package gateway

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/miekg/dns"
)

// Where upstream resolvers come from when DNSConfig.Upstreams is empty.
const (
	DefaultResolvConf = "/etc/resolv.conf"
	// systemdResolvedUpstreams lists the resolvers systemd-resolved itself
	// uses; it stands behind the 127.0.0.53 stub in /etc/resolv.conf.
	systemdResolvedUpstreams = "/run/systemd/resolve/resolv.conf"
	systemdResolvedStub      = "127.0.0.53"
)

const (
	maxResolvConfSize = 64 << 10
	maxUpstreams      = 8
	stubProbeTimeout  = time.Second
)

// parseResolvConf returns the nameserver addresses of a resolv.conf, in
// order, at most maxUpstreams. Other directives are ignored; a malformed
// nameserver line is skipped, as glibc does.
func parseResolvConf(r io.Reader) []netip.Addr {
	var out []netip.Addr
	sc := bufio.NewScanner(io.LimitReader(r, maxResolvConfSize))
	for sc.Scan() {
		line := sc.Text()
		if i := strings.IndexAny(line, "#;"); i >= 0 {
			line = line[:i]
		}
		fields := strings.Fields(line)
		if len(fields) < 2 || fields[0] != "nameserver" {
			continue
		}
		addr, err := netip.ParseAddr(fields[1])
		if err != nil {
			continue
		}
		out = append(out, addr.Unmap())
		if len(out) == maxUpstreams {
			break
		}
	}
	return out
}

// upstreamsFromResolvConf picks the upstream resolvers from a resolv.conf.
//
// Loopback nameservers (systemd-resolved's 127.0.0.53, a local dnsmasq or
// unbound) are kept when they answer: the forwarder runs in the host's
// network namespace, so the host's own stub is reachable and keeps the host's
// resolver configuration (split DNS, DNSSEC, caching). They are dropped when
// they do not answer, which is the case when the gateway runs in a network
// namespace that shares /etc/resolv.conf with the host but not its loopback
// (a container, `ip netns exec`). If only an unreachable 127.0.0.53 is listed,
// the resolvers systemd-resolved forwards to are read from
// /run/systemd/resolve/resolv.conf instead.
//
// fallback is the systemd-resolved file and port the DNS port (53; tests
// pass others).
func upstreamsFromResolvConf(ctx context.Context, path, fallback string, port uint16, log *slog.Logger) ([]netip.AddrPort, error) {
	addrs, err := readResolvConf(path)
	if err != nil {
		return nil, err
	}
	out, droppedStub := filterReachable(ctx, addrs, port, log)
	if len(out) == 0 && droppedStub {
		if more, err := readResolvConf(fallback); err == nil {
			log.Info("using systemd-resolved's upstream resolvers", "file", fallback)
			out, _ = filterReachable(ctx, more, port, log)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%w: none of %v in %s answers; set the upstreams", errNoUpstream, addrs, path)
	}
	return out, nil
}

func readResolvConf(path string) ([]netip.Addr, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errNoUpstream, err)
	}
	defer f.Close()
	return parseResolvConf(f), nil
}

// filterReachable drops loopback resolvers that do not answer a probe and
// reports whether systemd-resolved's stub was among them.
func filterReachable(ctx context.Context, addrs []netip.Addr, port uint16, log *slog.Logger) ([]netip.AddrPort, bool) {
	var out []netip.AddrPort
	droppedStub := false
	for _, a := range addrs {
		ap := netip.AddrPortFrom(a, port)
		if a.IsLoopback() && !probeResolver(ctx, ap) {
			log.Info("skipping unreachable loopback resolver", "addr", ap)
			droppedStub = droppedStub || a.String() == systemdResolvedStub
			continue
		}
		out = append(out, ap)
	}
	return out, droppedStub
}

// probeResolver reports whether a resolver answers at all; any response code
// counts, since a stub that refuses the root NS query is still there.
func probeResolver(ctx context.Context, ap netip.AddrPort) bool {
	ctx, cancel := context.WithTimeout(ctx, stubProbeTimeout)
	defer cancel()
	q := new(dns.Msg)
	q.SetQuestion(".", dns.TypeNS)
	c := dns.Client{Net: "udp", Timeout: stubProbeTimeout}
	_, _, err := c.ExchangeContext(ctx, q, ap.String())
	return err == nil
}
