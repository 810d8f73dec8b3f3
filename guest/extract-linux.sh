#!/usr/bin/env bash
# Extracts Debian's linux-source tarball into the guest cache.
#
# usage: guest/extract-linux.sh TARBALL SRC_DIR KBUILD_DIR
#
# A fresh source tree invalidates every object built from the old one (the
# tarball's file times may be older than those objects, so make would not
# notice), so KBUILD_DIR is wiped too. Leaves SRC_DIR/.peerlan-extracted
# naming the tarball it came from.
set -euo pipefail

tarball="${1:?usage: $0 TARBALL SRC_DIR KBUILD_DIR}"
src="${2:?usage: $0 TARBALL SRC_DIR KBUILD_DIR}"
kbuild="${3:?usage: $0 TARBALL SRC_DIR KBUILD_DIR}"

[ -r "$tarball" ] || {
	echo "guest: $tarball not found: install Debian's linux-source-6.1 (scripts/deps.sh does)" >&2
	exit 1
}

if [ ! -d "$kbuild" ]; then
	echo "guest: first build: extracting Linux (~1.5 GB in $(dirname "$src")) and compiling an"
	echo "guest: i386 kernel takes about 5 minutes on 2 cores; later builds are incremental."
fi
echo "guest: extracting $tarball"
rm -rf "$src.new" "$src" "$kbuild"
mkdir -p "$src.new"
tar -xJf "$tarball" -C "$src.new" --strip-components=1
if [ ! -f "$src.new/Makefile" ] || [ ! -f "$src.new/usr/gen_init_cpio.c" ]; then
	echo "guest: $tarball does not look like a Linux source tree" >&2
	exit 1
fi
echo "$tarball $(stat -c '%s %Y' "$tarball")" >"$src.new/.peerlan-extracted"
mv "$src.new" "$src"
