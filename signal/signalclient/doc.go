// Package signalclient is a peer's side of the signaling protocol (package
// proto): a Client that joins a room on the signaling server, reports the
// room's events and relays the peer's signals, reconnecting and resuming its
// identity when the server goes away.
//
// It links nothing of the server (package signal): natively it dials with
// gorilla/websocket, and in the browser (GOOS=js, dial_js.go) it uses the
// browser's WebSocket, so that the wasm peer carries neither net/http nor a
// WebSocket library.
package signalclient
