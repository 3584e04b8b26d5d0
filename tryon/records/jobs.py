"""The try-on job state machine: every transition is a compare-and-set UPDATE.

States (``tryon.types.JobStatus``)::

    queued -> running -> succeeded | failed | canceled     (terminal states never change)
    queued -> canceled | failed(worker_lost, attempts exhausted)
    running -> queued    (reaper only: heartbeat stale and attempt < max_attempts)
    running -> running   (attempt + 1: a redelivered message takes over a stale run)
    failed -> queued     (ops retry; attempt is never reset, max_attempts grows instead)

``attempt`` is the fencing token: a run owns attempt N after a successful claim, and every later
write of that run (heartbeat, finish) is ``UPDATE ... WHERE id=:id AND status='running' AND
attempt=:N``. Zero rows means the run was superseded, canceled or deleted. The statements use
``rowcount`` only (no ``RETURNING``, no row locks), so they work on SQLite and PostgreSQL alike.

None of these functions commit: the owner of the unit of work (a view, a task, the reaper)
commits. They run inside the caller's session and never trust the session's identity map for
the state they compare (reads select columns, writes are ``synchronize_session=False``).

Time: every comparison uses :func:`db_now` (the database clock on PostgreSQL), so workers and the
reaper never compare their own wall clocks. Tests pass ``now=`` explicitly.

Neighbours: the webhook outbox rows a terminal transition writes are :mod:`tryon.records.outbox`;
the reaper's pass is :mod:`tryon.records.reaping`; ops counts are :mod:`tryon.records.stats`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import DateTime, func, literal, or_, select, update
from sqlalchemy.orm import Session

from tryon.errors import ConflictError, NotFoundError
from tryon.records.clock import aware as _aware
from tryon.records.clock import db_now
from tryon.records.models import TryOnJob, TryOnResult
from tryon.records.outbox import add_terminal_event
from tryon.types import JobStatus

log = logging.getLogger(__name__)

QUEUED = JobStatus.QUEUED.value
RUNNING = JobStatus.RUNNING.value
SUCCEEDED = JobStatus.SUCCEEDED.value
FAILED = JobStatus.FAILED.value
CANCELED = JobStatus.CANCELED.value
TERMINAL = frozenset({SUCCEEDED, FAILED, CANCELED})

#: error codes the state machine itself writes
WORKER_LOST = "worker_lost"
TIMEOUT = "timeout"

_NO_SYNC = {"synchronize_session": False}


# --------------------------------------------------------------------------------------
# create / publish


def create_job(
    session: Session,
    *,
    owner_id: str,
    photo_id: str,
    garment_id: str,
    engine: str,
    queue: str,
    params: dict[str, Any],
    max_attempts: int,
    webhook_url: str | None = None,
    idempotency_key: str | None = None,
    request_hash: str | None = None,
) -> TryOnJob:
    """Add a ``queued`` job and flush it (the caller commits, *then* publishes its id)."""
    if max_attempts < 1:
        raise ValueError(f"max_attempts must be >= 1, got {max_attempts}")
    job = TryOnJob(
        owner_id=owner_id,
        photo_id=photo_id,
        garment_id=garment_id,
        engine=engine,
        queue=queue,
        params=dict(params),
        status=QUEUED,
        stage="queued",
        progress=0.0,
        attempt=0,
        max_attempts=max_attempts,
        webhook_url=webhook_url,
        idempotency_key=idempotency_key,
        request_hash=request_hash,
    )
    session.add(job)
    session.flush()
    return job


def mark_published(session: Session, job_id: str, now: datetime | None = None) -> bool:
    """Record that the broker accepted a message for a queued job: ``published_at = now`` and
    ``publish_count + 1`` (False if it is not queued)."""
    now = now or db_now(session)
    res = session.execute(
        update(TryOnJob)
        .where(TryOnJob.id == job_id, TryOnJob.status == QUEUED)
        .values(published_at=now, publish_count=TryOnJob.publish_count + 1)
        .execution_options(**_NO_SYNC)
    )
    return res.rowcount == 1  # type: ignore[attr-defined]


def unmark_published(session: Session, job_id: str, published_at: datetime) -> bool:
    """Undo a reaper's republish claim made at ``published_at`` whose publish then failed
    (broker down): the job reads as never published again, so the next pass retries it at once
    instead of waiting out a backoff for a message that does not exist. A CAS on the claim's
    ``published_at``: False when the job moved on (claimed, canceled, published again)."""
    res = session.execute(
        update(TryOnJob)
        .where(TryOnJob.id == job_id, TryOnJob.status == QUEUED,
               TryOnJob.published_at == published_at)
        # the claim incremented the count (requeue set it to 1), so this never goes below 0
        .values(published_at=None, publish_count=TryOnJob.publish_count - 1)
        .execution_options(**_NO_SYNC)
    )
    return res.rowcount == 1  # type: ignore[attr-defined]


# --------------------------------------------------------------------------------------
# claim


class ClaimOutcome(StrEnum):
    CLAIMED = "claimed"  #: this run owns ``attempt``
    DONE = "done"  #: missing, terminal or canceled: ack and do nothing
    BUSY = "busy"  #: running with a fresh heartbeat: another run may be alive, retry later
    EXHAUSTED = "exhausted"  #: attempts used up: the job was failed with worker_lost
    RACED = "raced"  #: another claimer changed the row first: read it again


@dataclass(frozen=True)
class Claim:
    outcome: ClaimOutcome
    attempt: int | None = None


def try_claim(
    session: Session,
    job_id: str,
    worker_id: str,
    *,
    now: datetime | None = None,
    stale_after_s: float | None = None,
) -> Claim:
    """Compare-and-set ``queued`` (or ``running`` with a heartbeat older than ``stale_after_s``,
    when given) to ``running`` with ``attempt + 1``.

    A job whose attempts are exhausted is moved to ``failed``/``worker_lost`` instead (the bound
    on ``task_reject_on_worker_lost`` redelivery loops). The returned attempt is the fencing token.
    """
    now = now or db_now(session)
    row = session.execute(
        select(
            TryOnJob.status, TryOnJob.attempt, TryOnJob.max_attempts, TryOnJob.heartbeat_at
        ).where(TryOnJob.id == job_id)
    ).one_or_none()
    if row is None or row.status in TERMINAL:
        return Claim(ClaimOutcome.DONE)
    status, attempt, max_attempts, heartbeat_at = row
    threshold = now - timedelta(seconds=stale_after_s) if stale_after_s is not None else None
    if status == RUNNING:
        stale = (
            threshold is not None and (heartbeat_at is None or _aware(heartbeat_at) < threshold)
        )
        if not stale:
            return Claim(ClaimOutcome.BUSY, attempt)
    # Match the exact row we read, including (for a running row) that it is still stale.
    cond = [TryOnJob.id == job_id, TryOnJob.status == status, TryOnJob.attempt == attempt]
    if status == RUNNING:
        cond.append(or_(TryOnJob.heartbeat_at.is_(None), TryOnJob.heartbeat_at < threshold))
    if attempt >= max_attempts:
        ok = _set_terminal(
            session, cond, FAILED, now,
            error_code=WORKER_LOST,
            error_message=f"The worker running this job stopped {attempt} times; gave up.",
        )
        return Claim(ClaimOutcome.EXHAUSTED if ok else ClaimOutcome.RACED)
    res = session.execute(
        update(TryOnJob)
        .where(*cond)
        .values(
            status=RUNNING,
            attempt=attempt + 1,
            heartbeat_at=now,
            started_at=func.coalesce(TryOnJob.started_at, literal(now, DateTime(timezone=True))),
            worker_id=worker_id[:200],
            stage="starting",
            progress=0.0,
        )
        .execution_options(**_NO_SYNC)
    )
    if res.rowcount != 1:  # type: ignore[attr-defined]
        return Claim(ClaimOutcome.RACED)
    return Claim(ClaimOutcome.CLAIMED, attempt + 1)


# --------------------------------------------------------------------------------------
# the running attempt's own writes (all fenced on status=running AND attempt=N)


def _fenced(job_id: str, attempt: int) -> list[Any]:
    return [TryOnJob.id == job_id, TryOnJob.status == RUNNING, TryOnJob.attempt == attempt]


def heartbeat(
    session: Session,
    job_id: str,
    attempt: int,
    progress: float | None = None,
    stage: str | None = None,
    now: datetime | None = None,
) -> bool:
    """Write the heartbeat (and progress in ``[0, 1]``, stage) of attempt ``attempt``.

    False means the attempt no longer owns the job (canceled, re-queued, superseded, deleted):
    the caller must stop work at once.
    """
    values: dict[str, Any] = {"heartbeat_at": now or db_now(session)}
    if progress is not None:
        values["progress"] = min(max(float(progress), 0.0), 1.0)
    if stage is not None:
        values["stage"] = stage[:32]
    res = session.execute(
        update(TryOnJob).where(*_fenced(job_id, attempt)).values(**values)
        .execution_options(**_NO_SYNC)
    )
    return res.rowcount == 1  # type: ignore[attr-defined]


@dataclass(frozen=True)
class ResultSpec:
    """One stored sample, as :func:`finish_success` records it."""

    index: int
    storage_key: str
    seed: int
    width: int
    height: int
    sha256: str
    record: dict[str, Any] = field(default_factory=dict)


def finish_success(
    session: Session,
    job_id: str,
    attempt: int,
    results: Sequence[ResultSpec],
    *,
    timings: dict[str, float] | None = None,
    now: datetime | None = None,
) -> bool:
    """``running`` (attempt N) -> ``succeeded`` and record the results of attempt N.

    False means this run was fenced out: it must delete its own outputs.
    """
    now = now or db_now(session)
    extra: dict[str, Any] = {"progress": 1.0, "stage": "done"}
    if timings is not None:
        extra["timings"] = timings
    ok = _set_terminal(session, _fenced(job_id, attempt), SUCCEEDED, now, **extra)
    if ok:
        for r in results:
            session.add(
                TryOnResult(
                    job_id=job_id, index=r.index, attempt=attempt, storage_key=r.storage_key,
                    seed=r.seed, width=r.width, height=r.height, sha256=r.sha256,
                    record=r.record,
                )
            )
        session.flush()
    return ok


def finish_failure(
    session: Session,
    job_id: str,
    attempt: int,
    code: str,
    message: str,
    *,
    timings: dict[str, float] | None = None,
    now: datetime | None = None,
) -> bool:
    """``running`` (attempt N) -> ``failed`` with a stable error ``code``. False when fenced out."""
    extra: dict[str, Any] = {"error_code": code[:64], "error_message": message[:2000]}
    if timings is not None:
        extra["timings"] = timings
    return _set_terminal(session, _fenced(job_id, attempt), FAILED, now or db_now(session), **extra)


def _set_terminal(
    session: Session, cond: list[Any], status: str, now: datetime, **values: Any
) -> bool:
    """CAS to a terminal ``status`` and, on success, add the job's terminal webhook event to the
    outbox in the same transaction (transactional outbox: the event exists iff the transition
    committed)."""
    res = session.execute(
        update(TryOnJob).where(*cond)
        .values(status=status, finished_at=now, heartbeat_at=None, **values)
        .execution_options(**_NO_SYNC)
    )
    if res.rowcount != 1:  # type: ignore[attr-defined]
        return False
    job_id = _job_id_from(cond)
    add_terminal_event(session, job_id, status, now)
    return True


def _job_id_from(cond: list[Any]) -> str:
    # cond[0] is always ``TryOnJob.id == <value>``
    return str(cond[0].right.value)


# --------------------------------------------------------------------------------------
# user and ops transitions


def _load(session: Session, job_id: str) -> TryOnJob:
    job = session.get(TryOnJob, job_id, populate_existing=True)
    if job is None:
        raise NotFoundError("Job not found.", code="job_not_found")
    return job


def cancel_job(session: Session, job_id: str, now: datetime | None = None) -> TryOnJob:
    """``queued|running`` -> ``canceled`` and return the fresh row.

    Canceling an already canceled job returns it unchanged (idempotent); a succeeded or failed job
    raises :class:`ConflictError` (code ``job_not_cancelable``). A running attempt notices at its
    next heartbeat or cancel check, stops, and deletes its own outputs.
    """
    now = now or db_now(session)
    for _ in range(3):
        row = session.execute(
            select(TryOnJob.status, TryOnJob.attempt).where(TryOnJob.id == job_id)
        ).one_or_none()
        if row is None:
            raise NotFoundError("Job not found.", code="job_not_found")
        if row.status == CANCELED:
            break
        if row.status in TERMINAL:
            raise ConflictError(
                f"The job already {row.status}; only queued or running jobs can be canceled.",
                code="job_not_cancelable",
            )
        cond = [TryOnJob.id == job_id, TryOnJob.status == row.status,
                TryOnJob.attempt == row.attempt]
        if _set_terminal(session, cond, CANCELED, now, cancel_requested=True,
                         error_code="canceled", error_message="Canceled by the client."):
            break
    return _load(session, job_id)


def retry_job(session: Session, job_id: str, *, extra_attempts: int = 3) -> TryOnJob:
    """Ops: ``failed`` -> ``queued`` with ``extra_attempts`` more attempts (the caller commits,
    then publishes). ``attempt`` is kept, so old runs stay fenced out."""
    row = session.execute(
        select(TryOnJob.status, TryOnJob.attempt).where(TryOnJob.id == job_id)
    ).one_or_none()
    if row is None:
        raise NotFoundError("Job not found.", code="job_not_found")
    if row.status != FAILED:
        raise ConflictError(f"Only failed jobs can be retried; this one is {row.status}.",
                            code="job_not_retryable")
    res = session.execute(
        update(TryOnJob)
        .where(TryOnJob.id == job_id, TryOnJob.status == FAILED, TryOnJob.attempt == row.attempt)
        .values(
            status=QUEUED, stage="queued", progress=0.0, error_code=None, error_message=None,
            max_attempts=row.attempt + max(1, extra_attempts), published_at=None,
            publish_count=0,
            finished_at=None, heartbeat_at=None, cancel_requested=False,
        )
        .execution_options(**_NO_SYNC)
    )
    if res.rowcount != 1:  # type: ignore[attr-defined]
        raise ConflictError("The job changed while retrying it; try again.", code="conflict")
    return _load(session, job_id)


