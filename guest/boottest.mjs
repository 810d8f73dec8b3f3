#!/usr/bin/env node
// Boots the peerlan guest image in v86 under Node, headless, and prints one
// JSON object on stdout with what it measured. Exit status: 0 when every step
// passed, 1 on a failed check or a timeout (with the console's tail on
// stderr), 2 on bad usage.
//
//   node guest/boottest.mjs V86_DIR IMAGE_DIR [options]
//
//   V86_DIR    the v86 npm package folder (holds build/libv86.mjs, build/v86.wasm)
//   IMAGE_DIR  the guest image folder (bzImage, initrd.gz, cmdline.txt);
//              the BIOS is read from IMAGE_DIR/../bios unless --bios is given
//
// Options:
//   --nic virtio|ne2k   the network card v86 emulates (default virtio)
//   --net               also act as the LAN on net0: answer the guest's DHCP
//                       (10.86.0.7/24, router and DNS 10.86.0.1, MTU 1400),
//                       ARP and ping for 10.86.0.1; check the lease line, the
//                       applied address/route/MTU/DNS, `ping -c 3` and that
//                       Ctrl-C stops a running ping
//   --net-delay SECONDS with --net: drop the guest's frames for this long
//                       after start, as when the page attaches the network
//                       late; the guest must keep asking for a lease
//   --timeout SECONDS   limit for each wait (default 120)
//   --cmdline TEXT      kernel command line (default: IMAGE_DIR/cmdline.txt)
//   --bios DIR          folder with seabios.bin and vgabios.bin
//   --console           copy the guest console to stderr as it arrives
//
// Boot time (boot_ms) runs from the emulator's construction to the first
// shell prompt, so it includes compiling v86's wasm and the BIOS; boot_cpu_ms
// is the CPU time Node spent meanwhile (all threads).
import { readFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { pathToFileURL } from "node:url";

const PROMPT = "guest:/# ";
const READY = "peerlan guest ready";
const usage = "usage: node guest/boottest.mjs V86_DIR IMAGE_DIR [--nic virtio|ne2k] [--net [--net-delay SECONDS]] [--timeout SECONDS] [--cmdline TEXT] [--bios DIR] [--console]";

function parseArgs(argv) {
	const opts = { nic: "virtio", net: false, netDelay: 0, timeout: 120, cmdline: null, bios: null, console: false, positional: [] };
	for (let i = 0; i < argv.length; i++) {
		const a = argv[i];
		const value = () => {
			if (i + 1 >= argv.length) throw new Error(`${a} needs a value`);
			return argv[++i];
		};
		switch (a) {
		case "--nic": opts.nic = value(); break;
		case "--net": opts.net = true; break;
		case "--net-delay": opts.netDelay = Number(value()); break;
		case "--timeout": opts.timeout = Number(value()); break;
		case "--cmdline": opts.cmdline = value(); break;
		case "--bios": opts.bios = value(); break;
		case "--console": opts.console = true; break;
		case "-h": case "--help": throw new Error("help");
		default:
			if (a.startsWith("-")) throw new Error(`unknown option ${a}`);
			opts.positional.push(a);
		}
	}
	if (opts.positional.length !== 2) throw new Error("need V86_DIR and IMAGE_DIR");
	if (!["virtio", "ne2k"].includes(opts.nic)) throw new Error(`--nic must be virtio or ne2k, not ${opts.nic}`);
	if (!(opts.timeout > 0)) throw new Error("--timeout must be a positive number of seconds");
	if (!(opts.netDelay >= 0)) throw new Error("--net-delay must be a number of seconds");
	if (opts.netDelay && !opts.net) throw new Error("--net-delay needs --net");
	return opts;
}

function readBuffer(path) {
	try {
		const b = readFileSync(path);
		return b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength);
	} catch (err) {
		throw new Error(`cannot read ${path}: ${err.message} (build the image with \`make guest-image\`)`);
	}
}

// Console collects the guest's serial output and lets callers wait for text
// that appears after a given offset. Offsets count every byte since boot,
// even when old output has been dropped to bound memory.
class Console {
	constructor(echo) {
		this.text = "";
		this.base = 0; // offset of text[0]
		this.echo = echo;
		this.waiters = [];
	}
	get end() {
		return this.base + this.text.length;
	}
	push(byte) {
		const ch = String.fromCharCode(byte);
		this.text += ch;
		if (this.echo) process.stderr.write(ch);
		// Bounded: no wait needs more than the last megabyte.
		if (this.text.length > 2 << 20) {
			const drop = this.text.length - (1 << 20);
			this.text = this.text.slice(drop);
			this.base += drop;
		}
		this.waiters = this.waiters.filter((w) => !w.check());
	}
	// slice returns the output between two offsets that are still held.
	slice(from, to = this.end) {
		return this.text.slice(Math.max(0, from - this.base), to - this.base);
	}
	// waitFor resolves with the offset just past `needle` once it appears at
	// or after offset `from`; it rejects after `ms` with `what` in the message.
	waitFor(needle, from, ms, what) {
		return new Promise((resolveWait, rejectWait) => {
			const w = {
				check: () => {
					const i = this.text.indexOf(needle, Math.max(0, from - this.base));
					if (i < 0) return false;
					clearTimeout(w.timer);
					resolveWait(this.base + i + needle.length);
					return true;
				},
			};
			if (w.check()) return;
			w.timer = setTimeout(() => {
				this.waiters = this.waiters.filter((x) => x !== w);
				rejectWait(new Error(`timeout after ${ms / 1000} s waiting for ${what} (${JSON.stringify(needle)})`));
			}, ms);
			this.waiters.push(w);
		});
	}
	tail(n = 1500) {
		return this.text.slice(-n);
	}
}

// ---- a minimal LAN for --net: DHCP server, ARP and ICMP echo for the router.

const LAN = {
	routerMac: Uint8Array.from([0x02, 0x50, 0x4c, 0x00, 0x00, 0x01]),
	router: [10, 86, 0, 1],
	guest: [10, 86, 0, 7],
	prefix: 24,
	mtu: 1400,
	leaseSeconds: 3600,
};

function checksum(buf, start, end) {
	let sum = 0;
	for (let i = start; i < end; i += 2) sum += (buf[i] << 8) | (i + 1 < end ? buf[i + 1] : 0);
	while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
	return ~sum & 0xffff;
}

function ethernet(dst, type, payload) {
	const f = new Uint8Array(14 + payload.length);
	f.set(dst, 0);
	f.set(LAN.routerMac, 6);
	f[12] = type >> 8;
	f[13] = type & 0xff;
	f.set(payload, 14);
	return f;
}

function ipv4(proto, src, dst, payload) {
	const p = new Uint8Array(20 + payload.length);
	p[0] = 0x45;
	p[2] = p.length >> 8;
	p[3] = p.length & 0xff;
	p[8] = 64;
	p[9] = proto;
	p.set(src, 12);
	p.set(dst, 16);
	const c = checksum(p, 0, 20);
	p[10] = c >> 8;
	p[11] = c & 0xff;
	p.set(payload, 20);
	return p;
}

function udp(srcPort, dstPort, payload) {
	// The UDP checksum is optional over IPv4; 0 means "none".
	const u = new Uint8Array(8 + payload.length);
	u[0] = srcPort >> 8; u[1] = srcPort & 0xff;
	u[2] = dstPort >> 8; u[3] = dstPort & 0xff;
	u[4] = u.length >> 8; u[5] = u.length & 0xff;
	u.set(payload, 8);
	return u;
}

// dhcpReply answers a DHCPDISCOVER with an OFFER and a DHCPREQUEST with an
// ACK; it returns null for anything else.
function dhcpReply(req) {
	if (req.length < 240 || req[0] !== 1) return null;
	if (req[236] !== 99 || req[237] !== 130 || req[238] !== 83 || req[239] !== 99) return null;
	let type = 0;
	for (let i = 240; i < req.length && req[i] !== 255;) {
		if (req[i] === 0) { i++; continue; }
		if (i + 1 >= req.length) break;
		if (req[i] === 53) type = req[i + 2];
		i += 2 + req[i + 1];
	}
	const replyType = type === 1 ? 2 : type === 3 ? 5 : 0;
	if (!replyType) return null;
	const mask = 0xffffffff << (32 - LAN.prefix) >>> 0;
	const be32 = (n) => [n >>> 24, (n >>> 16) & 0xff, (n >>> 8) & 0xff, n & 0xff];
	const opts = [
		99, 130, 83, 99,
		53, 1, replyType,
		54, 4, ...LAN.router,
		51, 4, ...be32(LAN.leaseSeconds),
		1, 4, ...be32(mask),
		3, 4, ...LAN.router,
		6, 4, ...LAN.router,
		26, 2, LAN.mtu >> 8, LAN.mtu & 0xff,
		255,
	];
	const r = new Uint8Array(236 + opts.length);
	r[0] = 2; // BOOTREPLY
	r[1] = 1; r[2] = 6;
	r.set(req.subarray(4, 8), 4); // xid
	r.set(req.subarray(10, 12), 10); // flags
	r.set(LAN.guest, 16); // yiaddr
	r.set(LAN.router, 20); // siaddr
	r.set(req.subarray(28, 44), 28); // chaddr
	r.set(opts, 236);
	return r;
}

// lanReply returns the frame the router sends back for `f`, or null.
function lanReply(f) {
	if (f.length < 14) return null;
	const type = (f[12] << 8) | f[13];
	const src = f.subarray(6, 12);
	const eq = (a, b) => a.length === b.length && a.every((x, i) => x === b[i]);
	if (type === 0x0806 && f.length >= 42) {
		const arp = f.subarray(14, 42);
		if (((arp[6] << 8) | arp[7]) !== 1 || !eq(arp.subarray(24, 28), LAN.router)) return null;
		const r = new Uint8Array(28);
		r.set([0, 1, 8, 0, 6, 4, 0, 2]);
		r.set(LAN.routerMac, 8);
		r.set(LAN.router, 14);
		r.set(arp.subarray(8, 18), 18); // sender MAC and IP become the target
		return ethernet(src, 0x0806, r);
	}
	if (type !== 0x0800 || f.length < 34) return null;
	const ip = f.subarray(14);
	const ihl = (ip[0] & 0x0f) * 4;
	const total = Math.min((ip[2] << 8) | ip[3], ip.length);
	if (ip[9] === 17 && total >= ihl + 8) {
		const u = ip.subarray(ihl, total);
		if (((u[2] << 8) | u[3]) !== 67) return null;
		const reply = dhcpReply(u.subarray(8));
		if (!reply) return null;
		return ethernet([0xff, 0xff, 0xff, 0xff, 0xff, 0xff], 0x0800,
			ipv4(17, LAN.router, [255, 255, 255, 255], udp(67, 68, reply)));
	}
	if (ip[9] === 1 && eq(ip.subarray(16, 20), LAN.router) && total >= ihl + 8 && ip[ihl] === 8) {
		const icmp = Uint8Array.from(ip.subarray(ihl, total));
		icmp[0] = 0; // echo reply
		icmp[2] = icmp[3] = 0;
		const c = checksum(icmp, 0, icmp.length);
		icmp[2] = c >> 8;
		icmp[3] = c & 0xff;
		return ethernet(src, 0x0800, ipv4(1, LAN.router, ip.subarray(12, 16), icmp));
	}
	return null;
}

// ---- the test

async function main() {
	let opts;
	try {
		opts = parseArgs(process.argv.slice(2));
	} catch (err) {
		console.error(err.message === "help" ? usage : `boottest: ${err.message}\n${usage}`);
		process.exit(2);
	}
	const [v86Dir, imageDir] = opts.positional.map((p) => resolve(p));
	const biosDir = resolve(opts.bios ?? join(imageDir, "..", "bios"));
	const cmdline = opts.cmdline ?? new TextDecoder().decode(readBuffer(join(imageDir, "cmdline.txt"))).trim();
	const limit = opts.timeout * 1000;

	let pkg;
	let V86;
	try {
		pkg = JSON.parse(readFileSync(join(v86Dir, "package.json"), "utf8"));
		({ V86 } = await import(pathToFileURL(join(v86Dir, "build", "libv86.mjs")).href));
	} catch (err) {
		throw new Error(`${v86Dir} is not the v86 npm package: ${err.message}`);
	}

	const con = new Console(opts.console);
	const result = { nic: opts.nic, v86: pkg.version, cmdline, memory_mib: 128 };
	const t0 = performance.now();
	const cpu0 = process.cpuUsage();
	const emulator = new V86({
		wasm_path: join(v86Dir, "build", "v86.wasm"),
		bios: { buffer: readBuffer(join(biosDir, "seabios.bin")) },
		vga_bios: { buffer: readBuffer(join(biosDir, "vgabios.bin")) },
		bzimage: { buffer: readBuffer(join(imageDir, "bzImage")) },
		initrd: { buffer: readBuffer(join(imageDir, "initrd.gz")) },
		cmdline,
		memory_size: 128 * 1024 * 1024,
		vga_memory_size: 2 * 1024 * 1024,
		net_device: { type: opts.nic },
		autostart: true,
		disable_keyboard: true,
		disable_mouse: true,
		disable_speaker: true,
	});
	emulator.add_listener("serial0-output-byte", (b) => con.push(b));

	let framesIn = 0;
	let framesOut = 0;
	if (opts.net) {
		emulator.add_listener("net0-send", (frame) => {
			if (performance.now() - t0 < opts.netDelay * 1000) return; // not attached yet
			framesOut++;
			const reply = lanReply(frame);
			if (reply) {
				framesIn++;
				// Reply asynchronously, as a real network would.
				setTimeout(() => emulator.bus.send("net0-receive", reply), 0);
			}
		});
	}

	const stop = async (code) => {
		try {
			await emulator.destroy();
		} catch {
			// The emulator may already be gone; we are exiting anyway.
		}
		process.exit(code);
	};

	// run types a command and returns what it printed. The output is framed
	// by markers that the echoed command line cannot contain (the shell's
	// echo wraps long lines, so it cannot simply be cut off).
	let seq = 0;
	const run = async (cmd, ms = limit) => {
		const tag = `@@${++seq}`;
		const from = con.end;
		emulator.serial0_send(`echo ${tag}""B; ${cmd}; echo ${tag}""E\n`);
		const start = await con.waitFor(`${tag}B\r\n`, from, ms, `the output of \`${cmd}\``);
		const end = await con.waitFor(`${tag}E\r\n`, start, ms, `the end of \`${cmd}\``);
		await con.waitFor(PROMPT, end, ms, `the prompt after \`${cmd}\``);
		return con.slice(start, end - `${tag}E\r\n`.length).replace(/\r/g, "").trim();
	};
	const check = (ok, what, got) => {
		if (!ok) throw new Error(`check failed: ${what}; got ${JSON.stringify(got)}`);
	};

	try {
		const ready = await con.waitFor(READY, 0, limit, "the guest's ready line");
		result.ready_ms = Math.round(performance.now() - t0);
		await con.waitFor(PROMPT, ready, limit, "the first shell prompt");
		result.boot_ms = Math.round(performance.now() - t0);
		// CPU time of this process (emulator and wasm compiler threads) up to
		// the prompt: steadier than boot_ms on a loaded machine.
		const cpu = process.cpuUsage(cpu0);
		result.boot_cpu_ms = Math.round((cpu.user + cpu.system) / 1000);
		if (opts.net) {
			// Before any command, so the lease line cannot land in its output.
			const lease = `peerlan: eth0 ${LAN.guest.join(".")}/${LAN.prefix} router ${LAN.router.join(".")} mtu ${LAN.mtu}`;
			await con.waitFor(lease, 0, limit, "the DHCP lease line");
			result.lease_ms = Math.round(performance.now() - t0);
			if (opts.netDelay) result.lease_after_attach_ms = result.lease_ms - opts.netDelay * 1000;
			result.lease = lease;
		}

		result.uname = await run("uname -a");
		check(/^Linux \S+ 6\.1\.\S* .* i[3-6]86/.test(result.uname), "uname -a names Linux 6.1 on i386", result.uname);
		const drv = await run("readlink /sys/class/net/eth0/device/driver; cat /sys/class/net/eth0/address");
		const [driverPath = "", mac = ""] = drv.split("\n");
		result.eth0_driver = driverPath.split("/").pop();
		result.eth0_mac = mac.trim();
		const wantDriver = opts.nic === "virtio" ? "virtio_net" : "ne2k-pci";
		check(result.eth0_driver === wantDriver, `eth0 is driven by ${wantDriver}`, drv);

		if (opts.net) {
			const state = await run("ip -4 addr show dev eth0; ip route; cat /etc/resolv.conf; cat /sys/class/net/eth0/mtu");
			check(state.includes(`inet ${LAN.guest.join(".")}/${LAN.prefix}`), "eth0 has the leased address", state);
			check(state.includes(`default via ${LAN.router.join(".")} dev eth0`), "the default route goes to the router", state);
			check(state.includes(`nameserver ${LAN.router.join(".")}`), "resolv.conf names the DNS server", state);
			check(new RegExp(`^${LAN.mtu}$`, "m").test(state), "eth0's MTU follows option 26", state);

			const ping = await run(`ping -c 3 -W 5 ${LAN.router.join(".")}`);
			check(/3 packets transmitted, 3 packets received/.test(ping), "ping -c 3 gets 3 replies", ping);
			result.ping = ping.split("\n").pop();

			// Ctrl-C must reach ping through the console's job control.
			const from = con.end;
			emulator.serial0_send(`ping ${LAN.router.join(".")}\n`);
			await con.waitFor("seq=1 ", from, limit, "two ping replies");
			emulator.serial0_send("\x03");
			const end = await con.waitFor("\n" + PROMPT, from, 15000, "the prompt after Ctrl-C");
			const out = con.slice(from, end);
			check(/packets transmitted/.test(out), "Ctrl-C stops ping, which prints its summary", out);
			result.ctrl_c = "ok";
			result.frames = { from_guest: framesOut, to_guest: framesIn };
		}
	} catch (err) {
		process.stdout.write(JSON.stringify({ ...result, error: err.message }) + "\n");
		console.error(`boottest: ${err.message}\n--- last console output ---\n${con.tail()}\n---`);
		await stop(1);
	}
	process.stdout.write(JSON.stringify(result) + "\n");
	await stop(0);
}

main().catch((err) => {
	console.error(`boottest: ${err.message ?? err}`);
	process.exit(1);
});
