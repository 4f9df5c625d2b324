#!/usr/bin/env bash
# Rollout status at fleet scale (issue 9): seeds DEVICES devices and RECORDS download records
# through fwdist's own database layer and services into a fresh SQLite database, then times
# GET /rollouts/{id}, the rollout list, the failed-devices page, the dashboard's endpoints
# (fleet, history, sites, device search and page, releases, audit) and a login's target lookup
# through the real router. Not part of CI.
#
#   bench/status.sh [DEVICES] [RECORDS]     (default 1000000 10000000: about 15 minutes here)
#   FWDIST_BENCH_DB=postgres bench/status.sh ...   the same on a fresh PostgreSQL cluster
#       (tests/services/postgres.sh, PostgreSQL's default durability: PG_DURABLE=1)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
DEVICES=${1:-1000000}
RECORDS=${2:-10000000}
W=$(mktemp -d /tmp/fwdist-status.XXXXXX)
trap 'rm -rf "$W"' EXIT
if [ "${FWDIST_BENCH_DB:-sqlite}" = postgres ]; then
  chmod 755 "$W"
  eval "$(PG_DURABLE=1 "$ROOT/tests/services/postgres.sh" start "$W/pg")"
  trap '"$ROOT/tests/services/postgres.sh" stop "$W/pg"; rm -rf "$W"' EXIT
  psql -q "$FWDIST_TEST_PG_URL" -c 'CREATE DATABASE fwdist_bench'
  export FWDIST_BENCH_DB_URL="${FWDIST_TEST_PG_URL%/postgres}/fwdist_bench"
fi
cd "$ROOT/bench/status"
[ -f Cargo.lock ] || cp "$ROOT/Cargo.lock" Cargo.lock
CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}" cargo build --release -q
"${CARGO_TARGET_DIR:-$ROOT/target}/release/fwdist-bench-status" "$W" "$DEVICES" "$RECORDS"
