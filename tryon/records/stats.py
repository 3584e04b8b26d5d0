"""Job counts and ages for ops (``/v1/ops/queues``, ``/metrics``)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from tryon.records.clock import aware as _aware
from tryon.records.clock import db_now
from tryon.records.jobs import QUEUED, RUNNING
from tryon.records.models import TryOnJob
from tryon.types import JobStatus


def queue_stats(session: Session, now: datetime | None = None) -> dict[str, Any]:
    """Counts by status (overall and per queue) and the age in seconds of the oldest queued and
    oldest running job (``None`` when there is none). Batch parents (no worker runs them) are
    left out; their children count."""
    now = now or db_now(session)
    counts = {s.value: 0 for s in JobStatus}
    by_queue: dict[str, dict[str, int]] = {}
    for queue, status, n in session.execute(
        select(TryOnJob.queue, TryOnJob.status, func.count())
        .where(TryOnJob.kind != "batch").group_by(
            TryOnJob.queue, TryOnJob.status)
    ):
        counts[status] = counts.get(status, 0) + n
        by_queue.setdefault(queue, {s.value: 0 for s in JobStatus})[status] = n
    oldest_q = session.execute(
        select(func.min(TryOnJob.created_at)).where(TryOnJob.status == QUEUED)).scalar()
    oldest_r = session.execute(
        select(func.min(TryOnJob.started_at))
        .where(TryOnJob.status == RUNNING, TryOnJob.kind != "batch")).scalar()

    def age(ts: datetime | None) -> float | None:
        return None if ts is None else max(0.0, (now - _aware(ts)).total_seconds())

    return {
        "counts": counts,
        "by_queue": by_queue,
        "oldest_queued_age_s": age(oldest_q),
        "oldest_running_age_s": age(oldest_r),
    }
