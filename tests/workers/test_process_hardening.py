"""S-3: a worker pool child runs with Pillow hardened (pixel limit set, bomb warnings are errors)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

CHILD = """
import warnings
from PIL import Image
from celery.signals import worker_process_init
import workers.tasks  # registers the handler; loads no model
Image.MAX_IMAGE_PIXELS = None
warnings.resetwarnings()
worker_process_init.send(sender=None)  # what Celery sends in each new pool child
assert Image.MAX_IMAGE_PIXELS == 1234567, Image.MAX_IMAGE_PIXELS
hit = [f for f in warnings.filters if f[0] == "error" and f[2] is Image.DecompressionBombWarning]
assert hit, warnings.filters
print("ok")
"""


def test_worker_child_has_pillow_hardening(tmp_path: Path) -> None:
    env = {**os.environ, "TRYON_DATA_DIR": str(tmp_path), "TRYON_MAX_IMAGE_PIXELS": "1234567"}
    res = subprocess.run([sys.executable, "-c", CHILD], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.strip().endswith("ok")
