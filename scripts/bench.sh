#!/usr/bin/env bash
# Runs every benchmark once and writes docs/benchmarks.md: package
# benchmarks with Go's default bench time, end-to-end ones (real processes,
# namespaces, browsers) once each. Every figure that has a goal is reported
# beside a baseline measured in the same run (units starting with "x-").
set -euo pipefail
cd "$(dirname "$0")/.."
export GOTOOLCHAIN=local

out=docs/benchmarks.md
raw=$(mktemp)
trap 'rm -f "$raw"' EXIT

echo "bench: package benchmarks" >&2
go test -run '^$' -bench . -benchmem -timeout 30m $(go list ./... | grep -v /e2e) | tee -a "$raw"
echo "bench: end-to-end benchmarks (once each)" >&2
go test -run '^$' -bench . -benchtime 1x -timeout 40m ./e2e/ | tee -a "$raw"

# Before the file is rewritten, which would itself count as a change.
dirty=$(git diff --quiet -- . ':!'"$out" || echo ' (with local changes)')
{
	echo "# peerlan benchmarks"
	echo
	echo "Written by \`make bench\` (scripts/bench.sh); do not edit by hand. Units starting with \`x-\` are"
	echo "ratios against a baseline measured in the same run (e.g. \`x-coturn\` = peerlan / coturn)."
	echo
	echo "- date: $(date -u +%Y-%m-%dT%H:%MZ), commit $(git rev-parse --short HEAD)$dirty"
	echo "- machine: $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')), $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo) RAM, Linux $(uname -r)"
	echo "- $(go version | cut -d' ' -f3-), $(/usr/bin/chromium --version 2>/dev/null || echo 'no chromium')"
	echo
	awk '
		/^pkg: / { pkg = $2; sub(/^github.com\/peerlan\/peerlan\/?/, "", pkg); if (pkg == "") pkg = "."; next }
		/^Benchmark/ {
			if (pkg != last) { printf "\n## %s\n\n| benchmark | runs | results |\n|---|---|---|\n", pkg; last = pkg }
			name = $1; sub(/-[0-9]+$/, "", name); sub(/^Benchmark/, "", name)
			res = ""
			for (i = 3; i < NF; i += 2) res = res (res == "" ? "" : ", ") $i " " $(i+1)
			printf "| %s | %s | %s |\n", name, $2, res
		}
	' "$raw"
} > "$out"
echo "bench: wrote $out" >&2
