package ether

import (
	"encoding/binary"
	"net/netip"
)

// DHCP message layout (RFC 2131 section 2), offsets in bytes:
//
//	  0 op      1 htype   2 hlen    3 hops
//	  4 xid (4)           8 secs (2)  10 flags (2)
//	 12 ciaddr  16 yiaddr  20 siaddr  24 giaddr
//	 28 chaddr (16)   44 sname (64)   108 file (128)
//	236 magic cookie 99.130.83.99   240 options ...
const (
	dhcpOffCIAddr  = 12
	dhcpOffYIAddr  = 16
	dhcpOffSIAddr  = 20
	dhcpOffGIAddr  = 24
	dhcpOffCHAddr  = 28
	dhcpOffSName   = 44
	dhcpOffFile    = 108
	dhcpOffCookie  = 236
	dhcpOffOptions = 240
)

// DHCPMinLen is the length of a DHCP message without options: the BOOTP
// header and the magic cookie.
const DHCPMinLen = dhcpOffOptions

// DHCP's UDP ports.
const (
	DHCPServerPort uint16 = 67
	DHCPClientPort uint16 = 68
)

// BOOTP op codes.
const (
	BootRequest uint8 = 1
	BootReply   uint8 = 2
)

// DHCPCookie is the magic cookie that starts the options field.
const DHCPCookie uint32 = 0x63825363

// dhcpFlagBroadcast is the broadcast bit of the flags field.
const dhcpFlagBroadcast = 0x8000

// DHCP option codes (RFC 2132) that peerlan reads or writes.
const (
	OptPad              uint8 = 0
	OptSubnetMask       uint8 = 1
	OptRouter           uint8 = 3
	OptDNS              uint8 = 6
	OptHostname         uint8 = 12
	OptInterfaceMTU     uint8 = 26
	OptBroadcastAddr    uint8 = 28
	OptRequestedIP      uint8 = 50
	OptLeaseTime        uint8 = 51
	OptOverload         uint8 = 52
	OptMessageType      uint8 = 53
	OptServerID         uint8 = 54
	OptParamRequestList uint8 = 55
	OptMessage          uint8 = 56
	OptMaxMessageSize   uint8 = 57
	OptRenewalTime      uint8 = 58
	OptRebindingTime    uint8 = 59
	OptClientID         uint8 = 61
	OptEnd              uint8 = 255
)

// DHCPMessageType is the value of option 53.
type DHCPMessageType uint8

// DHCP message types (RFC 2132 9.6).
const (
	DHCPDiscover DHCPMessageType = 1
	DHCPOffer    DHCPMessageType = 2
	DHCPRequest  DHCPMessageType = 3
	DHCPDecline  DHCPMessageType = 4
	DHCPAck      DHCPMessageType = 5
	DHCPNak      DHCPMessageType = 6
	DHCPRelease  DHCPMessageType = 7
	DHCPInform   DHCPMessageType = 8
)

func (t DHCPMessageType) String() string {
	switch t {
	case DHCPDiscover:
		return "DISCOVER"
	case DHCPOffer:
		return "OFFER"
	case DHCPRequest:
		return "REQUEST"
	case DHCPDecline:
		return "DECLINE"
	case DHCPAck:
		return "ACK"
	case DHCPNak:
		return "NAK"
	case DHCPRelease:
		return "RELEASE"
	case DHCPInform:
		return "INFORM"
	}
	return "unknown"
}

// DHCP is a view of a DHCP message (a UDP payload).
type DHCP []byte

// ParseDHCP validates b as a DHCP message: long enough for the fixed header
// and starting its options with the magic cookie (a plain BOOTP message is
// rejected with ErrMalformed). Options are checked lazily by the iterator.
func ParseDHCP(b []byte) (DHCP, error) {
	if len(b) < DHCPMinLen {
		return nil, ErrShort
	}
	if binary.BigEndian.Uint32(b[dhcpOffCookie:]) != DHCPCookie {
		return nil, ErrMalformed
	}
	return DHCP(b), nil
}

// Op returns BootRequest (client to server) or BootReply.
func (d DHCP) Op() uint8 { return d[0] }

// HType returns the hardware address type (1 for Ethernet).
func (d DHCP) HType() uint8 { return d[1] }

// HLen returns the hardware address length (6 for Ethernet).
func (d DHCP) HLen() uint8 { return d[2] }

// Hops returns the relay hop count.
func (d DHCP) Hops() uint8 { return d[3] }

// XID returns the transaction ID.
func (d DHCP) XID() uint32 { return binary.BigEndian.Uint32(d[4:8]) }

// Secs returns the seconds since the client began acquiring an address.
func (d DHCP) Secs() uint16 { return binary.BigEndian.Uint16(d[8:10]) }

// Flags returns the flags field.
func (d DHCP) Flags() uint16 { return binary.BigEndian.Uint16(d[10:12]) }

// Broadcast reports whether the client asked for broadcast replies because
// it cannot receive unicast before it is configured.
func (d DHCP) Broadcast() bool { return d.Flags()&dhcpFlagBroadcast != 0 }

// CIAddr returns the client's current address (renewing, rebinding, INFORM).
func (d DHCP) CIAddr() netip.Addr { return readAddr4(d[dhcpOffCIAddr:]) }

// YIAddr returns "your" address: the one a server offers or acknowledges.
func (d DHCP) YIAddr() netip.Addr { return readAddr4(d[dhcpOffYIAddr:]) }

// SIAddr returns the next server's address (boot servers).
func (d DHCP) SIAddr() netip.Addr { return readAddr4(d[dhcpOffSIAddr:]) }

// GIAddr returns the relay agent's address (0.0.0.0 when not relayed).
func (d DHCP) GIAddr() netip.Addr { return readAddr4(d[dhcpOffGIAddr:]) }

// CHAddr returns the 16-byte client hardware address field.
func (d DHCP) CHAddr() []byte { return d[dhcpOffCHAddr:dhcpOffSName] }

// ClientMAC returns the client's Ethernet address, or false when the
// hardware type or length is not Ethernet's.
func (d DHCP) ClientMAC() (MAC, bool) {
	if d.HType() != 1 || d.HLen() != 6 {
		return MAC{}, false
	}
	return MAC(d[dhcpOffCHAddr : dhcpOffCHAddr+6]), true
}

// SName returns the 64-byte server host name field (may hold options, see
// OptOverload).
func (d DHCP) SName() []byte { return d[dhcpOffSName:dhcpOffFile] }

// File returns the 128-byte boot file name field (may hold options).
func (d DHCP) File() []byte { return d[dhcpOffFile:dhcpOffCookie] }

// Cookie returns the magic cookie field (DHCPCookie for a parsed view).
func (d DHCP) Cookie() uint32 { return binary.BigEndian.Uint32(d[dhcpOffCookie:]) }

// Options returns an iterator over the options, in the order RFC 3396
// defines: the options field, then file, then sname when option 52 says
// they are overloaded.
func (d DHCP) Options() DHCPOptionIter {
	return DHCPOptionIter{d: d, rest: d[dhcpOffOptions:]}
}

// Option returns the data of the first instance of option code. An option
// that a sender split into several instances (RFC 3396, only for data over
// 255 bytes) is returned in part; AppendOption joins them.
func (d DHCP) Option(code uint8) ([]byte, bool) {
	it := d.Options()
	for it.Next() {
		if it.Code() == code {
			return it.Data(), true
		}
	}
	return nil, false
}

// AppendOption appends to dst the data of every instance of option code,
// concatenated as RFC 3396 says, and reports whether there was any. It
// allocates only when dst lacks capacity.
func (d DHCP) AppendOption(dst []byte, code uint8) ([]byte, bool) {
	found := false
	it := d.Options()
	for it.Next() {
		if it.Code() == code {
			dst = append(dst, it.Data()...)
			found = true
		}
	}
	return dst, found
}

// MessageType returns option 53, or 0 when it is missing or malformed.
func (d DHCP) MessageType() DHCPMessageType {
	v, ok := d.Option(OptMessageType)
	if !ok || len(v) != 1 {
		return 0
	}
	return DHCPMessageType(v[0])
}

// RequestedIP returns option 50 (the address the client asks for).
func (d DHCP) RequestedIP() (netip.Addr, bool) { return d.addrOption(OptRequestedIP) }

// ServerID returns option 54 (the server the client selected).
func (d DHCP) ServerID() (netip.Addr, bool) { return d.addrOption(OptServerID) }

func (d DHCP) addrOption(code uint8) (netip.Addr, bool) {
	v, ok := d.Option(code)
	if !ok || len(v) != 4 {
		return netip.Addr{}, false
	}
	return readAddr4(v), true
}

// ParamRequestList returns option 55: the option codes the client wants.
func (d DHCP) ParamRequestList() ([]byte, bool) { return d.Option(OptParamRequestList) }

// Requests reports whether the client's parameter request list, in any of
// its instances, names option code.
func (d DHCP) Requests(code uint8) bool {
	it := d.Options()
	for it.Next() {
		if it.Code() != OptParamRequestList {
			continue
		}
		for _, c := range it.Data() {
			if c == code {
				return true
			}
		}
	}
	return false
}

// ClientID returns option 61 (type byte then identifier).
func (d DHCP) ClientID() ([]byte, bool) { return d.Option(OptClientID) }

// Hostname returns option 12 as bytes (not a string, to stay allocation
// free; it is untrusted and may hold anything).
func (d DHCP) Hostname() ([]byte, bool) { return d.Option(OptHostname) }

// MaxMessageSize returns option 57, the largest DHCP message (IP and UDP
// headers included) the client accepts.
func (d DHCP) MaxMessageSize() (uint16, bool) {
	v, ok := d.Option(OptMaxMessageSize)
	if !ok || len(v) != 2 {
		return 0, false
	}
	return binary.BigEndian.Uint16(v), true
}

// Areas of a DHCP message that can hold options, in RFC 3396 order.
const (
	areaOptions = iota
	areaFile
	areaSName
	areaDone
)

// DHCPOptionIter walks the options of a DHCP message without allocating:
//
//	it := d.Options()
//	for it.Next() {
//		use(it.Code(), it.Data())
//	}
//	if it.Err() != nil { ... }
//
// Pad options are skipped; End closes the current area. Option 52 is
// honoured only in the options field and only once, so the walk visits at
// most the three areas once each and always terminates. Data slices alias
// the message. An option whose length runs past its area stops the walk
// with ErrTruncated; options before it have been returned.
type DHCPOptionIter struct {
	d        DHCP
	rest     []byte // unread bytes of the current area
	area     int
	overload uint8 // option 52's value: 1 file, 2 sname, 3 both
	code     uint8
	data     []byte
	err      error
}

// Next advances to the next option and reports whether there is one.
func (it *DHCPOptionIter) Next() bool {
	for {
		if len(it.rest) == 0 {
			if !it.nextArea() {
				return false
			}
			continue
		}
		switch c := it.rest[0]; c {
		case OptPad:
			it.rest = it.rest[1:]
			continue
		case OptEnd:
			it.rest = nil
			continue
		}
		if len(it.rest) < 2 || len(it.rest) < 2+int(it.rest[1]) {
			it.err = ErrTruncated
			it.rest, it.area = nil, areaDone
			return false
		}
		l := int(it.rest[1])
		it.code, it.data = it.rest[0], it.rest[2:2+l]
		it.rest = it.rest[2+l:]
		if it.code == OptOverload && it.area == areaOptions && it.overload == 0 && l == 1 {
			it.overload = it.data[0] & 3
		}
		return true
	}
}

// nextArea moves to the next overloaded area, or reports that none is left.
func (it *DHCPOptionIter) nextArea() bool {
	for it.area < areaDone {
		it.area++
		switch {
		case it.area == areaFile && it.overload&1 != 0:
			it.rest = it.d.File()
			return true
		case it.area == areaSName && it.overload&2 != 0:
			it.rest = it.d.SName()
			return true
		}
	}
	return false
}

// Code returns the current option's code.
func (it *DHCPOptionIter) Code() uint8 { return it.code }

// Data returns the current option's data.
func (it *DHCPOptionIter) Data() []byte { return it.data }

// Err returns ErrTruncated if the walk stopped at a malformed option.
func (it *DHCPOptionIter) Err() error { return it.err }
