#!/usr/bin/env bash
# Configures and builds the guest kernel out of tree.
#
# usage: guest/build-kernel.sh SRC_DIR KBUILD_DIR FRAGMENT OUT_BZIMAGE
#
# Configuration: `make ARCH=i386 tinyconfig`, FRAGMENT merged over it with the
# kernel's merge_config.sh, then olddefconfig. Kconfig silently drops an
# option whose dependencies are unmet, so every option FRAGMENT sets must be
# in the final .config, and none it unsets may be set: otherwise this fails
# and names the options. The .config is replaced only when it changed, so an
# unchanged configuration rebuilds nothing.
#
# GUEST_CROSS_COMPILE sets CROSS_COMPILE (needed on hosts other than x86).
set -euo pipefail

src="${1:?usage: $0 SRC_DIR KBUILD_DIR FRAGMENT OUT_BZIMAGE}"
kbuild="${2:?usage: $0 SRC_DIR KBUILD_DIR FRAGMENT OUT_BZIMAGE}"
fragment="${3:?usage: $0 SRC_DIR KBUILD_DIR FRAGMENT OUT_BZIMAGE}"
out="${4:?usage: $0 SRC_DIR KBUILD_DIR FRAGMENT OUT_BZIMAGE}"

# We are usually run from make: its jobserver is not ours to use.
unset MAKEFLAGS MFLAGS MAKELEVEL MAKEOVERRIDES GNUMAKEFLAGS
mkdir -p "$kbuild"
src="$(cd "$src" && pwd)"
kbuild="$(cd "$kbuild" && pwd)"
fragment="$(cd "$(dirname "$fragment")" && pwd)/$(basename "$fragment")"
kmake=(make -C "$src" O="$kbuild" ARCH=i386)
[ -n "${GUEST_CROSS_COMPILE:-}" ] && kmake+=(CROSS_COMPILE="$GUEST_CROSS_COMPILE")
# Reproducible: the same inputs give the same bzImage, wherever it is built.
export KBUILD_BUILD_USER=peerlan KBUILD_BUILD_HOST=peerlan KBUILD_BUILD_VERSION=1
epoch="${SOURCE_DATE_EPOCH:-$(stat -c %Y "$src/Makefile")}"
KBUILD_BUILD_TIMESTAMP="$(LC_ALL=C date -u -d "@$epoch")"
export KBUILD_BUILD_TIMESTAMP
log="$kbuild/peerlan-build.log"

# check_config FRAGMENT CONFIG: every "CONFIG_X=v" of the fragment is in the
# config verbatim; no "# CONFIG_X is not set" of the fragment is set there.
check_config() {
	local bad=0 line sym
	while IFS= read -r line; do
		case "$line" in
		CONFIG_*=*)
			if ! grep -qxF -- "$line" "$2"; then
				sym="${line%%=*}"
				echo "guest: kernel config: wanted $line, got: $(grep -E "^(# )?${sym}[= ]" "$2" || echo "(absent: a dependency is unmet)")" >&2
				bad=1
			fi
			;;
		"# CONFIG_"*" is not set")
			sym="${line#\# }"
			sym="${sym%% *}"
			if grep -qE "^$sym=" "$2"; then
				echo "guest: kernel config: wanted $sym unset, got: $(grep -E "^$sym=" "$2") (something selects it)" >&2
				bad=1
			fi
			;;
		esac
	done <"$1"
	return "$bad"
}

echo "guest: configuring the kernel (tinyconfig + $(basename "$fragment"))"
[ -f "$kbuild/.config" ] && cp -p "$kbuild/.config" "$kbuild/.config.prev"
{
	"${kmake[@]}" tinyconfig
	(cd "$src" && ARCH=i386 scripts/kconfig/merge_config.sh -m -O "$kbuild" "$kbuild/.config" "$fragment")
	"${kmake[@]}" olddefconfig
} >"$log" 2>&1 || {
	cat "$log" >&2
	echo "guest: kernel configuration failed (log above)" >&2
	exit 1
}
if ! check_config "$fragment" "$kbuild/.config"; then
	echo "guest: $fragment asks for options the kernel cannot have as written; fix the fragment" >&2
	exit 1
fi
if [ -f "$kbuild/.config.prev" ] && cmp -s "$kbuild/.config" "$kbuild/.config.prev"; then
	mv "$kbuild/.config.prev" "$kbuild/.config" # keep the old time: nothing to redo
else
	rm -f "$kbuild/.config.prev"
	echo "guest: kernel configuration changed"
fi

jobs="$(nproc)"
echo "guest: compiling the kernel with -j$jobs (log: $log)"
start=$SECONDS
"${kmake[@]}" -j"$jobs" bzImage >>"$log" 2>&1 &
build=$!
trap 'kill "$build" 2>/dev/null' EXIT
# A line every 30 s so a long first build does not look stuck.
while kill -0 "$build" 2>/dev/null; do
	for _ in $(seq 30); do
		kill -0 "$build" 2>/dev/null || break
		sleep 1
	done
	if kill -0 "$build" 2>/dev/null; then
		echo "guest: still compiling ($((SECONDS - start)) s, $(grep -c '^  CC ' "$log" || true) files so far)"
	fi
done
if ! wait "$build"; then
	tail -n 40 "$log" >&2
	echo "guest: kernel build failed (end of $log above)" >&2
	exit 1
fi
trap - EXIT

mkdir -p "$(dirname "$out")"
cp "$kbuild/arch/x86/boot/bzImage" "$out.tmp"
mv "$out.tmp" "$out"
echo "guest: $out: $(stat -c %s "$out") bytes ($((SECONDS - start)) s)"
