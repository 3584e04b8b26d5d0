"""Try-on jobs: create (idempotent), get, list, cancel, and result images."""

from __future__ import annotations

import hashlib
import json
import logging
from datetime import timedelta
from typing import Any

from apiflask import APIBlueprint
from flask import Response, request, url_for
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from tryon.engines.request import JobParams
from tryon.errors import (
    IdempotencyInFlightError,
    IdempotencyMismatchError,
    InvalidInputError,
    NotFoundError,
    NoWorkerForEngineError,
    TooManyOpenJobsError,
)
from tryon.logs import job_extra
from tryon.records.models import Account, Garment, TryOnJob, TryOnResult
from tryon.types import Role
from web.api.common import AUTH_DOC, aware, consumes, iso, paginate, png_responses
from web.api.photos import own_photo, stored_verdict_error
from web.auth import current_principal, roles
from web.schemas import PageQuery, TryOnIn, TryOnOut, TryOnPage
from web.services import db_session, services

log = logging.getLogger(__name__)
bp = APIBlueprint("tryons", __name__, tag="Try-ons", url_prefix="/v1/tryons")

MAX_IDEMPOTENCY_KEY = 200
#: a keyed row without a stored response younger than this is a request still in flight (409)
IN_FLIGHT_GRACE_S = 10


def result_dict(job: TryOnJob, r: TryOnResult) -> dict[str, Any]:
    svc = services()
    from web.signing import ResultSigner

    signer = ResultSigner(svc.secret_key, svc.settings.result_url_ttl_s)
    url = svc.storage.signed_url(r.storage_key, signer.ttl_s, content_type="image/png")
    if url is None:
        url = url_for("files.signed_result", token=signer.sign(r.storage_key, job.id, r.index),
                      _external=True)
    return {
        "index": r.index, "url": url, "url_expires_in": signer.ttl_s,
        "owner_url": url_for("tryons.get_result", job_id=job.id, index=r.index, _external=True),
        "seed": r.seed, "width": r.width, "height": r.height, "sha256": r.sha256,
    }


def job_dict(job: TryOnJob, results: list[TryOnResult] | None = None) -> dict[str, Any]:
    """The public view of a job. Results appear once it succeeded (only the winning attempt's)."""
    error = None
    if job.error_code:
        error = {"code": job.error_code, "message": job.error_message or ""}
    out = {
        "id": job.id, "status": job.status, "stage": job.stage,
        "progress": round(float(job.progress or 0.0) * 100.0, 1),
        "engine": job.engine, "queue": job.queue, "photo_id": job.photo_id,
        "garment_id": job.garment_id, "params": dict(job.params or {}),
        "attempt": job.attempt, "max_attempts": job.max_attempts, "error": error,
        "timings": dict(job.timings or {}), "results": [], "results_expired": False,
        "created_at": iso(job.created_at), "started_at": iso(job.started_at),
        "finished_at": iso(job.finished_at),
    }
    if job.status == "succeeded":
        rows = results if results is not None else list(db_session().scalars(
            select(TryOnResult).where(TryOnResult.job_id == job.id).order_by(TryOnResult.index)))
        out["results"] = [result_dict(job, r) for r in rows]
        # a succeeded job always recorded results; none left means retention (or the
        # photo's deletion) removed them
        out["results_expired"] = not rows
    return out


def own_job(job_id: str) -> TryOnJob:
    job = db_session().get(TryOnJob, job_id, populate_existing=True)
    if job is None or job.owner_id != current_principal().account_id:
        raise NotFoundError("Try-on not found.", code="job_not_found")
    return job


def request_hash(body: dict[str, Any]) -> str:
    """SHA-256 over the canonical JSON of the validated body (key order, spacing irrelevant)."""
    canon = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canon.encode()).hexdigest()


def _idempotency_key() -> str | None:
    key = request.headers.get("Idempotency-Key")
    if key is None:
        return None
    key = key.strip()
    if not key or len(key) > MAX_IDEMPOTENCY_KEY or not key.isprintable():
        raise InvalidInputError(f"Idempotency-Key must be 1-{MAX_IDEMPOTENCY_KEY} printable "
                                "characters.", code="invalid_idempotency_key")
    return key


def _replay(owner_id: str, key: str, digest: str) -> tuple[dict[str, Any], int] | None:
    """The stored response for ``key``, None when there is none (or it expired), else raise."""
    session = db_session()
    job = session.scalars(
        select(TryOnJob).where(TryOnJob.owner_id == owner_id, TryOnJob.idempotency_key == key)
        .execution_options(populate_existing=True)
    ).first()
    if job is None:
        return None
    ttl = timedelta(seconds=services().settings.idempotency_ttl_s)
    from tryon.records.jobs import db_now

    if aware(job.created_at) + ttl < db_now(session):  # type: ignore[operator]
        # expired: free the key for a new request (the old job keeps its row)
        job.idempotency_key = None
        session.commit()
        return None
    if job.request_hash != digest:
        raise IdempotencyMismatchError()
    if job.response_body is None:
        # Rows committed since the response is stored in the same commit always have one;
        # an older row (written by a previous release, or any path that missed it) would
        # otherwise answer 409 for the whole TTL. Past a short grace period, rebuild it.
        grace = timedelta(seconds=IN_FLIGHT_GRACE_S)
        if aware(job.created_at) + grace > db_now(session):  # type: ignore[operator]
            raise IdempotencyInFlightError()
        job.response_body = job_dict(job)
        session.commit()
    return job.response_body, 202


#: (field, value) pairs left out of the request hash: fields added later, at their default, mean
#: the same request as before they existed, so stored keys (and bodies that omit them) match
_FIELD_DEFAULTS: dict[str, Any] = {"mask": "box", "control_strength": None}


def job_params(body: dict[str, Any], garment: Garment, settings: Any) -> JobParams:
    """The typed parameters of a validated body: the garment's category and length, the
    settings' default steps and guidance where the body has none."""
    return JobParams.from_dict({
        **body, "category": garment.category, "length": garment.length,
        "steps": body.get("steps") or settings.default_steps,
        "guidance": body["guidance"] if body.get("guidance") is not None
        else settings.default_guidance,
    })


def _engine_and_queue(engine: str | None) -> tuple[str, str]:
    """The engine (the body's, else the default among what live workers advertise) and its
    queue; 503 ``engine_unavailable`` when no live worker advertises it."""
    from tryon.celeryconf import queue_for_engine
    from tryon.engines.registry import choose_default_engine

    svc = services()
    advertised = svc.engines(db_session())
    name = engine or choose_default_engine(svc.settings.default_engine, advertised)
    if name is None or name not in advertised:
        what = "No worker is running yet" if not advertised else \
            f"No running worker serves engine {name!r}"
        raise NoWorkerForEngineError(
            f"{what}; retry shortly"
            + (f" or use one of: {', '.join(sorted(advertised))}." if advertised else "."),
            engine=name, available=sorted(advertised))
    return name, queue_for_engine(name)


def check_tryon_inputs(photo: Any, garment: Garment, params: JobParams) -> None:
    """The 422s a try-on of ``garment`` on ``photo`` with ``params`` would end in: a box outside
    the photo, the photo's verdict for the category, a placement the garment's length breaks."""
    if params.box is not None:
        x1, y1, x2, y2 = params.box.as_list()
        if not (0 <= x1 < x2 <= photo.width and 0 <= y1 < y2 <= photo.height):
            raise InvalidInputError(
                f"box must satisfy 0 <= x1 < x2 <= {photo.width} and 0 <= y1 < y2 <= "
                f"{photo.height}; got {params.box.as_list()}.", code="invalid_box")
        return
    if photo.verdicts.get(garment.category, "pose_not_usable") is not None:
        raise stored_verdict_error(photo, garment.category)
    # the garment's length moves the box: check now that the stored pose allows it,
    # exactly as the worker will place it
    from tryon.engines.request import resolve_placement, stored_analysis

    resolve_placement(stored_analysis(photo.pose, photo.verdicts, photo.placements,
                                      (photo.width, photo.height), photo.body), params)


def check_webhook_url(webhook_url: str | None) -> None:
    """Refuse a webhook URL the delivery policy would never call (422)."""
    if webhook_url:
        from tryon.webhooks import check_webhook_url as check_policy

        svc = services()
        check_policy(svc.settings, webhook_url, resolver=svc.webhook_resolver)


def admit_open_job(owner: str) -> None:
    """The cap on a shopper's open standalone jobs (try-ons and compositions; batch items have
    their own bound). The account row is locked first so concurrent creates for one shopper
    count one after the other (PostgreSQL; SQLite serialises writers and ignores FOR UPDATE)."""
    session = db_session()
    session.execute(select(Account.id).where(Account.id == owner).with_for_update())
    open_jobs = session.scalar(
        select(func.count()).select_from(TryOnJob).where(
            TryOnJob.owner_id == owner, TryOnJob.status.in_(("queued", "running")),
            TryOnJob.parent_id.is_(None), TryOnJob.kind != "batch"))
    if (open_jobs or 0) >= services().settings.max_open_jobs_per_shopper:
        raise TooManyOpenJobsError()


def publish_jobs(job_ids: list[str], queue: str, engine: str) -> None:
    """Publish committed jobs and record it; a failed publish is left to the reaper."""
    from flask import current_app

    from tryon.records.jobs import mark_published

    svc = services()
    session = db_session()
    metrics = current_app.extensions["tryon_metrics"]
    for job_id in job_ids:
        metrics.jobs_created.labels(engine).inc()
        try:
            svc.publisher.publish(job_id, queue)
        except Exception as exc:  # noqa: BLE001 - any broker failure: the row is safe, reaper re-publishes
            metrics.publish_failures.inc()
            log.warning("publish failed (%s); the reaper will re-publish",
                        type(exc).__name__, extra=job_extra(job_id))
        else:
            mark_published(session, job_id)
            session.commit()


@bp.post("")
@bp.doc(**AUTH_DOC, responses={
    202: "Accepted: the job is queued",
    409: "Idempotency-Key in flight (idempotency_in_flight)",
    422: "Invalid input, unusable photo, or Idempotency-Key reused with another body",
    429: "Too many open try-ons (too_many_open_jobs) or too many requests (rate_limited, "
         "with Retry-After)",
    503: "No running worker serves the engine (engine_unavailable), or the database or "
         "broker is unavailable"})
@roles(Role.SHOPPER)
@consumes("application/json")
@bp.input(TryOnIn, location="json", arg_name="body")
@bp.output(TryOnOut, status_code=202)
def create_tryon(body: dict[str, Any]) -> Any:
    """Start a try-on of a catalog garment on one of your photos.

    Send an `Idempotency-Key` header to make retries safe: the same key and body return the
    same response; another body with that key answers 422; a request still in flight, 409.
    """
    return start_tryon(body, _idempotency_key())


def start_tryon(body: dict[str, Any], key: str | None) -> tuple[dict[str, Any], int]:
    """Create (or replay) a try-on for the caller from a validated :class:`TryOnIn` body and
    publish it: ``(job dict, 202)``. Shared by the API and the pages."""
    svc = services()
    session = db_session()
    owner = current_principal().account_id
    # 1. idempotency: replay, mismatch or in flight
    digest = request_hash({k: v for k, v in body.items()
                           if k not in _FIELD_DEFAULTS or _FIELD_DEFAULTS[k] != v})
    if key is not None:
        replay = _replay(owner, key, digest)
        if replay is not None:
            return replay
    # 2. check inputs against the records
    photo = own_photo(body["photo_id"])
    garment = session.get(Garment, body["garment_id"])
    if garment is None or garment.deleted_at is not None:
        raise NotFoundError("Garment not found.", code="garment_not_found")
    params = job_params(body, garment, svc.settings)
    check_tryon_inputs(photo, garment, params)
    # a body that can never run is a 422 first; then whether a worker can run it now (503)
    engine, queue = _engine_and_queue(body.get("engine"))
    webhook_url = body.get("webhook_url")
    check_webhook_url(webhook_url)
    # 3. admission: a cap on open jobs per shopper
    admit_open_job(owner)

    # 4. commit the row, THEN publish its id (a lost publish is re-sent by the reaper)
    from tryon.records.jobs import create_job

    try:
        job = create_job(
            session, owner_id=owner, photo_id=photo.id, garment_id=garment.id, engine=engine,
            queue=queue, params=params.to_dict(), max_attempts=svc.settings.max_attempts,
            webhook_url=webhook_url, idempotency_key=key, request_hash=digest if key else None,
        )
        # create_job flushed: the id and timestamps exist. The response is stored in the SAME
        # commit as the row, so a request that dies after the commit (a hanging publish killed
        # by the worker timeout) cannot leave the key answering 409 for the whole TTL.
        out = job_dict(job)
        if key is not None:
            job.response_body = out
        session.commit()
    except IntegrityError:
        # a concurrent request with the same key committed first
        session.rollback()
        if key is None:
            raise
        replay = _replay(owner, key, digest)
        if replay is None:
            raise IdempotencyInFlightError() from None
        return replay
    publish_jobs([job.id], queue, engine)
    log.info("created owner=%s engine=%s queue=%s", owner, engine, queue,
             extra=job_extra(job.id))
    return out, 202


@bp.get("")
@bp.doc(**AUTH_DOC)
@roles(Role.SHOPPER)
@bp.input(PageQuery, location="query", arg_name="query")
@bp.output(TryOnPage)
def list_tryons(query: dict[str, Any]) -> dict[str, Any]:
    """List your try-ons, newest first."""
    stmt = select(TryOnJob).where(TryOnJob.owner_id == current_principal().account_id,
                                  TryOnJob.kind == "tryon")
    rows, nxt = paginate(db_session(), stmt, TryOnJob, query["limit"], query["cursor"])
    return {"items": [job_dict(j) for j in rows], "next_cursor": nxt}


@bp.get("/<job_id>")
@bp.doc(**AUTH_DOC)
@roles(Role.SHOPPER)
@bp.output(TryOnOut)
def get_tryon(job_id: str) -> dict[str, Any]:
    """Status, stage, progress, timings, error and result URLs of one of your try-ons."""
    return job_dict(own_job(job_id))


@bp.post("/<job_id>/cancel")
@bp.doc(**AUTH_DOC, responses={409: "Already finished (job_not_cancelable)"})
@roles(Role.SHOPPER)
@bp.output(TryOnOut)
def cancel_tryon(job_id: str) -> dict[str, Any]:
    """Cancel a queued or running try-on (a running one stops at its next step)."""
    from tryon.records.jobs import cancel_job

    session = db_session()
    own_job(job_id)
    job = cancel_job(session, job_id)
    session.commit()
    return job_dict(job)


@bp.get("/<job_id>/results/<int:index>")
@bp.doc(**AUTH_DOC, responses=png_responses())
@roles(Role.SHOPPER)
def get_result(job_id: str, index: int) -> Response:
    """One result image of one of your try-ons (PNG)."""
    return image_response(result_png(own_job(job_id), index), cache="no-store")


def result_png(job: TryOnJob, index: int) -> bytes:
    """The stored PNG of result ``index`` of ``job`` (404 ``result_not_found`` when gone)."""
    from tryon.storage import ObjectNotFoundError

    r = db_session().scalars(
        select(TryOnResult).where(TryOnResult.job_id == job.id, TryOnResult.index == index)
    ).first()
    if job.status != "succeeded" or r is None:
        raise NotFoundError("Result not found.", code="result_not_found")
    try:
        return services().storage.get(r.storage_key)
    except ObjectNotFoundError:
        raise NotFoundError("Result not found.", code="result_not_found") from None


def image_response(data: bytes, *, cache: str) -> Response:
    """A stored PNG with the headers a served image needs (§4.3)."""
    resp = Response(data, mimetype="image/png")
    resp.headers["Content-Security-Policy"] = "default-src 'none'"
    resp.headers["Content-Disposition"] = "inline"
    resp.headers["Cache-Control"] = cache
    return resp
