"""Ops pages: queues and workers, throughput and failure rate over the last hour (an SVG drawn
here), jobs by status with filters, one job's timeline with retry and cancel, webhook deliveries."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from flask import redirect, render_template, request, url_for
from sqlalchemy import func, select

from tryon.errors import NotFoundError, TryOnError
from tryon.records.models import TryOnJob, WebhookDelivery
from tryon.types import JobStatus, Role
from web.api.common import aware, paginate
from web.auth import roles
from web.pages import bp
from web.services import db_session, services

STATUSES = [s.value for s in JobStatus]
DELIVERY_STATUSES = ["pending", "delivered", "failed"]
BUCKET_MIN = 5
BUCKETS = 12  # 12 x 5 min = the last hour


def throughput(now: Any = None) -> dict[str, Any]:
    """Jobs finished in the last hour in 5-minute buckets (succeeded, failed, canceled), the
    failure rate, and the bars of a small SVG chart (oldest bucket first)."""
    from tryon.records.clock import db_now

    session = db_session()
    now = now or db_now(session)
    start = now - timedelta(minutes=BUCKET_MIN * BUCKETS)
    cutoff = start.replace(tzinfo=None) if session.get_bind().dialect.name == "sqlite" else start
    rows = session.execute(
        select(TryOnJob.status, TryOnJob.finished_at).where(TryOnJob.finished_at >= cutoff)
    ).all()
    buckets = [{"succeeded": 0, "failed": 0, "canceled": 0} for _ in range(BUCKETS)]
    for status, finished in rows:
        i = int((aware(finished) - start).total_seconds() // (BUCKET_MIN * 60))
        if 0 <= i < BUCKETS and status in buckets[i]:
            buckets[i][status] += 1
    done = sum(b["succeeded"] + b["failed"] for b in buckets)
    failed = sum(b["failed"] for b in buckets)
    # chart geometry: one group of bars per bucket, heights scaled to the busiest bucket
    width, height, pad = 600, 160, 20
    peak = max([b["succeeded"] + b["failed"] for b in buckets] + [1])
    slot = (width - 2 * pad) / BUCKETS
    bars = []
    for i, b in enumerate(buckets):
        x = pad + i * slot + slot * 0.15
        ok_h = (height - 2 * pad) * b["succeeded"] / peak
        bad_h = (height - 2 * pad) * b["failed"] / peak
        base = height - pad
        bars.append({
            "x": round(x, 1), "w": round(slot * 0.7, 1),
            "ok_y": round(base - ok_h, 1), "ok_h": round(ok_h, 1),
            "bad_y": round(base - ok_h - bad_h, 1), "bad_h": round(bad_h, 1),
            "label": (start + timedelta(minutes=BUCKET_MIN * i)).strftime("%H:%M"), **b,
        })
    return {"buckets": bars, "finished": done, "failed": failed,
            "failure_rate": (failed / done) if done else None, "peak": peak,
            "width": width, "height": height, "pad": pad}


@bp.get("/ops")
@roles(Role.OPS)
def ops_home() -> str:
    from tryon.records.clock import db_now
    from tryon.records.stats import queue_stats
    from web.api.ops import broker_depth, live_workers

    stats = queue_stats(db_session())
    broker = broker_depth()
    workers = live_workers()
    # what each worker is running now, from the job rows (the broker does not say)
    running = list(db_session().scalars(
        select(TryOnJob).where(TryOnJob.status == "running", TryOnJob.kind != "batch")))
    current: dict[str, list[TryOnJob]] = {}
    for job in running:
        current.setdefault(job.worker_id or "", []).append(job)
    # workers seen through their heartbeats in the last hour (the embedded broker cannot
    # broadcast a ping, so there this is the only view of them)
    since = db_now(db_session()) - timedelta(hours=1)
    if db_session().get_bind().dialect.name == "sqlite":
        since = since.replace(tzinfo=None)
    # a finished job keeps its worker_id but drops its heartbeat: its finish time counts
    last_seen = func.coalesce(TryOnJob.heartbeat_at, TryOnJob.finished_at)
    seen = [(name, _as_datetime(at), n) for name, at, n in db_session().execute(
        select(TryOnJob.worker_id, func.max(last_seen), func.count())
        .where(TryOnJob.worker_id.is_not(None), last_seen >= since)
        .group_by(TryOnJob.worker_id).order_by(func.max(last_seen).desc())
    )]
    alive = {w["id"] for w in workers if w["alive"]}
    orphan = sorted((name, jobs) for name, jobs in current.items() if name not in alive)
    return render_template("ops/home.html", stats=stats, broker=broker, workers=workers,
                           current=current, orphan=orphan, seen=seen, chart=throughput(),
                           stale_after_s=services().settings.stale_after_s, statuses=STATUSES)


def _as_datetime(value: Any) -> datetime | None:
    """An aggregate over a datetime column: SQLite hands back its text form."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return aware(value)


@bp.get("/ops/jobs")
@roles(Role.OPS)
def ops_jobs() -> str:
    status = request.args.get("status", "failed")
    queue = request.args.get("queue", "").strip()[:32]
    engine = request.args.get("engine", "").strip()[:32]
    code = request.args.get("error_code", "").strip()[:64]
    stmt = select(TryOnJob)
    if status in STATUSES:
        stmt = stmt.where(TryOnJob.status == status)
    if queue:
        stmt = stmt.where(TryOnJob.queue == queue)
    if engine:
        stmt = stmt.where(TryOnJob.engine == engine)
    if code:
        stmt = stmt.where(TryOnJob.error_code == code)
    rows, nxt = paginate(db_session(), stmt, TryOnJob, 50, request.args.get("cursor"))
    return render_template("ops/jobs.html", jobs=rows, next_cursor=nxt, statuses=STATUSES,
                           status=status, queue=queue, engine=engine, error_code=code)


def _job(job_id: str) -> TryOnJob:
    job = db_session().get(TryOnJob, job_id, populate_existing=True)
    if job is None:
        raise NotFoundError("Try-on not found.", code="job_not_found")
    return job


def timeline(job: TryOnJob) -> list[dict[str, Any]]:
    """The job's recorded moments in time order (what the row keeps: it is not an event log)."""
    marks = [("created", job.created_at), ("published", job.published_at),
             (f"started (attempt {job.attempt})", job.started_at),
             ("last heartbeat", job.heartbeat_at), (f"finished: {job.status}", job.finished_at)]
    moments: list[tuple[datetime, str]] = sorted(
        (aware(at), what) for what, at in marks if at is not None)  # type: ignore[misc]
    base = moments[0][0] if moments else None
    return [{"what": what, "at": at,
             "offset_s": (at - base).total_seconds() if base is not None else 0.0}
            for at, what in moments]


@bp.get("/ops/jobs/<job_id>")
@roles(Role.OPS)
def ops_job(job_id: str, error: TryOnError | None = None) -> Any:
    job = _job(job_id)
    deliveries = list(db_session().scalars(
        select(WebhookDelivery).where(WebhookDelivery.job_id == job.id)
        .order_by(WebhookDelivery.created_at)))
    html = render_template("ops/job.html", job=job, marks=timeline(job), deliveries=deliveries,
                           error=error)
    return (html, error.http_status) if error is not None else html


def _job_action(job_id: str, action: Callable[[], object]) -> Any:
    """Run ``action`` on an existing job, then back to its page; a refusal the user can act on
    (4xx, e.g. job_not_cancelable) is shown on that page, a server error propagates."""
    _job(job_id)
    try:
        action()
    except TryOnError as exc:
        if exc.http_status >= 500:
            raise
        db_session().rollback()
        return ops_job(job_id, error=exc)
    return redirect(url_for("pages.ops_job", job_id=job_id))


@bp.post("/ops/jobs/<job_id>/retry")
@roles(Role.OPS)
def ops_retry(job_id: str) -> Any:
    from web.api.ops import retry_and_publish

    return _job_action(job_id, lambda: retry_and_publish(job_id))


@bp.post("/ops/jobs/<job_id>/cancel")
@roles(Role.OPS)
def ops_cancel(job_id: str) -> Any:
    from tryon.records.jobs import cancel_job

    def cancel() -> None:
        cancel_job(db_session(), job_id)
        db_session().commit()

    return _job_action(job_id, cancel)


@bp.get("/ops/webhooks")
@roles(Role.OPS)
def ops_webhooks() -> str:
    status = request.args.get("status", "")
    stmt = select(WebhookDelivery)
    if status in DELIVERY_STATUSES:
        stmt = stmt.where(WebhookDelivery.status == status)
    rows, nxt = paginate(db_session(), stmt, WebhookDelivery, 50, request.args.get("cursor"))
    return render_template("ops/webhooks.html", deliveries=rows, next_cursor=nxt,
                           status=status, statuses=DELIVERY_STATUSES)
