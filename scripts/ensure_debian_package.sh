#!/usr/bin/env bash
# ensure_debian_package.sh COMMAND PACKAGE: make sure COMMAND exists, installing the Debian PACKAGE that
# provides it with apt-get when missing and running as root; otherwise say what to install.
# Used by `make test` (chromium, for the UI test) and scripts/test_postgres.sh (postgresql).
set -euo pipefail
command=$1 package=$2
if command -v "$command" >/dev/null 2>&1; then exit 0; fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "$command is missing; install Debian's $package package (apt-get install -y $package) and re-run." >&2
  exit 1
fi
echo "installing $package (apt-get) ..." >&2
DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$package" >/dev/null
