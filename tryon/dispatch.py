"""The one place that publishes work to the broker, by task name.

The API (after committing a job row), the ops retry, the reaper and the workers' webhook
notifications all publish through a :class:`Dispatcher`. Only ids travel: a task reads everything
else from its row. The Celery app is built by the caller's ``app_factory`` on first use (so this
module imports no Celery, and a web process that never publishes never builds one).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import Any

from tryon.celeryconf import QUEUE_CPU, TASK_DELIVER_WEBHOOK, TASK_RUN_JOB, queue_name
from tryon.config import Settings


class Dispatcher:
    """Publishes ``tryon.run_job`` and ``tryon.deliver_webhook`` messages on the app
    ``app_factory()`` builds (anything with Celery's ``send_task``). ``retry_policy``: kombu's
    publish retry policy (None: the app's default)."""

    def __init__(self, settings: Settings, app_factory: Callable[[], Any], *,
                 retry_policy: dict[str, float] | None = None) -> None:
        self.settings = settings
        self._factory = app_factory
        self._app: Any = None
        self._lock = threading.Lock()
        self.retry_policy = retry_policy

    @property
    def app(self) -> Any:
        with self._lock:
            if self._app is None:
                self._app = self._factory()
            return self._app

    def _send(self, task: str, arg: str, queue: str) -> None:
        options: dict[str, Any] = {"queue": queue_name(self.settings, queue)}
        if self.retry_policy is not None:
            options["retry_policy"] = self.retry_policy
        self.app.send_task(task, args=[arg], **options)

    def publish(self, job_id: str, queue: str) -> None:
        """Send ``tryon.run_job(job_id)`` to logical queue ``queue`` (``gpu`` or ``cpu``);
        raises the broker's error on failure (the caller records ``published_at`` only after
        this returns; the reaper re-publishes what was never published)."""
        self._send(TASK_RUN_JOB, job_id, queue)

    def publish_webhooks(self, delivery_ids: Iterable[str]) -> None:
        """Queue a delivery attempt for each webhook outbox row (on the CPU queue)."""
        for delivery_id in delivery_ids:
            self._send(TASK_DELIVER_WEBHOOK, delivery_id, QUEUE_CPU)
