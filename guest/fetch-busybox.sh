#!/usr/bin/env bash
# Fetches Debian's busybox-static for one architecture (i386 for the v86
# guest, amd64 for the UML guest) into a cache folder and unpacks it, without
# root and without touching the machine's apt configuration or dpkg database:
# apt runs with a private source list, package lists and download cache under
# the cache folder, for that architecture only. The Release file is still
# verified with the machine's Debian archive keyring, and the .deb against the
# signed hashes, exactly as for a normal install.
#
# usage: guest/fetch-busybox.sh CACHE_DIR [ARCH]
#   ARCH  a Debian architecture (default i386); give each its own CACHE_DIR,
#         since the private apt state there is made afresh for one ARCH
# result: CACHE_DIR/busybox/bin/busybox and CACHE_DIR/busybox/VERSION
#
# GUEST_DEBIAN_MIRROR (default http://deb.debian.org/debian) and
# GUEST_DEBIAN_SUITE (default bookworm) choose where the package comes from.
set -euo pipefail

cache="${1:?usage: $0 CACHE_DIR [ARCH]}"
arch="${2:-i386}"
case "$arch" in
*[!a-z0-9]* | "") echo "guest: bad architecture '$arch' (want a Debian one, e.g. i386, amd64)" >&2; exit 2 ;;
esac
mirror="${GUEST_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
suite="${GUEST_DEBIAN_SUITE:-bookworm}"
pkg=busybox-static

mkdir -p "$cache"
cache="$(cd "$cache" && pwd)"
apt="$cache/apt"
rm -rf "$apt" "$cache/busybox.new"
mkdir -p "$apt/lists/partial" "$apt/archives/partial" "$apt/sources.list.d" \
	"$apt/preferences.d" "$apt/deb" "$cache/busybox.new"
echo "deb [arch=$arch] $mirror $suite main" >"$apt/sources.list"

opts=(
	-o APT::Architecture="$arch"
	-o APT::Architectures="$arch"
	-o Dir::Etc::SourceList="$apt/sources.list"
	-o Dir::Etc::SourceParts="$apt/sources.list.d"
	-o Dir::Etc::Preferences=/dev/null
	-o Dir::Etc::PreferencesParts="$apt/preferences.d"
	-o Dir::State::Lists="$apt/lists"
	-o Dir::State::status=/dev/null
	-o Dir::Cache="$apt"
	-o Dir::Cache::archives="$apt/archives"
	-o Dir::Cache::pkgcache=
	-o Dir::Cache::srcpkgcache=
	-o Debug::NoLocking=1
	-o Acquire::Languages=none
	-o Acquire::IndexTargets::deb::DEP-11::DefaultEnabled=false
	-o Acquire::IndexTargets::deb::DEP-11-icons::DefaultEnabled=false
	-o Acquire::IndexTargets::deb::DEP-11-icons-small::DefaultEnabled=false
	-q
)
# As root, apt would hand downloads to the _apt user, who cannot write here.
[ "$(id -u)" = 0 ] && opts+=(-o APT::Sandbox::User=root)

echo "guest: fetching $pkg:$arch from $mirror $suite (private apt state in $apt)"
# apt-get update exits 0 even when an index failed; the download below is
# what proves the list is usable.
apt-get "${opts[@]}" update >"$apt/update.log" 2>&1 || {
	cat "$apt/update.log" >&2
	echo "guest: apt-get update for $arch failed (log above)" >&2
	exit 1
}
(cd "$apt/deb" && apt-get "${opts[@]}" download "$pkg") >"$apt/download.log" 2>&1 || {
	cat "$apt/update.log" "$apt/download.log" >&2
	echo "guest: could not download $pkg:$arch (logs above)" >&2
	exit 1
}

deb=("$apt"/deb/"$pkg"_*_"$arch".deb)
[ -f "${deb[0]}" ] || { echo "guest: no $pkg .deb after download" >&2; exit 1; }
dpkg-deb -x "${deb[0]}" "$cache/busybox.new"
dpkg-deb -f "${deb[0]}" Version >"$cache/busybox.new/VERSION"
[ -x "$cache/busybox.new/bin/busybox" ] || { echo "guest: ${deb[0]} has no bin/busybox" >&2; exit 1; }

rm -rf "$cache/busybox"
mv "$cache/busybox.new" "$cache/busybox"
echo "guest: $pkg $(cat "$cache/busybox/VERSION") unpacked ($(stat -c %s "$cache/busybox/bin/busybox") bytes)"
