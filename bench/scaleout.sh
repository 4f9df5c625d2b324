#!/usr/bin/env bash
# Scale-out (issue 12): the same `fwdist simulate` load against one node on SQLite, one node
# on PostgreSQL, and two nodes on PostgreSQL behind HAProxy (balance source, PROXY v1); then
# how long a rollout change made through one node takes to be obeyed by the other. Not CI.
#
#   bench/scaleout.sh           ~6 min after the release build
#   bench/scaleout.sh --quick   smoke run
#   SERVER_BIN=… bench/scaleout.sh
#
# In a network namespace of its own (bench/lib/fleet.sh): PostgreSQL (tests/services/
# postgres.sh, Debian's server), HAProxy and the nodes all run inside it. The nodes listen on
# 127.0.0.11 and 127.0.0.12 with the same ports (as two machines would), HAProxy on 127.0.0.1;
# the IQs come from 200 source addresses. One machine (2 cores here) runs everything, so two
# nodes share the CPU one node had: the figure to read is that a second node costs nothing
# and serves, not that it doubles anything.
#
# Prints: per setup, sessions, failed after retries, sessions that needed a retry, sessions/s,
# MiB/s, p99 ms; then the change latency (pause through node 1 until node 2's API says the
# device has no target, and back), median and max of 20.
set -euo pipefail

QUICK=0
[ "${1:-}" = "--quick" ] && QUICK=1
ROOT=$(cd "$(dirname "$0")/.." && pwd)
N=6000; C=200; ROUNDS=20
[ $QUICK = 1 ] && { N=300; C=20; ROUNDS=3; }
# shellcheck source=bench/lib/fleet.sh
. "$ROOT/bench/lib/fleet.sh"
command -v haproxy >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq haproxy >/dev/null; }
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; }
fleet_setup
chmod 755 "$W"   # PostgreSQL's own user works in here
PGD=$W/pg
in_ns "$ROOT/tests/services/postgres.sh" start "$PGD" > pg.env
# shellcheck disable=SC1091
. ./pg.env
PG_ADMIN=$FWDIST_TEST_PG_URL
NODE_PIDS=(); HA_PID=
cleanup_scaleout() {
  for p in "${NODE_PIDS[@]}" $HA_PID; do kill "$p" 2>/dev/null || true; done
  in_ns "$ROOT/tests/services/postgres.sh" stop "$PGD" || true
  fleet_cleanup
}
trap cleanup_scaleout EXIT

CTL=2400; P0=41000; P1=41015
# node NAME IP DBURL API_PORT [PROXY]: one fwdist node; waits for /healthz.
node() {
  # Behind the balancer (proxy = true) IQs reach the node through 127.0.0.1; alone, directly.
  local name=$1 ip=$2 db=$3 api=$4 proxy=${5:-false} public
  public=$([ "$proxy" = true ] && echo 127.0.0.1 || echo "$ip")
  mkdir -p "store-$name"
  printf 'node = "%s"\n[ftps]\nlisten = "%s:%s"\npassive_ports = "%s-%s"\npublic_host = "%s"\npublic_port = %s\nmax_failed_logins = 0\nproxy_protocol = %s\ncert = "certs/server.crt"\nkey = "certs/server.key"\n[admin]\nlisten = "127.0.0.1:%s"\n[store]\nroot = "store-shared"\n[db]\nurl = "%s"\n' \
    "$name" "$ip" "$CTL" "$P0" "$P1" "$public" "$CTL" "$proxy" "$api" "$db" > "$name.toml"
  (RUST_LOG=warn exec ip netns exec "$NS" "$SERVER_BIN" serve --config "$name.toml" >>"serve-$name.log" 2>&1) &
  NODE_PIDS+=($!)
  for _ in $(seq 100); do in_ns curl -sf "127.0.0.1:$api/healthz" >/dev/null && return; sleep 0.1; done
  echo "node $name did not start" >&2; exit 1
}
stop_nodes() { for p in "${NODE_PIDS[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done; NODE_PIDS=(); }
# publish API_PORT CONFIG: release, fleet and a rollout through that node.
publish() {
  TOKEN=$(in_ns "$B" token create --name bench --role admin --config "$2" | awk '{print $NF}')
  in_ns curl -sf -o /dev/null -H "Authorization: Bearer $TOKEN" -F manifest=@build/manifest.json \
    -F signature=@build/manifest.json.sig -F image=@build/firmware.bin "127.0.0.1:$1/api/v1/releases"
  in_ns "$B" devices import fleet.csv --config "$2" > creds.csv
  ROLLOUT=$(in_ns curl -sf -H "Authorization: Bearer $TOKEN" -H 'content-type: application/json' \
    "127.0.0.1:$1/api/v1/rollouts" -d '{"model":"iq2","version":"1.0.0","percent":100}' \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
}
newdb() { local name="b_$1"; in_ns psql "$PG_ADMIN" -qAtc "CREATE DATABASE $name" >/dev/null; echo "${PG_ADMIN%/*}/$name"; }
sim_row() { sim "$N" "$C" 127.0.1.1-127.0.1.200 "$1" > "$2.txt"; printf '| %s | %s | %s\n' "$2" "$(row < "$2.txt")" "$(awk '/^rate:/{print $4}' "$2.txt")"; }

RESULTS=()
log "one node, SQLite"
rm -rf store-shared; node n1 127.0.0.11 "sqlite://store-shared/fwdist.sqlite" 8401
publish 8401 n1.toml
RESULTS+=("$(sim_row 127.0.0.11:$CTL sqlite-1-node)")
stop_nodes

log "one node, PostgreSQL"
rm -rf store-shared; DB=$(newdb one); node n1 127.0.0.11 "$DB" 8401
publish 8401 n1.toml
RESULTS+=("$(sim_row 127.0.0.11:$CTL postgres-1-node)")
stop_nodes

log "two nodes, PostgreSQL, behind HAProxy"
rm -rf store-shared; DB=$(newdb two)
node n1 127.0.0.11 "$DB" 8401 true
node n2 127.0.0.12 "$DB" 8402 true
publish 8401 n1.toml
cat > haproxy.cfg <<HA
global
    maxconn 4000
defaults
    mode tcp
    timeout connect 2s
    timeout client 120s
    timeout server 120s
    retries 2
    option redispatch
frontend iqs
    bind 127.0.0.1:$CTL
    bind 127.0.0.1:$P0-$P1
    default_backend nodes
backend nodes
    balance source
    server n1 127.0.0.11 send-proxy source 127.0.0.2 check port $CTL inter 1s
    server n2 127.0.0.12 send-proxy source 127.0.0.2 check port $CTL inter 1s
HA
(exec ip netns exec "$NS" haproxy -db -f haproxy.cfg >haproxy.log 2>&1) &
HA_PID=$!
for _ in $(seq 50); do in_ns bash -c "exec 3<>/dev/tcp/127.0.0.1/$CTL" 2>/dev/null && break; sleep 0.1; done
RESULTS+=("$(sim_row 127.0.0.1:$CTL postgres-2-nodes-haproxy)")
in_ns psql "$DB" -qAtc "SELECT node, COUNT(*) FROM downloads GROUP BY node ORDER BY node" > by-node.txt

log "a change through node 1, obeyed by node 2"
DEV=$(awk -F, 'NR==2{print $1}' fleet.csv)
TOKEN2=$(in_ns "$B" token create --name bench2 --role admin --config n2.toml | awk '{print $NF}')
: > change.txt
target_of() { in_ns curl -sf -H "Authorization: Bearer $TOKEN2" "127.0.0.1:8402/api/v1/devices/$DEV" | python3 -c 'import json,sys; t=json.load(sys.stdin).get("target"); print((t or {}).get("version"))'; }
for _ in $(seq "$ROUNDS"); do
  for state in paused active; do
    want=$([ $state = paused ] && echo None || echo 1.0.0)
    t0=$(date +%s%N)
    in_ns curl -sf -o /dev/null -X PATCH -H "Authorization: Bearer $TOKEN" -H 'content-type: application/json' \
      "127.0.0.1:8401/api/v1/rollouts/$ROLLOUT" -d "{\"state\":\"$state\"}"
    until [ "$(target_of)" = "$want" ]; do :; done
    echo $(( ($(date +%s%N) - t0) / 1000000 )) >> change.txt
  done
done

echo
echo "| setup | sessions | failed after retries | needed a retry | sessions/s | p99 ms | MiB/s |"
echo "|---|---|---|---|---|---|---|"
printf '%s\n' "${RESULTS[@]}"
echo
echo "records by node (two nodes): $(tr '\n' ' ' < by-node.txt)"
sort -n change.txt | awk '{a[NR]=$1} END{printf "change through node 1 seen by node 2 (ms, %d changes, incl. the PATCH and one API read): median %s, max %s\n", NR, a[int((NR+1)/2)], a[NR]}'
echo "(raw outputs in $W)"
