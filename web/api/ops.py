"""Ops views (ops keys only): queues, workers, failed jobs, retry."""

from __future__ import annotations

import logging
from typing import Any

from apiflask import APIBlueprint
from sqlalchemy import select, text

from tryon.records.models import TryOnJob
from tryon.types import Role
from web.api.common import AUTH_DOC, iso, paginate
from web.auth import roles
from web.schemas import JobsQuery, QueuesOut, TryOnOut, WorkersOut
from web.services import db_session, services

log = logging.getLogger(__name__)
bp = APIBlueprint("ops", __name__, tag="Ops", url_prefix="/v1/ops")


def broker_depth() -> dict[str, Any]:
    """Messages waiting per queue, and where the number comes from.

    ``redis_llen``: Redis ``LLEN`` of each queue list (messages not yet delivered; reserved but
    unacked ones sit in kombu's ``unacked`` hash and are not counted). ``sqla_table``: visible
    rows in kombu's ``kombu_message`` table (the SQLAlchemy transport of the embedded mode).
    ``None`` when the broker cannot be asked.
    """
    from tryon.celeryconf import QUEUE_CPU, QUEUE_GPU, is_redis, queue_name

    settings = services().settings
    url = settings.resolved_broker_url
    names = {q: queue_name(settings, q) for q in (QUEUE_GPU, QUEUE_CPU)}
    try:
        if is_redis(url):
            import redis

            client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
            try:
                depth = {q: int(client.llen(name)) for q, name in names.items()}
            finally:
                client.close()
            return {"source": "redis_llen", "depth": depth}
        if url.startswith("sqla+"):
            from tryon.records.db import make_engine

            engine = make_engine(url[len("sqla+"):])
            try:
                with engine.connect() as conn:
                    depth = {}
                    for q, name in names.items():
                        depth[q] = int(conn.execute(text(
                            "SELECT count(*) FROM kombu_message m JOIN kombu_queue q "
                            "ON m.queue_id = q.id WHERE q.name = :n AND m.visible"
                        ), {"n": name}).scalar() or 0)
            finally:
                engine.dispose()
            return {"source": "sqla_table", "depth": depth}
    except Exception as exc:  # noqa: BLE001 - ops view degrades to "unknown"
        log.warning("broker depth unavailable: %s", type(exc).__name__)
    return {"source": None, "depth": None}


@bp.get("/queues")
@bp.doc(**AUTH_DOC)
@roles(Role.OPS)
@bp.output(QueuesOut)
def queues() -> dict[str, Any]:
    """Job counts by status (overall and per queue), the age of the oldest queued and running
    job, and the broker's queue depth (`broker.source` says how it was measured)."""
    from tryon.records.stats import queue_stats

    stats = queue_stats(db_session())
    stats["broker"] = broker_depth()
    return stats


@bp.get("/workers")
@bp.doc(**AUTH_DOC)
@roles(Role.OPS)
@bp.output(WorkersOut)
def workers() -> dict[str, Any]:
    """Registered worker processes: queues, engines, state (`loading`, `ready`, `failed`),
    last heartbeat, whether it is alive, and the job each is running."""
    return {"workers": live_workers(), "stale_after_s": services().settings.stale_after_s}


def live_workers() -> list[dict[str, Any]]:
    """Every registered worker process as a dict (shared by the API and the ops pages)."""
    from tryon.records.workers import list_workers

    rows = list_workers(db_session(), services().settings.stale_after_s)
    return [
        {"id": w.id, "queues": w.queues, "engines": w.engines, "state": w.state,
         "ready": w.state == "ready", "alive": w.alive, "error": w.error,
         "started_at": iso(w.started_at), "heartbeat_at": iso(w.heartbeat_at),
         "current_job": w.current_job} for w in rows]


def _ops_job(job: TryOnJob) -> dict[str, Any]:
    from web.api.tryons import job_dict

    out = job_dict(job)
    out["owner_id"] = job.owner_id
    out["worker_id"] = job.worker_id
    out["heartbeat_at"] = iso(job.heartbeat_at)
    return out


@bp.get("/jobs")
@bp.doc(**AUTH_DOC)
@roles(Role.OPS)
@bp.input(JobsQuery, location="query", arg_name="query")
def jobs(query: dict[str, Any]) -> dict[str, Any]:
    """Jobs in one status (default `failed`), newest first, with their error codes."""
    stmt = select(TryOnJob).where(TryOnJob.status == query["status"])
    rows, nxt = paginate(db_session(), stmt, TryOnJob, query["limit"], query["cursor"])
    return {"items": [_ops_job(j) for j in rows], "next_cursor": nxt}


@bp.post("/tryons/<job_id>/retry")
@bp.doc(**AUTH_DOC, responses={409: "Not failed (job_not_retryable)"})
@roles(Role.OPS)
@bp.output(TryOnOut, status_code=202)
def retry(job_id: str) -> Any:
    """Re-queue a failed job with more attempts, then publish it."""
    return _ops_job(retry_and_publish(job_id)), 202


def retry_and_publish(job_id: str) -> TryOnJob:
    """Re-queue a failed job (409 ``job_not_retryable`` otherwise) and publish it (a failed
    publish is left to the reaper). Shared by the API and the ops pages."""
    from tryon.records.jobs import mark_published, retry_job

    svc = services()
    session = db_session()
    job = retry_job(session, job_id)
    session.commit()
    try:
        svc.publisher.publish(job.id, job.queue)
    except Exception as exc:  # noqa: BLE001 - the reaper re-publishes
        log.warning("job=%s retry publish failed (%s)", job.id, type(exc).__name__)
    else:
        mark_published(session, job.id)
        session.commit()
    log.info("job=%s retried by ops", job.id)
    return job
