// Package proto is version 1 of peerlan's signaling protocol: the JSON
// messages that a peer and the signaling server exchange, the limits the
// server announces, room-name validation, and Encode and Decode. The server
// (package signal) and the client (package signalclient) share it; it needs
// nothing but the standard library, so that the browser build of a peer
// links nothing of the server.
//
// The signaling server introduces peers of a room to each other so they can
// open WebRTC data channels directly. It never carries Ethernet frames
// (DESIGN.md invariant 1): only JSON text messages of bounded size are
// accepted, and a binary WebSocket message is a protocol error.
//
// # Transport
//
// One WebSocket per peer, at the path the embedding program mounts the
// signal.Server on (bin/signal uses /signal). Every message is one JSON
// object in one text WebSocket message, at most Limits.MaxMessageBytes long,
// with a "type" field. The server sends WebSocket pings; a peer that stops
// answering is removed.
//
// # Protocol flow (version 1)
//
//	peer                                server
//	 │── join ───────────────────────────►│  first message, within JoinTimeout
//	 │◄─────────────────────────── welcome│  id, address, peers, ICE servers
//	 │◄──────────── peer-joined / peer-left│  room membership changes
//	 │◄─────────────────────── ice-servers│  fresh TURN credentials, every ICERefresh
//	 │── signal{to} ─────────────────────►│──► signal{from} to that peer
//	 │── leave ──────────────────────────►│  (optional) release id and address now
//	 │◄──────────────────────────── error │  any time; see ErrorCode
//
// # Messages
//
// join (peer → server). Role is "guest" (default) or "gateway". Token is the
// room's join token when the room requires one, and for role gateway the
// room's gateway token. Resume is the token from a previous welcome: within
// its validity the peer gets its id and address back, across reconnects and
// across restarts of a server that keeps its secret. Kind (optional) is
// "browser" or "native", what the peer runs; the server drops any other
// value and passes it on in the peer's PeerInfo ("kind", absent when
// unknown), for display only.
//
//	{"type":"join","v":1,"room":"lab-42","role":"guest","token":"…","resume":"…","kind":"browser"}
//
// welcome (server → peer), the answer to join. Peers lists the room's other
// members; the newcomer offers to each of them (DESIGN.md invariant 5).
//
//	{"type":"welcome","v":1,"id":"3q2-…","resume":"…","room":"lab-42",
//	 "ip":"10.86.0.3","prefix":"10.86.0.0/24","gateway":"10.86.0.1",
//	 "peers":[{"id":"Zx9…","role":"gateway","ip":"10.86.0.1","kind":"native"}],
//	 "ice_servers":[{"urls":["turn:relay.example:3478"],"username":"1700000000:3q2-…","credential":"…"}],
//	 "limits":{"max_message_bytes":65536,"messages_per_second":50,"burst":100,"max_peers_per_room":64}}
//
// ice-servers (server → peer) replaces the welcome's ICE servers while the
// peer stays joined, sent every signal.Config.ICERefresh (bin/signal: half
// the TURN credentials' lifetime), so links negotiated hours after the join
// still get valid TURN credentials. Peers that predate it ignore it as an unknown type.
//
//	{"type":"ice-servers","ice_servers":[{"urls":["turn:relay.example:3478"],"username":"1700021600:3q2-…","credential":"…"}]}
//
// peer-joined and peer-left (server → peer):
//
//	{"type":"peer-joined","peer":{"id":"Q7w…","role":"guest","ip":"10.86.0.4","kind":"browser"}}
//	{"type":"peer-left","id":"Q7w…"}
//
// signal: a peer sends it with "to"; the server delivers it with "from"
// instead. Data is opaque to the server (peer/ defines its content).
//
//	{"type":"signal","to":"Q7w…","data":{"kind":"offer","sdp":"v=0…"}}
//	{"type":"signal","from":"3q2-…","data":{"kind":"offer","sdp":"v=0…"}}
//
// leave (peer → server): the peer is going away for good; its id and address
// are released at once instead of after the resume grace period.
//
//	{"type":"leave"}
//
// error (server → peer). Code is stable and machine-readable (ErrorCode);
// Message is for humans. Fatal errors are followed by the server closing the
// connection; the others leave it open.
//
//	{"type":"error","code":"unknown-peer","message":"no peer Q7w… in this room","fatal":false}
package proto
