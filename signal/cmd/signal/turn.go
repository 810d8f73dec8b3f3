package main

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/peerlan/peerlan/internal/cli"
	"github.com/peerlan/peerlan/signal/proto"
	"github.com/peerlan/peerlan/signal/relay"
)

// defaultTURNTTL is the validity of the credentials in a welcome. A relayed
// connection refreshes its allocation with the credential it started with,
// so the TTL bounds how long a relayed link lives without a rejoin; it
// matches relay.DefaultMaxAllocationLifetime.
const defaultTURNTTL = 12 * time.Hour

// turnFlags configure the embedded TURN relay and the credentials minted
// into each welcome.
type turnFlags struct {
	udp, tcp, tls, allow  cli.List
	cert, key             string
	relayIP, relayBind    string
	host, ports, realm    string
	secretFile            string
	ttl                   time.Duration
	maxAllocs             int
	maxAllocationLifetime time.Duration
}

func (t *turnFlags) register(fs *flag.FlagSet) {
	fs.Var(&t.udp, "turn-udp", "run the embedded TURN relay on these UDP `host:port` addresses (comma-separated),\ne.g. 127.0.0.1:3478; the relay is off unless -turn-udp, -turn-tcp or -turn-tls is given")
	fs.Var(&t.tcp, "turn-tcp", "embedded TURN relay on these TCP `host:port` addresses (comma-separated)")
	fs.Var(&t.tls, "turn-tls", "embedded TURN relay over TLS (turns:) on these TCP `host:port` addresses; needs -turn-cert and -turn-key")
	fs.StringVar(&t.cert, "turn-cert", "", "PEM certificate `file` for -turn-tls")
	fs.StringVar(&t.key, "turn-key", "", "PEM private key `file` for -turn-tls")
	fs.StringVar(&t.relayIP, "turn-relay-ip", "", "public IPv4 `address` peers send relayed traffic to (XOR-RELAYED-ADDRESS);\ndefault: the listeners' address when they all share one specified IPv4 address")
	fs.StringVar(&t.relayBind, "turn-relay-bind", "", "IPv4 `address` relay sockets are bound to (default 0.0.0.0; the relay IP keeps them off other interfaces)")
	fs.StringVar(&t.host, "turn-host", "", "host `name` or address in the turn: URLs handed to peers (the name a -turn-tls certificate is for);\ndefault: the relay IP")
	fs.StringVar(&t.ports, "turn-ports", fmt.Sprintf("%d-%d", relay.DefaultMinPort, relay.DefaultMaxPort), "relay port `range` MIN-MAX")
	fs.StringVar(&t.realm, "turn-realm", relay.DefaultRealm, "TURN `realm` of the embedded relay")
	fs.StringVar(&t.secretFile, "turn-secret-file", "", "`file` holding the TURN REST shared secret (coturn's static-auth-secret; created with a random\nsecret if missing); needed to mint credentials for external turn: URLs in -ice. Default: a random\nsecret per run for the embedded relay. Keep it apart from -secret-file: a holder of the TURN secret\ncan mint TURN credentials only, not room tokens")
	fs.DurationVar(&t.ttl, "turn-ttl", defaultTURNTTL, "validity of the TURN credentials minted into each welcome")
	fs.Var((*prefixList)(&t.allow), "turn-allow", "comma-separated peer `prefixes` the embedded relay may relay to although they are private,\nloopback or otherwise refused (deliberate lab set-ups only)")
	fs.IntVar(&t.maxAllocs, "turn-max-allocs", relay.DefaultMaxAllocationsPerUser, "TURN allocations per peer id")
	fs.DurationVar(&t.maxAllocationLifetime, "turn-max-lifetime", relay.DefaultMaxAllocationLifetime, "age after which an allocation is closed however often it is refreshed")
}

// enabled reports whether the embedded relay is to run.
func (t turnFlags) enabled() bool { return len(t.udp)+len(t.tcp)+len(t.tls) > 0 }

// prefixList is a cli.List whose elements must parse as prefixes or
// addresses.
type prefixList cli.List

func (l *prefixList) String() string { return (*cli.List)(l).String() }

func (l *prefixList) Set(s string) error {
	var add cli.List
	if err := add.Set(s); err != nil {
		return err
	}
	for _, v := range add {
		if _, err := parsePrefix(v); err != nil {
			return err
		}
	}
	*l = append(*l, add...)
	return nil
}

// parsePrefix accepts a prefix or a single address.
func parsePrefix(s string) (netip.Prefix, error) {
	if p, err := netip.ParsePrefix(s); err == nil {
		return p, nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%q is not a prefix (198.51.100.0/24) or an address", s)
	}
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// relayConfig turns the flags into a relay.Config (without the secret).
func (t turnFlags) relayConfig(log *slog.Logger, reg prometheus.Registerer) (relay.Config, error) {
	cfg := relay.Config{
		Realm:                 t.realm,
		UDPAddrs:              t.udp,
		TCPAddrs:              t.tcp,
		TLSAddrs:              t.tls,
		TLSCertFile:           t.cert,
		TLSKeyFile:            t.key,
		MaxAllocationsPerUser: t.maxAllocs,
		MaxAllocationLifetime: t.maxAllocationLifetime,
		Logger:                log,
		Registerer:            reg,
	}
	var err error
	if cfg.MinPort, cfg.MaxPort, err = cli.ParsePortRange("-turn-ports", "49152-65535", t.ports); err != nil {
		return cfg, err
	}
	if t.relayIP != "" {
		if cfg.RelayIP, err = netip.ParseAddr(t.relayIP); err != nil {
			return cfg, fmt.Errorf("-turn-relay-ip: %w", err)
		}
	}
	if t.relayBind != "" {
		if cfg.RelayBindIP, err = netip.ParseAddr(t.relayBind); err != nil {
			return cfg, fmt.Errorf("-turn-relay-bind: %w", err)
		}
	}
	for _, s := range t.allow {
		p, err := parsePrefix(s)
		if err != nil {
			return cfg, fmt.Errorf("-turn-allow: %w", err)
		}
		cfg.AllowPeers = append(cfg.AllowPeers, p)
	}
	if len(t.tls) > 0 && (t.cert == "" || t.key == "") {
		return cfg, errors.New("-turn-tls needs -turn-cert and -turn-key")
	}
	if t.maxAllocs <= 0 || t.maxAllocationLifetime <= 0 {
		return cfg, errors.New("-turn-max-allocs and -turn-max-lifetime must be positive")
	}
	return cfg, nil
}

// turnURLs are the embedded relay's URLs as handed to peers, or nil.
func turnURLs(t turnFlags, srv *relay.Server) []string {
	if srv == nil {
		return nil
	}
	host := t.host
	if host == "" {
		host = srv.RelayIP().String()
	}
	return srv.ICEURLs(host)
}

// withOtherRelay puts one other instance's relay (other's URLs) after this
// one's in each welcome, with the same credentials: the instances share
// -turn-secret-file. At most one: each relay URL is one more set of
// candidates that every ICE agent gathers and checks.
func withOtherRelay(ice func(string, proto.PeerID) []proto.ICEServer, other func() []string) func(string, proto.PeerID) []proto.ICEServer {
	return func(room string, id proto.PeerID) []proto.ICEServer {
		out := ice(room, id)
		urls := other()
		if len(urls) == 0 || len(out) == 0 {
			return out
		}
		o := proto.ICEServer{URLs: urls, Username: out[0].Username, Credential: out[0].Credential}
		return append(out[:1], append([]proto.ICEServer{o}, out[1:]...)...)
	}
}

// setupTURN starts the embedded relay when enabled and returns the
// function that lists ICE servers, with freshly minted credentials, in each
// welcome: the embedded relay's URLs first, then the external -ice URLs
// (turn: and turns: ones with credentials when there is a TURN secret).
// It returns a nil function when there is nothing to hand out.
func setupTURN(t turnFlags, external []string, log *slog.Logger, reg prometheus.Registerer) (
	*relay.Server, func(string, proto.PeerID) []proto.ICEServer, error) {
	if t.ttl <= 0 {
		return nil, nil, errors.New("-turn-ttl must be positive")
	}
	secret, err := loadSecretFile(t.secretFile, true)
	if err != nil {
		return nil, nil, fmt.Errorf("-turn-secret-file: %w", err)
	}
	if secret == nil && t.enabled() {
		// The relay and the minting are in this process: a random secret
		// works, and credentials outlive nothing but a restart.
		var raw [32]byte
		if _, err := rand.Read(raw[:]); err != nil {
			return nil, nil, err
		}
		secret = []byte(hex.EncodeToString(raw[:]))
	}
	var stun, extTURN []string
	for _, u := range external {
		switch scheme, _, _ := strings.Cut(u, ":"); strings.ToLower(scheme) {
		case "stun", "stuns":
			stun = append(stun, u)
		case "turn", "turns":
			extTURN = append(extTURN, u)
		default:
			return nil, nil, fmt.Errorf("-ice %q: want a stun:, stuns:, turn: or turns: URL", u)
		}
	}
	if len(extTURN) > 0 && secret == nil {
		log.Warn("-ice lists TURN URLs but there is no -turn-secret-file: peers get them without credentials", "urls", extTURN)
	}

	var srv *relay.Server
	var embedded []string
	if t.enabled() {
		cfg, err := t.relayConfig(log, reg)
		if err != nil {
			return nil, nil, err
		}
		cfg.Secret = secret
		if srv, err = relay.New(cfg); err != nil {
			return nil, nil, err
		}
		embedded = turnURLs(t, srv)
		log.Info("embedded TURN relay enabled", "urls", embedded, "relay_ip", srv.RelayIP(), "credential_ttl", t.ttl)
	}
	if len(embedded)+len(stun)+len(extTURN) == 0 {
		return srv, nil, nil
	}
	ttl := t.ttl
	ice := func(_ string, id proto.PeerID) []proto.ICEServer {
		var out []proto.ICEServer
		var user, pass string
		if secret != nil {
			user, pass = relay.MintCredential(secret, string(id), ttl, time.Now())
		}
		if len(embedded) > 0 {
			out = append(out, proto.ICEServer{URLs: embedded, Username: user, Credential: pass})
		}
		if len(extTURN) > 0 {
			out = append(out, proto.ICEServer{URLs: extTURN, Username: user, Credential: pass})
		}
		if len(stun) > 0 {
			out = append(out, proto.ICEServer{URLs: stun})
		}
		return out
	}
	return srv, ice, nil
}
