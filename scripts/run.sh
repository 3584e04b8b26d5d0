#!/usr/bin/env bash
# The main job on a fresh machine: install, create the embedded database, render the demo
# contact sheet, then start the service (API + worker + reaper) on the embedded defaults
# (SQLite, local storage, a broker that needs no server). Ctrl-C stops it.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
export PATH="$PWD/.venv/bin:$PATH"
tryon db upgrade
tryon demo --out "${TRYON_DEMO_OUT:-out/demo}"
if [ "${TRYON_RUN_NO_SERVE:-0}" = "1" ]; then
    exit 0
fi
exec tryon serve "$@"
