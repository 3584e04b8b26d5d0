"""Celery tasks: thin shells around :mod:`workers.runner` and :mod:`workers.reaper`.

``celery -A workers.tasks:app worker -Q gpu`` (or ``tryon worker``). Settings come from the
environment. Nothing heavy is built at import or in the parent process: the DB engine, storage
and runner are built on first use in each pool child (and rebuilt after a fork); each child
registers itself in the worker registry and loads its engines right after the fork
(:mod:`workers.presence`), so the first job does not pay the model load.
"""

from __future__ import annotations

import logging
from typing import Any

from celery.exceptions import (
    CeleryError,
    SoftTimeLimitExceeded,
    Terminated,
    TimeLimitExceeded,
    WorkerLostError,
)
from celery.signals import (
    celeryd_after_setup,
    setup_logging,
    worker_process_init,
    worker_process_shutdown,
)
from celery.worker.request import Request
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from tryon import logs
from tryon.backoff import backoff_s
from tryon.celeryconf import TASK_DELIVER_WEBHOOK, TASK_REAP, TASK_RUN_JOB
from tryon.config import Settings, load_settings
from tryon.dispatch import Dispatcher
from tryon.records import outbox
from tryon.records.db import make_engine, make_session_factory, session_scope
from workers.app import make_celery
from workers.reaper import Reaper
from workers.runner import BusyError, JobRunner, default_worker_id
from workers.webhooks import deliver_webhook

log = logging.getLogger(__name__)

settings: Settings = load_settings()
app = make_celery(settings)
#: publishes with this module's app (the one the worker runs)
dispatcher = Dispatcher(settings, lambda: app)

_state: dict[str, Any] = {}


@setup_logging.connect
def _setup_logging(loglevel: Any = None, **_: Any) -> None:
    # connected, so Celery leaves the root logger to us: the project's one formatter and the
    # job-context filter, in the main process and (by fork) every pool child
    logs.configure_from_settings(settings, level=loglevel if isinstance(loglevel, str) else None)


@worker_process_init.connect
def _forget_parent_state(**_: Any) -> None:
    # A child forked after the parent touched the DB (hard-timeout handler) must not reuse the
    # parent's pooled connections.
    factory = _state.get("factory")
    if factory is not None:
        factory.kw["bind"].dispose(close=False)
    _state.clear()
    # the same Pillow hardening as the API: pixel limit never None, bomb warnings are errors
    from tryon.images import IntakeLimits, configure_pillow

    configure_pillow(IntakeLimits.from_settings(settings))
    _start_presence()


#: logical queues this worker consumes, recorded in the parent before the pool forks
_consumed: list[str] = []


@celeryd_after_setup.connect
def _record_queues(sender: Any = None, instance: Any = None, **_: Any) -> None:
    from tryon.celeryconf import QUEUE_CPU, QUEUE_GPU, queue_name

    try:
        names = set(instance.app.amqp.queues.consume_from or instance.app.amqp.queues)
    except AttributeError:
        return
    _consumed[:] = [q for q in (QUEUE_GPU, QUEUE_CPU) if queue_name(settings, q) in names]


def _start_presence() -> None:
    """Register this pool child and load its engines now (see :mod:`workers.presence`)."""
    from tryon.celeryconf import QUEUE_CPU, QUEUE_GPU
    from tryon.engines.registry import engines_for_queues, get_engine
    from workers.presence import WorkerPresence

    queues = list(_consumed) or [QUEUE_GPU, QUEUE_CPU]
    _state["presence"] = WorkerPresence(
        settings, session_factory(), default_worker_id(), queues,
        engines_for_queues(settings, queues), lambda name: get_engine(name, settings),
    ).start()


@worker_process_shutdown.connect
def _leave_registry(**_: Any) -> None:
    presence = _state.get("presence")
    if presence is not None:
        presence.stop()


def session_factory() -> sessionmaker[Session]:
    if "factory" not in _state:
        _state["factory"] = make_session_factory(make_engine(settings.resolved_database_url))
    return _state["factory"]


def _notify_terminal(job_id: str) -> None:
    from sqlalchemy import select

    from tryon.records.models import TryOnJob

    with session_scope(session_factory()) as s:
        ids = outbox.pending_deliveries(s, job_id)
        # a batch child's terminal transition may have settled its batch (same transaction)
        parent = s.scalar(select(TryOnJob.parent_id).where(TryOnJob.id == job_id))
        if parent is not None:
            ids = [*ids, *outbox.pending_deliveries(s, parent)]
    dispatcher.publish_webhooks(ids)


def runner() -> JobRunner:
    if "runner" not in _state:
        from tryon.storage import make_storage

        _state["runner"] = JobRunner(
            settings=settings,
            session_factory=session_factory(),
            storage=make_storage(settings),
            timeout_exceptions=(SoftTimeLimitExceeded,),
            passthrough_exceptions=(CeleryError, Terminated, TimeLimitExceeded, WorkerLostError),
            on_terminal=_notify_terminal,
        )
    return _state["runner"]


def reaper() -> Reaper:
    if "reaper" not in _state:
        _state["reaper"] = Reaper(
            settings, session_factory(),
            dispatcher.publish, dispatcher.publish_webhooks,
        )
    return _state["reaper"]


def _busy_bound() -> int:
    # enough looks to outlast a live run up to its hard limit, then take over or find it done
    return int(settings.hard_time_limit_s / settings.stale_after_s) + 2


#: task id -> pid of the pool child a hard time limit killed, kept by RunJobRequest for the
#: on_failure hook that Celery calls right after (same process; on_failure gets no request)
_killed_pids: dict[str, int] = {}


class RunJobRequest(Request):
    """Celery's request, plus: on a hard time limit, remember which pool child ran the task."""

    def on_timeout(self, soft: bool, timeout: float) -> None:
        if not soft and self.worker_pid is not None:
            _killed_pids[self.id] = int(self.worker_pid)
        try:
            super().on_timeout(soft, timeout)
        finally:
            _killed_pids.pop(self.id, None)


class RunJobTask(app.Task):  # type: ignore[name-defined]
    Request = RunJobRequest

    def on_failure(self, exc: BaseException, task_id: str, args: Any, kwargs: Any,
                   einfo: Any) -> None:
        # Called in the worker's main process after a hard-limit kill (Celery >= 5.7): the
        # child's own code never runs again, so the row is failed from here, fenced on the
        # killed child's worker id (it may have been superseded by another attempt meanwhile).
        if isinstance(exc, TimeLimitExceeded) and args:
            job_id = str(args[0])
            with logs.job_context(job_id):
                pid = _killed_pids.get(task_id)
                if pid is None:
                    log.warning("hard time limit but the killed child is unknown; "
                                "leaving the job to the reaper")
                    return
                try:
                    runner().mark_timed_out(job_id, default_worker_id(pid))
                except OperationalError:
                    log.exception("could not be marked timed out; the reaper will")


@app.task(name=TASK_RUN_JOB, bind=True, base=RunJobTask, ignore_result=True)
def run_job(self: Any, job_id: str) -> str:
    """Run try-on job ``job_id`` (idempotent: a finished or running job is never run twice)."""
    with logs.job_context(job_id):
        return _run_job(self, job_id)


def _run_job(self: Any, job_id: str) -> str:
    try:
        return runner().run(job_id).status
    except BusyError:
        if self.request.retries >= _busy_bound():
            log.warning("still busy after %d looks; leaving it to the reaper",
                        self.request.retries)
            return "busy"
        # the running copy may have just died (reject_on_worker_lost redelivers at once):
        # look again when its heartbeat would be stale
        raise self.retry(countdown=settings.stale_after_s, max_retries=None) from None
    except OperationalError as exc:
        # the DB is down before the claim: nothing was done; back off and try again
        if self.request.retries >= 3:
            raise
        delay = backoff_s(self.request.retries + 1, base=2.0, cap=settings.max_retry_backoff_s)
        raise self.retry(exc=exc, countdown=delay, max_retries=None) from None


@app.task(name=TASK_DELIVER_WEBHOOK, bind=True, ignore_result=True)
def deliver_webhook_task(self: Any, delivery_id: str) -> str:
    """Deliver one webhook outbox row; retried with backoff up to ``webhook_max_attempts``."""
    from tryon.webhooks import load_or_create_secret

    out = deliver_webhook(settings, session_factory(), delivery_id,
                          secret=load_or_create_secret(settings))
    if out.status == "retry":
        raise self.retry(countdown=out.countdown_s, max_retries=None)
    return out.status


@app.task(name=TASK_REAP, ignore_result=True)
def reap_task() -> dict[str, int]:
    """One reaper pass (scheduled by beat on the CPU queue)."""
    p = reaper().run_once()
    r = p.report
    return {"requeued": len(r.requeued) if r else 0, "failed": len(r.failed) if r else 0,
            "published": p.published, "webhooks": p.webhooks}
