"""Quiet, useful output: native MediaPipe/TF Lite chatter filtered, one progress bar per stage."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tryon.cli.quiet import LineFilter

ROOT = Path(__file__).resolve().parents[2]

NOISE_LINES = [
    b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\n",
    b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n",
    b"W0000 00:00:1796189149.621234   19136 inference_feedback_manager.cc:114] Feedback manager "
    b"requires a model with a single signature inference.\n",
    b"I1202 05:21:39.123456   42 gl_context.cc:357] GL version: 3.2\n",
]
KEPT_LINES = [
    b"E0000 00:00:1796189149.621234   19136 calculator_graph.cc:887] a real error\n",
    b"error [pose_not_usable]: stand facing the camera\n",
    b"INFO: something else entirely\n",
    b"Installing collected packages\n",
    b"Traceback (most recent call last):\n",
]


def test_line_filter_drops_noise_and_keeps_the_rest() -> None:
    lf = LineFilter()
    out = lf.feed(b"".join(NOISE_LINES + KEPT_LINES)) + lf.flush()
    assert out == b"".join(KEPT_LINES)


def test_line_filter_handles_lines_split_across_reads() -> None:
    stream = b"".join(NOISE_LINES[2:3] + KEPT_LINES[:2] + NOISE_LINES[:1])
    for size in (1, 3, 7, 64):
        lf = LineFilter()
        out = b"".join(lf.feed(stream[i : i + size]) for i in range(0, len(stream), size))
        assert out + lf.flush() == b"".join(KEPT_LINES[:2]), size


def test_progress_bar_fragments_pass_at_once() -> None:
    lf = LineFilter()
    assert lf.feed(b"\rT-shirt/preview:  40%|####") == b"\rT-shirt/preview:  40%|####"
    assert lf.feed(b"W0000 00:00") == b""  # may become noise: held back until its newline
    assert lf.feed(b":1.5   7 x.cc:1] noise\n") == b""


def test_progress_bar_is_created_with_the_real_total() -> None:
    from tqdm import tqdm

    from tryon.cli import render

    totals: list[float | None] = []
    real_init = tqdm.__init__

    def spy(self: tqdm, *args: object, **kwargs: object) -> None:
        totals.append(kwargs.get("total"))  # type: ignore[arg-type]
        real_init(self, *args, **kwargs)  # type: ignore[arg-type]

    tqdm.__init__ = spy  # type: ignore[method-assign]
    try:
        with render.progress_bar("stage", enabled=True) as callback:
            for step in range(6):
                callback(step, 5)
        with render.progress_bar("nothing", enabled=True):
            pass  # an engine that reports nothing gets no bar at all
    finally:
        tqdm.__init__ = real_init  # type: ignore[method-assign]
    assert totals == [5]


@pytest.mark.slow
def test_tryon_demo_output_has_no_native_log_lines(tmp_path: Path) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
           "TRYON_DATA_DIR": str(tmp_path / "var")}
    env.pop("TRYON_NATIVE_LOGS", None)
    env.pop("TRYON_STDERR_FILTERED", None)
    proc = subprocess.run(
        [sys.executable, "-c", "from tryon.cli import main; main()", "demo", "--out",
         str(tmp_path / "demo")],
        cwd=ROOT, env=env, capture_output=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    err = proc.stderr.decode(errors="replace")
    assert "W0000" not in err and "TensorFlow Lite" not in err and "absl::" not in err, err
    # one bar for the rendered stage, with one total from its first frame (no 0/1 placeholder)
    totals = {int(t) for t in re.findall(r"\d+/(\d+) \[", err)}
    assert len(totals) == 1 and totals != {1}, err
    assert "contact sheet:" in proc.stdout.decode()

    # the escape hatch shows everything again (the test above would see it otherwise)
    env["TRYON_NATIVE_LOGS"] = "1"
    loud = subprocess.run(
        [sys.executable, "-c", "from tryon.cli import main; main()", "demo", "--out",
         str(tmp_path / "demo2"), "--quiet"],
        cwd=ROOT, env=env, capture_output=True, timeout=300,
    )
    assert loud.returncode == 0 and b"W0000" in loud.stderr


def test_filtered_stderr_still_carries_errors_at_exit(tmp_path: Path) -> None:
    """A command that fails prints its error through the filter before the process ends."""
    env = {**os.environ}
    env.pop("TRYON_NATIVE_LOGS", None)
    env.pop("TRYON_STDERR_FILTERED", None)
    proc = subprocess.run(
        [sys.executable, "-c", "from tryon.cli import main; main()", "render", "--person",
         str(tmp_path / "missing.jpg"), "--garment", str(tmp_path / "g.png"), "--category",
         "upper_body", "--out", str(tmp_path / "o.png"), "--engine", "preview"],
        cwd=ROOT, env=env, capture_output=True, timeout=120,
    )
    assert proc.returncode != 0
    assert b"error" in proc.stderr.lower(), proc.stderr
