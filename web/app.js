// peerlan page: boots a small Linux guest in v86, shows its serial console in
// xterm.js, and bridges its network card to the wasm peer (globalThis.peerlan),
// which carries the Ethernet frames to the other guests of the room over
// WebRTC. Everything is served from the page's own origin.
//
// URL parameters
//   room=NAME    the room to join; when absent a readable random name is made
//                and put into the URL, so the address bar is the share link.
//   relay=all|relay|direct   ICE policy handed to the wasm peer (default all).
//   token=T      join token, for rooms that need one.
//   nic=virtio|ne2k          emulated network card (default virtio).
//   signal=URL[,URL…]        the signaling servers, ws:// or wss://, up to
//                16 instances of one cluster tried in order (the peer stays on
//                the one that welcomed it and fails over to the next when it
//                goes away); default this origin's /signal. Only servers on
//                the page's own host name, or on a host listed in the page's
//                <meta name="peerlan-signal-hosts" content="HOST …">, are
//                used: the signaling server decides who the guest's peers and
//                its gateway are, so a shared link must not be able to pick a
//                server of someone else's (see peerlanRelayURL below). The
//                network panel shows the one in use.
//
// The network comes from attach.mjs, the drop-in any v86 page can use: it
// loads dist/wasm_exec.js and dist/peerlan.wasm to define globalThis.peerlan
// (unless a script that ran before this module defined it already), joins
// the room, and bridges the guest's card to the lan. A failed join or a lost
// room is retried with backoff (1 s doubling to 30 s), with a countdown and a
// "Retry now" button in the network panel.
//
// Benchmark hook: when a script that ran before this module set
// globalThis.peerlanRelayURL to a ws:// or wss:// URL, the page joins no room
// and gives v86 that URL as net_device.relay_url instead: v86's own WebSocket
// adapter then carries the guest's frames (one binary message per frame),
// the relayed baseline that e2e/browser_relay_bench_test.go measures peerlan
// against. It is deliberately not a URL parameter: a shared link must never
// be able to send a user's guest traffic to a server of someone else's.
//
// Test hooks (stable; e2e/browser_helpers_test.go relies on them):
//   window.peerlanPage = {
//     phase     "loading" (fetching the emulator and the guest image),
//               "booting" (the emulator runs), "ready" (the guest printed
//               "peerlan guest ready"), "error" (the guest cannot run; see
//               error). The guest does not need the network to reach ready.
//     error     why phase is "error", "" otherwise.
//     net       {state, error, retryIn, attempts}: state is "loading",
//               "joining", "connected", "retrying" (the last try failed
//               with error; the next in retryIn seconds), "unavailable" (no
//               wasm peer is built or served), "relayed" (v86's own adapter
//               uses globalThis.peerlanRelayURL) or "error" (final: the room
//               name is invalid). attempts counts failed tries in a row.
//     retryNow()  tries to join again at once (the "Retry now" button).
//     lan       the object peerlan.join() resolved to, or null.
//     mac       the guest NIC's MAC address, "" until the emulator made it.
//     frames    {toLan, fromLan, dropped}: frames bridged each way, and
//               frames of the guest dropped because no lan was joined yet.
//     timings   milliseconds since navigation start: imagesLoaded,
//               emulatorStarted, guestReady, netJoined (when they happened).
//     emulator  the V86 instance, or null.
//     consoleText()  everything the guest printed on its serial console
//               (the last 1 MiB), ANSI escape sequences and CRs removed.
//     type(text)     sends text to the guest's serial console as keystrokes
//               (UTF-8), as if typed into the terminal.
//     screenText()   the terminal's screen as xterm.js shows it (the rows of
//               its active buffer, trailing blanks trimmed), "" without one.
//   }

import { bridgeV86, joinLAN, loadPeer, PeerUnavailable, validRoom } from "./attach.mjs";

const MEMORY_BYTES = 128 << 20;
const VGA_MEMORY_BYTES = 2 << 20; // the guest uses the serial console only
const READY_MARKER = "peerlan guest ready";
const LEASE_RE = /peerlan: eth0 (\S+) router (\S+) mtu (\d+)/g;
const CONSOLE_LIMIT = 1 << 20; // characters of console text kept for consoleText()
const RELAY_POLICIES = ["all", "relay", "direct"];
const NICS = ["virtio", "ne2k"];
const MAX_SIGNAL_URLS = 16; // signalclient.MaxURLs
const STATUS_INTERVAL_MS = 1000;
const RETRY_FIRST_MS = 1000; // the first retry's wait; it doubles up to RETRY_MAX_MS
const RETRY_MAX_MS = 30000;
const SPARK_SAMPLES = 60; // seconds of traffic history drawn per peer

// The files of the guest, relative to the page (built by `make build`).
const GUEST_FILES = {
  bios: "dist/bios/seabios.bin",
  vgaBios: "dist/bios/vgabios.bin",
  bzimage: "dist/guest/bzImage",
  initrd: "dist/guest/initrd.gz",
};
const CMDLINE_FILE = "dist/guest/cmdline.txt";
const V86_MODULE = "./dist/v86/libv86.mjs";
const V86_WASM = "dist/v86/v86.wasm";
const XTERM_MODULE = "./dist/xterm/xterm.mjs";
const FIT_MODULE = "./dist/xterm/addon-fit.mjs";

const $ = (id) => document.getElementById(id);

// ---- the console log behind consoleText() ----

// ConsoleLog keeps the text the guest printed, bounded to about its last
// `limit` characters, and strips terminal control sequences when read.
class ConsoleLog {
  #decoder = new TextDecoder("utf-8");
  #chunks = [];
  #size = 0;
  #tail = ""; // the last characters, so a marker split across writes is found
  #limit;

  constructor(limit) {
    this.#limit = limit;
  }

  // append decodes bytes (a stream: a UTF-8 sequence may span calls) and
  // returns the new text together with the characters just before it.
  append(bytes) {
    const text = this.#decoder.decode(bytes, { stream: true });
    this.#chunks.push(text);
    this.#size += text.length;
    if (this.#size > this.#limit) {
      const joined = this.#chunks.join("");
      const kept = joined.slice(joined.length - Math.floor(this.#limit / 2));
      this.#chunks = [kept];
      this.#size = kept.length;
    }
    const recent = this.#tail + text;
    this.#tail = recent.slice(-128);
    return recent;
  }

  text() {
    return stripTerminal(this.#chunks.join(""));
  }
}

// stripTerminal removes ANSI/VT escape sequences (CSI, OSC, two-byte ESC
// sequences) and carriage returns.
function stripTerminal(s) {
  return s.replace(
    // eslint-disable-next-line no-control-regex
    /\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b[ -/]*[0-~]|\r/g,
    "",
  );
}

// ---- page state and test hooks ----

const consoleLog = new ConsoleLog(CONSOLE_LIMIT);

const ownFrames = { dropped: 0 }; // guest frames while no lan is bridged
let bridge = null; // bridgeV86's result while the guest's card is on a lan

const page = {
  phase: "loading",
  error: "",
  net: { state: "loading", error: "", retryIn: 0, attempts: 0 },
  lan: null,
  mac: "",
  get frames() {
    const f = bridge ? bridge.frames : { toLan: 0, fromLan: 0, dropped: 0 };
    return {
      toLan: bridged.toLan + f.toLan,
      fromLan: bridged.fromLan + f.fromLan,
      dropped: ownFrames.dropped + bridged.dropped + f.dropped,
    };
  },
  timings: {},
  emulator: null,
  consoleText: () => consoleLog.text(),
  type: (text) => sendToGuest(String(text)),
  screenText: () => screenText(),
  retryNow: () => retryNow(),
};
// The counts of bridges that ended (a lan left before a retry).
const bridged = { toLan: 0, fromLan: 0, dropped: 0 };
window.peerlanPage = page;

function mark(name) {
  page.timings[name] = Math.round(performance.now());
}

function setPhase(phase, error = "") {
  if (page.phase === "error") return; // terminal: keep the first cause
  page.phase = phase;
  page.error = error;
  if (phase === "error") {
    showBoot(false);
    setAlert("guest", "error", `The guest cannot run: ${error}`);
    console.error("peerlan: guest:", error);
  }
}

function setNet(state, error = "") {
  page.net = { ...page.net, state, error };
  if (state !== "retrying") page.net.retryIn = 0;
  const labels = {
    loading: "loading the network peer…",
    joining: "joining the room…",
    connected: "joined",
    retrying: "not joined, retrying",
    unavailable: "unavailable",
    relayed: `v86's WebSocket relay (${globalThis.peerlanRelayURL})`,
    error: "failed",
  };
  $("net-state").textContent = labels[state];
  $("net-state").className = state === "connected" || state === "relayed" ? "good" : state === "joining" || state === "loading" ? "" : "bad";
  if (state === "unavailable") {
    setAlert("net", "warn", `No network: ${error} The guest runs without a network.`);
  } else if (state === "error") {
    setAlert("net", "error", `Network failed: ${error} The guest keeps running without a network.`);
  } else if (state === "retrying") {
    setAlert("net", "error", `Network failed: ${error} The guest keeps running; the page tries again (see Network).`);
  } else {
    setAlert("net", null);
  }
  if (error) console.warn(`peerlan: network ${state}: ${error}`);
}

// ---- alerts: one message per key, replaced in place ----

const alerts = new Map();

function setAlert(key, level, message) {
  let li = alerts.get(key);
  if (!level) {
    if (li) li.remove();
    alerts.delete(key);
    return;
  }
  if (!li) {
    li = document.createElement("li");
    alerts.set(key, li);
    $("alerts").append(li);
  }
  li.className = `alert ${level}`;
  li.setAttribute("role", level === "error" ? "alert" : "status");
  li.textContent = message;
}

window.addEventListener("error", (ev) => {
  setAlert("uncaught", "error", `Page error: ${ev.message}`);
});
window.addEventListener("unhandledrejection", (ev) => {
  setAlert("uncaught", "error", `Page error: ${errorText(ev.reason)}`);
});

function errorText(err) {
  if (err instanceof Error) return err.message;
  return String(err);
}

// ---- URL parameters and the share link ----

const WORDS_A = ["amber", "brisk", "calm", "clever", "coral", "crisp", "dusky", "eager", "fuzzy", "gentle",
  "golden", "happy", "hazel", "jolly", "keen", "lively", "lucky", "mellow", "misty", "nimble", "olive",
  "plucky", "quiet", "rapid", "rosy", "sandy", "shy", "silver", "sunny", "swift", "tidy", "witty"];
const WORDS_B = ["badger", "beaver", "bison", "crane", "dingo", "dolphin", "eagle", "falcon", "ferret",
  "gecko", "heron", "ibex", "koala", "lemur", "lynx", "marmot", "moose", "newt", "otter", "owl", "panda",
  "puffin", "quail", "raven", "seal", "sloth", "stoat", "tapir", "toucan", "walrus", "wombat", "yak"];

function randomRoom() {
  const r = new Uint32Array(3);
  crypto.getRandomValues(r);
  const n = 1000 + (r[2] % 9000);
  return `${WORDS_A[r[0] % WORDS_A.length]}-${WORDS_B[r[1] % WORDS_B.length]}-${n}`;
}

function readParams() {
  const url = new URL(location.href);
  const q = url.searchParams;
  let room = q.get("room");
  if (room === null || room === "") {
    room = randomRoom();
    q.set("room", room);
    history.replaceState(null, "", url);
  }
  const problems = [];
  let relay = q.get("relay") || "all";
  if (!RELAY_POLICIES.includes(relay)) {
    problems.push(`relay=${relay} is not one of ${RELAY_POLICIES.join(", ")}; using all.`);
    relay = "all";
  }
  let nic = q.get("nic") || "virtio";
  if (!NICS.includes(nic)) {
    problems.push(`nic=${nic} is not one of ${NICS.join(", ")}; using virtio.`);
    nic = "virtio";
  }
  const signal = signalParam(q.get("signal"), problems);
  let relayURL = "";
  const hook = globalThis.peerlanRelayURL;
  if (typeof hook === "string" && /^wss?:\/\//.test(hook)) relayURL = hook;
  else if (hook !== undefined) problems.push("peerlanRelayURL is not a ws:// or wss:// URL; ignored.");
  if (problems.length) setAlert("params", "warn", problems.join(" "));
  return { room, roomValid: validRoom(room), relay, nic, token: q.get("token") || "", relayURL, signal };
}

// signalParam reads ?signal=: the listed ws:// or wss:// URLs on hosts the
// page trusts (its own, and those of <meta name="peerlan-signal-hosts">), or
// null for the default (this origin's /signal). What it leaves out it says
// in problems.
function signalParam(value, problems) {
  if (value === null || value.trim() === "") return null;
  const meta = document.querySelector('meta[name="peerlan-signal-hosts"]');
  const hosts = new Set([location.hostname, ...(meta ? meta.content.toLowerCase().split(/\s+/).filter(Boolean) : [])]);
  const urls = [];
  for (const item of value.split(",").map((v) => v.trim()).filter(Boolean)) {
    let u;
    try {
      u = new URL(item);
    } catch {
      problems.push(`signal=${item} is not a URL; left out.`);
      continue;
    }
    if (u.protocol !== "ws:" && u.protocol !== "wss:") {
      problems.push(`signal=${item} is not a ws:// or wss:// URL; left out.`);
    } else if (!hosts.has(u.hostname)) {
      problems.push(`signal=${item} is on ${u.hostname}, not a host this page trusts (${[...hosts].join(", ")}); left out.`);
    } else if (urls.length === MAX_SIGNAL_URLS) {
      problems.push(`signal= lists more than ${MAX_SIGNAL_URLS} servers; ${item} and the rest are left out.`);
      break;
    } else if (!urls.includes(u.href)) {
      urls.push(u.href);
    }
  }
  if (urls.length === 0) {
    problems.push("no usable signal= server; using this page's own.");
    return null;
  }
  return urls;
}

// setupRoomField makes the room field join another room: the page loads
// again with that ?room= (and the other parameters kept), since the guest's
// address comes from the room and its DHCP lease would otherwise keep the old
// one for hours.
function setupRoomField(params) {
  const input = $("room-input");
  const err = $("room-error");
  input.value = params.room;
  const check = () => {
    const ok = validRoom(input.value.trim());
    input.setAttribute("aria-invalid", ok ? "false" : "true");
    err.textContent = ok ? "" : "1–64 letters, digits, “.”, “_” or “-”, starting with a letter or digit.";
    return ok;
  };
  input.addEventListener("input", check);
  $("room-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    if (!check()) {
      input.focus();
      return;
    }
    const room = input.value.trim();
    if (room === params.room) return;
    const url = new URL(location.href);
    url.searchParams.set("room", room);
    location.assign(url);
  });
}

function setupShare(params) {
  $("share-link").value = location.href;
  $("net-room").textContent = params.room;
  $("net-relay").textContent =
    params.relay === "all" ? "direct, relay as fallback" : params.relay === "relay" ? "relay only" : "direct only";
  $("copy-link").addEventListener("click", async () => {
    const status = $("copy-status");
    try {
      if (navigator.clipboard && window.isSecureContext) {
        await navigator.clipboard.writeText(location.href);
      } else {
        // Plain http on a LAN address is no secure context: copy the old way.
        const input = $("share-link");
        input.select();
        if (!document.execCommand("copy")) throw new Error("the browser refused to copy");
      }
      status.textContent = "Copied.";
    } catch (err) {
      $("share-link").select();
      status.textContent = `Copy failed (${errorText(err)}): the link is selected, copy it by hand.`;
    }
    setTimeout(() => { status.textContent = ""; }, 4000);
  });
}

// ---- boot progress ----

function showBoot(visible, text, fraction) {
  const box = $("boot");
  box.hidden = !visible;
  if (!visible) return;
  $("boot-text").textContent = text;
  const bar = $("boot-progress");
  if (fraction === undefined) bar.removeAttribute("value");
  else bar.value = fraction;
}

function formatBytes(n) {
  if (!Number.isFinite(n)) return "–";
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
  if (n < 1024 * 1024 * 1024) return `${(n / 1024 / 1024).toFixed(1)} MiB`;
  return `${(n / 1024 / 1024 / 1024).toFixed(2)} GiB`;
}

// fetchFiles downloads every file of `files` ({name: url}) in parallel,
// reporting the summed progress, and resolves to {name: ArrayBuffer}. A file
// that is missing fails with a message that says how to build it.
async function fetchFiles(files, onProgress) {
  const names = Object.keys(files);
  const loaded = new Map(names.map((n) => [n, 0]));
  const totals = new Map(names.map((n) => [n, 0]));
  const report = () => {
    let got = 0;
    let total = 0;
    for (const n of names) {
      got += loaded.get(n);
      total += totals.get(n);
    }
    onProgress(got, total);
  };
  const one = async (name) => {
    const url = files[name];
    let resp;
    try {
      resp = await fetch(url);
    } catch (err) {
      throw new Error(`could not fetch ${url}: ${errorText(err)}`);
    }
    if (!resp.ok) {
      const hint = resp.status === 404 ? " – the guest image is not built; run `make build`" : "";
      throw new Error(`${url}: HTTP ${resp.status}${hint}`);
    }
    totals.set(name, Number(resp.headers.get("Content-Length")) || 0);
    const parts = [];
    let size = 0;
    const reader = resp.body.getReader();
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      parts.push(value);
      size += value.length;
      loaded.set(name, size);
      report();
    }
    const buf = new Uint8Array(size);
    let off = 0;
    for (const p of parts) {
      buf.set(p, off);
      off += p.length;
    }
    return [name, buf.buffer];
  };
  return Object.fromEntries(await Promise.all(names.map(one)));
}

async function requireFile(url, what) {
  let resp;
  try {
    resp = await fetch(url, { method: "HEAD" });
  } catch (err) {
    throw new Error(`could not fetch ${url}: ${errorText(err)}`);
  }
  if (!resp.ok) {
    throw new Error(`${what} (${url}) is missing: HTTP ${resp.status}; run \`make build\``);
  }
}

// ---- the terminal and the serial console ----

let term = null;
let emulator = null;
const pendingOutput = [];
let flushQueued = false;

async function setupTerminal() {
  try {
    const [{ Terminal }, { FitAddon }] = await Promise.all([import(XTERM_MODULE), import(FIT_MODULE)]);
    term = new Terminal({
      cursorBlink: true,
      scrollback: 5000,
      fontSize: 14,
      screenReaderMode: false,
      theme: { background: "#101418", foreground: "#e6e6e6" },
    });
    const fit = new FitAddon();
    term.loadAddon(fit);
    term.open($("terminal"));
    term.textarea?.setAttribute("aria-label", "Guest serial console input");
    const refit = () => {
      try {
        fit.fit();
      } catch {
        // hidden or zero-sized container: fit again on the next resize
      }
    };
    refit();
    new ResizeObserver(refit).observe($("terminal"));
    term.onData((data) => sendToGuest(data));
  } catch (err) {
    // The guest still runs; consoleText() and type() keep working.
    setAlert("terminal", "error", `The terminal could not load (${errorText(err)}); run \`make build\`.`);
    term = null;
  }
}

// screenText returns the rows of the terminal's active buffer.
function screenText() {
  if (!term) return "";
  const buf = term.buffer.active;
  const rows = [];
  for (let i = 0; i < buf.length; i++) rows.push(buf.getLine(i)?.translateToString(true) ?? "");
  while (rows.length && rows[rows.length - 1] === "") rows.pop();
  return rows.join("\n");
}

const encoder = new TextEncoder();

function sendToGuest(text) {
  if (!emulator) return;
  emulator.serial_send_bytes(0, encoder.encode(text));
}

// onSerialByte receives the guest's console output one byte at a time (that
// is how v86 reports it); bytes are batched until the end of the current task,
// so the terminal and the log see one write per emulator slice.
function onSerialByte(byte) {
  pendingOutput.push(byte);
  if (!flushQueued) {
    flushQueued = true;
    queueMicrotask(flushOutput);
  }
}

function flushOutput() {
  flushQueued = false;
  const bytes = Uint8Array.from(pendingOutput);
  pendingOutput.length = 0;
  if (term) term.write(bytes);
  const recent = consoleLog.append(bytes);
  if (page.phase === "booting" && recent.includes(READY_MARKER)) {
    mark("guestReady");
    setPhase("ready");
    showBoot(false);
    if (term) term.focus();
  }
  for (const m of recent.matchAll(LEASE_RE)) {
    $("net-lease").textContent = `${m[1]} (router ${m[2]}, MTU ${m[3]})`;
  }
}

// ---- the guest ----

async function bootGuest(params) {
  showBoot(true, "Downloading the emulator and the guest image…", 0);
  let V86;
  let files;
  let cmdline;
  try {
    const v86Module = import(V86_MODULE).catch((err) => {
      throw new Error(`the emulator (${V86_MODULE}) did not load: ${errorText(err)}; run \`make build\``);
    });
    const cmdlineText = fetch(CMDLINE_FILE).then(async (resp) => {
      if (!resp.ok) throw new Error(`${CMDLINE_FILE}: HTTP ${resp.status} – the guest image is not built; run \`make build\``);
      return (await resp.text()).trim();
    });
    [{ V86 }, files, cmdline] = await Promise.all([
      v86Module,
      fetchFiles(GUEST_FILES, (got, total) => {
        const text = total ? `Downloading the guest: ${formatBytes(got)} of ${formatBytes(total)}` : `Downloading the guest: ${formatBytes(got)}`;
        showBoot(true, text, total ? got / total : undefined);
      }),
      cmdlineText,
      // v86 retries a missing wasm for ever without telling; ask first.
      requireFile(V86_WASM, "the emulator's wasm"),
    ]);
  } catch (err) {
    setPhase("error", errorText(err));
    return;
  }
  mark("imagesLoaded");
  showBoot(true, "Starting the emulator…");

  try {
    emulator = new V86({
      wasm_path: V86_WASM,
      memory_size: MEMORY_BYTES,
      vga_memory_size: VGA_MEMORY_BYTES,
      bios: { buffer: files.bios },
      vga_bios: { buffer: files.vgaBios },
      bzimage: { buffer: files.bzimage },
      initrd: { buffer: files.initrd },
      cmdline,
      // Normally no relay_url: v86 makes no network adapter of its own; the
      // bridge below connects the card to the wasm peer.
      net_device: params.relayURL ? { type: params.nic, relay_url: params.relayURL } : { type: params.nic },
      autostart: true,
      fastboot: true,
      disable_keyboard: true,
      disable_mouse: true,
      disable_speaker: true,
    });
  } catch (err) {
    setPhase("error", `the emulator did not start: ${errorText(err)}`);
    return;
  }
  page.emulator = emulator;
  // Listeners go on before the emulator makes its devices (it does that after
  // loading its wasm), so the NIC's "net0-mac" is not missed.
  emulator.add_listener("serial0-output-byte", onSerialByte);
  emulator.add_listener("net0-mac", (mac) => {
    page.mac = mac;
    $("net-mac").textContent = mac;
  });
  if (!params.relayURL) {
    // Until a lan is bridged the guest's frames are lost, and counted.
    emulator.add_listener("net0-send", () => {
      if (!bridge) ownFrames.dropped++;
    });
    bridgeIfReady();
  }
  emulator.add_listener("download-error", (ev) => {
    setPhase("error", `${ev.file_name} did not download`);
  });
  const slowStart = setTimeout(() => {
    setAlert("slow", "warn", "The emulator has not started after a minute; is the machine very busy, or did dist/v86/v86.wasm fail to load?");
  }, 60000);
  emulator.add_listener("emulator-loaded", () => {
    clearTimeout(slowStart);
    setAlert("slow", null);
    mark("emulatorStarted");
    setPhase("booting");
    showBoot(true, "Booting Linux…");
  });
}

// ---- the network: join, bridge, retry ----

// bridgeIfReady puts the guest's card on the lan once both exist (the room
// is often joined before the emulator has started).
function bridgeIfReady() {
  if (bridge || !emulator || !page.lan) return;
  bridge = bridgeV86(emulator, page.lan);
}

function unbridge() {
  if (!bridge) return;
  bridge.unhook();
  for (const k of Object.keys(bridged)) bridged[k] += bridge.frames[k];
  bridge = null;
}

let netParams = null;
let retryTimer = 0;
let countdownTimer = 0;
let statusTimer = 0;
let connecting = false;

// connect loads the wasm peer if needed and joins the room; on failure it
// schedules the next try.
async function connect() {
  const params = netParams;
  clearRetry();
  if (connecting || page.lan) return;
  connecting = true;
  try {
    setNet("loading");
    // wasm_exec.js defines globalThis.process when it is missing, and libv86
    // takes its Node.js code path (global.setImmediate) if process exists
    // when it is evaluated: evaluate libv86 first (bootGuest imports it too).
    await import(V86_MODULE).catch(() => {});
    const base = new URL(".", location.href).href;
    let lan;
    try {
      await loadPeer(base, () => lost("the wasm peer stopped."));
      setNet("joining");
      lan = await joinLAN({ base, room: params.room, token: params.token, relay: params.relay, signal: params.signal || undefined });
    } catch (err) {
      if (err instanceof PeerUnavailable) {
        setNet("unavailable", errorText(err));
        return;
      }
      scheduleRetry(page.net.state === "joining" ? `joining room ${params.room} failed: ${errorText(err)}` : errorText(err));
      return;
    }
    page.lan = lan;
    page.net.attempts = 0;
    bridgeIfReady();
    if (!("netJoined" in page.timings)) mark("netJoined");
    setNet("connected");
    renderStatus();
    statusTimer = setInterval(renderStatus, STATUS_INTERVAL_MS);
  } finally {
    connecting = false;
  }
}

// lost ends the current lan (the mesh stopped for good: a fatal server
// error, or the wasm peer exited) and schedules a new try.
function lost(why) {
  const lan = page.lan;
  if (!lan) return;
  clearInterval(statusTimer);
  statusTimer = 0;
  unbridge();
  page.lan = null;
  if (lan) {
    try {
      lan.leave();
    } catch {
      // the peer is gone already
    }
  }
  scheduleRetry(why);
}

function retryDelay(attempts) {
  const d = Math.min(RETRY_MAX_MS, RETRY_FIRST_MS * 2 ** Math.max(0, attempts - 1));
  return d * (0.8 + 0.4 * Math.random()); // jitter, so that tabs of one room spread out
}

function scheduleRetry(why) {
  clearRetry();
  page.net.attempts++;
  const at = performance.now() + retryDelay(page.net.attempts);
  setNet("retrying", why);
  $("net-retry").hidden = false;
  $("net-retry-error").textContent = why;
  const tick = () => {
    const left = Math.max(0, Math.ceil((at - performance.now()) / 1000));
    page.net.retryIn = left;
    $("net-retry-count").textContent = `Retrying in ${left} s (try ${page.net.attempts + 1}).`;
  };
  tick();
  countdownTimer = setInterval(tick, 250);
  retryTimer = setTimeout(connect, at - performance.now());
}

function clearRetry() {
  clearTimeout(retryTimer);
  clearInterval(countdownTimer);
  retryTimer = countdownTimer = 0;
  $("net-retry").hidden = true;
}

function retryNow() {
  if (page.net.state === "retrying") connect();
}

function startNetwork(params) {
  netParams = params;
  if (params.relayURL) {
    setNet("relayed", "");
    return;
  }
  if (!params.roomValid) {
    setNet("error", `"${params.room}" is not a valid room name (1–64 letters, digits, ".", "_" or "-", starting with a letter or digit).`);
    return;
  }
  $("net-retry-now").addEventListener("click", retryNow);
  // Tell the room at once when the tab goes away, rather than by timeout.
  window.addEventListener("pagehide", () => {
    try {
      if (page.lan) page.lan.leave();
    } catch {
      // the page is going away; nothing to report to
    }
  });
  return connect();
}

// ---- the network panel ----

// PATHS explains the candidate types of a link's selected pair.
const PATHS = {
  host: { label: "direct (host)", title: "direct, same network: the peers reach each other at their own addresses" },
  srflx: { label: "direct (srflx)", title: "direct through NAT: at an address a STUN server saw" },
  prflx: { label: "direct (prflx)", title: "direct, learned from the peer: an address first seen in the peer's own checks" },
  relay: { label: "RELAY (TURN)", title: "relayed by TURN: every frame passes through the relay server" },
};
const BAD_PEER_STATES = new Set(["failed", "disconnected", "closed"]);

// prefixBits returns the prefix length of lan.status().prefix, which is the
// room's subnet ("10.86.0.0/24"), or a bare number.
function prefixBits(prefix) {
  if (typeof prefix === "number") return prefix;
  const m = /\/(\d+)$/.exec(String(prefix ?? ""));
  return m ? Number(m[1]) : null;
}

// peerKind is what a peer runs: "gateway" by its role, else "browser" or
// "native" as it said in its join, "" when unknown (an older peer).
function peerKind(p) {
  if (p.role === "gateway") return "gateway";
  return p.kind === "browser" || p.kind === "native" ? p.kind : "";
}

// traffic keeps each peer's bytes/s over the last SPARK_SAMPLES seconds.
const traffic = new Map(); // peer id -> {rx, tx, t, rates: [{rx, tx}]}

function sampleTraffic(peers) {
  const now = performance.now();
  const seen = new Set();
  for (const p of peers) {
    seen.add(p.id);
    const rx = Number(p.rx_bytes) || 0;
    const tx = Number(p.tx_bytes) || 0;
    let h = traffic.get(p.id);
    if (!h) {
      h = { rx, tx, t: now, rates: [] };
      traffic.set(p.id, h);
      continue;
    }
    const dt = (now - h.t) / 1000;
    if (dt < 0.2) continue;
    // A counter that went down is a new link: start from it.
    h.rates.push({ rx: rx >= h.rx ? (rx - h.rx) / dt : 0, tx: tx >= h.tx ? (tx - h.tx) / dt : 0 });
    if (h.rates.length > SPARK_SAMPLES) h.rates.shift();
    h.rx = rx;
    h.tx = tx;
    h.t = now;
  }
  for (const id of traffic.keys()) if (!seen.has(id)) traffic.delete(id);
}

function formatRate(n) {
  return `${formatBytes(Math.round(n))}/s`;
}

// sparkline draws a peer's bytes/s (in and out) on a small canvas, scaled to
// its peak, and describes it in words for screen readers.
function sparkline(id) {
  const h = traffic.get(id);
  const rates = h ? h.rates : [];
  const c = document.createElement("canvas");
  const W = 120;
  const H = 28;
  const dpr = window.devicePixelRatio || 1;
  c.width = W * dpr;
  c.height = H * dpr;
  c.className = "spark";
  c.setAttribute("role", "img");
  const peak = rates.reduce((m, r) => Math.max(m, r.rx, r.tx), 0);
  const last = rates.length ? rates[rates.length - 1] : { rx: 0, tx: 0 };
  c.setAttribute("aria-label", `traffic over the last ${rates.length} s: now in ${formatRate(last.rx)}, out ${formatRate(last.tx)}; peak ${formatRate(peak)}`);
  c.title = c.getAttribute("aria-label");
  const g = c.getContext("2d");
  g.scale(dpr, dpr);
  g.strokeStyle = "#d5dae0";
  g.lineWidth = 1;
  g.beginPath();
  g.moveTo(0, H - 0.5);
  g.lineTo(W, H - 0.5);
  g.stroke();
  if (peak > 0) {
    const x = (i) => W - (rates.length - 1 - i) * (W / (SPARK_SAMPLES - 1));
    const y = (v) => H - 1 - (v / peak) * (H - 3);
    for (const [key, colour] of [["rx", "#0b5cad"], ["tx", "#146c2e"]]) {
      g.strokeStyle = colour;
      g.lineWidth = 1.5;
      g.beginPath();
      rates.forEach((r, i) => (i ? g.lineTo(x(i), y(r[key])) : g.moveTo(x(i), y(r[key]))));
      g.stroke();
    }
  }
  return c;
}

async function renderStatus() {
  const lan = page.lan;
  if (!lan) return;
  let st;
  try {
    st = await lan.status(); // a plain object; a promise is tolerated
  } catch (err) {
    setAlert("status", "error", `Reading the network status failed: ${errorText(err)}`);
    return;
  }
  if (lan !== page.lan) return;
  setAlert("status", null);
  const bits = prefixBits(st.prefix);
  $("net-ip").textContent = st.ip ? (bits === null ? st.ip : `${st.ip}/${bits}`) : "–";
  const peers = Array.isArray(st.peers) ? st.peers : [];
  const gw = $("net-gateway");
  const hasGateway = Boolean(st.gateway_peer) || peers.some((p) => p.role === "gateway" || p.id === st.gateway_peer) || st.role === "gateway";
  if (hasGateway) {
    gw.textContent = st.gateway ? `${st.gateway} (internet through it)` : "present";
    gw.className = "good";
  } else {
    gw.textContent = "no gateway in this room: no internet";
    gw.className = "warn-text";
  }
  const sig = $("net-signal");
  sig.textContent = st.signal || "–";
  sig.className = st.signal === "connected" ? "good" : st.signal === "reconnecting" || st.signal === "closed" ? "bad" : "";
  renderServer(st);
  if (st.signal === "reconnecting") {
    setAlert("signal", "warn", "The signaling server is unreachable; reconnecting. Existing peer links keep working.");
  } else {
    setAlert("signal", null);
  }
  if (st.signal === "closed") {
    // The mesh stopped for good (the server refused us, or we left).
    setAlert("lan", null);
    lost(`left the signaling server${st.error ? `: ${st.error}` : "."}`);
    return;
  }
  if (st.error) setAlert("lan", "warn", `Network: ${st.error}`);
  else setAlert("lan", null);

  sampleTraffic(peers);
  renderPeers(peers);
  const unreachable = peers.filter((p) => BAD_PEER_STATES.has(p.state));
  if (unreachable.length) {
    const names = unreachable.map((p) => `${p.ip || p.id} (${p.state})`).join(", ");
    setAlert("peers", "warn", `Unreachable peer${unreachable.length > 1 ? "s" : ""}: ${names}; retrying.`);
  } else {
    setAlert("peers", null);
  }
  const drops = st.drops && typeof st.drops === "object" ? Object.entries(st.drops).filter(([, n]) => n > 0) : [];
  $("net-drops").textContent = drops.length ? `Dropped frames: ${drops.map(([r, n]) => `${r} ${n}`).join(", ")}` : "";
}

// renderServer shows which signaling server welcomed the peer, and where it
// stands in the list of ?signal=.
function renderServer(st) {
  const el = $("net-server");
  const list = netParams && netParams.signal;
  const url = st.signal_url || "";
  const at = list ? list.indexOf(url) : -1;
  el.textContent = url ? (list && list.length > 1 && at >= 0 ? `${url} (${at + 1} of ${list.length})` : url) : "–";
  el.title = list && list.length > 1 ? `servers: ${list.join(", ")}` : "";
}

function renderPeers(peers) {
  const rows = peers.map((p) => {
    const bad = BAD_PEER_STATES.has(p.state);
    const tr = document.createElement("tr");
    tr.dataset.peer = p.id;
    if (bad) tr.className = "bad";
    const cell = (cls, ...lines) => {
      const td = document.createElement("td");
      if (cls) td.className = cls;
      lines.forEach((line, i) => {
        if (i) td.append(document.createElement("br"));
        td.append(line);
      });
      tr.append(td);
      return td;
    };
    const who = cell("", p.ip || "–");
    who.title = `peer ${p.id}`;
    const kind = peerKind(p);
    cell(`kind ${kind || "unknown"}`, kind || "unknown");
    const known = PATHS[p.path];
    const path = cell(p.path === "relay" && !bad ? "relay" : "", bad ? `unreachable (${p.state})` : known ? known.label : "connecting…");
    if (known && !bad) path.title = known.title;
    cell("", Number.isFinite(p.rtt_ms) ? `${Math.round(p.rtt_ms)} ms` : "–");
    cell("traffic", sparkline(p.id), `in ${formatBytes(p.rx_bytes)}`, `out ${formatBytes(p.tx_bytes)}`);
    return tr;
  });
  $("peer-rows").replaceChildren(...rows);
  $("peers-empty").hidden = peers.length > 0;
}

// ---- start ----

async function main() {
  const params = readParams();
  setupShare(params);
  setupRoomField(params);
  await setupTerminal();
  await Promise.all([bootGuest(params), startNetwork(params)]);
}

main().catch((err) => setPhase("error", errorText(err)));
