package gateway

import "errors"

// Refusals: SetupHost returns one of these (wrapped with details) before it
// changes anything on the host.
var (
	errNotPrivileged    = errors.New("gateway: CAP_NET_ADMIN is required (run as root or grant the capability)")
	errNftMissing       = errors.New("gateway: nft (nftables CLI) not found; install the nftables package")
	errSubnetOverlap    = errors.New("gateway: room subnet overlaps an existing host route")
	errUplinkNotFound   = errors.New("gateway: uplink interface does not exist")
	errNoDefaultRoute   = errors.New("gateway: no IPv4 default route to pick the uplink from; set Uplink")
	errLANNotFound      = errors.New("gateway: LAN interface does not exist")
	errAlreadyRunning   = errors.New("gateway: another gateway is running for this LAN interface")
	errUnsupportedOS    = errors.New("gateway: host setup is only implemented for Linux")
	errInvalidConfig    = errors.New("gateway: invalid configuration")
	errStateFile        = errors.New("gateway: bad state file")
	errNft              = errors.New("gateway: nft failed")
	errNetlink          = errors.New("gateway: netlink request failed")
	errRulesetNotLoaded = errors.New("gateway: ruleset not found after loading it")
)

// DNS forwarder errors.
var (
	errNoUpstream       = errors.New("gateway: no usable upstream DNS resolver")
	errDNSConfig        = errors.New("gateway: invalid DNS forwarder configuration")
	errQuestionMismatch = errors.New("gateway: upstream answered a different question")
)
