"""How the web app publishes job ids: :class:`tryon.dispatch.Dispatcher` on a Celery app built
from :func:`tryon.celeryconf.celery_config` (the web app never imports worker code)."""

from __future__ import annotations

import threading
from typing import Any, Protocol

from tryon.celeryconf import celery_config
from tryon.config import Settings
from tryon.dispatch import Dispatcher


class Publisher(Protocol):
    def publish(self, job_id: str, queue: str) -> None:
        """Send ``run_job(job_id)`` to logical queue ``queue``; raise on failure."""
        ...


#: a request thread retries a failed publish once, quickly: the job row is already committed,
#: so a broker outage costs the client nothing but latency, and the reaper publishes the job
#: once the broker is back (workers keep the longer default policy)
RETRY_POLICY = {"max_retries": 1, "interval_start": 0.1, "interval_step": 0.2, "interval_max": 0.2}


def CeleryPublisher(settings: Settings) -> Dispatcher:  # noqa: N802 - the historic name
    """The web app's dispatcher; its Celery app is created on first use."""

    def app() -> Any:
        from celery import Celery

        celery = Celery("tryon-web", set_as_current=False)
        celery.conf.update(celery_config(settings))
        return celery

    return Dispatcher(settings, app, retry_policy=RETRY_POLICY)


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
