#!/usr/bin/env bash
# How many passive ports does a fleet need? (issue 4). Not part of CI.
#
#   bench/passive.sh            full run: K = 1, 2, 4, 8 passive ports, 10,000 IQ sessions each
#   bench/passive.sh --quick    smoke run: small numbers, checks that every step works
#
#   SERVER_BIN=path SERVER_ENV="X=1" KS_OVERRIDE="2 4 8" bench/passive.sh
#                               the same fleets against another server build (e.g. one using
#                               libunftp's own passive modes), with these K values
#
# Everything runs inside a network namespace this script creates (its own loopback and
# ports, so nothing else on the machine is touched). For each K it starts
# fwdist with K passive ports and runs `fwdist simulate` (release build) as real IQs do —
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
N_SITES=10000; N_NAT=2000; KS="1 2 4 8"
if [ $QUICK = 1 ]; then N_SITES=300; N_NAT=100; KS="1 4"; fi
KS=${KS_OVERRIDE:-$KS}
NS=fwdist-passive-$$
W=$(mktemp -d /tmp/fwdist-passive.XXXXXX)

log() { printf '== %s\n' "$*" >&2; }
in_ns() { ip netns exec "$NS" "$@"; }
cleanup() {
  [ -n "${FW_PID:-}" ] && kill "$FW_PID" 2>/dev/null || true
  ip netns del "$NS" 2>/dev/null || true
}
trap cleanup EXIT

command -v ip >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iproute2 >/dev/null; }
log "building fwdist (release)"
(cd "$ROOT" && cargo build --release --locked -q)
B=$ROOT/target/release/fwdist
SERVER_BIN=${SERVER_BIN:-$B}
ulimit -n "$(ulimit -Hn)"

ip netns add "$NS"
in_ns ip link set lo up

cd "$W"
mkdir -p certs/release-keys build
head -c 262144 /dev/urandom > build/firmware.bin
"$B" keygen --out release >/dev/null && cp release.pub certs/release-keys/
mkdir -p trust && cp release.pub trust/
"$B" sign --key release.key --model iq2 --version 1.0.0 --sequence 1 build/firmware.bin >/dev/null
python3 - > fleet.csv <<'PY'
print("id,model")
for i in range(10000): print("02:00:00:00:%02x:%02x,iq2" % (i // 256, i % 256))
PY

start() { # K
  local k=$1
  cat > fwdist.toml <<EOF
node = "passive-bench"
[ftps]
listen = "127.0.0.1:2400"
passive_ports = "41000-$((41000 + k - 1))"
public_host = "127.0.0.1"
max_failed_logins = 0
[admin]
listen = "127.0.0.1:8400"
[store]
root = "store-$k"
[db]
url = "sqlite://store-$k/fwdist.sqlite"
EOF
  # shellcheck disable=SC2086 # SERVER_ENV is a list of NAME=VALUE words
  (RUST_LOG=warn exec ip netns exec "$NS" env ${SERVER_ENV:-} "$SERVER_BIN" serve --config fwdist.toml >>"serve-$k.log" 2>&1) &
  FW_PID=$!
  for _ in $(seq 100); do
    in_ns curl -sf localhost:8400/healthz >/dev/null && break
    sleep 0.1
  done
  in_ns curl -sf localhost:8400/healthz >/dev/null || { echo "fwdist did not start" >&2; exit 1; }
  local t
  t=$("$B" token create --name bench --role admin --config fwdist.toml | awk '{print $NF}')
  in_ns curl -sf -o /dev/null -H "Authorization: Bearer $t" -F manifest=@build/manifest.json \
    -F signature=@build/manifest.json.sig -F image=@build/firmware.bin localhost:8400/api/v1/releases
  "$B" devices import fleet.csv --config fwdist.toml > creds.csv
  in_ns curl -sf -o /dev/null -H "Authorization: Bearer $t" -H 'content-type: application/json' \
    localhost:8400/api/v1/rollouts -d '{"model":"iq2","version":"1.0.0","percent":100}'
}
stop() { kill "$FW_PID" 2>/dev/null || true; wait "$FW_PID" 2>/dev/null || true; FW_PID=; }

sim() { # n c source-ips
  in_ns "$B" simulate --server 127.0.0.1:2400 --ca certs/server.crt --devices creds.csv \
    --trust trust --timeout 30 --retries 30 -n "$1" -c "$2" --source-ips "$3" || true
}
# "sessions failed retried(kinds) rate p99"
row() {
  awk '/^sessions:/{ok=$2; failed=$4}
       /^rate:/{rate=$2}
       /^latency:/{p99=$6}
       /^recovered on retry:/{sub(/^recovered on retry: /,""); rec=$0; n=0; m=split(rec, a, " "); for(i=1;i<=m;i++){split(a[i], b, "="); n+=b[2]}}
       END{printf "%d | %d | %d %s | %s | %s\n", ok+failed, failed, n, (rec==""?"":"("rec")"), rate, p99}'
}

printf '\n| passive ports K | fleet | sessions | failed after retries | needed a retry (first failure) | sessions/s | p99 ms |\n|---|---|---|---|---|---|---|\n' > table.md
for k in $KS; do
  start "$k"
  log "K=$k sites"
  echo "| $k | sites (200 addresses) | $(sim "$N_SITES" 200 127.0.1.1-127.0.1.200 | tee "sites-$k.txt" | row)" >> table.md
  log "K=$k nat"
  echo "| $k | nat (1 address) | $(sim "$N_NAT" 100 127.0.2.1 | tee "nat-$k.txt" | row)" >> table.md
  echo "diagnostics K=$k: $(in_ns curl -s -H "Authorization: Bearer $("$B" token create --name d --role viewer --config fwdist.toml | awk '{print $NF}')" localhost:8400/api/v1/diagnostics | head -c 400)" >> diag.txt
  stop
done
cat table.md
echo
echo "(raw outputs in $W)"
