// Package signalclient is a peer's side of the signaling protocol (package
// proto): a Client that joins a room on the signaling server, reports the
// room's events and relays the peer's signals, reconnecting and resuming its
// identity when the server goes away.
//
// A Client may be given the URLs of several instances of one cluster
// (Config.URL, comma-separated, or Config.URLs): it stays on the one that
// welcomed it and, when that session ends or a dial fails, moves on to the
// next and resumes there (Run documents the order and the backoff). URL
// names the server in use (peer.MeshStatus passes it on).
//
// It links nothing of the server (package signal): natively it dials with
// gorilla/websocket, and in the browser (GOOS=js, dial_js.go) it uses the
// browser's WebSocket, so that the wasm peer carries neither net/http nor a
// WebSocket library.
package signalclient
