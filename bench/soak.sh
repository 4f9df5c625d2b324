#!/usr/bin/env bash
# Soak (issue 15): SECONDS (default 3600) of `fwdist simulate` at a steady rate against one
# release-built server, with cut and resumed downloads, install reports and rollout changes;
# the server's RSS, descriptors and record queue sampled every 10 s and plotted. Not CI.
#
#   bench/soak.sh [SECONDS]
#   SERVER_BIN=… bench/soak.sh 300      an already built fwdist (no build)
#   SOAK_RATE=3 SOAK_CONCURRENCY=32 SOAK_DEVICES=300 SOAK_CUT=0.1 SOAK_FAILED=0.05
#   SOAK_CHANGE_SECS=…                  (default SECONDS/30, at least 20)
#   SOAK_OUT=DIR                        where the CSV, logs and figures go (default
#                                       bench/soak-results/); the plot goes to bench/soak.png
#
# The server: loopback, free ports, a temporary directory, the default embedded SQLite,
# RUST_LOG=info. SOAK_DEVICES devices (one model), a signed 3 MiB release, a staged rollout
# (phases 20/60/100 %, success 0.5, failure 0.5, bake 30 s). The simulator: SOAK_RATE
# sessions/s for SECONDS (at most SOAK_CONCURRENCY at once) from 100 source addresses, each
# verifying and downloading the image and reporting (SOAK_FAILED of the devices report
# `failed`), SOAK_CUT of the downloads cut half way and resumed with REST in a new session,
# up to 30 retries. Every SOAK_CHANGE_SECS one rollout change through the admin API, in a
# cycle: pause, resume, next phase, pin 5 devices, a new release + rollout (the old aborted),
# unpin (bench/lib/soak.py change).
#
# Exit 1 when a check fails: failed IQs after retries, RSS of the last tenth of the run above
# the first tenth's by more than x1.2 and 30 MiB (medians), descriptors up by more than 20,
# records that disagree with the simulator's counts, a failed rollout change, the server gone,
# or ERROR / panic in its log.
set -euo pipefail

SECS=${1:-3600}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
RATE=${SOAK_RATE:-3}
CONC=${SOAK_CONCURRENCY:-32}
NDEV=${SOAK_DEVICES:-300}
CUT=${SOAK_CUT:-0.1}
FAILED=${SOAK_FAILED:-0.05}
CHANGE=${SOAK_CHANGE_SECS:-$(( SECS / 30 > 20 ? SECS / 30 : 20 ))}
OUT=${SOAK_OUT:-$ROOT/bench/soak-results}
PNG=$ROOT/bench/soak.png
PY=$ROOT/bench/lib/soak.py
W=$(mktemp -d /tmp/fwdist-soak.XXXXXX)

log() { printf '== %s\n' "$*" >&2; }
FW_PID=; SAMPLER=; CHANGER=
cleanup() {
  touch "$W/stop" 2>/dev/null || true
  for p in $CHANGER $SAMPLER; do kill "$p" 2>/dev/null || true; done
  [ -n "$FW_PID" ] && kill "$FW_PID" 2>/dev/null || true
}
trap cleanup EXIT

python3 -c 'import matplotlib' 2>/dev/null || pip install -q matplotlib || pip install -q --break-system-packages matplotlib
if [ -n "${SERVER_BIN:-}" ]; then
  B=$SERVER_BIN
else
  log "building fwdist (release)"
  (cd "$ROOT" && cargo build --release --locked -q)
  B=${CARGO_TARGET_DIR:-$ROOT/target}/release/fwdist
fi
ulimit -n "$(ulimit -Hn)"
mkdir -p "$OUT"
cd "$W"

# Free ports: control, API and 50 passive ports, all bindable on 127.0.0.1 now.
read -r CTL API P0 < <(python3 - <<'PY'
import random, socket
def free(p):
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", p)); return True
    except OSError:
        return False
    finally:
        s.close()
for _ in range(200):
    b = random.randrange(20000, 60000, 100)
    if all(free(p) for p in range(b, b + 52)):
        print(b, b + 1, b + 2); break
PY
)
[ -n "${P0:-}" ] || { echo "no free ports" >&2; exit 1; }
P1=$((P0 + 49))
cat > fwdist.toml <<EOF
node = "soak"
[ftps]
listen = "127.0.0.1:$CTL"
passive_ports = "$P0-$P1"
public_host = "127.0.0.1"
max_failed_logins = 0
[admin]
listen = "127.0.0.1:$API"
[store]
root = "store"
[db]
url = "sqlite://store/fwdist.sqlite"
EOF
mkdir -p certs/release-keys trust store build-1
"$B" keygen --out release >/dev/null && cp release.pub certs/release-keys/ && cp release.pub trust/
head -c $((3 << 20)) /dev/urandom > build-1/firmware.bin
"$B" sign --key release.key --model iq2 --version 1.0.1 --sequence 1 build-1/firmware.bin >/dev/null
python3 -c "
print('id,model')
for i in range($NDEV): print('02:50:00:00:%02x:%02x,iq2' % (i // 256, i % 256))
" > fleet.csv

log "starting fwdist on 127.0.0.1:$CTL (API $API, passive $P0-$P1) in $W"
(RUST_LOG=info exec "$B" serve --config fwdist.toml >>serve.log 2>&1) &
FW_PID=$!
for _ in $(seq 100); do
  curl -sf "127.0.0.1:$API/healthz" >/dev/null && break
  sleep 0.2
done
curl -sf "127.0.0.1:$API/healthz" >/dev/null || { echo "fwdist did not start" >&2; tail serve.log >&2; exit 1; }
TOKEN=$("$B" token create --name soak --role admin --config fwdist.toml | awk '{print $NF}')
A="Authorization: Bearer $TOKEN"
curl -sf -o /dev/null -H "$A" -F manifest=@build-1/manifest.json -F signature=@build-1/manifest.json.sig \
  -F image=@build-1/firmware.bin "127.0.0.1:$API/api/v1/releases"
"$B" devices import fleet.csv --config fwdist.toml > creds.csv
ROLLOUT=$(curl -sf -H "$A" -H 'content-type: application/json' "127.0.0.1:$API/api/v1/rollouts" \
  -d '{"model":"iq2","version":"1.0.1","phases":[20,60,100],"success_threshold":0.5,"failure_threshold":0.5,"min_phase_secs":30}' \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
printf '{"rollout": %s, "seq": 1, "versions": ["1.0.1"]}\n' "$ROLLOUT" > state.json

log "soak: ${SECS} s at $RATE sessions/s (concurrency $CONC), $NDEV devices, cut $CUT, failed reports $FAILED, a rollout change every ${CHANGE} s"
rm -f "$OUT/changes.csv"
python3 "$PY" sample "$FW_PID" "http://127.0.0.1:$API/metrics" "$OUT/soak.csv" "$W/stop" &
SAMPLER=$!
python3 "$PY" change "http://127.0.0.1:$API" "$TOKEN" "$W" "$B" "$OUT/changes.csv" "$W/stop" "$CHANGE" &
CHANGER=$!
SIM_RC=0
"$B" simulate --server "127.0.0.1:$CTL" --ca certs/server.crt --devices creds.csv --trust trust \
  --rate "$RATE" --duration "$SECS" -c "$CONC" --retries 30 --timeout 30 --cut "$CUT" \
  --report "mix:$FAILED" --source-ips 127.0.1.1-127.0.1.100 > "$OUT/simulate.txt" 2>&1 || SIM_RC=$?
touch "$W/stop"
wait "$SAMPLER" "$CHANGER" || true
SAMPLER=; CHANGER=
cat "$OUT/simulate.txt"

FAIL=()
[ "$SIM_RC" = 0 ] || FAIL+=("the simulator exited $SIM_RC")
if kill -0 "$FW_PID" 2>/dev/null; then
  # Stop it as systemd would and let it drain its record queue before the database is read.
  kill -TERM "$FW_PID"
  wait "$FW_PID" || FAIL+=("the server exited $? on SIGTERM")
else
  FAIL+=("the server died during the run")
  wait "$FW_PID" || true
fi
FW_PID=
cp serve.log "$OUT/serve.log"
if grep -E ' ERROR |panicked' serve.log > "$OUT/errors.log"; then
  FAIL+=("$(wc -l < "$OUT/errors.log") ERROR/panic lines in the server log (first: $(head -c 300 "$OUT/errors.log"))")
fi
WARNS=$(grep -c ' WARN ' serve.log || true)
log "server log: $(wc -l < serve.log) lines, $WARNS WARN ($(grep ' WARN ' serve.log | grep -vc 'download aborted' || true) other than aborted downloads)"
REPORT_RC=0
python3 "$PY" report "$W" "$OUT/simulate.txt" "$OUT/soak.csv" "$PNG" "$OUT/changes.csv" | tee "$OUT/figures.txt" || REPORT_RC=$?
[ "$REPORT_RC" = 0 ] || FAIL+=("the report's checks (above)")
for f in "${FAIL[@]}"; do echo "CHECK FAILED: $f"; done
echo "results: $OUT (soak.csv, simulate.txt, changes.csv, serve.log, figures.txt); plot: $PNG; work dir: $W"
[ ${#FAIL[@]} = 0 ] || exit 1
echo "soak: all checks passed"
