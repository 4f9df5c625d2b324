#!/usr/bin/env bash
# Reading release files: fwdist's FsStore (ReleaseStore::open_range) vs unftp-sbe-fs's
# Filesystem::get, the libunftp filesystem backend the device tree could have wrapped.
# Same files, same process, alternating rounds. Not part of CI.
#
#   bench/store-read.sh [ROUNDS]      (default 5; a 64 MiB and a 1 KiB file)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
ROUNDS=${1:-5}
W=$(mktemp -d /tmp/fwdist-store-read.XXXXXX)
trap 'rm -rf "$W"' EXIT
mkdir -p "$W/releases/iq2/1.0.0" "$W/releases/iq2/1.0.1"
head -c 67108864 /dev/urandom > "$W/releases/iq2/1.0.0/firmware.bin"
head -c 1024 /dev/urandom > "$W/releases/iq2/1.0.1/firmware.bin"
# The bench shares the main target directory, so only unftp-sbe-fs and this program build.
cd "$ROOT/bench/store-read"
[ -f Cargo.lock ] || cp "$ROOT/Cargo.lock" Cargo.lock
CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}" cargo build --release -q
"${CARGO_TARGET_DIR:-$ROOT/target}/release/fwdist-bench-store-read" "$W" releases/iq2/1.0.0/firmware.bin \
  releases/iq2/1.0.1/firmware.bin "$ROUNDS"
