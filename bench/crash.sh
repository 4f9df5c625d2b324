#!/usr/bin/env bash
# Crash rounds, long form (issue 15): a release-built `fwdist serve` under 200 IQs downloading
# and 5 uploads at once is `kill -9`ed at a random moment 1-2.5 s into each of 20 rounds (from
# the second round on, after another connection has held the database's write lock for a
# further 0.5-1.5 s, so records queue behind it) and restarted; after each restart the run checks that every download whose 226 reached its IQ
# before the kill has its `complete` record, every answered upload is listed and matches its
# stored image (size, SHA-256), the store holds exactly the listed releases (no orphan, no
# staged leftover) and SQLite passes `PRAGMA integrity_check`. It is the integration test
# `tests/it/crash.rs` (3 rounds of 24 IQs in CI) with bigger knobs.
#
#   bench/crash.sh            # SQLite
#   bench/crash.sh --pg       # PostgreSQL (a throwaway cluster, stopped by its PID)
#   ROUNDS=40 IQS=300 UPLOADS=5 bench/crash.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export CRASH_ROUNDS=${ROUNDS:-20} CRASH_IQS=${IQS:-200} CRASH_UPLOADS=${UPLOADS:-5}
if [ "${1:-}" = "--pg" ]; then
  PG_DIR=$(mktemp -d /tmp/fwdist-crash-pg.XXXXXX)
  trap 'tests/services/postgres.sh stop "$PG_DIR"' EXIT
  eval "$(tests/services/postgres.sh start "$PG_DIR")"
  export FWDIST_TEST_DB=postgres
fi
echo "crash rounds: $CRASH_ROUNDS rounds, $CRASH_IQS IQs, $CRASH_UPLOADS uploads per round, db ${FWDIST_TEST_DB:-sqlite}"
cargo test --release --locked --test it crash::kill_9_mid_traffic_loses_no_record_and_no_release \
  -- --exact --nocapture 2>&1 | grep -E '^crash rounds:|^test |panicked|round [0-9]+:|test result'
