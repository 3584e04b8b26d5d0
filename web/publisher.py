"""Publishing job ids to the broker by task name (the web app never imports worker code)."""

from __future__ import annotations

import logging
import threading
from typing import Any, Protocol

from tryon.celeryconf import TASK_RUN_JOB, celery_config, queue_name
from tryon.config import Settings

log = logging.getLogger(__name__)


class Publisher(Protocol):
    def publish(self, job_id: str, queue: str) -> None:
        """Send ``run_job(job_id)`` to logical queue ``queue``; raise on failure."""
        ...


class CeleryPublisher:
    """``send_task(TASK_RUN_JOB, args=[job_id], queue=...)`` on a Celery app built from
    :func:`tryon.celeryconf.celery_config`; the app is created on first use."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._app: Any = None
        self._lock = threading.Lock()

    @property
    def app(self) -> Any:
        with self._lock:
            if self._app is None:
                from celery import Celery

                app = Celery("tryon-web", set_as_current=False)
                app.conf.update(celery_config(self.settings))
                self._app = app
            return self._app

    #: a request thread retries a failed publish once, quickly: the job row is already
    #: committed, so a broker outage costs the client nothing but latency, and the reaper
    #: publishes the job once the broker is back (workers keep the longer default policy)
    RETRY_POLICY = {"max_retries": 1, "interval_start": 0.1, "interval_step": 0.2, "interval_max": 0.2}

    def publish(self, job_id: str, queue: str) -> None:
        self.app.send_task(TASK_RUN_JOB, args=[job_id], queue=queue_name(self.settings, queue),
                           retry_policy=self.RETRY_POLICY)


class RecordingPublisher:
    """A publisher for tests and benchmarks: records calls, can be told to fail."""

    def __init__(self, fail: bool = False) -> None:
        self.published: list[tuple[str, str]] = []
        self.fail = fail
        self._lock = threading.Lock()

    def publish(self, job_id: str, queue: str) -> None:
        if self.fail:
            raise ConnectionError("broker down (test)")
        with self._lock:
            self.published.append((job_id, queue))

