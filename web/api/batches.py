"""Batches: one request, many try-on or compose jobs (a parent job and its children).

* try-on batches (JSON): ``photo_ids x garment_ids`` (one photo x N garments: a lookbook;
  N photos x one garment: model shots);
* compose batches: ``references x scenes`` (synthetic data) as JSON with garment and photo ids,
  or multipart with uploaded ``scene`` and ``reference`` files (repeated fields) and ``boxes``.

The parent is a job row (``kind='batch'``) on the same state machine; each child is an ordinary
job with ``parent_id`` (see :mod:`tryon.records.jobs`). Progress is done/total over the
children; cancel cancels them all; the results are listed, and downloadable as one zip with a
JSON-lines manifest (inputs, boxes, seeds, engine, weights checksum) that reproduces the set.
"""

from __future__ import annotations

import hashlib
import json
import logging
from typing import Any

from apiflask import APIBlueprint, Schema
from apiflask.fields import Dict, List, Nested, Raw, String
from flask import Response, request
from sqlalchemy import func, select

from tryon.errors import (
    BatchTooLargeError,
    InvalidInputError,
    NotFoundError,
    TooManyOpenBatchJobsError,
)
from tryon.records.models import Garment, TryOnJob
from tryon.types import Box, JobKind, Role
from web.api.common import AUTH_DOC, read_upload
from web.api.photos import own_photo
from web.api.tryons import (
    _engine_and_queue,
    _idempotency_key,
    _replay,
    check_tryon_inputs,
    check_webhook_url,
    job_dict,
    job_params,
    publish_jobs,
    request_hash,
)
from web.auth import current_principal, roles
from web.schemas import ErrorDetail
from web.services import db_session, services

log = logging.getLogger(__name__)
bp = APIBlueprint("batches", __name__, tag="Batches", url_prefix="/v1/batches")

#: body fields that make up a child's sampling parameters
SAMPLING = ("num_samples", "steps", "guidance", "control_strength")


class BatchOut(Schema):
    id = String()
    kind = String()
    item_kind = String()
    status = String()
    progress = Dict(metadata={"description": "done/total over the children, by status."})
    engine = String()
    params = Dict()
    error = Nested(ErrorDetail, allow_none=True)
    items = List(Raw())
    created_at = String(allow_none=True)
    finished_at = String(allow_none=True)
    archive_url = String()
    manifest_url = String()


def _loads(raw: Any, name: str) -> Any:
    if raw is None or raw == "":
        return None
    if not isinstance(raw, str):
        return raw
    try:
        return json.loads(raw)
    except ValueError:
        raise InvalidInputError(f"{name} must be JSON.", argument=name) from None


def _body() -> tuple[dict[str, Any], dict[str, list[bytes]]]:
    """The request as fields and uploads: a JSON body, or multipart form fields (JSON-valued
    ones decoded) with repeated ``scene`` / ``reference`` / ``reference_mask`` files."""
    if request.mimetype == "application/json":
        body = request.get_json(silent=True)
        if not isinstance(body, dict):
            raise InvalidInputError("The body must be a JSON object.")
        return body, {}
    if request.mimetype != "multipart/form-data":
        from tryon.errors import UnsupportedMediaTypeError

        raise UnsupportedMediaTypeError("Send application/json or multipart/form-data.")
    form: dict[str, Any] = {k: request.form.get(k) for k in request.form}
    for name in ("photo_ids", "garment_ids", "boxes", "box"):
        form[name] = _loads(form.get(name), name)
    max_bytes = int(services().settings.max_upload_bytes)
    files = {name: [read_upload(f, max_bytes) for f in request.files.getlist(name)]
             for name in ("scene", "reference", "reference_mask") if request.files.getlist(name)}
    return form, files


def _int(body: dict[str, Any], name: str) -> int | None:
    v = body.get(name)
    if v is None or v == "":
        return None
    if isinstance(v, bool) or not isinstance(v, (int, str)):
        raise InvalidInputError(f"{name} must be an integer.", argument=name)
    try:
        return int(v)
    except ValueError:
        raise InvalidInputError(f"{name} must be an integer.", argument=name) from None


def _float(body: dict[str, Any], name: str) -> float | None:
    v = body.get(name)
    if v is None or v == "":
        return None
    try:
        return float(v)
    except (TypeError, ValueError):
        raise InvalidInputError(f"{name} must be a number.", argument=name) from None


def _ids(body: dict[str, Any], name: str) -> list[str]:
    v = body.get(name) or []
    if not isinstance(v, list) or not all(isinstance(x, str) and len(x) == 32 for x in v):
        raise InvalidInputError(f"{name} must be a list of ids.", argument=name)
    return list(v)


def _box(v: Any, name: str) -> Box | None:
    if v is None:
        return None
    if not isinstance(v, list) or len(v) != 4 or not all(isinstance(x, int) for x in v):
        raise InvalidInputError(f"{name} must be [x1, y1, x2, y2] integers.",
                                code="invalid_box", argument=name)
    return Box(*v)


@bp.post("")
@bp.doc(**AUTH_DOC, responses={
    202: "Accepted: the batch and its jobs are queued",
    409: "Idempotency-Key in flight (idempotency_in_flight)",
    413: "Body or an upload over the size limits (payload_too_large, image_too_large)",
    415: "Neither application/json nor multipart/form-data (unsupported_media_type), or an "
         "upload that is not JPEG, PNG or WebP (unsupported_format)",
    422: "Invalid input, batch_too_large, an unusable item (named by index)",
    429: "Too many open batch jobs for the account (too_many_open_batch_jobs)",
    503: "No running worker serves the engine (engine_unavailable)"})
@roles(Role.SHOPPER)
@bp.output(BatchOut, status_code=202)
def create_batch(*args: Any) -> Any:
    """Start a batch: `kind` tryon (`photo_ids` x `garment_ids`) or compose (`garment_ids` or
    uploaded `reference` files x `photo_ids` or uploaded `scene` files, with `box` or
    `boxes`, one per scene).

    JSON, or multipart for uploads (list fields as JSON strings). Items are the product of the
    two lists, at most `TRYON_MAX_BATCH_ITEMS`; open batch items per account at most
    `TRYON_MAX_OPEN_BATCH_JOBS`. `seed` s gives item i the seed s + i * num_samples.
    """
    key = _idempotency_key()
    body, files = _body()
    return start_batch(body, files, key)


def start_batch(body: dict[str, Any], files: dict[str, list[bytes]], key: str | None
                ) -> tuple[dict[str, Any], int]:
    svc = services()
    session = db_session()
    owner = current_principal().account_id
    item_kind = str(body.get("kind") or "tryon")
    if item_kind not in (JobKind.TRYON, JobKind.COMPOSE):
        raise InvalidInputError("kind must be tryon or compose.", argument="kind")
    # 1. idempotency over the fields and the uploads' digests
    digest = request_hash({**{k: v for k, v in body.items() if v is not None},
                           **{f"{k}_sha256": [hashlib.sha256(b).hexdigest() for b in v]
                              for k, v in files.items()}})
    if key is not None:
        replay = _replay(owner, key, digest)
        if replay is not None:
            return replay
    photo_ids, garment_ids = _ids(body, "photo_ids"), _ids(body, "garment_ids")
    n_scenes = len(photo_ids) or len(files.get("scene", []))
    n_refs = len(garment_ids) or len(files.get("reference", []))
    if item_kind == JobKind.TRYON and (files or not photo_ids or not garment_ids):
        raise InvalidInputError("A try-on batch takes photo_ids and garment_ids.",
                                code="missing_input")
    total = n_scenes * n_refs
    if total == 0:
        raise InvalidInputError("The batch is empty: give at least one of each input.",
                                code="missing_input")
    if total > svc.settings.max_batch_items:
        raise BatchTooLargeError(f"{n_refs} x {n_scenes} = {total} items; at most "
                                 f"{svc.settings.max_batch_items} per batch.",
                                 items=total, limit=svc.settings.max_batch_items)
    seed = _int(body, "seed")
    sampling = {"num_samples": _int(body, "num_samples") or 1, "steps": _int(body, "steps"),
                "guidance": _float(body, "guidance"),
                "control_strength": _float(body, "control_strength")}
    engine, queue = _engine_and_queue(body.get("engine"))
    webhook_url = body.get("webhook_url")
    check_webhook_url(webhook_url)
    _admit_batch(owner, total)
    from tryon.records.jobs import create_batch as create_parent

    parent = create_parent(
        session, owner_id=owner, engine=engine, queue=queue,
        params={"item_kind": item_kind, "photo_ids": photo_ids, "garment_ids": garment_ids,
                "seed": seed, **sampling, "total": total},
        webhook_url=webhook_url, idempotency_key=key, request_hash=digest if key else None)
    try:
        if item_kind == JobKind.TRYON:
            children = _tryon_children(parent, photo_ids, garment_ids, seed, sampling, body)
        else:
            children = _compose_children(parent, photo_ids, garment_ids, files, seed, sampling,
                                         body)
        out = batch_dict(parent)
        if key is not None:
            parent.response_body = out
        session.commit()
    except Exception:
        session.rollback()
        from tryon.storage import job_prefix

        services().storage.delete_prefix(job_prefix(owner, parent.id))
        raise
    publish_jobs(children, queue, engine)
    log.info("batch=%s created owner=%s kind=%s items=%d", parent.id, owner, item_kind, total)
    return out, 202


def _admit_batch(owner: str, items: int) -> None:
    from tryon.records.models import Account

    session = db_session()
    session.execute(select(Account.id).where(Account.id == owner).with_for_update())
    open_items = session.scalar(
        select(func.count()).select_from(TryOnJob).where(
            TryOnJob.owner_id == owner, TryOnJob.parent_id.is_not(None),
            TryOnJob.status.in_(("queued", "running")))) or 0
    limit = services().settings.max_open_batch_jobs
    if open_items + items > limit:
        raise TooManyOpenBatchJobsError(
            f"{open_items} batch jobs are open and this batch adds {items}; at most {limit}.",
            open=open_items, limit=limit)


def _item_seed(seed: int | None, index: int, num_samples: int) -> int | None:
    return None if seed is None else (seed + index * num_samples) & 0x7FFF_FFFF


def _garment(garment_id: str) -> Garment:
    g = db_session().get(Garment, garment_id)
    if g is None or g.deleted_at is not None:
        raise NotFoundError(f"Garment {garment_id} not found.", code="garment_not_found")
    return g


def _tryon_children(parent: TryOnJob, photo_ids: list[str], garment_ids: list[str],
                    seed: int | None, sampling: dict[str, Any], body: dict[str, Any]
                    ) -> list[str]:
    from tryon.records.jobs import create_job

    svc = services()
    session = db_session()
    boxes = body.get("boxes") or {}
    photos = [own_photo(p) for p in photo_ids]
    garments = [_garment(g) for g in garment_ids]
    ids = []
    index = 0
    for photo in photos:
        for garment in garments:
            item = {**{k: v for k, v in sampling.items() if v is not None},
                    "box": boxes.get(photo.id) if isinstance(boxes, dict) else None,
                    "seed": _item_seed(seed, index, sampling["num_samples"])}
            try:
                params = job_params(item, garment, svc.settings)
                check_tryon_inputs(photo, garment, params)
            except InvalidInputError as exc:
                exc.details.update(item=index, photo_id=photo.id, garment_id=garment.id)
                raise
            job = create_job(
                session, owner_id=parent.owner_id, photo_id=photo.id, garment_id=garment.id,
                engine=parent.engine, queue=parent.queue,
                params={**params.to_dict(), "batch_index": index},
                max_attempts=svc.settings.max_attempts, parent_id=parent.id)
            ids.append(job.id)
            index += 1
    return ids


def _compose_children(parent: TryOnJob, photo_ids: list[str], garment_ids: list[str],
                      files: dict[str, list[bytes]], seed: int | None,
                      sampling: dict[str, Any], body: dict[str, Any]) -> list[str]:
    """References x scenes; uploads go through the intake once and are stored under the
    parent's prefix, shared by its children."""
    import numpy as np

    from tryon.compose import ComposeInputs, ComposeOp, ComposeParams, plan
    from tryon.images import IntakeLimits, decode_mask, encode_png, normalize_upload
    from tryon.storage import job_prefix
    from web.api.compose import Intake, create_compose_job

    svc = services()
    limits = IntakeLimits.from_settings(svc.settings)
    prefix = f"{job_prefix(parent.owner_id, parent.id)}/in"
    # 1. scenes: photos, or uploads stored once
    scenes: list[tuple[str | None, dict[str, str], tuple[int, int]]] = []
    for pid in photo_ids:
        p = own_photo(pid)
        scenes.append((p.id, {}, (p.width, p.height)))
    for j, data in enumerate(files.get("scene", []) if not photo_ids else []):
        img = normalize_upload(data, limits)
        k = f"{prefix}/scene-{j}.{'jpg' if img.content_type == 'image/jpeg' else 'png'}"
        svc.storage.put(k, img.encoded, img.content_type)
        scenes.append((None, {"scene": k}, img.size))
    # 2. references: garments, or uploads (mask: uploaded, alpha, or background removal)
    refs: list[tuple[str | None, dict[str, str]]] = [(g, {}) for g in garment_ids]
    for g in garment_ids:
        _garment(g)
    if not garment_ids:
        from tryon.compose import reference_mask

        masks = files.get("reference_mask", [])
        for i, data in enumerate(files.get("reference", [])):
            img = normalize_upload(data, limits, keep_alpha=True)
            uploaded = decode_mask(masks[i], img.size, limits) if i < len(masks) else None
            m = reference_mask(img.rgb, img.alpha, uploaded)
            rk, mk = f"{prefix}/reference-{i}.png", f"{prefix}/reference_mask-{i}.png"
            svc.storage.put(rk, encode_png(img.rgb), "image/png")
            svc.storage.put(mk, encode_png(np.where(m, 255, 0).astype(np.uint8)), "image/png")
            refs.append((None, {"reference": rk, "reference_mask": mk}))
    # 3. one box per scene (or one for all)
    boxes = body.get("boxes")
    one = _box(body.get("box"), "box")
    if boxes is not None and (not isinstance(boxes, list) or len(boxes) != len(scenes)):
        raise InvalidInputError(f"boxes must list one box per scene ({len(scenes)}).",
                                code="invalid_box", argument="boxes")
    ids = []
    index = 0
    for i, (gid, ref_keys) in enumerate(refs):
        for j, (scene_pid, scene_keys, (w, h)) in enumerate(scenes):
            box = _box(boxes[j], f"boxes[{j}]") if boxes is not None else one
            params = ComposeParams.from_dict({
                "op": ComposeOp.INSERT, "box": None if box is None else box.as_list(),
                "steps": sampling["steps"] or svc.settings.default_steps,
                "guidance": sampling["guidance"] if sampling["guidance"] is not None
                else svc.settings.default_guidance,
                "control_strength": sampling["control_strength"],
                "num_samples": sampling["num_samples"],
                "seed": _item_seed(seed, index, sampling["num_samples"])})
            try:
                plan(ComposeOp.INSERT, ComposeInputs(
                    scene=np.zeros((h, w, 3), np.uint8), reference=np.zeros((1, 1, 3), np.uint8),
                    reference_mask=np.ones((1, 1), bool)), params.box, fill=False)
            except InvalidInputError as exc:
                exc.details.update(item=index, reference=i, scene=j)
                raise
            job, _ = create_compose_job(
                parent.owner_id, params, Intake(ComposeInputs(scene=np.zeros((1, 1, 3), np.uint8))),
                photo_id=scene_pid, garment_id=gid, engine=parent.engine, queue=parent.queue,
                parent_id=parent.id, shared={**scene_keys, **ref_keys}, commit=False)
            if job is None:  # only a keyed request can lose a race, and batch items carry no key
                raise RuntimeError("a batch item was not created")
            job.params = {**job.params, "batch_index": index, "reference_index": i,
                          "scene_index": j}
            ids.append(job.id)
            index += 1
    return ids


def own_batch(batch_id: str) -> TryOnJob:
    job = db_session().get(TryOnJob, batch_id, populate_existing=True)
    if job is None or job.owner_id != current_principal().account_id or job.kind != JobKind.BATCH:
        raise NotFoundError("Batch not found.", code="batch_not_found")
    return job


def _children(parent: TryOnJob) -> list[TryOnJob]:
    from tryon.records.manifest import children

    return children(db_session(), parent.id)


def batch_dict(parent: TryOnJob) -> dict[str, Any]:
    from flask import url_for

    from tryon.records.jobs import batch_progress

    p = batch_progress(db_session(), parent.id)
    error = None
    if parent.error_code:
        error = {"code": parent.error_code, "message": parent.error_message or ""}
    items = []
    for child in _children(parent):
        d = job_dict(child)
        items.append({"index": (child.params or {}).get("batch_index"), "job_id": child.id,
                      "status": d["status"], "progress": d["progress"],
                      "photo_id": child.photo_id, "garment_id": child.garment_id,
                      "error": d["error"], "results": d["results"]})
    from web.api.common import iso

    return {
        "id": parent.id, "kind": JobKind.BATCH.value,
        "item_kind": (parent.params or {}).get("item_kind"), "status": parent.status,
        "progress": {"done": p.done, "total": p.total, "succeeded": p.succeeded,
                     "failed": p.failed, "canceled": p.canceled},
        "engine": parent.engine, "params": dict(parent.params or {}), "error": error,
        "items": items, "created_at": iso(parent.created_at),
        "finished_at": iso(parent.finished_at),
        "archive_url": url_for("batches.get_archive", batch_id=parent.id, _external=True),
        "manifest_url": url_for("batches.get_manifest", batch_id=parent.id, _external=True),
    }


@bp.get("/<batch_id>")
@bp.doc(**AUTH_DOC)
@roles(Role.SHOPPER)
@bp.output(BatchOut)
def get_batch(batch_id: str) -> dict[str, Any]:
    """Status, progress (done/total) and every item with its results."""
    return batch_dict(own_batch(batch_id))


@bp.post("/<batch_id>/cancel")
@bp.doc(**AUTH_DOC, responses={409: "Already finished (job_not_cancelable)"})
@roles(Role.SHOPPER)
@bp.output(BatchOut)
def cancel_batch(batch_id: str) -> dict[str, Any]:
    """Cancel the whole batch: every queued or running item stops."""
    from tryon.records.jobs import cancel_batch as cancel

    own_batch(batch_id)
    parent = cancel(db_session(), batch_id)
    db_session().commit()
    return batch_dict(parent)


@bp.get("/<batch_id>/manifest")
@bp.doc(**AUTH_DOC, responses={200: "JSON lines (application/x-ndjson), one per result"})
@roles(Role.SHOPPER)
def get_manifest(batch_id: str) -> Response:
    """The batch's manifest (JSON lines): inputs, boxes, seeds, engine, weights checksum."""
    from tryon.records.manifest import jsonl, manifest_lines

    resp = Response(jsonl(manifest_lines(db_session(), own_batch(batch_id).id)),
                    mimetype="application/x-ndjson")
    resp.headers["Cache-Control"] = "no-store"
    return resp


@bp.get("/<batch_id>/archive")
@bp.doc(**AUTH_DOC, responses={200: "A zip (application/zip): manifest.jsonl and every "
                                     "result"})
@roles(Role.SHOPPER)
def get_archive(batch_id: str) -> Response:
    """Every result of the batch and its manifest as one zip (results so far if it runs)."""
    from tryon.records.manifest import build_archive

    parent = own_batch(batch_id)
    data = build_archive(db_session(), services().storage, parent.id)
    resp = Response(data, mimetype="application/zip")
    resp.headers["Content-Disposition"] = f'attachment; filename="batch-{parent.id}.zip"'
    resp.headers["Cache-Control"] = "no-store"
    return resp



