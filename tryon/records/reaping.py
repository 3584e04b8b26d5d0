"""The reaper's pass over job rows: stale runs re-queued or failed, lost messages re-published.
Built on the compare-and-set transitions of :mod:`tryon.records.jobs`."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, or_, select, update
from sqlalchemy.orm import Session

from tryon.records.clock import db_now
from tryon.records.jobs import _NO_SYNC, FAILED, QUEUED, RUNNING, WORKER_LOST, _set_terminal
from tryon.records.models import TryOnJob
from tryon.types import JobKind

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class ReapReport:
    """What one reaper pass did. ``republish``: (job id, queue) pairs whose message this pass
    claimed the right to (re)publish; the caller publishes them after commit (and hands a
    failed publish back with :func:`tryon.records.jobs.unmark_published` and ``at``, the claim's time)."""

    requeued: tuple[str, ...] = ()
    failed: tuple[str, ...] = ()
    republish: tuple[tuple[str, str], ...] = ()
    at: datetime | None = field(default=None, compare=False)


#: the republish interval doubles per message already published, at most 2**6 times
REPUBLISH_BACKOFF_MAX_EXP = 6


def republish_delay_s(publish_count: int, republish_after_s: float) -> float:
    """How long after its last publish a ``queued`` job is published again:
    ``republish_after_s * 2**min(publish_count - 1, 6)`` (``publish_count <= 1``: the base).

    A message may simply be waiting behind a backlog; re-sending it on a fixed interval would
    multiply the backlog (N jobs waiting W seconds -> ~N*W/interval duplicates). Doubling keeps
    it to ~N*log2(W/interval) while a lost message is still re-sent after the base interval."""
    return republish_after_s * 2 ** min(max(publish_count - 1, 0), REPUBLISH_BACKOFF_MAX_EXP)


def _republish_due(now: datetime, republish_after_s: float, unpublished_grace_s: float) -> Any:
    """SQL condition (portable: no interval arithmetic in SQL) for a queued row whose message is
    due: never published and committed more than ``unpublished_grace_s`` ago, or published
    longer ago than :func:`republish_delay_s` of its ``publish_count``."""
    top = REPUBLISH_BACKOFF_MAX_EXP
    levels = []
    for k in range(top + 1):
        count = k + 1
        if k == 0:
            which = TryOnJob.publish_count <= count
        elif k == top:
            which = TryOnJob.publish_count >= count
        else:
            which = TryOnJob.publish_count == count
        cutoff = now - timedelta(seconds=republish_delay_s(count, republish_after_s))
        levels.append(and_(which, TryOnJob.published_at < cutoff))
    return or_(
        and_(TryOnJob.published_at.is_(None),
             TryOnJob.created_at < now - timedelta(seconds=unpublished_grace_s)),
        *levels,
    )


def reap(
    session: Session,
    now: datetime | None = None,
    *,
    stale_after_s: float = 30.0,
    republish_after_s: float = 30.0,
    unpublished_grace_s: float = 5.0,
    limit: int = 500,
) -> ReapReport:
    """One reaper pass (safe to run concurrently with itself, workers and the API).

    1. ``running`` jobs with ``heartbeat_at`` older than ``stale_after_s``: back to ``queued``
       when ``attempt < max_attempts``, else ``failed``/``worker_lost``.
    2. ``queued`` jobs never published (committed more than ``unpublished_grace_s`` ago) or
       published more than :func:`republish_delay_s` ago (``republish_after_s`` doubled per
       message already sent, so a message merely waiting in a backlog is not multiplied): claim
       the republish by setting ``published_at`` and ``publish_count + 1`` with a CAS on the
       same condition, so two concurrent reapers publish each job once. The caller publishes
       after commit; duplicates are harmless anyway (claim CAS).
    """
    now = now or db_now(session)
    stale = now - timedelta(seconds=stale_after_s)
    requeued: list[str] = []
    failed: list[str] = []
    republish: list[tuple[str, str]] = []

    rows = session.execute(
        select(TryOnJob.id, TryOnJob.attempt, TryOnJob.max_attempts, TryOnJob.queue)
        .where(TryOnJob.status == RUNNING, TryOnJob.kind != JobKind.BATCH,
               or_(TryOnJob.heartbeat_at.is_(None), TryOnJob.heartbeat_at < stale))
        .order_by(TryOnJob.created_at).limit(limit)
    ).all()
    for job_id, attempt, max_attempts, queue in rows:
        cond = [TryOnJob.id == job_id, TryOnJob.status == RUNNING, TryOnJob.attempt == attempt,
                or_(TryOnJob.heartbeat_at.is_(None), TryOnJob.heartbeat_at < stale)]
        if attempt >= max_attempts:
            if _set_terminal(session, cond, FAILED, now, error_code=WORKER_LOST,
                             error_message=f"No heartbeat from attempt {attempt} of "
                             f"{max_attempts}; gave up."):
                failed.append(job_id)
            continue
        res = session.execute(
            update(TryOnJob).where(*cond)
            .values(status=QUEUED, stage="queued", progress=0.0, heartbeat_at=None,
                    published_at=now, publish_count=1)
            .execution_options(**_NO_SYNC)
        )
        if res.rowcount == 1:  # type: ignore[attr-defined]
            requeued.append(job_id)
            republish.append((job_id, queue))

    due = _republish_due(now, republish_after_s, unpublished_grace_s)
    due_rows = session.execute(
        select(TryOnJob.id, TryOnJob.queue)
        .where(TryOnJob.status == QUEUED, TryOnJob.kind != JobKind.BATCH, due)
        .order_by(TryOnJob.created_at).limit(limit)
    ).all()
    for job_id, queue in due_rows:
        res = session.execute(
            update(TryOnJob).where(TryOnJob.id == job_id, TryOnJob.status == QUEUED, due)
            .values(published_at=now, publish_count=TryOnJob.publish_count + 1)
            .execution_options(**_NO_SYNC)
        )
        if res.rowcount == 1:  # type: ignore[attr-defined]
            republish.append((job_id, queue))
    if requeued or failed or republish:
        log.info("reap requeued=%d failed=%d republish=%d", len(requeued), len(failed),
                 len(republish))
    return ReapReport(tuple(requeued), tuple(failed), tuple(republish), at=now)
