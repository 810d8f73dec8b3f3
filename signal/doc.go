// Package signal is peerlan's signaling server: it introduces peers of a
// room to each other so they can open WebRTC data channels directly. It hands
// out server-issued identities, room addresses and ICE servers, and relays the
// peers' opaque offer/answer/candidate payloads. It never carries Ethernet
// frames (DESIGN.md invariant 1): only JSON text messages of bounded size are
// accepted, and a binary WebSocket message is a protocol error.
//
// The wire protocol, with an example of every message, is documented in
// package proto (signal/proto); peers speak it through package signalclient
// (signal/signalclient), which links nothing of this package.
package signal
