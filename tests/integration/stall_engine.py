"""A test engine for the fencing test (R-8), registered as ``stall=stall_engine:StallEngine``.

It renders like the fake engine (a solid colour per seed) in ``steps`` steps of ``step_s``
seconds. When it notices that it was frozen (SIGSTOP: the monotonic clock jumped by more than
``gap_s`` during one short sleep) it stops looking at ``should_cancel`` and returns its images at
once, the way a GPU kernel that was already running would: the run then goes on to store its
output and try to finish, which is exactly the stale write the fencing must neutralise.
"""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np

from tryon.engines.base import RenderOutput, RenderRequest
from tryon.errors import CanceledError
from workers.runner import CURRENT_JOB


class StallEngine:
    name = "stall"

    def __init__(self, settings: Any) -> None:
        self.settings = settings

    def render(self, request: RenderRequest, *, callback: Any = None,
               should_cancel: Any = None) -> RenderOutput:
        ctx = CURRENT_JOB.get()
        opts: dict[str, Any] = dict((ctx.params if ctx else {}).get("stall", {}))
        steps = int(opts.get("steps", 10))
        step_s = float(opts.get("step_s", 0.2))
        gap_s = float(opts.get("gap_s", 2.0))
        frozen = False
        for i in range(1, steps + 1):
            if not frozen and should_cancel is not None and should_cancel():
                raise CanceledError()
            end = time.monotonic() + step_s
            while not frozen and time.monotonic() < end:
                before = time.monotonic()
                time.sleep(0.02)
                frozen = time.monotonic() - before > gap_s
            if frozen:
                break
            if callback is not None:
                callback(i, steps)
        h, w = request.person.shape[:2]
        images = []
        for seed in request.params.seeds:
            img = np.empty((h, w, 3), dtype=np.uint8)
            img[...] = (seed % 256, (seed >> 8) % 256, (seed >> 16) % 256)
            images.append(img)
        return RenderOutput(images=images, seeds=list(request.params.seeds),
                            record={"engine": "stall", "pid": os.getpid(), "frozen": frozen})
