#!/usr/bin/env bash
# Create .venv and install tryon with everything it needs, on a fresh machine.
# Idempotent: a second run only checks that the install is complete.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
VPIP=".venv/bin/python -m pip"
stamp=.venv/.tryon-installed
want=$(cat pyproject.toml scripts/bootstrap.sh | sha256sum | cut -c1-16)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    exit 0
fi
# torch first and pinned: the CPU wheel; a range would pull a multi-GB CUDA build.
$VPIP install -q torch==2.13.0
$VPIP install -q -e ".[test]"
# mediapipe 0.10.21 is the last release that ships pose/segmentation models in the wheel.
# Its declared deps pull opencv-contrib-python (needs libGL) and jax; our pyproject already
# installs the headless OpenCV and the small deps it really uses.
$VPIP install -q --no-deps mediapipe==0.10.21
.venv/bin/python -c "import mediapipe, cv2, torch, diffusers, transformers; from mediapipe.python.solutions import pose"
echo "$want" > "$stamp"
