#!/usr/bin/env bash
# The API-abuse run (issue 15): schemathesis against the served OpenAPI document of a real
# `fwdist serve` (embedded defaults on free loopback ports, in a temp dir, logging at trace),
# once per role's token and once with none and with an invalid one; then the server's log is
# searched for panics, ERROR lines and every token and secret used. See README, "API abuse run".
#
#   tests/abuse/run.sh            # bounded: 10 examples per operation and phase, a few minutes
#   tests/abuse/run.sh --long     # 100 examples per operation and phase
#   tests/abuse/run.sh --out DIR  # keep the server's directory, its log and the reports in DIR
#
# Other options go to tests/abuse/abuse.py (--help). FWDIST_BIN=PATH uses that binary instead
# of building one. Needs python3 and schemathesis 4 (`python3 -m pip install 'schemathesis>=4.32,<5'`).
set -euo pipefail
cd "$(dirname "$0")/../.."
if ! command -v schemathesis >/dev/null; then
  echo "run.sh: schemathesis is not on PATH: python3 -m pip install 'schemathesis>=4.32,<5' (under pyenv, then pyenv rehash)" >&2
  exit 2
fi
if [ -z "${FWDIST_BIN:-}" ]; then
  cargo build --locked --quiet
  FWDIST_BIN="${CARGO_TARGET_DIR:-target}/debug/fwdist"
fi
exec python3 tests/abuse/abuse.py --bin "$FWDIST_BIN" "$@"
