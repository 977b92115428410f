#!/usr/bin/env bash
# A throwaway PostgreSQL server for the test suite, on 127.0.0.1 only.
#
#   scripts/test_postgres.sh start   install PostgreSQL if missing (Debian, as root), start the server
#                                    and create the test database; prints the URL. Idempotent.
#   scripts/test_postgres.sh stop    stop it and delete its data folder.
#
# `make test` runs `start` and passes the URL to pytest as FINETUNE_TEST_PG_URL. The tests that need
# PostgreSQL fail (never skip) when that variable is unset or the server does not answer.
set -euo pipefail

PGTEST_DIR=${PGTEST_DIR:-/tmp/finetune-pipeline-pgtest}
PGTEST_PORT=${PGTEST_PORT:-54329}
# A password only this local, loopback-only test server knows; the tests also check it never leaks.
PGTEST_PASSWORD=${PGTEST_PASSWORD:-pgtest-secret}
DB=finetune_test

find_bin() {
  local dir
  for dir in /usr/lib/postgresql/*/bin; do
    [ -x "$dir/initdb" ] && { echo "$dir"; return 0; }
  done
  command -v initdb >/dev/null 2>&1 && { dirname "$(command -v initdb)"; return 0; }
  return 1
}

# The server refuses to run as root: run its commands as the `postgres` user when we are root.
as_owner() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

start() {
  local bin
  bin=$(find_bin) || { "$(dirname "$0")/ensure_debian_package.sh" pg_ctlcluster postgresql; bin=$(find_bin); }
  if [ "$(id -u)" = 0 ]; then
    mkdir -p "$PGTEST_DIR" && chown postgres "$PGTEST_DIR"
  else
    mkdir -p "$PGTEST_DIR"
  fi
  if ! as_owner "$bin/pg_ctl" -D "$PGTEST_DIR/data" status >/dev/null 2>&1; then
    if [ ! -f "$PGTEST_DIR/data/PG_VERSION" ]; then
      as_owner bash -c "umask 077; printf '%s\n' '$PGTEST_PASSWORD' > '$PGTEST_DIR/pwfile'"
      as_owner "$bin/initdb" -D "$PGTEST_DIR/data" -U postgres --pwfile="$PGTEST_DIR/pwfile" \
        --auth=scram-sha-256 --encoding=UTF8 --locale=C.UTF-8 >/dev/null
    fi
    as_owner "$bin/pg_ctl" -D "$PGTEST_DIR/data" -l "$PGTEST_DIR/server.log" -w \
      -o "-p $PGTEST_PORT -k $PGTEST_DIR -c listen_addresses=127.0.0.1" start >/dev/null
  fi
  export PGPASSWORD=$PGTEST_PASSWORD
  if ! "$bin/psql" -h 127.0.0.1 -p "$PGTEST_PORT" -U postgres -tAc \
      "SELECT 1 FROM pg_database WHERE datname = '$DB'" postgres | grep -q 1; then
    "$bin/createdb" -h 127.0.0.1 -p "$PGTEST_PORT" -U postgres "$DB"
  fi
  echo "postgresql://postgres:$PGTEST_PASSWORD@127.0.0.1:$PGTEST_PORT/$DB"
}

stop() {
  local bin
  bin=$(find_bin) || exit 0
  as_owner "$bin/pg_ctl" -D "$PGTEST_DIR/data" -m fast stop >/dev/null 2>&1 || true
  rm -rf "$PGTEST_DIR"
}

case "${1:-start}" in
  start) start ;;
  stop) stop ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
