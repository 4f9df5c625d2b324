#!/usr/bin/env bash
# How many passive ports does a fleet need? (issue 4). Not part of CI.
#
#   bench/passive.sh            full run: K = 1, 2, 4, 8 passive ports and one port (`same`:
#                               data on the control port), 10,000 IQ sessions each
#   bench/passive.sh --quick    smoke run: small numbers, checks that every step works
#
#   SERVER_BIN=path SERVER_ENV="X=1" KS_OVERRIDE="2 4 8" bench/passive.sh
#                               the same fleets against another server build (e.g. one using
#                               libunftp's own passive modes), with these K values
#
# Everything runs inside a network namespace this script creates (its own loopback and
# ports, so nothing else on the machine is touched; setup in bench/lib/fleet.sh). For each K
# it starts fwdist with K passive ports (or `passive_ports = "same"`) and runs `fwdist simulate` (release build) as real IQs do —
# login, manifest + signature, verify, download a 256 KiB image, check its hash — with
# retries after transient failures (421, 425, dropped connections), in two fleets:
#   sites  10,000 IQs behind 200 source addresses (127.0.1.1-200, each shared by 50 IQs),
#          200 at once
#   nat    2,000 IQs behind ONE address, 100 at once (the per-address limit answers 421)
# and prints, per K and fleet: sessions, failed after retries, sessions that needed a retry
# (by the first failure's kind), rate, p99 latency.
set -euo pipefail

QUICK=0
[ "${1:-}" = "--quick" ] && QUICK=1
ROOT=$(cd "$(dirname "$0")/.." && pwd)
N_SITES=10000; N_NAT=2000; KS="1 2 4 8 same"
if [ $QUICK = 1 ]; then N_SITES=300; N_NAT=100; KS="1 4 same"; fi
KS=${KS_OVERRIDE:-$KS}
# shellcheck source=bench/lib/fleet.sh
. "$ROOT/bench/lib/fleet.sh"
fleet_setup

printf '\n| passive ports K | fleet | sessions | failed after retries | needed a retry (first failure) | sessions/s | p99 ms |\n|---|---|---|---|---|---|---|\n' > table.md
for k in $KS; do
  if [ "$k" = same ]; then ports=same; else ports="41000-$((41000 + k - 1))"; fi
  fleet_start "$k" "passive_ports = \"$ports\"
public_host = \"127.0.0.1\""
  log "K=$k sites"
  echo "| $k | sites (200 addresses) | $(sim "$N_SITES" 200 127.0.1.1-127.0.1.200 | tee "sites-$k.txt" | row)" >> table.md
  log "K=$k nat"
  echo "| $k | nat (1 address) | $(sim "$N_NAT" 100 127.0.2.1 | tee "nat-$k.txt" | row)" >> table.md
  echo "diagnostics K=$k: $(in_ns curl -s -H "Authorization: Bearer $TOKEN" localhost:8400/api/v1/diagnostics | head -c 400)" >> diag.txt
  fleet_stop
done
cat table.md
echo
echo "(raw outputs in $W)"
