#!/usr/bin/env bash
# Create .venv and install tryon on a fresh machine. Idempotent: a second run with the same
# inputs only checks the stamp. Every step is announced and pip shows its own progress.
#
# Choices, from the environment:
#   TRYON_EXTRAS     which dependency sets (pyproject.toml): "all" (default; what the README's
#                    two commands need), or e.g. "api", "worker", "worker,engine", "api,test".
#                    torch is installed only when the set includes engine, train or all.
#   TORCH_SPEC       the torch requirement (default: torch==2.13.0); it must satisfy the pin in
#                    pyproject.toml (==2.13.0; a local build such as 2.13.0+cpu does)
#   TORCH_INDEX_URL  where to take it from (default: pip's own configuration). The default index
#                    gives a Linux x86-64 machine the CUDA build (torch + ~17 nvidia-* wheels +
#                    triton, several GB); for the CPU build (~0.2 GB) use the CPU wheel index of
#                    the PyTorch project, e.g. TORCH_INDEX_URL=<PyTorch index>/whl/cpu.
#   PYTHON           the interpreter for the venv (default: python3.11)
#   PIP_QUIET=1      hide pip's own output (progress is shown by default)
set -euo pipefail
cd "$(dirname "$0")/.."

EXTRAS=${TRYON_EXTRAS:-all}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
TORCH_INDEX_URL=${TORCH_INDEX_URL:-}
MEDIAPIPE_SPEC=mediapipe==0.10.21
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3

step=0
say() { step=$((step + 1)); echo "[bootstrap $step] $*" >&2; }
pip_args=(--progress-bar on)
[ "${PIP_QUIET:-0}" = "1" ] && pip_args=(-q)
VPIP=(.venv/bin/python -m pip)

needs_torch=0
case ",$EXTRAS," in *,all,*|*,engine,*|*,train,*) needs_torch=1 ;; esac

stamp=.venv/.tryon-installed
want=$({ cat pyproject.toml scripts/bootstrap.sh; echo "$EXTRAS|$TORCH_SPEC|$TORCH_INDEX_URL"; } \
       | sha256sum | cut -c1-16)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    echo "[bootstrap] .venv is up to date (extras: $EXTRAS)" >&2
    exit 0
fi

if [ ! -x .venv/bin/python ]; then
    say "creating .venv with $("$PY" --version 2>&1) ($PY)"
    "$PY" -m venv .venv
else
    say "reusing .venv ($(.venv/bin/python --version 2>&1))"
fi

if [ "$needs_torch" = "1" ]; then
    # Tell what will come before it comes: resolve the torch requirement without installing.
    index=()
    [ -n "$TORCH_INDEX_URL" ] && index=(--index-url "$TORCH_INDEX_URL")
    say "resolving $TORCH_SPEC${TORCH_INDEX_URL:+ from $TORCH_INDEX_URL}"
    report=$(mktemp)
    if "${VPIP[@]}" install -q --dry-run --no-deps --ignore-installed --report "$report" \
            ${index[@]+"${index[@]}"} "$TORCH_SPEC" >/dev/null 2>&1; then
        .venv/bin/python scripts/torch_build.py "$report" >&2 || true
    else
        echo "    (could not resolve it ahead; pip will say why below)" >&2
    fi
    rm -f "$report"
    say "installing $TORCH_SPEC (the largest download of the install)"
    "${VPIP[@]}" install ${pip_args[@]+"${pip_args[@]}"} ${index[@]+"${index[@]}"} "$TORCH_SPEC"
fi

say "installing tryon (editable) with [$EXTRAS]"
"${VPIP[@]}" install ${pip_args[@]+"${pip_args[@]}"} -e ".[$EXTRAS]"

# mediapipe 0.10.21 is the last release that ships pose/segmentation models in the wheel.
# Its declared deps pull opencv-contrib-python (needs libGL) and jax; pyproject.toml already
# installs the headless OpenCV and the small deps it really uses.
say "installing $MEDIAPIPE_SPEC without its optional heavy dependencies"
"${VPIP[@]}" install ${pip_args[@]+"${pip_args[@]}"} --no-deps "$MEDIAPIPE_SPEC"

say "checking the imports"
checks="import mediapipe, cv2; from mediapipe.python.solutions import pose"
[ "$needs_torch" = "1" ] && checks="$checks; import torch, diffusers, transformers; print('torch', torch.__version__, 'cuda' if torch.version.cuda else 'cpu')"
.venv/bin/python -c "$checks" >&2
echo "$want" > "$stamp"
echo "[bootstrap] done: .venv has tryon[$EXTRAS]" >&2
