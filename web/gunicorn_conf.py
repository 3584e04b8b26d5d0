"""gunicorn settings for the API: ``gunicorn -c python:web.gunicorn_conf "web.app:create_app()"``.

Logging: the project's one formatter (:mod:`tryon.logs`, ``TRYON_LOG_FORMAT`` /
``TRYON_LOG_LEVEL``) on the root logger and on gunicorn's error log, set in the master before
the workers fork; the access log keeps gunicorn's own format.

With ``PROMETHEUS_MULTIPROC_DIR`` set, a worker that exits has its live gauges removed from the
shared metrics directory (counters stay, so totals never go backwards).
"""

from __future__ import annotations

import os
from typing import Any


def on_starting(server: Any) -> None:
    _configure_logging()


def when_ready(server: Any) -> None:
    _configure_logging()  # gunicorn (re)built its error log after on_starting on a reload


def _configure_logging() -> None:
    import logging

    from tryon import logs

    handler = logs.configure_from_settings()
    for h in logging.getLogger("gunicorn.error").handlers:
        h.setFormatter(handler.formatter)
        h.addFilter(logs.ContextFilter())


def child_exit(server: Any, worker: Any) -> None:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)
