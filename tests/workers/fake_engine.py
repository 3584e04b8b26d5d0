"""A fake engine for worker tests, registered through ``TRYON_EXTRA_ENGINES=fake=...``.

Behaviour comes from the job's ``params["fake"]`` (read through ``workers.runner.CURRENT_JOB``):
``step_s`` (seconds per step), ``steps``, ``crash`` (``os._exit(1)`` at step 2, on every attempt,
or only on attempts listed in ``crash_attempts``), ``hang`` (ignore the soft time limit and
sleep forever), ``fail`` (raise an error with that code), ``save_stall_s`` (on attempt 1 only:
the runner gets the first image, then waits that long for the next one, i.e. it is inside the
save with one object stored: the window to kill it in). It paints a solid image whose colour
depends on the seed, so outputs are deterministic per job.
"""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np

from tryon.engines.base import RenderOutput, RenderRequest
from tryon.errors import CanceledError, InvalidImageError
from workers.runner import CURRENT_JOB


class FakeEngine:
    name = "fake"

    def __init__(self, settings: Any) -> None:
        self.settings = settings
        # proves lazy loading: the engine is built in the pool child, never the parent
        self.pid = os.getpid()
        self.loaded = False

    def load(self) -> None:
        """Called by the worker right after the fork (workers.presence), before any job."""
        self.loaded = True

    def render(self, request: RenderRequest, *, callback=None, should_cancel=None) -> RenderOutput:  # type: ignore[no-untyped-def]
        ctx = CURRENT_JOB.get()
        opts: dict[str, Any] = dict((ctx.params if ctx else {}).get("fake", {}))
        attempt = ctx.attempt if ctx else 1
        steps = int(opts.get("steps", 4))
        # FAKE_ENGINE_STEP_S: a slower default for the reliability campaign (bench/)
        step_s = float(opts.get("step_s", os.environ.get("FAKE_ENGINE_STEP_S", 0.05)))
        if opts.get("fail"):
            raise InvalidImageError("fake failure", code=str(opts["fail"]))
        for i in range(1, steps + 1):
            if should_cancel is not None and should_cancel():
                raise CanceledError()
            if i == 2 and opts.get("crash") and attempt in opts.get("crash_attempts", [attempt]):
                os._exit(1)
            if opts.get("hang"):
                while True:
                    try:
                        time.sleep(3600)
                    except BaseException:  # noqa: BLE001 - ignores the soft limit on purpose
                        continue
            time.sleep(step_s)
            if callback is not None:
                callback(i, steps)
        h, w = request.person.shape[:2]
        images = []
        for seed in request.params.seeds:
            img = np.empty((h, w, 3), dtype=np.uint8)
            img[...] = (seed % 256, (seed >> 8) % 256, (seed >> 16) % 256)
            images.append(img)
        if opts.get("save_stall_s") and attempt == 1:
            images = _StallAfterFirst(images, float(opts["save_stall_s"]))
        return RenderOutput(images=images, seeds=list(request.params.seeds),
                            record={"engine": "fake", "pid": self.pid, "loaded": self.loaded})


class _StallAfterFirst(list):  # type: ignore[type-arg]
    """A list whose iteration pauses after the first item: the runner stores sample 0, then
    waits here while still saving."""

    def __init__(self, items: list[Any], pause_s: float) -> None:
        super().__init__(items)
        self.pause_s = pause_s

    def __iter__(self):  # type: ignore[no-untyped-def]
        for i, item in enumerate(list.__iter__(self)):
            if i == 1:
                time.sleep(self.pause_s)
            yield item
