#!/usr/bin/env bash
# Debian's Chromium for the browser test of the web UI (finetune_pipeline_tests/test_pipeline.py).
# Installs it with apt-get when missing and running as root; otherwise says what to install.
set -euo pipefail
if command -v chromium >/dev/null 2>&1; then exit 0; fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "chromium is not installed; install Debian's chromium package (apt-get install -y chromium) and re-run." >&2
  exit 1
fi
echo "installing chromium (apt-get) ..." >&2
DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
