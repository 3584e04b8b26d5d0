"""Compositions: a reference object placed into a scene (and move / swap / replace), as jobs.

One compose request is one job row (``kind='compose'``) on the try-on state machine: the same
idempotency, open-job cap, engine admission, publish, progress, cancel, webhooks and results.
Uploads go through the same intake (:mod:`tryon.images`) and are stored under the job's own
prefix (``results/<owner>/<job>/in/``), so erasure and retention remove them with the job.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from apiflask import APIBlueprint, Schema
from apiflask.fields import Boolean, Dict, File, Float, Integer, List, Nested, String
from apiflask.validators import Length, OneOf
from numpy.typing import NDArray
from sqlalchemy.exc import IntegrityError

from tryon.compose import ComposeInputs, ComposeOp, ComposeParams, plan
from tryon.errors import IdempotencyInFlightError, InvalidInputError, NotFoundError
from tryon.logs import job_extra
from tryon.records.models import Garment, TryOnJob
from tryon.types import Box, JobKind, Role
from web.api.common import AUTH_DOC, consumes, read_upload
from web.api.photos import own_photo
from web.api.tryons import (
    _engine_and_queue,
    _idempotency_key,
    _replay,
    admit_open_job,
    check_webhook_url,
    job_dict,
    publish_jobs,
    request_hash,
)
from web.auth import current_principal, roles
from web.schemas import ErrorDetail, ResultOut
from web.services import db_session, services

log = logging.getLogger(__name__)
bp = APIBlueprint("compose", __name__, tag="Compose", url_prefix="/v1/compose")

#: multipart file fields, each optional (which ones an op needs: tryon.compose.NEEDS)
FILES = ("scene", "reference", "reference_mask", "region_mask", "object_mask", "object_mask_b")


class ComposeIn(Schema):
    op = String(load_default="insert", validate=OneOf([o.value for o in ComposeOp]), metadata={
        "description": "insert (reference into region), replace (object under object_mask by "
                       "the reference), move (object under object_mask to box; the hole is "
                       "filled by Telea inpainting), swap (object_mask and object_mask_b "
                       "exchange places)."})
    scene = File(metadata={"description": "The target image (or photo_id)."})
    photo_id = String(load_default=None, validate=Length(equal=32))
    reference = File(metadata={"description": "The object to place (or garment_id)."})
    reference_mask = File(metadata={"description": "The object's mask in `reference` (else "
                                                   "its alpha, else background removal)."})
    garment_id = String(load_default=None, validate=Length(equal=32))
    box = String(load_default=None, metadata={
        "description": "`x1,y1,x2,y2` in scene pixels: the region (insert) or destination "
                       "(move)."})
    region_mask = File(metadata={"description": "The region as a mask (insert)."})
    object_mask = File(metadata={"description": "The object in the scene (replace/move/swap)."})
    object_mask_b = File(metadata={"description": "The second object (swap)."})
    engine = String(load_default=None, validate=Length(max=32))
    num_samples = Integer(load_default=1)
    seed = Integer(load_default=None, allow_none=True)
    steps = Integer(load_default=None, allow_none=True)
    guidance = Float(load_default=None, allow_none=True)
    control_strength = Float(load_default=None, allow_none=True)
    webhook_url = String(load_default=None, allow_none=True, validate=Length(max=2000))


class ComposeOut(Schema):
    id = String()
    kind = String()
    parent_id = String(allow_none=True)
    status = String()
    stage = String()
    progress = Float(metadata={"description": "Percent, 0-100."})
    engine = String()
    queue = String()
    photo_id = String(allow_none=True)
    garment_id = String(allow_none=True)
    params = Dict()
    attempt = Integer()
    max_attempts = Integer()
    error = Nested(ErrorDetail, allow_none=True)
    timings = Dict()
    results = List(Nested(ResultOut))
    results_expired = Boolean()
    created_at = String(allow_none=True)
    started_at = String(allow_none=True)
    finished_at = String(allow_none=True)


def parse_box(raw: str | None) -> Box | None:
    """``"x1,y1,x2,y2"`` (or a JSON list) as a :class:`Box`; 422 ``invalid_box`` otherwise."""
    if raw is None or not str(raw).strip():
        return None
    parts = str(raw).strip().strip("[]").split(",")
    try:
        values = [int(p.strip()) for p in parts]
    except ValueError:
        values = []
    if len(values) != 4:
        raise InvalidInputError(f"box must be four integers x1,y1,x2,y2; got {raw!r}.",
                                code="invalid_box", argument="box")
    return Box(*values)


@dataclass
class Intake:
    """A compose request's images after the intake: decoded arrays for the checks, and the
    encoded bytes to store by role."""

    inputs: ComposeInputs
    blobs: dict[str, tuple[bytes, str]] = field(default_factory=dict)
    digests: dict[str, str] = field(default_factory=dict)


def _png(mask: NDArray[np.bool_]) -> bytes:
    from tryon.images import encode_png

    return encode_png(np.where(mask, 255, 0).astype(np.uint8))


def intake(form: dict[str, Any], raw: dict[str, bytes], photo: Any, garment: Garment | None
           ) -> Intake:
    """Decode and check the request's images (the photo and garment are already loaded)."""
    from tryon.compose import reference_mask
    from tryon.images import IntakeLimits, decode_mask, encode_png, normalize_upload

    svc = services()
    limits = IntakeLimits.from_settings(svc.settings)
    out = Intake(ComposeInputs(scene=np.zeros((1, 1, 3), np.uint8)))
    # 1. the scene: an upload through the intake, or a photo (checked at its own upload; only
    # its size matters to the checks here, the worker reads its pixels)
    if photo is not None:
        scene = np.zeros((photo.height, photo.width, 3), np.uint8)
    elif "scene" in raw:
        img = normalize_upload(raw["scene"], limits)
        scene = img.rgb
        out.blobs["scene"] = (img.encoded, img.content_type)
    else:
        raise InvalidInputError("Give the scene: upload `scene` or pass `photo_id`.",
                                code="missing_input", argument="scene")
    h, w = scene.shape[:2]
    # 2. the reference: an upload (its mask uploaded, its alpha, or background removal), or
    # the garment as stored
    ref = ref_mask = None
    if garment is not None:
        # masked at its own upload (the garment intake); the worker reads both
        ref, ref_mask = np.zeros((1, 1, 3), np.uint8), np.ones((1, 1), bool)
    elif "reference" in raw:
        img = normalize_upload(raw["reference"], limits, keep_alpha=True)
        uploaded = (decode_mask(raw["reference_mask"], img.size, limits)
                    if "reference_mask" in raw else None)
        ref, ref_mask = img.rgb, reference_mask(img.rgb, img.alpha, uploaded)
        out.blobs["reference"] = (encode_png(img.rgb), "image/png")
        out.blobs["reference_mask"] = (_png(ref_mask), "image/png")
    # 3. masks in the scene, at the scene's size
    masks: dict[str, NDArray[np.bool_]] = {}
    for name in ("region_mask", "object_mask", "object_mask_b"):
        if name in raw:
            masks[name] = decode_mask(raw[name], (w, h), limits)
            out.blobs[name] = (_png(masks[name]), "image/png")
    out.inputs = ComposeInputs(scene=scene, reference=ref, reference_mask=ref_mask, **masks)
    return out


@bp.post("")
@bp.doc(**AUTH_DOC, responses={
    202: "Accepted: the compose job is queued",
    409: "Idempotency-Key in flight (idempotency_in_flight)",
    422: "Invalid input: empty_region, region_too_small, object_not_separable, invalid_box, "
         "missing_input, an unusable image or mask",
    429: "Too many open jobs",
    503: "No running worker serves the engine (engine_unavailable)"})
@roles(Role.SHOPPER)
@consumes("multipart/form-data")
@bp.input(ComposeIn, location="form_and_files", arg_name="form")
@bp.output(ComposeOut, status_code=202)
def create_compose(form: dict[str, Any]) -> Any:
    """Place a reference object into a scene (multipart), or move, swap or replace objects.

    Scene: `scene` (upload) or `photo_id`; reference: `reference` (+ `reference_mask`) or
    `garment_id`; region: `box` (`x1,y1,x2,y2`) or `region_mask`. No pose pre-flight: scenes
    need no person. `Idempotency-Key` works as for try-ons.
    """
    return start_compose(form, _idempotency_key())


def start_compose(form: dict[str, Any], key: str | None) -> tuple[dict[str, Any], int]:
    svc = services()
    session = db_session()
    owner = current_principal().account_id
    max_bytes = int(svc.settings.max_upload_bytes)
    raw = {name: read_upload(form[name], max_bytes) for name in FILES if form.get(name)}
    # 1. idempotency over the fields and the uploaded bytes' digests
    fields = {k: v for k, v in form.items() if k not in FILES and v is not None}
    digest = request_hash({**fields, **{f"{k}_sha256": hashlib.sha256(v).hexdigest()
                                        for k, v in raw.items()}})
    if key is not None:
        replay = _replay(owner, key, digest)
        if replay is not None:
            return replay
    # 2. check inputs: records, parameters, images and the plan (without the hole fill)
    op = ComposeOp(form["op"])
    photo = own_photo(form["photo_id"]) if form.get("photo_id") else None
    garment = None
    if form.get("garment_id"):
        garment = session.get(Garment, form["garment_id"])
        if garment is None or garment.deleted_at is not None:
            raise NotFoundError("Garment not found.", code="garment_not_found")
    box = parse_box(form.get("box"))
    params = ComposeParams.from_dict({
        "op": op, "box": None if box is None else box.as_list(),
        "steps": form.get("steps") or svc.settings.default_steps,
        "guidance": form["guidance"] if form.get("guidance") is not None
        else svc.settings.default_guidance,
        "control_strength": form.get("control_strength"),
        "num_samples": form.get("num_samples"), "seed": form.get("seed")})
    got = intake(form, raw, photo, garment)
    plan(op, got.inputs, params.box, fill=False)
    engine, queue = _engine_and_queue(form.get("engine"))
    check_webhook_url(form.get("webhook_url"))
    # 3. admission, then the row; the uploads are stored under the job's prefix before commit
    admit_open_job(owner)
    job, out = create_compose_job(
        owner, params, got, photo_id=photo.id if photo else None,
        garment_id=garment.id if garment else None, engine=engine, queue=queue,
        webhook_url=form.get("webhook_url"), key=key, digest=digest)
    if job is None:
        return out, 202
    publish_jobs([job.id], queue, engine)
    log.info("compose op=%s created owner=%s engine=%s", op, owner, engine,
             extra=job_extra(job.id))
    return out, 202


def create_compose_job(owner: str, params: ComposeParams, got: Intake, *, photo_id: str | None,
                       garment_id: str | None, engine: str, queue: str,
                       webhook_url: str | None = None, key: str | None = None,
                       digest: str | None = None, parent_id: str | None = None,
                       shared: dict[str, str] | None = None, commit: bool = True,
                       ) -> tuple[TryOnJob | None, dict[str, Any]]:
    """Add a compose job, store ``got``'s blobs under its prefix, record their keys (plus
    ``shared`` keys stored elsewhere, e.g. a batch's) and commit (unless ``commit`` is
    False). ``(None, replayed body)`` when a concurrent request with the key won."""
    from tryon.records.jobs import create_job
    from tryon.storage import job_prefix

    svc = services()
    session = db_session()
    written: list[str] = []
    try:
        job = create_job(
            session, owner_id=owner, photo_id=photo_id, garment_id=garment_id, engine=engine,
            queue=queue, params=params.to_dict(), max_attempts=svc.settings.max_attempts,
            webhook_url=webhook_url, idempotency_key=key, request_hash=digest if key else None,
            kind=JobKind.COMPOSE, parent_id=parent_id)
        keys = dict(shared or {})
        for role, (data, ctype) in got.blobs.items():
            ext = "jpg" if ctype == "image/jpeg" else "png"
            k = f"{job_prefix(owner, job.id)}/in/{role}.{ext}"
            svc.storage.put(k, data, ctype)
            written.append(k)
            keys[role] = k
        job.params = {**params.to_dict(), "inputs": keys}
        session.flush()
        out = compose_dict(job)
        if key is not None:
            job.response_body = out
        if commit:
            session.commit()
    except IntegrityError:
        session.rollback()
        _delete(written)
        if key is None:
            raise
        replay = _replay(owner, key, digest or "")
        if replay is None:
            raise IdempotencyInFlightError() from None
        return None, replay[0]
    except Exception:
        session.rollback()
        _delete(written)
        raise
    return job, out


def _delete(keys: list[str]) -> None:
    for k in keys:
        try:
            services().storage.delete(k)
        except Exception:  # noqa: BLE001 - the orphan sweep and erasure remove what is left
            log.warning("could not delete %s after a failed create", k)


def compose_dict(job: TryOnJob) -> dict[str, Any]:
    """A try-on's public view plus the job's kind and batch."""
    return {**job_dict(job), "kind": job.kind, "parent_id": job.parent_id}


def own_compose(job_id: str) -> TryOnJob:
    job = db_session().get(TryOnJob, job_id, populate_existing=True)
    if (job is None or job.owner_id != current_principal().account_id
            or job.kind != JobKind.COMPOSE):
        raise NotFoundError("Composition not found.", code="job_not_found")
    return job


@bp.get("/<job_id>")
@bp.doc(**AUTH_DOC)
@roles(Role.SHOPPER)
@bp.output(ComposeOut)
def get_compose(job_id: str) -> dict[str, Any]:
    """Status, progress, error and result URLs of one of your compositions (each result's
    record says what was done: op, boxes, fill)."""
    return compose_dict(own_compose(job_id))


@bp.post("/<job_id>/cancel")
@bp.doc(**AUTH_DOC, responses={409: "Already finished (job_not_cancelable)"})
@roles(Role.SHOPPER)
@bp.output(ComposeOut)
def cancel_compose(job_id: str) -> dict[str, Any]:
    """Cancel a queued or running composition."""
    from tryon.records.jobs import cancel_job

    own_compose(job_id)
    job = cancel_job(db_session(), job_id)
    db_session().commit()
    return compose_dict(job)
