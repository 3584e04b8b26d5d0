"""The worker registry: which worker processes are alive, what they can run, on which queue.

Each pool child writes its row at start (:func:`register`), then its heartbeat thread calls
:func:`beat` (state and timestamp); the API reads :func:`live_engines` to admit a try-on and
ops read :func:`list_workers`. Rows live in the database like the jobs they serve, so this works
on the embedded SQLite default and on PostgreSQL alike, with no broker round trip.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from tryon.celeryconf import queue_for_engine
from tryon.records.clock import aware as _aware
from tryon.records.clock import db_now
from tryon.records.jobs import RUNNING
from tryon.records.models import TryOnJob, WorkerProcess

LOADING, READY, FAILED = "loading", "ready", "failed"
#: rows silent for this long are deleted when a worker registers (ops keep seeing the recently
#: dead ones until then)
FORGET_AFTER = timedelta(days=1)


def register(session: Session, worker_id: str, *, queues: list[str], engines: list[str]) -> None:
    """Insert or reset the row of ``worker_id`` (state ``loading``), and forget long-dead rows."""
    now = db_now(session)
    session.execute(delete(WorkerProcess).where(WorkerProcess.heartbeat_at < now - FORGET_AFTER))
    row = session.get(WorkerProcess, worker_id)
    if row is None:
        row = WorkerProcess(id=worker_id)
        session.add(row)
    row.queues, row.engines = sorted(queues), sorted(engines)
    row.state, row.error = LOADING, None
    row.started_at = row.heartbeat_at = now


def beat(session: Session, worker_id: str, *, state: str | None = None,
         engines: list[str] | None = None, error: str | None = None) -> None:
    """Refresh ``heartbeat_at`` (and the state, engines and error when given)."""
    row = session.get(WorkerProcess, worker_id)
    if row is None:  # deleted meanwhile (a long outage and a prune): write it again
        row = WorkerProcess(id=worker_id, queues=[], engines=[])
        session.add(row)
    row.heartbeat_at = db_now(session)
    if state is not None:
        row.state = state
    if engines is not None:
        row.engines = sorted(engines)
    if error is not None:
        row.error = error[:500]


def forget(session: Session, worker_id: str) -> None:
    """Delete the row (a process that exits cleanly)."""
    session.execute(delete(WorkerProcess).where(WorkerProcess.id == worker_id))


@dataclass(frozen=True)
class WorkerView:
    """One row as ops see it. ``alive``: heartbeat within ``stale_after_s``."""

    id: str
    queues: list[str]
    engines: list[str]
    state: str
    error: str | None
    started_at: datetime
    heartbeat_at: datetime
    alive: bool
    current_job: str | None


def list_workers(session: Session, stale_after_s: float) -> list[WorkerView]:
    """Every registered worker, live ones first, with the job each is running."""
    now = db_now(session)
    rows = session.scalars(select(WorkerProcess).order_by(WorkerProcess.id)).all()
    running = dict(session.execute(
        select(TryOnJob.worker_id, TryOnJob.id).where(TryOnJob.status == RUNNING)).all())
    out = [
        WorkerView(id=r.id, queues=list(r.queues), engines=list(r.engines), state=r.state,
                   error=r.error, started_at=_aware(r.started_at),
                   heartbeat_at=_aware(r.heartbeat_at),
                   alive=_aware(r.heartbeat_at) >= now - timedelta(seconds=stale_after_s),
                   current_job=running.get(r.id))
        for r in rows
    ]
    return sorted(out, key=lambda w: (not w.alive, w.id))


def live_engines(session: Session, stale_after_s: float) -> dict[str, bool]:
    """Engines some live worker advertises on the queue the engine runs on, mapped to whether
    one of those workers is ready (its engines loaded). Empty: no live worker."""
    since = db_now(session) - timedelta(seconds=stale_after_s)
    out: dict[str, bool] = {}
    for engines, queues, state in session.execute(
        select(WorkerProcess.engines, WorkerProcess.queues, WorkerProcess.state)
        .where(WorkerProcess.heartbeat_at >= since)
    ).all():
        for name in engines or []:
            if queue_for_engine(name) in (queues or []):
                out[name] = out.get(name, False) or state == READY
    return out
