// Command wasm is peerlan's peer for the browser (GOOS=js GOARCH=wasm): the
// same switch and WebRTC mesh as bin/peer (package peer), over the browser's
// RTCPeerConnection and WebSocket, exposed to JavaScript as
// globalThis.peerlan. It knows nothing about emulators: anything that
// produces and consumes Ethernet frames (v86, a jslinux-style emulator,
// Linux/Wasm with a NIC) can attach.
//
// web/attach.mjs does all of the following for a v86 emulator
// (attachV86); by hand, load it with Go's wasm_exec.js (from the same Go
// release), then:
//
//	const lan = await peerlan.join({signal: "wss://host/signal", room: "name"});
//	lan.onframe = (frame) => nic.receive(frame); // frames for the guest
//	nic.onsend = (frame) => lan.send(frame);     // frames from the guest
//	console.log(await lan.status());
//	await lan.leave();
//
// # peerlan
//
//   - peerlan.version: a string naming the build.
//   - peerlan.join(options) returns a Promise that resolves to a lan once
//     the signaling server has welcomed this peer into the room (it has an
//     id and an address), and rejects with an Error whose message says what
//     is wrong: an invalid option, a join the server refused (bad token, full
//     room, bad room name), an unreachable server (every URL tried once), or
//     no welcome within the timeout.
//
// Options (an object; unknown keys are an error, to catch typos):
//
//	signal      string, required: the WebSocket URL, ws://host[:port]/path or
//	            wss://…; or an array of up to 16 such URLs (or one string of
//	            them, comma-separated), instances of one cluster: the peer
//	            joins through the first that answers, stays on it, and when
//	            it goes away fails over to the next, resuming its id and
//	            address there (go doc ./signal/signalclient Client.Run)
//	room        string, required: 1-64 letters, digits, '.', '_' or '-'
//	token       string: the room's join token, if it needs one
//	relay       "all" (default: direct first, TURN relay as fallback),
//	            "relay" (always relay) or "direct" (never relay)
//	iceServers  array of RTCIceServer ({urls, username, credential}), used in
//	            addition to the STUN/TURN servers the signaling server hands out
//	logLevel    "debug", "info" (default), "warn" or "error": the peer's
//	            logs go to the browser console, prefixed "peerlan:"
//	timeoutMs   how long join waits for the server's welcome; default 20000
//
// # lan
//
//   - lan.send(frame): frame is a Uint8Array holding one Ethernet frame
//     (destination MAC first, no FCS, at most 1518 bytes). It is copied
//     before send returns, so it may be a view into a buffer the emulator
//     reuses. send never blocks and never throws: it returns true when the
//     frame was accepted, false when it was refused (wrong size, not a
//     Uint8Array, or after leave). A frame sent after 20 ms without one
//     reaches the peer before send returns; the others wait for the end of
//     the JavaScript task (a microtask) and go into the peer together, or
//     earlier when 64 are waiting. A peer too busy to take them drops them
//     there. Drops are counted in status().
//   - lan.onframe = (frame) => …: called with every frame for the guest, a
//     new Uint8Array the callee may keep. Set it right after join resolves;
//     until then, and when it throws, frames are dropped and counted.
//   - lan.status(): a snapshot as a plain object: the JSON of
//     peer.MeshStatus (id, room, ip, prefix (the room's subnet, e.g.
//     "10.86.0.0/24"), gateway, gateway_peer (set only while a gateway is
//     in the room), signal state, and per peer its role, kind ("browser",
//     "native", absent when unknown), connection state, path
//     "host"/"srflx"/"prflx"/"relay", RTT, bytes and drops), plus
//     "signal_url", the signaling server that last welcomed the peer (one
//     of option signal's URLs), and "guest",
//     the counters of the guest's port
//     (from_guest, to_guest, dropped_queue_full, dropped_bad_size,
//     dropped_undelivered).
//   - lan.leave(): leaves the room and closes every link; returns a Promise
//     that resolves when the peer has stopped. Calling it again is harmless.
//
// Links to the other peers keep the data channel's send buffer under
// peer.BrowserMaxBuffered (16 KiB): larger buffers freeze Chrome's data
// channels for seconds under load. Frames above it wait in a bounded queue
// of the link (256 frames) until the channel's bufferedamountlow event, so a
// burst of the guest's NIC is paced rather than dropped; only a full queue
// drops (its oldest frame), counted in the link's drops. The peer's own
// DHCP service answers the guest with the address the room assigned, so a
// guest that runs a DHCP client needs no configuration.
//
// Build it with `make build` (web/web.mk), which writes web/dist/peerlan.wasm
// and web/dist/wasm_exec.js. Built natively, this command only says so.
package main
