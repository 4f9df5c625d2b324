#!/usr/bin/env bash
# Ordinary FTPS clients against fwdist, first attempts only (no client retry): the AUTH TLS
# race, the data-connection binding and the small-transfer latency, as a user meets them.
# Not part of CI.
#
#   bench/clients.sh                      the release build, 2000 curl/ftplib, 200 lftp/rclone
#   bench/clients.sh BIN [N] [M]          another build (e.g. an old one), N and M attempts
#
# Prints, per client: attempts, failures (with the first error), and for ftplib the median
# time of one PASV+RETR of the 300-byte target manifest on an open session.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=$(realpath "${1:-${CARGO_TARGET_DIR:-$ROOT/target}/release/fwdist}")
N=${2:-2000}
M=${3:-200}
[ -x "$BIN" ] || (cd "$ROOT" && cargo build --release --locked -q)
need=()
command -v lftp >/dev/null || need+=(lftp)
command -v rclone >/dev/null || need+=(rclone)
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
W=$(mktemp -d /tmp/fwdist-clients.XXXXXX)
cd "$W"
export FWDIST_FTPS__LISTEN=127.0.0.1:2410 FWDIST_ADMIN__LISTEN=127.0.0.1:8410
export FWDIST_FTPS__PASSIVE_PORTS=44000-44003 FWDIST_FTPS__MAX_FAILED_LOGINS=0
RUST_LOG=warn "$BIN" serve >serve.log 2>&1 &
PID=$!
trap 'kill $PID 2>/dev/null || true' EXIT
for _ in $(seq 100); do curl -sf localhost:8410/healthz >/dev/null && break; sleep 0.1; done
"$BIN" keygen --out release >/dev/null && cp release.pub certs/release-keys/
head -c 65536 /dev/urandom > firmware.bin
"$BIN" sign --key release.key --model iq2 --version 1.0.0 --sequence 1 firmware.bin >/dev/null
T=$("$BIN" token create --name bench --role admin | awk '{print $NF}')
A="Authorization: Bearer $T"
S=$(curl -sf -H "$A" -H 'content-type: application/json' localhost:8410/api/v1/devices \
      -d '{"id":"aa:bb:cc:00:00:01","model":"iq2"}' | python3 -c 'import json,sys;print(json.load(sys.stdin)["secret"])')
curl -sf -o /dev/null -H "$A" -F manifest=@manifest.json -F signature=@manifest.json.sig -F image=@firmware.bin \
     localhost:8410/api/v1/releases
curl -sf -o /dev/null -H "$A" -H 'content-type: application/json' localhost:8410/api/v1/rollouts \
     -d '{"model":"iq2","version":"1.0.0","devices":["aa:bb:cc:00:00:01"]}'
U=aa-bb-cc-00-00-01
report() { printf '%-8s %5d attempts  %4d failed  %s\n' "$1" "$2" "$3" "${4:-}"; }

fails=0; first=
for i in $(seq "$N"); do
  if ! out=$(curl -sS --ssl-reqd --cacert certs/server.crt --disable-epsv -u "$U:$S" \
        ftp://127.0.0.1:2410/target/manifest.json -o /dev/null 2>&1); then
    fails=$((fails + 1)); [ -n "$first" ] || first=$out
  fi
done
report curl "$N" "$fails" "$first"

python3 - "$N" "$S" <<'PY'
import ftplib, ssl, statistics, sys, time
n, secret = int(sys.argv[1]), sys.argv[2]
ctx = ssl.create_default_context(cafile="certs/server.crt")
class Reusing(ftplib.FTP_TLS):
    def ntransfercmd(self, cmd, rest=None):
        conn, size = ftplib.FTP.ntransfercmd(self, cmd, rest)
        if self._prot_p:
            conn = self.context.wrap_socket(conn, server_hostname=self.host, session=self.sock.session)
        return conn, size
fails, first = 0, ""
for i in range(n):
    try:
        f = Reusing(context=ctx, timeout=10)
        f.connect("127.0.0.1", 2410); f.auth(); f.voidcmd("NOOP"); f.quit()
    except Exception as e:
        fails += 1; first = first or repr(e)
f = Reusing(context=ctx, timeout=10)
f.connect("127.0.0.1", 2410); f.login("aa:bb:cc:00:00:01", secret); f.prot_p()
times = []
for i in range(200):
    t = time.perf_counter(); f.retrbinary("RETR /target/manifest.json", lambda b: None)
    times.append(time.perf_counter() - t)
f.quit()
print(f"{'ftplib':<8} {n:5d} attempts  {fails:4d} failed  {first}")
print(f"ftplib   RETR of the target manifest: median {statistics.median(times)*1000:.2f} ms, p90 {sorted(times)[179]*1000:.2f} ms (200)")
PY

fails=0; first=
cat > lftprc <<EOF
set ssl:ca-file certs/server.crt
set ftp:ssl-force true
set ftp:ssl-protect-data true
set net:max-retries 1
set net:timeout 10
EOF
for i in $(seq "$M"); do
  if ! out=$(timeout 30 lftp -e "source lftprc; get /target/manifest.json -o lftp.out; bye" -u "$U,$S" 127.0.0.1:2410 2>&1) \
     || [ ! -s lftp.out ]; then
    fails=$((fails + 1)); [ -n "$first" ] || first=$out
  fi
  rm -f lftp.out
done
report lftp "$M" "$fails" "$first"

fails=0; first=
P=$(rclone obscure "$S")
for i in $(seq "$M"); do
  if ! out=$(SSL_CERT_FILE=certs/server.crt timeout 30 rclone cat ":ftp:/target/manifest.json" --ftp-host 127.0.0.1 --ftp-port 2410 \
        --ftp-user "$U" --ftp-pass "$P" --ftp-explicit-tls \
        --retries 1 --low-level-retries 1 2>&1 >/dev/null); then
    fails=$((fails + 1)); [ -n "$first" ] || first=$out
  fi
done
report rclone "$M" "$fails" "$(echo "$first" | head -c 300)"
