#!/usr/bin/env bash
# fwdist vs vsftpd, measured side by side on this machine (issue 3). Not part of CI.
#
#   bench/run.sh            full run (a few minutes after the release build)
#   bench/run.sh --quick    smoke run: tiny loads, checks that every step works
#   FWDIST_BIN=/path/to/fwdist bench/run.sh
#                           measures that build instead of building the tree (release) first
#   OLD=/path/to/old/fwdist bench/run.sh
#                           also runs an older fwdist build on the same files (its own database:
#                           an older build cannot open a newer schema), its
#                           P1/P2 alternated with the current build's, and its P3: the table
#                           gets an "old" column and new/old ratios (a change on a hot path)
#
# Same certificate (ECDSA P-256) for every server, TLS on control and data channels for both
# FTP servers, equal passive ranges (50 ports), the same 4 MiB and 1 KiB files, the same load
# generator (`fwdist simulate`, release build) on the same machine, runs alternated.
#   P1  throughput: 50 concurrent sessions, each login + PASV + RETR 4 MiB
#   P2  session rate: 200 concurrent sessions, each login + PASV + RETR 1 KiB + QUIT
#   P3  memory per idle logged-in session (2,000 sessions held open)
#   P4  cost of download records: P2 on fwdist with recording on vs off
#   G   the generator's own ceiling: the same loads as HTTPS GETs against nginx
set -euo pipefail

QUICK=0
[ "${1:-}" = "--quick" ] && QUICK=1
ROOT=$(cd "$(dirname "$0")/.." && pwd)
W=$(mktemp -d /tmp/fwdist-bench.XXXXXX)
chmod 755 "$W"   # vsftpd's user and nginx's workers must reach their files in here
ROUNDS=3; P1_N=200; P2_N=2000; P3_N=2000
if [ $QUICK = 1 ]; then ROUNDS=1; P1_N=20; P2_N=100; P3_N=50; fi

log() { printf '\n== %s\n' "$*" >&2; }
cleanup() {
  [ -n "${FW_PID:-}" ] && kill "$FW_PID" 2>/dev/null || true
  [ -n "${NOREC_PID:-}" ] && kill "$NOREC_PID" 2>/dev/null || true
  [ -n "${OLD_PID:-}" ] && kill "$OLD_PID" 2>/dev/null || true
  [ -n "${VS_PID:-}" ] && kill "$VS_PID" 2>/dev/null || true
  [ -n "${NG_CONF:-}" ] && nginx -c "$NG_CONF" -s stop 2>/dev/null || true
  userdel benchiq 2>/dev/null || true
}
trap cleanup EXIT

log "installing vsftpd and nginx (Debian)"
need=()
command -v vsftpd >/dev/null || [ -x /usr/sbin/vsftpd ] || need+=(vsftpd)
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || need+=(nginx)
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
export PATH=$PATH:/usr/sbin
if [ -n "${FWDIST_BIN:-}" ]; then
  B=$FWDIST_BIN
else
  log "building fwdist (release)"
  (cd "$ROOT" && cargo build --release --locked -q)
  B=${CARGO_TARGET_DIR:-$ROOT/target}/release/fwdist
fi
ulimit -n "$(ulimit -Hn)"

cd "$W"
log "one certificate for all servers"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 7 -subj /CN=127.0.0.1 \
  -addext subjectAltName=IP:127.0.0.1 -addext basicConstraints=critical,CA:FALSE \
  -keyout server.key -out server.crt 2>/dev/null
head -c 4194304 /dev/urandom > firmware.bin
head -c 1024 /dev/urandom > small.bin

# ---- fwdist ------------------------------------------------------------------------------
mkdir -p fw/certs/release-keys fw/build/big fw/build/small
cp server.crt server.key fw/certs/
cat > fw/fwdist.toml <<EOF
node = "bench"
[ftps]
listen = "127.0.0.1:2300"
passive_ports = "40000-40049"
public_host = "127.0.0.1"
self_signed = false
max_failed_logins = 0
max_sessions_per_ip = 0   # the generator's sessions all come from 127.0.0.1
[admin]
listen = "127.0.0.1:8300"
EOF
start_fwdist() { # [admin port] [extra env...]: prints nothing, sets FW_PID (or NOREC_PID)
  local api=${1:-8300}; shift || true
  (cd fw && exec env RUST_LOG=warn "$@" "$B" serve --config fwdist.toml >>serve-$api.log 2>&1) &
  local pid=$!
  if [ "$api" = 8300 ]; then FW_PID=$pid; else NOREC_PID=$pid; fi
  for _ in $(seq 100); do
    kill -0 "$pid" 2>/dev/null || break
    curl -sf localhost:$api/healthz >/dev/null && return
    sleep 0.1
  done
  echo "fwdist did not start" >&2; exit 1
}
start_fwdist
(cd fw && "$B" keygen --out release >/dev/null && cp release.pub certs/release-keys/)
cp firmware.bin fw/build/big/; cp small.bin fw/build/small/
(cd fw && "$B" sign --key release.key --model big --version 1.0.0 --sequence 1 build/big/firmware.bin >/dev/null \
       && "$B" sign --key release.key --model small --version 1.0.0 --sequence 1 build/small/small.bin >/dev/null)
T=$(cd fw && "$B" token create --name bench --role admin --config fwdist.toml | awk '{print $NF}')
A="Authorization: Bearer $T"
for m in big small; do
  f=firmware.bin; [ $m = small ] && f=small.bin
  curl -sf -o /dev/null -H "$A" -F manifest=@fw/build/$m/manifest.json -F signature=@fw/build/$m/manifest.json.sig \
       -F image=@fw/build/$m/$f localhost:8300/api/v1/releases
  python3 - "$m" > fw/$m.csv <<'PY'
import sys
m = sys.argv[1]; b = 1 if m == "big" else 2
print("id,model")
for i in range(2000): print("02:%02x:00:00:%02x:%02x,%s" % (b, i // 256, i % 256, m))
PY
  (cd fw && "$B" devices import $m.csv --config fwdist.toml > $m-creds.csv 2>/dev/null)
  curl -sf -o /dev/null -H "$A" -H 'content-type: application/json' localhost:8300/api/v1/rollouts \
       -d "{\"model\":\"$m\",\"version\":\"1.0.0\",\"percent\":100}"
done

# ---- the old build (OLD=...): the same files, its own database and ports -------------------
# An older build cannot open a database a newer one has migrated, so the old server gets the
# same certificates, keys, signed releases and device list, published and imported with its
# own CLI and API (its own device secrets: fw-old/*-creds.csv).
if [ -n "${OLD:-}" ]; then
  mkdir -p fw-old/certs/release-keys
  cp -a fw/certs/server.crt fw/certs/server.key fw-old/certs/
  cp -a fw/certs/release-keys/. fw-old/certs/release-keys/
  cp -a fw/build fw/fwdist.toml fw/big.csv fw/small.csv fw-old/
  (cd fw-old && exec env RUST_LOG=warn FWDIST_FTPS__LISTEN=127.0.0.1:2303 FWDIST_ADMIN__LISTEN=127.0.0.1:8303 \
     FWDIST_FTPS__PASSIVE_PORTS=43000-43049 "$OLD" serve --config fwdist.toml >>serve-old.log 2>&1) &
  OLD_PID=$!
  for _ in $(seq 100); do curl -sf localhost:8303/healthz >/dev/null && break; sleep 0.1; done
  TO=$(cd fw-old && "$OLD" token create --name bench --role admin --config fwdist.toml | awk '{print $NF}')
  for m in big small; do
    f=firmware.bin; [ $m = small ] && f=small.bin
    curl -sf -o /dev/null -H "Authorization: Bearer $TO" -F manifest=@fw-old/build/$m/manifest.json \
         -F signature=@fw-old/build/$m/manifest.json.sig -F image=@fw-old/build/$m/$f localhost:8303/api/v1/releases
    (cd fw-old && "$OLD" devices import $m.csv --config fwdist.toml > $m-creds.csv 2>/dev/null)
    curl -sf -o /dev/null -H "Authorization: Bearer $TO" -H 'content-type: application/json' \
         localhost:8303/api/v1/rollouts -d "{\"model\":\"$m\",\"version\":\"1.0.0\",\"percent\":100}"
  done
fi

# ---- vsftpd: a local user whose home holds the same tree ----------------------------------
useradd -M -d "$W/vs-home" benchiq 2>/dev/null || true
echo 'benchiq:bench-pass-1' | chpasswd
mkdir -p vs-home/releases/1.0.0 /var/run/vsftpd/empty
cp firmware.bin small.bin vs-home/releases/1.0.0/
chmod -R a+rX vs-home; chmod a-w vs-home
cat > vsftpd.conf <<EOF
listen=YES
listen_address=127.0.0.1
listen_port=2301
background=NO
anonymous_enable=NO
local_enable=YES
write_enable=NO
chroot_local_user=YES
pam_service_name=vsftpd
secure_chroot_dir=/var/run/vsftpd/empty
seccomp_sandbox=NO
isolate=NO
isolate_network=NO
ssl_enable=YES
rsa_cert_file=$W/server.crt
rsa_private_key_file=$W/server.key
force_local_logins_ssl=YES
force_local_data_ssl=YES
require_ssl_reuse=NO
ssl_ciphers=HIGH
pasv_enable=YES
pasv_min_port=41000
pasv_max_port=41049
pasv_address=127.0.0.1
port_enable=NO
max_clients=10000
max_per_ip=10000
xferlog_enable=NO
EOF
/usr/sbin/vsftpd "$W/vsftpd.conf" >vsftpd.log 2>&1 &
VS_PID=$!
sleep 0.5
python3 -c "print('benchiq,bench-pass-1')" > vs-creds.csv

# ---- nginx: the generator's HTTPS ceiling ---------------------------------------------------
mkdir -p ng/www ng/tmp; cp firmware.bin small.bin ng/www/
NG_CONF=$W/ng/nginx.conf
cat > "$NG_CONF" <<EOF
worker_processes auto;
pid $W/ng/nginx.pid;
error_log $W/ng/error.log;
events { worker_connections 8192; }
http {
  access_log off;
  client_body_temp_path $W/ng/tmp; proxy_temp_path $W/ng/tmp; fastcgi_temp_path $W/ng/tmp;
  uwsgi_temp_path $W/ng/tmp; scgi_temp_path $W/ng/tmp;
  server {
    listen 127.0.0.1:8443 ssl;
    ssl_certificate $W/server.crt; ssl_certificate_key $W/server.key;
    root $W/ng/www;
  }
}
EOF
nginx -c "$NG_CONF"

# ---- measurements -----------------------------------------------------------------------
# Both servers get the same patience: 15 s per wait, and 3 retries of a failed session (as
# an IQ retries); failures and their kinds are printed for every run.
sim() { "$B" simulate --ca server.crt --timeout 15 --retries 3 "$@"; }
p1_fw() { sim --server 127.0.0.1:2300 --devices fw/big-creds.csv -n $P1_N -c 50 --get /releases/1.0.0/firmware.bin | figures; }
p1_vs() { sim --server 127.0.0.1:2301 --devices vs-creds.csv -n $P1_N -c 50 --get /releases/1.0.0/firmware.bin | figures; }
p2_fw() { sim --server 127.0.0.1:2300 --devices fw/small-creds.csv -n $P2_N -c 200 --get /releases/1.0.0/small.bin | figures; }
p2_vs() { sim --server 127.0.0.1:2301 --devices vs-creds.csv -n $P2_N -c 200 --get /releases/1.0.0/small.bin | figures; }
p1_old() { sim --server 127.0.0.1:2303 --devices fw-old/big-creds.csv -n $P1_N -c 50 --get /releases/1.0.0/firmware.bin | figures; }
p2_old() { sim --server 127.0.0.1:2303 --devices fw-old/small-creds.csv -n $P2_N -c 200 --get /releases/1.0.0/small.bin | figures; }
# P4: the same load on a second fwdist (same data, recording off) running alongside.
p2_norec() { sim --server 127.0.0.1:2302 --devices fw/small-creds.csv -n $P2_N -c 200 --get /releases/1.0.0/small.bin | figures; }
# prints "<sessions/s> <MiB/s> <failed>" and keeps the whole output in runs.txt
figures() { tee -a "$W/runs.txt" | awk '/^sessions:/{f=$4} /^rate:/{r=$2; m=$4} END{print r, m, f}'; }

declare -A R
run() { # name command
  echo "### $1" >> "$W/runs.txt"
  local out; out=$("$2" || true); R[$1]+="$out;"; echo "  $1: $out (sessions/s MiB/s failed)" >&2
}
for round in $(seq $ROUNDS); do
  log "round $round"
  if [ -n "${OLD:-}" ]; then
    run p1_old p1_old; run p1_fw p1_fw; run p1_vs p1_vs
    run p2_old p2_old; run p2_fw p2_fw; run p2_vs p2_vs
  else
    run p1_fw p1_fw; run p1_vs p1_vs
    run p2_fw p2_fw; run p2_vs p2_vs
  fi
done

log "G: generator ceiling against nginx (HTTPS, same certificate)"
echo "### G-nginx" >> "$W/runs.txt"
G1=$(sim --server 127.0.0.1:8443 --https-get /firmware.bin -n $P1_N -c 50 | figures || true)
G2=$(sim --server 127.0.0.1:8443 --https-get /small.bin -n $P2_N -c 200 | figures || true)

log "P4: P2 on fwdist with recording on vs a second fwdist with it off, alternated"
start_fwdist 8302 FWDIST_FTPS__RECORD_DOWNLOADS=false FWDIST_FTPS__LISTEN=127.0.0.1:2302 \
  FWDIST_ADMIN__LISTEN=127.0.0.1:8302 FWDIST_FTPS__PASSIVE_PORTS=42000-42049
for round in $(seq $ROUNDS); do run p2_fw_rec p2_fw; run p2_fw_norec p2_norec; done
kill "$NOREC_PID"; wait "$NOREC_PID" 2>/dev/null || true; NOREC_PID=

log "P3: memory per idle logged-in session ($P3_N sessions)"
pss_kib() { # total PSS of the given pids
  local t=0; for p in "$@"; do
    v=$(awk '/^Pss:/{print $2}' /proc/$p/smaps_rollup 2>/dev/null || echo 0); t=$((t + ${v:-0})); done; echo $t; }
vs_pids() { pgrep -f "vsftpd $W/vsftpd.conf" | tr '\n' ' '; }
hold() { # server creds -> prints KiB per session
  local server=$1 creds=$2 pids_fn=$3 before during
  before=$(pss_kib $($pids_fn))
  "$B" simulate --ca server.crt --timeout 60 --retries 3 --server "$server" --devices "$creds" \
    -n $P3_N -c $P3_N --hold-secs 25 > hold.out &
  local sp=$!
  sleep 20
  during=$(pss_kib $($pids_fn))
  wait $sp || true
  local ok; ok=$(awk '/^sessions:/{print $2}' hold.out)
  echo "$(( (during - before) / (ok > 0 ? ok : 1) )) $ok"
}
fw_pids() { echo "$FW_PID" $(pgrep -P "$FW_PID" 2>/dev/null); }
P3_FW=$(hold 127.0.0.1:2300 fw/big-creds.csv fw_pids)
P3_VS=$(hold 127.0.0.1:2301 vs-creds.csv vs_pids)
P3_OLD="0 0"
if [ -n "${OLD:-}" ]; then
  old_pids() { echo "$OLD_PID"; }
  P3_OLD=$(hold 127.0.0.1:2303 fw-old/big-creds.csv old_pids)
fi

# ---- report -----------------------------------------------------------------------------
python3 - "${R[p1_fw]}" "${R[p1_vs]}" "${R[p2_fw]}" "${R[p2_vs]}" "${R[p2_fw_norec]}" "$G1" "$G2" "$P3_FW" "$P3_VS" "${R[p2_fw_rec]}" "${R[p1_old]:-}" "${R[p2_old]:-}" "$P3_OLD" <<'PY'
import sys, statistics as st
def runs(s): return [list(map(float, r.split())) for r in s.split(';') if r.strip()]
p1f, p1v, p2f, p2v, p2n = (runs(a) for a in sys.argv[1:6])
g1, g2 = (list(map(float, a.split())) for a in sys.argv[6:8])
p3f, p3v = (list(map(int, a.split())) for a in sys.argv[8:10])
p2r = runs(sys.argv[10])
med = lambda rs, i: st.median(r[i] for r in rs)
fails = lambda rs: int(sum(r[2] for r in rs))
print("| figure | fwdist | vsftpd | fwdist/vsftpd | target |")
print("|---|---|---|---|---|")
print(f"| P1 throughput, 50 × 4 MiB (MiB/s) | {med(p1f,1):.0f} | {med(p1v,1):.0f} | {med(p1f,1)/max(med(p1v,1),1e-9):.2f}× | ≥ 1.3× |")
print(f"| P2 session rate, 200 concurrent, 1 KiB (sessions/s) | {med(p2f,0):.0f} | {med(p2v,0):.0f} | {med(p2f,0)/max(med(p2v,0),1e-9):.2f}× | ≥ 2× |")
print(f"| P3 memory per idle session (KiB, PSS) | {p3f[0]} ({p3f[1]} held) | {p3v[0]} ({p3v[1]} held) | {p3f[0]/max(p3v[0],1):.2f}× | ≤ 64 KiB |")
over = (med(p2n,0) - med(p2r,0)) / max(med(p2n,0), 1e-9) * 100
print(f"| P4 recording cost (P2 on vs off, sessions/s) | {med(p2r,0):.0f} on / {med(p2n,0):.0f} off | | {over:+.1f} % | ≤ 5 % |")
print(f"| G generator vs nginx HTTPS: 4 MiB (MiB/s), 1 KiB (sessions/s) | {g1[1]:.0f} MiB/s, {g2[0]:.0f} /s | | | > every FTP figure |")
p1o, p2o = runs(sys.argv[11]), runs(sys.argv[12])
p3o = list(map(int, sys.argv[13].split()))
if p1o:
    print("\n| figure (same run, alternated) | old build | this build | new/old |")
    print("|---|---|---|---|")
    print(f"| P1 throughput, 50 × 4 MiB (MiB/s) | {med(p1o,1):.0f} | {med(p1f,1):.0f} | {med(p1f,1)/max(med(p1o,1),1e-9):.3f} |")
    print(f"| P2 session rate, 200 concurrent, 1 KiB (sessions/s) | {med(p2o,0):.0f} | {med(p2f,0):.0f} | {med(p2f,0)/max(med(p2o,0),1e-9):.3f} |")
    print(f"| P3 memory per idle session (KiB, PSS) | {p3o[0]} ({p3o[1]} held) | {p3f[0]} ({p3f[1]} held) | {p3f[0]/max(p3o[0],1):.2f} |")
    print("per-round P1 MiB/s old/new:", [f"{a[1]:.0f}/{b[1]:.0f}" for a, b in zip(p1o, p1f)],
          " P2 sessions/s old/new:", [f"{a[0]:.0f}/{b[0]:.0f}" for a, b in zip(p2o, p2f)])
    print(f"failed sessions after 3 retries: old P1 {fails(p1o)} P2 {fails(p2o)}")
print(f"\nfailed sessions after 3 retries: fwdist P1 {fails(p1f)} P2 {fails(p2f)} (P4 on {fails(p2r)} off {fails(p2n)}); vsftpd P1 {fails(p1v)} P2 {fails(p2v)}; nginx {int(g1[2]+g2[2])}")
PY
echo
echo "errors and retries by kind, per run:"
awk '/^### /{name=$2} /^errors:|^recovered on retry:/{print "  " name ": " $0}' "$W/runs.txt"
echo "(work dir: $W)"
