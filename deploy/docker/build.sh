#!/usr/bin/env bash
# THE build of the shipped binary: the Dockerfile's builder stage runs this
# script, and so does tests/run, whose smoke test (tests/deploy/smoke.sh)
# then exercises the very binary it produced.
#
#   deploy/docker/build.sh [DIST_DIR]     default DIST_DIR: <target dir>/dist
#
# It runs `cargo build --release --locked`, copies the binary to
# DIST_DIR/portcullis, strips the copy (the release profile keeps the
# symbol table: `strip = "debuginfo"`) and prints its size. target/release
# itself is left as cargo made it, so concurrent builds in the same tree
# keep their cache.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"

target_dir="${CARGO_TARGET_DIR:-$root/target}"
dist="${1:-$target_dir/dist}"

cargo build --release --locked --bin portcullis

mkdir -p "$dist"
# Copy to a temporary name, then rename: a binary being run (a smoke test,
# a concurrent build.sh) is never overwritten in place.
tmp="$dist/.portcullis.$$"
cp "$target_dir/release/portcullis" "$tmp"
if command -v strip >/dev/null; then
  strip --strip-all "$tmp"
else
  echo "build.sh: no strip on PATH; shipping the unstripped binary" >&2
fi
mv -f "$tmp" "$dist/portcullis"

bytes=$(wc -c <"$dist/portcullis")
printf 'built %s: %s bytes (%s MB)\n' "$dist/portcullis" "$bytes" \
  "$(awk -v b="$bytes" 'BEGIN { printf "%.1f", b / 1000000 }')"
