#!/usr/bin/env bash
# One port vs a separate passive range for many IQs behind ONE address (issue 11). Not CI.
#
#   bench/nat.sh            1, 16 and 100 IQs at once behind one NAT address, at 0 and 50 ms
#                           round trip, against `passive_ports = "same"` and a 16-port range
#   bench/nat.sh --quick    smoke run: small numbers
#   MODES=same CS_OVERRIDE="100" RTTS_OVERRIDE="50" SERVER_BIN=… bench/nat.sh
#                           a subset, or another server build
#
# In a network namespace of its own (bench/lib/fleet.sh). The kernel here has no `tc netem`,
# so latency comes from bench/lib/delay_nat.py: a user-space NAT on 127.0.3.1 that forwards
# the control port and the range to fwdist on 127.0.0.1, every connection from the one source
# address 127.0.2.1, each direction delayed by half the round trip. fwdist announces the
# NAT's address (`public_host`), so control and data connections both cross it. Both modes
# go through the same NAT at the same delay, so the ratio between them is fair; the NAT's own
# cost shows in the 0 ms rows. `max_sessions_per_ip = 0`: every IQ gets a session.
#
# Prints, per mode, round trip and IQs at once: sessions, failed after retries, sessions that
# needed a retry (first failure), sessions/s, p99 ms; then the one-port/range ratio of rates.
set -euo pipefail

QUICK=0
[ "${1:-}" = "--quick" ] && QUICK=1
ROOT=$(cd "$(dirname "$0")/.." && pwd)
CS=${CS_OVERRIDE:-"1 16 100"}; RTTS=${RTTS_OVERRIDE:-"0 50"}
declare -A N=([1]=20 [16]=240 [100]=800)
if [ $QUICK = 1 ]; then CS="1 16"; RTTS="0 50"; N=([1]=4 [16]=32); fi
# shellcheck source=bench/lib/fleet.sh
. "$ROOT/bench/lib/fleet.sh"
fleet_setup
PY=$ROOT/bench/lib/delay_nat.py
RANGE_FIRST=41000; RANGE_LAST=41015

proxy() { # delay_ms
  (exec ip netns exec "$NS" python3 "$PY" 127.0.3.1 127.0.0.1 127.0.2.1 "$1" 2400 \
    $(seq $RANGE_FIRST $RANGE_LAST) > proxy.out 2>&1) &
  PROXY_PID=$!
  for _ in $(seq 50); do grep -q ready proxy.out 2>/dev/null && return; sleep 0.1; done
  echo "the delay NAT did not start: $(cat proxy.out)" >&2; exit 1
}
proxy_stop() { kill "$PROXY_PID" 2>/dev/null || true; wait "$PROXY_PID" 2>/dev/null || true; PROXY_PID=; }

printf '\n| mode | RTT ms | IQs at once | sessions | failed after retries | needed a retry (first failure) | sessions/s | p99 ms |\n|---|---|---|---|---|---|---|---|\n' > nat.md
for mode in ${MODES:-same range}; do
  if [ $mode = same ]; then ports=same; else ports="$RANGE_FIRST-$RANGE_LAST"; fi
  fleet_start "$mode" "passive_ports = \"$ports\"
public_host = \"127.0.3.1\"
max_sessions_per_ip = 0"
  for rtt in $RTTS; do
    proxy $((rtt / 2))
    for c in $CS; do
      log "$mode rtt=$rtt c=$c"
      r=$(sim "${N[$c]}" "$c" 127.0.1.1 127.0.3.1:2400 | tee "nat-$mode-$rtt-$c.txt" | row)
      echo "| $mode | $rtt | $c | $r" >> nat.md
    done
    proxy_stop
  done
  fleet_stop
done
cat nat.md
echo
awk -F'|' '/^\| same/{s[$3" "$4]=$8} /^\| range/{r[$3" "$4]=$8}
  END{print "one-port / range rate (RTT ms, IQs at once):"; for(k in s) if (r[k]>0) printf "  %s: %.2f\n", k, s[k]/r[k]}' nat.md | sort
echo "(raw outputs in $W)"
