#!/usr/bin/env bash
# A local Label Studio server for review (`review.backend: label_studio`) and for the test suite, on
# 127.0.0.1 only, its SQLite database under a state folder.
#
#   scripts/label_studio.sh start   install label-studio into .venv-labelstudio/ when missing (its pins clash
#                                   with ours), start the server on a free port (first start: create the
#                                   first user and its API token), wait until it answers; prints its URL.
#                                   Idempotent: a running server's URL is printed again.
#   scripts/label_studio.sh url     the running server's URL (exit 1 when none runs).
#   scripts/label_studio.sh token   the API token the server was started with (for the environment
#                                   variable named by `review.token_env`, LABEL_STUDIO_USER_TOKEN by default).
#   scripts/label_studio.sh stop    stop it and delete its state folder.
# The first user's e-mail, password and token are kept in the state folder (username, password, token; mode 600).
#
# Settings, from the environment (read on the first start only: Label Studio creates the user and token
# when its database is empty):
#   LABEL_STUDIO_STATE      state folder (default /tmp/finetune-pipeline-labelstudio)
#   LABEL_STUDIO_PORT       port (default: a free one)
#   LABEL_STUDIO_USERNAME   first user's e-mail (default admin@example.com)
#   LABEL_STUDIO_PASSWORD   its password (default: random, written to the state folder, mode 600)
#   LABEL_STUDIO_USER_TOKEN its API token (default: random, same place)
# The token is a legacy API token (`Authorization: Token ...`): Label Studio 1.17+ turns those off unless
# LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN=true at the organization's creation, which this script sets. A personal
# access token made in the UI (a JWT refresh token) works too: the client exchanges it at /api/token/refresh/.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
VENV=${LABEL_STUDIO_VENV:-$ROOT/.venv-labelstudio}
VERSION=1.23.2
STATE=${LABEL_STUDIO_STATE:-/tmp/finetune-pipeline-labelstudio}
PYTHON=${PYTHON:-python3}
START_TIMEOUT=${LABEL_STUDIO_START_TIMEOUT:-300}

install() {
  if [ -x "$VENV/bin/label-studio" ] && "$VENV/bin/python" -c \
      "import importlib.metadata as m, sys; sys.exit(m.version('label-studio') != '$VERSION')" 2>/dev/null; then
    return 0
  fi
  echo "installing label-studio==$VERSION into $VENV" >&2
  test -x "$VENV/bin/python" || "$PYTHON" -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "label-studio==$VERSION" >&2
}

running_url() {
  [ -f "$STATE/pid" ] && [ -f "$STATE/url" ] || return 1
  kill -0 "$(cat "$STATE/pid")" 2>/dev/null || return 1
  cat "$STATE/url"
}

answers() {
  "$VENV/bin/python" - "$1" <<'EOF'
import sys, urllib.request
try:
    with urllib.request.urlopen(sys.argv[1] + "/health", timeout=3) as r:
        sys.exit(0 if r.status == 200 else 1)
except Exception:
    sys.exit(1)
EOF
}

secret() {  # the value of $1 in the environment, else the one kept in the state folder, else a new one
  local name=$1 file="$STATE/$2"
  if [ -n "${!name:-}" ]; then printf '%s' "${!name}"; return; fi
  if [ ! -s "$file" ]; then
    (umask 077; "$VENV/bin/python" -c "import secrets; print(secrets.token_hex(20), end='')" > "$file")
  fi
  cat "$file"
}

start() {
  # One start at a time per state folder: a second caller (the test fixture while `make test` starts the
  # server in the background) waits here, then finds the server running.
  mkdir -p "$(dirname "$STATE")"
  exec 9>"$STATE.lock"
  flock 9
  if url=$(running_url) && answers "$url"; then echo "$url"; return 0; fi
  install
  mkdir -p "$STATE/data" && chmod 700 "$STATE"
  local port=${LABEL_STUDIO_PORT:-}
  if [ -z "$port" ]; then
    port=$("$VENV/bin/python" -c "import socket; s = socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])")
  fi
  local url="http://127.0.0.1:$port"
  local token password
  token=$(secret LABEL_STUDIO_USER_TOKEN token)
  password=$(secret LABEL_STUDIO_PASSWORD password)
  (umask 077; printf '%s' "$token" > "$STATE/token"; printf '%s' "$password" > "$STATE/password"
   printf '%s' "${LABEL_STUDIO_USERNAME:-admin@example.com}" > "$STATE/username")
  # Offline and private: no telemetry, no version check, no sign-up page for strangers.
  LABEL_STUDIO_BASE_DATA_DIR="$STATE/data" \
  LABEL_STUDIO_USERNAME="${LABEL_STUDIO_USERNAME:-admin@example.com}" \
  LABEL_STUDIO_PASSWORD="$password" \
  LABEL_STUDIO_USER_TOKEN="$token" \
  LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN=true \
  LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK=true \
  LABEL_STUDIO_HOST="$url" \
  COLLECT_ANALYTICS=false SENTRY_DSN= FRONTEND_SENTRY_DSN= \
  nohup "$VENV/bin/label-studio" start --no-browser --internal-host 127.0.0.1 --port "$port" \
    --data-dir "$STATE/data" --enable-legacy-api-token --log-level WARNING \
    > "$STATE/server.log" 2>&1 < /dev/null 9>&- &  # the server must not hold the start lock
  echo $! > "$STATE/pid"
  echo "$url" > "$STATE/url"
  local waited=0
  until answers "$url"; do
    if ! kill -0 "$(cat "$STATE/pid")" 2>/dev/null; then
      echo "Label Studio exited before answering; its log: $STATE/server.log" >&2
      tail -20 "$STATE/server.log" >&2
      exit 1
    fi
    if [ "$waited" -ge "$START_TIMEOUT" ]; then
      echo "Label Studio did not answer on $url within ${START_TIMEOUT}s; its log: $STATE/server.log" >&2
      exit 1
    fi
    sleep 2; waited=$((waited + 2))
  done
  echo "$url"
}

stop() {
  if [ -f "$STATE/pid" ]; then
    local pid
    pid=$(cat "$STATE/pid")
    if kill -0 "$pid" 2>/dev/null; then
      kill "$pid" 2>/dev/null || true
      for _ in $(seq 1 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
      kill -9 "$pid" 2>/dev/null || true
    fi
  fi
  rm -rf "$STATE" "$STATE.lock"
}

case "${1:-start}" in
  start) start ;;
  url) running_url ;;
  token) cat "$STATE/token" ;;
  stop) stop ;;
  *) echo "usage: $0 start|url|token|stop" >&2; exit 2 ;;
esac
