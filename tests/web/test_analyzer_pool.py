"""Issue 11.8: one analyzer process per API worker, replaced after ``max_tasks`` analyses so
its memory stays bounded."""

from __future__ import annotations

import os
from typing import Any

from web.analyzer import PoolAnalyzer


def _pid(image_bytes: bytes, categories: Any) -> dict[str, Any]:
    return {"pid": os.getpid(), "n": len(image_bytes)}


def test_analyzer_process_is_replaced_after_max_tasks() -> None:
    analyzer = PoolAnalyzer(max_tasks=2, fn=_pid)
    try:
        pids = [analyzer(b"x" * i, None)["pid"] for i in range(1, 6)]
    finally:
        analyzer.shutdown()
    assert os.getpid() not in pids
    # one process at a time (max_workers=1), a fresh one every 2 analyses
    assert pids[0] == pids[1] and pids[2] == pids[3]
    assert len({pids[0], pids[2], pids[4]}) == 3


def test_analyzer_process_lives_on_without_a_bound() -> None:
    analyzer = PoolAnalyzer(max_tasks=0, fn=_pid)
    try:
        pids = {analyzer(b"x", None)["pid"] for _ in range(4)}
    finally:
        analyzer.shutdown()
    assert len(pids) == 1
