#!/usr/bin/env bash
# Rollout status at fleet scale (issue 9): seeds DEVICES devices and RECORDS download records
# through fwdist's own database layer and services into a fresh SQLite database, then times
# GET /rollouts/{id}, the rollout list, the failed-devices page, the dashboard's endpoints
# (fleet, history, sites, device search and page, releases, audit) and a login's target lookup
# through the real router. Not part of CI.
#
#   bench/status.sh [DEVICES] [RECORDS]     (default 1000000 10000000: about 15 minutes here)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
DEVICES=${1:-1000000}
RECORDS=${2:-10000000}
W=$(mktemp -d /tmp/fwdist-status.XXXXXX)
trap 'rm -rf "$W"' EXIT
cd "$ROOT/bench/status"
[ -f Cargo.lock ] || cp "$ROOT/Cargo.lock" Cargo.lock
CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}" cargo build --release -q
"${CARGO_TARGET_DIR:-$ROOT/target}/release/fwdist-bench-status" "$W" "$DEVICES" "$RECORDS"
