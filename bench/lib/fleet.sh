# Shared by bench/passive.sh and bench/nat.sh (sourced, not run): a network namespace of its
# own, a release build, one signed 256 KiB release, 10,000 registered IQs, and fwdist started
# and stopped in the namespace with the [ftps] settings a script passes.
#
# Set before sourcing: ROOT (the repository); optionally SERVER_BIN and CLIENT_BIN (built
# binaries: no build then). Provides: NS, W (work dir), B (fwdist binary),
# SERVER_BIN, TOKEN (admin, after fleet_start), log, in_ns, fleet_setup,
# fleet_start NAME FTPS_LINES, fleet_stop, sim, row.

NS=fwdist-bench-$$
W=$(mktemp -d /tmp/fwdist-bench.XXXXXX)

log() { printf '== %s\n' "$*" >&2; }
in_ns() { ip netns exec "$NS" "$@"; }
fleet_cleanup() {
  [ -n "${FW_PID:-}" ] && kill "$FW_PID" 2>/dev/null || true
  [ -n "${PROXY_PID:-}" ] && kill "$PROXY_PID" 2>/dev/null || true
  ip netns del "$NS" 2>/dev/null || true
}
trap fleet_cleanup EXIT

fleet_setup() {
  command -v ip >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iproute2 >/dev/null; }
  # CLIENT_BIN: a built fwdist for the tools and the simulator (skips the build).
  if [ -n "${CLIENT_BIN:-}" ]; then
    B=$CLIENT_BIN
  else
    log "building fwdist (release)"
    (cd "$ROOT" && cargo build --release --locked -q)
    B=${CARGO_TARGET_DIR:-$ROOT/target}/release/fwdist
  fi
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
  python3 -c '
print("id,model")
for i in range(10000): print("02:00:00:00:%02x:%02x,iq2" % (i // 256, i % 256))
' > fleet.csv
}

# fleet_start NAME FTPS_LINES: fwdist on 127.0.0.1:2400 (API 8400) with these extra [ftps]
# lines, its own store, the release published and rolled out to the whole fleet.
fleet_start() {
  local name=$1 ftps=$2
  printf 'node = "bench"\n[ftps]\nlisten = "127.0.0.1:2400"\nmax_failed_logins = 0\n%s\n[admin]\nlisten = "127.0.0.1:8400"\n[store]\nroot = "store-%s"\n[db]\nurl = "sqlite://store-%s/fwdist.sqlite"\n' \
    "$ftps" "$name" "$name" > fwdist.toml
  # shellcheck disable=SC2086 # SERVER_ENV is a list of NAME=VALUE words
  (RUST_LOG=warn exec ip netns exec "$NS" env ${SERVER_ENV:-} "$SERVER_BIN" serve --config fwdist.toml >>"serve-$name.log" 2>&1) &
  FW_PID=$!
  for _ in $(seq 100); do
    in_ns curl -sf localhost:8400/healthz >/dev/null && break
    sleep 0.1
  done
  in_ns curl -sf localhost:8400/healthz >/dev/null || { echo "fwdist did not start" >&2; exit 1; }
  TOKEN=$("$B" token create --name bench --role admin --config fwdist.toml | awk '{print $NF}')
  in_ns curl -sf -o /dev/null -H "Authorization: Bearer $TOKEN" -F manifest=@build/manifest.json \
    -F signature=@build/manifest.json.sig -F image=@build/firmware.bin localhost:8400/api/v1/releases
  "$B" devices import fleet.csv --config fwdist.toml > creds.csv
  in_ns curl -sf -o /dev/null -H "Authorization: Bearer $TOKEN" -H 'content-type: application/json' \
    localhost:8400/api/v1/rollouts -d '{"model":"iq2","version":"1.0.0","percent":100}'
}
fleet_stop() { kill "$FW_PID" 2>/dev/null || true; wait "$FW_PID" 2>/dev/null || true; FW_PID=; }

# sim N C SOURCE-IPS [SERVER]: the simulator as real IQs run (verify, download, retry).
sim() {
  in_ns "$B" simulate --server "${4:-127.0.0.1:2400}" --ca certs/server.crt --devices creds.csv \
    --trust trust --timeout 30 --retries 30 -n "$1" -c "$2" --source-ips "$3" || true
}

# One table row from the simulator's summary: "sessions | failed | retried (kinds) | rate | p99"
row() {
  awk '/^sessions:/{ok=$2; failed=$4}
       /^rate:/{rate=$2}
       /^latency:/{p99=$6}
       /^recovered on retry:/{sub(/^recovered on retry: /,""); rec=$0; n=0; m=split(rec, a, " "); for(i=1;i<=m;i++){split(a[i], b, "="); n+=b[2]}}
       END{printf "%d | %d | %d %s | %s | %s\n", ok+failed, failed, n, (rec==""?"":"("rec")"), rate, p99}'
}
