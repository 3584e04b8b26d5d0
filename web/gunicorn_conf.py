"""gunicorn settings for the API: ``gunicorn -c python:web.gunicorn_conf "web.app:create_app()"``.

With ``PROMETHEUS_MULTIPROC_DIR`` set, a worker that exits has its live gauges removed from the
shared metrics directory (counters stay, so totals never go backwards).
"""

from __future__ import annotations

import os
from typing import Any


def child_exit(server: Any, worker: Any) -> None:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)
