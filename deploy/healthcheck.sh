#!/bin/bash
# The container's HEALTHCHECK: GET /healthz on the admin API of the fwdist in this container,
# healthy (exit 0) only on a 200, which the server answers when its database answers and its
# FTPS listener greets. The runtime image has no curl: plain HTTP goes through bash's
# /dev/tcp, HTTPS (admin.cert set) through openssl, which ca-certificates brings.
#
# Usage: fwdist-healthcheck [HOST:PORT]
#   default: the port of FWDIST_ADMIN__LISTEN (else 8080) on loopback, or its address when
#   it names one; HTTPS when FWDIST_ADMIN__CERT is set. Give HOST:PORT when the admin
#   address comes from a config file instead of the environment.
#
# deploy/check.py runs this script against a real server, over HTTP and over HTTPS.
set -u
listen=${1:-${FWDIST_ADMIN__LISTEN:-0.0.0.0:8080}}
port=${listen##*:}
host=${listen%:*}
host=${host#[}
host=${host%]}
case $host in
  0.0.0.0 | '') host=127.0.0.1 ;;
  ::) host=::1 ;;
esac
request=$'GET /healthz HTTP/1.0\r\nHost: fwdist\r\n\r\n'
deadline=${FWDIST_HEALTHCHECK_TIMEOUT:-4}

if [ -n "${FWDIST_ADMIN__CERT:-}" ]; then
  # The certificate is not verified: this asks whether our own process answers.
  [[ $host == *:* ]] && target="[$host]:$port" || target="$host:$port"
  status=$(printf '%s' "$request" \
    | timeout "$deadline" openssl s_client -quiet -connect "$target" 2>/dev/null \
    | head -n 1)
else
  status=$(timeout "$deadline" bash -c '
    exec 3<>"/dev/tcp/$1/$2" || exit 1
    printf "%s" "$3" >&3
    IFS= read -r line <&3 && printf "%s\n" "$line"
  ' _ "$host" "$port" "$request" 2>/dev/null)
fi

case $status in
  "HTTP/1."[01]" 200"*) exit 0 ;;
  *)
    echo "fwdist-healthcheck: GET /healthz on $host:$port: ${status:-no answer}" >&2
    exit 1
    ;;
esac
