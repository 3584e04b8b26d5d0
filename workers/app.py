"""The Celery app factory, and the dispatcher the workers and the reaper publish with.

Importing this module imports Celery and the framework-free settings, nothing heavy. The tasks
themselves live in :mod:`workers.tasks` (``celery -A workers.tasks:app worker``).
"""

from __future__ import annotations

import logging

from celery import Celery

from tryon.celeryconf import (
    celery_config,
)
from tryon.config import Settings
from tryon.dispatch import Dispatcher

log = logging.getLogger(__name__)

def make_celery(settings: Settings, *, include_tasks: bool = False) -> Celery:
    """A Celery app configured from ``settings`` (see :func:`tryon.celeryconf.celery_config`).

    ``include_tasks`` registers :mod:`workers.tasks` for a worker; a publisher does not need it.
    """
    app = Celery("tryon", set_as_current=False,
                 include=["workers.tasks"] if include_tasks else [])
    app.config_from_object(celery_config(settings))
    return app


def make_dispatcher(settings: Settings) -> Dispatcher:
    """The workers' and the reaper's :class:`~tryon.dispatch.Dispatcher` (Celery app built on
    first use)."""
    return Dispatcher(settings, lambda: make_celery(settings))
