"""Photo pre-flight analysis in a separate process, so the web process never imports MediaPipe.

The pool is created on the first analysis (spawned, never forked: a forked copy of a threaded
web worker can deadlock) and shut down with the app. Each pool process builds its MediaPipe
graphs once (``tryon.vision.analysis`` caches them per process).

Memory shape (issue 11.8): a bound per API worker, not a pool per host. Each gunicorn worker
owns at most ``max_workers`` (default 1) analyzer process, started on its first upload, and the
process is replaced after ``max_tasks`` analyses (``TRYON_ANALYZER_MAX_TASKS``) so that whatever
MediaPipe or the image stack leaves behind cannot grow without bound. The host therefore holds
at most ``gunicorn workers x (API worker + one analyzer)``; bench/api_memory.py measures both
(figures in docs/api.md). A host-wide pool would save one analyzer per extra worker but put
every upload behind one IPC server that must itself be supervised; with the default two
workers the bound is simpler and costs one extra process.
"""

from __future__ import annotations

import concurrent.futures
import logging
import multiprocessing
import threading
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from tryon.errors import ServiceUnavailableError

if TYPE_CHECKING:
    from tryon.vision.analysis_input import AnalysisInput

log = logging.getLogger(__name__)


def _run_analysis(photo: AnalysisInput, categories: list[str] | None) -> dict[str, Any]:
    """Pool entry point (imports the vision stack in the pool process only). ``photo`` is
    already at analysis resolution: nothing is decoded here. The result carries
    ``person_mask_png`` (PNG bytes or None, at the photo's size) for shape-aware target
    masks."""
    from tryon.vision.analysis import analyze_photo_input

    return analyze_photo_input(photo, categories, with_person_mask=True)


class PoolAnalyzer:
    """``analyzer(photo, categories) -> analysis dict`` backed by a spawn process pool.

    ``photo`` is a :class:`tryon.vision.analysis_input.AnalysisInput`: the photo reduced to
    analysis resolution by the caller from the pixels it decoded at intake, and the stored
    photo's size (a ~1 MB pickle instead of a second full decode in the pool).

    The dict is :meth:`tryon.vision.analysis.PhotoAnalysis.to_dict` plus ``person_mask_png``
    (grayscale PNG bytes of the main person's own silhouette at the photo's size, 255 =
    person, or None)."""

    def __init__(self, max_workers: int = 1, timeout_s: float = 120.0, max_tasks: int = 200,
                 fn: Any = None) -> None:
        """``max_tasks``: analyses per analyzer process before it is replaced (0 = never).
        ``fn``: the pool entry point (tests pass a light one)."""
        self.max_workers = max_workers
        self.timeout_s = timeout_s
        self.max_tasks = max_tasks
        self._fn = fn or _run_analysis
        self._pool: concurrent.futures.ProcessPoolExecutor | None = None
        self._lock = threading.Lock()

    def _executor(self) -> concurrent.futures.ProcessPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = concurrent.futures.ProcessPoolExecutor(
                    max_workers=self.max_workers, mp_context=multiprocessing.get_context("spawn"),
                    max_tasks_per_child=self.max_tasks or None,
                )
            return self._pool

    def __call__(self, photo: AnalysisInput, categories: Iterable[str] | None = None
                 ) -> dict[str, Any]:
        cats = None if categories is None else [str(c) for c in categories]
        future = self._executor().submit(self._fn, photo, cats)
        try:
            return future.result(timeout=self.timeout_s)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise ServiceUnavailableError("Photo analysis timed out: retry shortly.") from None
        except concurrent.futures.process.BrokenProcessPool:
            log.error("analysis pool broke; recreating it on the next call")
            with self._lock:
                self._pool = None
            raise ServiceUnavailableError("Photo analysis is unavailable: retry shortly.") from None

    def shutdown(self) -> None:
        with self._lock:
            if self._pool is not None:
                self._pool.shutdown(wait=False, cancel_futures=True)
                self._pool = None
