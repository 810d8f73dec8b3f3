// peerlan drop-in for any v86 page: attachV86(emulator, options) puts the
// emulator's network card on a peerlan room. bin/signal serves this module
// at /attach.mjs beside the wasm peer it loads (dist/wasm_exec.js and
// dist/peerlan.wasm), so a page elsewhere needs only:
//
//   import { attachV86 } from "https://lan.example/attach.mjs";
//   const emulator = new V86({ ..., net_device: { type: "virtio" } });
//   const att = await attachV86(emulator, { room: "lab-42" });
//   att.status();   // lan.status(): address, peers, paths, bytes
//   await att.detach();
//
// Options
//   room        the room to join (required): 1-64 letters, digits, '.', '_'
//               or '-', starting with a letter or digit (proto.ValidRoomName).
//   base        URL of the folder holding dist/ (default: where this module
//               was loaded from). The wasm peer is fetched from it, so from
//               another origin it must send CORS headers (bin/signal does:
//               Access-Control-Allow-Origin *), and the signaling server must
//               list the page's origin (bin/signal -origins).
//   signal      the signaling WebSocket URL (default: ws:// or wss:// at base's
//               host, path /signal), or an array of up to 16 URLs of one
//               cluster's instances: the peer joins through the first that
//               answers, stays on it, and fails over to the next when it goes
//               away. status().signal_url names the one in use.
//   token, relay, iceServers, logLevel, timeoutMs
//               passed to peerlan.join (see wasm/doc.go).
//
// The emulator needs a network card (net_device.type "virtio" or "ne2k")
// and no relay_url of its own. The card's frames (v86 bus event net0-send)
// go to the lan, the lan's frames go to the card (net0-receive).
// joinLAN and bridgeV86 are the two halves, for a page that joins before its
// emulator exists (web/app.js does).
//
// The wasm peer is loaded once per page (globalThis.peerlan); a page that
// defined globalThis.peerlan itself keeps its own. wasm_exec.js defines
// globalThis.process when it is missing, which sends libv86 down its Node.js
// path if libv86 is evaluated afterwards: import libv86 before calling
// loadPeer (a page that already made its V86 has).

const PEER_WAIT_MS = 3000; // how long the wasm peer may take to define globalThis.peerlan

// JOIN_OPTIONS are the options handed to peerlan.join as they are.
const JOIN_OPTIONS = ["token", "relay", "iceServers", "logLevel", "timeoutMs"];

// ROOM_RE is proto.ValidRoomName (signal/proto).
export const ROOM_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

// validRoom reports whether name is a room name the server accepts.
export function validRoom(name) {
  return typeof name === "string" && ROOM_RE.test(name);
}

// PeerUnavailable is thrown by loadPeer when the wasm peer is not served
// (not built): retrying will not help.
export class PeerUnavailable extends Error {}

function defaultBase() {
  return new URL(".", import.meta.url).href;
}

// signalURLFor returns the signaling WebSocket URL of the server at base.
export function signalURLFor(base) {
  const u = new URL("signal", new URL("/", base));
  u.protocol = u.protocol === "https:" ? "wss:" : "ws:";
  return u.href;
}

function loadScript(src) {
  return new Promise((resolve, reject) => {
    const s = document.createElement("script");
    s.src = src;
    s.onload = resolve;
    s.onerror = () => reject(new Error(`${src} did not load`));
    document.head.append(s);
  });
}

let loading = null; // the one loadPeer in flight or done
let ours = null; // the globalThis.peerlan that loadPeer's Go program defined

// loadPeer resolves to globalThis.peerlan, loading dist/wasm_exec.js and
// dist/peerlan.wasm from base when the page has not defined it. onExit, if
// given, is called when the Go program stops (it should not).
export function loadPeer(base = defaultBase(), onExit) {
  if (globalThis.peerlan && typeof globalThis.peerlan.join === "function") {
    return Promise.resolve(globalThis.peerlan);
  }
  if (!loading) {
    loading = startPeer(base, onExit).catch((err) => {
      loading = null; // a later call tries again
      throw err;
    });
  }
  return loading;
}

async function startPeer(base, onExit) {
  const wasmURL = new URL("dist/peerlan.wasm", base).href;
  const execURL = new URL("dist/wasm_exec.js", base).href;
  let head;
  try {
    head = await fetch(wasmURL, { method: "HEAD" });
  } catch (err) {
    throw new Error(`could not fetch ${wasmURL}: ${errorText(err)}`);
  }
  if (head.status === 404) {
    throw new PeerUnavailable(`the wasm peer (${wasmURL}) is not served; build it with \`make build\`.`);
  }
  if (!head.ok) throw new Error(`${wasmURL}: HTTP ${head.status}`);
  if (typeof globalThis.Go !== "function") {
    try {
      await loadScript(execURL);
    } catch (err) {
      throw new PeerUnavailable(`${errorText(err)}; build it with \`make build\`.`);
    }
  }
  const go = new globalThis.Go();
  let instance;
  try {
    try {
      ({ instance } = await WebAssembly.instantiateStreaming(fetch(wasmURL), go.importObject));
    } catch (err) {
      if (!(err instanceof TypeError)) throw err; // TypeError: served without application/wasm
      const bytes = await (await fetch(wasmURL)).arrayBuffer();
      ({ instance } = await WebAssembly.instantiate(bytes, go.importObject));
    }
  } catch (err) {
    throw new Error(`the wasm peer did not load: ${errorText(err)}`);
  }
  go.run(instance).then(() => {
    // The functions the Go program defined are dead now.
    loading = null;
    if (globalThis.peerlan === ours) delete globalThis.peerlan;
    if (onExit) onExit();
  });
  const deadline = performance.now() + PEER_WAIT_MS;
  while (!globalThis.peerlan || typeof globalThis.peerlan.join !== "function") {
    if (performance.now() > deadline) {
      throw new Error("the wasm peer started but did not define globalThis.peerlan.join.");
    }
    await new Promise((r) => setTimeout(r, 20));
  }
  ours = globalThis.peerlan;
  return globalThis.peerlan;
}

function errorText(err) {
  return err instanceof Error ? err.message : String(err);
}

// joinLAN loads the wasm peer if needed (see loadPeer) and joins
// options.room (options as attachV86's). It resolves to the lan object
// peerlan.join resolves to, once the room has welcomed the peer.
export async function joinLAN(options = {}) {
  const room = options.room;
  if (!validRoom(room)) {
    throw new TypeError(`room ${JSON.stringify(room)} is not a valid room name (1–64 letters, digits, ".", "_" or "-", starting with a letter or digit).`);
  }
  const base = options.base ? new URL(options.base, location.href).href : defaultBase();
  const peerlan = await loadPeer(base, options.onExit);
  const signal = options.signal;
  if (signal !== undefined && signal !== "" && typeof signal !== "string" &&
      !(Array.isArray(signal) && signal.length > 0 && signal.every((u) => typeof u === "string"))) {
    throw new TypeError("signal: want a ws:// or wss:// URL, or a non-empty array of them.");
  }
  const opts = { signal: signal || signalURLFor(base), room };
  for (const k of JOIN_OPTIONS) if (options[k] !== undefined && options[k] !== "") opts[k] = options[k];
  return peerlan.join(opts);
}

// bridgeV86 connects emulator's network card to lan: the card's frames (v86
// bus event net0-send) go to lan.send, the lan's frames (lan.onframe) to the
// card (net0-receive). It returns {frames: {toLan, fromLan, dropped},
// unhook()}; unhook stops both directions and leaves the lan joined.
export function bridgeV86(emulator, lan) {
  if (!emulator || typeof emulator.add_listener !== "function" || !emulator.bus) {
    throw new TypeError("want a V86 instance");
  }
  const frames = { toLan: 0, fromLan: 0, dropped: 0 };
  const onGuestFrame = (frame) => {
    // The lan copies the frame before returning (ne2k reuses its buffer);
    // it returns false for a frame it refused.
    if (lan.send(frame) === false) frames.dropped++;
    else frames.toLan++;
  };
  const onLanFrame = (frame) => {
    // The card copies the frame into guest memory before returning.
    frames.fromLan++;
    emulator.bus.send("net0-receive", frame);
  };
  emulator.add_listener("net0-send", onGuestFrame);
  lan.onframe = onLanFrame;
  let hooked = true;
  return {
    frames,
    unhook() {
      if (!hooked) return;
      hooked = false;
      emulator.remove_listener("net0-send", onGuestFrame);
      if (lan.onframe === onLanFrame) lan.onframe = null;
    },
  };
}

// attachV86 joins options.room and bridges emulator's network card to it.
// It resolves once the room has welcomed the peer, to
//   { lan, frames: {toLan, fromLan, dropped}, status(), detach() }
// status() is lan.status() (see peer.MeshStatus); detach() unhooks the card
// and leaves the room, resolving when the peer has stopped. It rejects when
// the peer cannot load or the join fails. The card's frames before the
// welcome are lost, as on a cable not yet plugged in; DHCP clients retry.
export async function attachV86(emulator, options = {}) {
  if (!emulator || typeof emulator.add_listener !== "function" || !emulator.bus) {
    throw new TypeError("attachV86: want a V86 instance as the first argument");
  }
  const lan = await joinLAN(options);
  const bridge = bridgeV86(emulator, lan);
  let left = null;
  return {
    lan,
    frames: bridge.frames,
    status: () => lan.status(),
    detach() {
      if (!left) {
        bridge.unhook();
        left = Promise.resolve(lan.leave());
      }
      return left;
    },
  };
}
