#!/usr/bin/env bash
# Installs the Debian packages peerlan builds and tests with, when missing.
# Idempotent and quick when everything is present; run as root (or with sudo).
set -euo pipefail
cd "$(dirname "$0")/.."

# Keep this list in step with README.md ("What make installs").
packages=(
	# build: guest kernel and initramfs, BIOS for v86
	linux-source-6.1 bc flex bison libelf-dev libssl-dev cpio xz-utils gzip make gcc seabios
	# build: the page's precompressed assets (web/web.mk web-precompress)
	brotli
	# tests: network namespaces, real tools, browser
	iproute2 iputils-ping iperf3 udhcpc busybox nftables coturn curl dnsutils chromium
	# tests: a real QEMU guest on bin/peer -qemu (e2e/qemu_test.go)
	qemu-system-x86
	# tests: a User-Mode-Linux guest on a bridge with bin/peer -bridge (e2e/uml_test.go)
	user-mode-linux
)

missing=()
for p in "${packages[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]} > 0)); then
	sudo=()
	if [ "$(id -u)" != 0 ]; then
		command -v sudo >/dev/null || { echo "deps: missing packages: ${missing[*]}; run as root: apt-get install ${missing[*]}" >&2; exit 1; }
		sudo=(sudo)
	fi
	echo "deps: installing ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	"${sudo[@]}" apt-get update -q
	"${sudo[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

for c in go node npm; do
	command -v "$c" >/dev/null || { echo "deps: $c not found on PATH; install it first (Go >= 1.26, Node >= 20)" >&2; exit 1; }
done
