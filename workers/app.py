"""The Celery app factory and the publish helpers the API and the reaper use.

Importing this module imports Celery and the framework-free settings, nothing heavy: the web app
may use :func:`make_celery` and :func:`enqueue_job` to publish by task name. The tasks themselves
live in :mod:`workers.tasks` (``celery -A workers.tasks:app worker``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from celery import Celery
from kombu.exceptions import OperationalError as KombuOperationalError
from sqlalchemy.orm import Session, sessionmaker

from tryon.celeryconf import (
    QUEUE_CPU,
    TASK_DELIVER_WEBHOOK,
    TASK_RUN_JOB,
    celery_config,
    queue_name,
)
from tryon.config import Settings
from tryon.logs import job_extra
from tryon.records import jobs
from tryon.records.db import session_scope

log = logging.getLogger(__name__)

#: errors a publish can raise when the broker is down (kombu wraps the transport's own)
PUBLISH_ERRORS: tuple[type[BaseException], ...] = (KombuOperationalError, ConnectionError, OSError)


def make_celery(settings: Settings, *, include_tasks: bool = False) -> Celery:
    """A Celery app configured from ``settings`` (see :func:`tryon.celeryconf.celery_config`).

    ``include_tasks`` registers :mod:`workers.tasks` for a worker; a publisher does not need it.
    """
    app = Celery("tryon", set_as_current=False,
                 include=["workers.tasks"] if include_tasks else [])
    app.config_from_object(celery_config(settings))
    return app


def publish_job(app: Celery, settings: Settings, job_id: str, queue: str) -> None:
    """Send ``tryon.run_job(job_id)`` to logical queue ``queue`` (``gpu`` or ``cpu``).

    Only the id travels: the task reads everything else from the job row.
    """
    app.send_task(TASK_RUN_JOB, args=[job_id], queue=queue_name(settings, queue))


def enqueue_job(
    app: Celery, settings: Settings, factory: sessionmaker[Session], job_id: str, queue: str
) -> bool:
    """Publish a *committed* job and record ``published_at``. Call after ``session.commit()``.

    Returns False when the broker refused the message: the job stays ``queued`` with
    ``published_at`` unset and the reaper publishes it later, so the API still answers 202.
    """
    try:
        publish_job(app, settings, job_id, queue)
    except PUBLISH_ERRORS as exc:
        log.warning("publish failed, the reaper will retry: %s", exc, extra=job_extra(job_id))
        return False
    with session_scope(factory) as s:
        jobs.mark_published(s, job_id)
    return True


def publish_webhooks(app: Celery, settings: Settings, delivery_ids: Iterable[str]) -> None:
    """Queue delivery attempts for webhook outbox rows (on the CPU queue)."""
    for delivery_id in delivery_ids:
        app.send_task(TASK_DELIVER_WEBHOOK, args=[delivery_id],
                      queue=queue_name(settings, QUEUE_CPU))
