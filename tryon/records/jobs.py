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

Batches (``kind='batch'``): the parent row is created ``running`` and never claimed by a worker
(the reaper skips it); its children are ordinary jobs with ``parent_id`` set. Every terminal
transition of a child settles the parent in the same transaction (:func:`_settle_parent`): when
no child is open any more, the parent becomes ``canceled`` (cancel requested), ``succeeded``
(some child succeeded) or ``failed`` (``batch_failed``). Lock order is always parent row, then
child row, so concurrent children and a batch cancel never deadlock and the last child to
finish always sees the others' commits.

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
from tryon.types import JobKind, JobStatus

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
    photo_id: str | None,
    garment_id: str | None,
    engine: str,
    queue: str,
    params: dict[str, Any],
    max_attempts: int,
    webhook_url: str | None = None,
    idempotency_key: str | None = None,
    request_hash: str | None = None,
    kind: str = JobKind.TRYON,
    parent_id: str | None = None,
) -> TryOnJob:
    """Add a ``queued`` job and flush it (the caller commits, *then* publishes its id).
    ``photo_id``/``garment_id`` may be None for a compose job with uploaded inputs."""
    if max_attempts < 1:
        raise ValueError(f"max_attempts must be >= 1, got {max_attempts}")
    if kind == JobKind.BATCH:
        raise ValueError("use create_batch for a batch parent")
    job = TryOnJob(
        owner_id=owner_id,
        kind=str(kind),
        parent_id=parent_id,
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


def create_batch(
    session: Session,
    *,
    owner_id: str,
    engine: str,
    queue: str,
    params: dict[str, Any],
    webhook_url: str | None = None,
    idempotency_key: str | None = None,
    request_hash: str | None = None,
) -> TryOnJob:
    """Add a batch parent, already ``running`` (it runs while its children do; no worker claims
    it and the reaper skips it), and flush it. Add the children with :func:`create_job`
    (``parent_id=`` this id) in the same transaction: a batch with no child never settles."""
    now = db_now(session)
    job = TryOnJob(
        owner_id=owner_id, kind=JobKind.BATCH.value, engine=engine, queue=queue,
        params=dict(params), status=RUNNING, stage="children", progress=0.0, attempt=1,
        max_attempts=1, webhook_url=webhook_url, idempotency_key=idempotency_key,
        request_hash=request_hash, started_at=now,
    )
    session.add(job)
    session.flush()
    return job


@dataclass(frozen=True)
class BatchProgress:
    """Children of a batch by status: ``done`` counts every terminal child."""

    total: int
    done: int
    succeeded: int
    failed: int
    canceled: int


def batch_progress(session: Session, parent_id: str) -> BatchProgress:
    rows = session.execute(
        select(TryOnJob.status, func.count()).where(TryOnJob.parent_id == parent_id)
        .group_by(TryOnJob.status)
    ).all()
    counts = {str(s): int(n) for s, n in rows}
    done = sum(counts.get(s, 0) for s in TERMINAL)
    return BatchProgress(sum(counts.values()), done, counts.get(SUCCEEDED, 0),
                         counts.get(FAILED, 0), counts.get(CANCELED, 0))


def _lock_parent(session: Session, parent_id: str) -> None:
    # FOR UPDATE on PostgreSQL (SQLite serialises writers and ignores it)
    session.execute(select(TryOnJob.id).where(TryOnJob.id == parent_id).with_for_update())


def _settle_parent(session: Session, parent_id: str, now: datetime) -> bool:
    """Record a batch's progress and, once no child is open, its terminal status (the caller
    holds the parent's row lock). True when the parent became terminal here."""
    row = session.execute(
        select(TryOnJob.status, TryOnJob.cancel_requested).where(TryOnJob.id == parent_id)
    ).one_or_none()
    if row is None or row.status in TERMINAL:
        return False
    p = batch_progress(session, parent_id)
    cond = [TryOnJob.id == parent_id, TryOnJob.status == row.status]
    if p.done < p.total:
        session.execute(update(TryOnJob).where(*cond)
                        .values(progress=p.done / max(p.total, 1))
                        .execution_options(**_NO_SYNC))
        return False
    if row.cancel_requested:
        return _set_terminal(session, cond, CANCELED, now, progress=1.0, stage="done",
                             error_code="canceled", error_message="Canceled by the client.")
    if p.succeeded:
        return _set_terminal(session, cond, SUCCEEDED, now, progress=1.0, stage="done")
    return _set_terminal(session, cond, FAILED, now, progress=1.0, stage="done",
                         error_code="batch_failed",
                         error_message=f"None of the {p.total} jobs of the batch succeeded.")


def cancel_batch(session: Session, parent_id: str, now: datetime | None = None) -> TryOnJob:
    """Cancel a batch: every open child is canceled (running ones stop at their next
    heartbeat), then the parent settles as ``canceled``. Idempotent on a canceled batch; a
    finished batch raises :class:`ConflictError` ``job_not_cancelable``."""
    now = now or db_now(session)
    _lock_parent(session, parent_id)
    row = session.execute(
        select(TryOnJob.status).where(TryOnJob.id == parent_id, TryOnJob.kind == JobKind.BATCH)
    ).one_or_none()
    if row is None:
        raise NotFoundError("Batch not found.", code="batch_not_found")
    if row.status in (SUCCEEDED, FAILED):
        raise ConflictError(f"The batch already {row.status}.", code="job_not_cancelable")
    if row.status == CANCELED:
        return _load(session, parent_id)
    session.execute(update(TryOnJob).where(TryOnJob.id == parent_id)
                    .values(cancel_requested=True).execution_options(**_NO_SYNC))
    children = session.scalars(select(TryOnJob.id).where(
        TryOnJob.parent_id == parent_id, TryOnJob.status.in_((QUEUED, RUNNING)))).all()
    for child in children:
        cancel_job(session, child, now)
    _settle_parent(session, parent_id, now)
    return _load(session, parent_id)


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
            TryOnJob.status, TryOnJob.attempt, TryOnJob.max_attempts, TryOnJob.heartbeat_at,
            TryOnJob.kind,
        ).where(TryOnJob.id == job_id)
    ).one_or_none()
    if row is None or row.status in TERMINAL or row.kind == JobKind.BATCH:
        return Claim(ClaimOutcome.DONE)
    status, attempt, max_attempts, heartbeat_at, _ = row
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
    committed). A batch child locks its parent first and settles it after."""
    job_id = _job_id_from(cond)
    parent_id = session.scalar(select(TryOnJob.parent_id).where(TryOnJob.id == job_id))
    if parent_id is not None:
        _lock_parent(session, parent_id)
    res = session.execute(
        update(TryOnJob).where(*cond)
        .values(status=status, finished_at=now, heartbeat_at=None, **values)
        .execution_options(**_NO_SYNC)
    )
    if res.rowcount != 1:  # type: ignore[attr-defined]
        return False
    add_terminal_event(session, job_id, status, now)
    if parent_id is not None:
        _settle_parent(session, parent_id, now)
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
    if session.scalar(select(TryOnJob.kind).where(TryOnJob.id == job_id)) == JobKind.BATCH:
        return cancel_batch(session, job_id, now)
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
        select(TryOnJob.status, TryOnJob.attempt, TryOnJob.kind, TryOnJob.parent_id)
        .where(TryOnJob.id == job_id)
    ).one_or_none()
    if row is None:
        raise NotFoundError("Job not found.", code="job_not_found")
    if row.kind == JobKind.BATCH or row.parent_id is not None:
        raise ConflictError("Jobs of a batch are not retried one by one; start a new batch.",
                            code="job_not_retryable")
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


