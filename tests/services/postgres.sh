#!/usr/bin/env bash
# A throwaway PostgreSQL cluster on loopback for the tests (issue 12): Debian's server, run as
# the postgres user, data and socket in one directory, trust auth on 127.0.0.1 only.
#
#   eval "$(tests/services/postgres.sh start DIR)"   # prints FWDIST_TEST_PG_URL=... and PG_PID=...
#   tests/services/postgres.sh stop DIR              # stops it by its PID, removes DIR
#
# The integration tests run against it when FWDIST_TEST_DB=postgres (each test gets a database
# of its own, created through FWDIST_TEST_PG_URL); see README "Tests".
set -euo pipefail
cmd=${1:?start|stop}; dir=${2:?directory}
bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
[ -n "$bin" ] || { echo "postgres.sh: no PostgreSQL server (apt-get install postgresql)" >&2; exit 1; }
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
case $cmd in
start)
  mkdir -p "$dir"
  [ "$(id -u)" = 0 ] && chown postgres "$dir"
  as_pg "$bin/initdb" -D "$dir/data" -U postgres -A trust --no-sync -E UTF8 >/dev/null
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  # fsync off: a test cluster, thrown away (PG_DURABLE=1 keeps PostgreSQL's defaults, for
  # benchmarks); many connections: tests run in parallel.
  durability="-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
  [ "${PG_DURABLE:-0}" = 1 ] && durability=""
  as_pg "$bin/pg_ctl" -D "$dir/data" -l "$dir/log" -w -t 30 -o \
    "-c listen_addresses=127.0.0.1 -p $port -k $dir $durability -c max_connections=400" \
    start >/dev/null
  pid=$(head -n 1 "$dir/data/postmaster.pid")
  echo "export FWDIST_TEST_PG_URL=postgres://postgres@127.0.0.1:$port/postgres"
  echo "export PG_PID=$pid"
  ;;
stop)
  if [ -f "$dir/data/postmaster.pid" ]; then
    pid=$(head -n 1 "$dir/data/postmaster.pid")
    kill -INT "$pid" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  fi
  rm -rf "$dir"
  ;;
*) echo "usage: $0 start|stop DIR" >&2; exit 2 ;;
esac
