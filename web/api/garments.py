"""Merchant catalog: create, list, get and delete garments."""

from __future__ import annotations

import logging
from typing import Any

from apiflask import APIBlueprint
from sqlalchemy import select

from tryon.errors import NotFoundError
from tryon.records.models import Garment, TryOnJob, utcnow
from tryon.types import Role
from web.api.common import AUTH_DOC, cancel_open_job, consumes, iso, paginate, read_upload
from web.auth import current_principal, roles
from web.schemas import GarmentIn, GarmentOut, GarmentPage, PageQuery
from web.services import db_session, services

log = logging.getLogger(__name__)
bp = APIBlueprint("garments", __name__, tag="Garments (merchants)", url_prefix="/v1/garments")

_EXT = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp"}


def garment_dict(g: Garment) -> dict[str, Any]:
    return {
        "id": g.id, "name": g.name, "sku": g.sku, "category": g.category, "length": g.length,
        "width": g.width, "height": g.height, "mask_source": g.mask_source,
        "mask_score": round(float(g.mask_score), 4), "image_sha256": g.image_sha256,
        "created_at": iso(g.created_at),
    }


def _own_garment(garment_id: str) -> Garment:
    g = db_session().get(Garment, garment_id)
    if g is None or g.deleted_at is not None or g.owner_id != current_principal().account_id:
        raise NotFoundError("Garment not found.", code="garment_not_found")
    return g


@bp.post("")
@bp.doc(**AUTH_DOC, responses={201: "Created", 413: "Too large", 415: "Unsupported format",
                               422: "Not usable (e.g. garment_not_separable)"})
@roles(Role.MERCHANT)
@consumes("multipart/form-data")
@bp.input(GarmentIn, location="form_and_files", arg_name="form")
@bp.output(GarmentOut, status_code=201)
def create_garment(form: dict[str, Any]) -> dict[str, Any]:
    """Upload a garment photo (multipart: image, category, length, name, sku, optional mask)."""
    import numpy as np

    from tryon.images import IntakeLimits, decode_mask, encode_png, normalize_upload
    from tryon.storage import new_key
    from tryon.vision.masks import garment_mask

    svc = services()
    limits = IntakeLimits.from_settings(svc.settings).for_garments()
    owner = current_principal().account_id
    # 1. decode and normalize (keeps transparency: a cut-out PNG is its own mask)
    image = normalize_upload(read_upload(form["image"], limits.max_bytes), limits, keep_alpha=True)
    # 2. garment mask: uploaded, else alpha, else background removal (422 if not separable)
    uploaded = None
    if form.get("mask") is not None:
        uploaded = decode_mask(read_upload(form["mask"], limits.max_bytes), image.size, limits)
    gm = garment_mask(image.rgb, alpha=image.alpha, uploaded=uploaded)
    # 3. store the normalized image and the mask under server-made keys
    image_key = new_key("garments", owner, _EXT[image.content_type])
    mask_key = new_key("masks", owner, "png")
    svc.storage.put(image_key, image.encoded, image.content_type)
    svc.storage.put(mask_key, encode_png((gm.mask * 255).astype(np.uint8)), "image/png")
    # 4. record
    session = db_session()
    g = Garment(
        owner_id=owner, name=form.get("name") or "", sku=form.get("sku"),
        category=form["category"], length=form["length"], image_key=image_key,
        mask_key=mask_key, mask_source=gm.source, mask_score=float(gm.score),
        image_sha256=image.sha256, width=image.size[0], height=image.size[1],
    )
    session.add(g)
    try:
        session.commit()
    except Exception:
        session.rollback()
        for key in (image_key, mask_key):
            svc.storage.delete(key)
        raise
    log.info("garment=%s created owner=%s mask_source=%s", g.id, owner, gm.source)
    return garment_dict(g)


@bp.get("")
@bp.doc(**AUTH_DOC)
@roles(Role.MERCHANT)
@bp.input(PageQuery, location="query", arg_name="query")
@bp.output(GarmentPage)
def list_garments(query: dict[str, Any]) -> dict[str, Any]:
    """List your garments, newest first (`cursor` from the previous page's `next_cursor`)."""
    stmt = select(Garment).where(
        Garment.owner_id == current_principal().account_id, Garment.deleted_at.is_(None)
    )
    rows, nxt = paginate(db_session(), stmt, Garment, query["limit"], query["cursor"])
    return {"items": [garment_dict(g) for g in rows], "next_cursor": nxt}


@bp.get("/<garment_id>")
@bp.doc(**AUTH_DOC)
@roles(Role.MERCHANT)
@bp.output(GarmentOut)
def get_garment(garment_id: str) -> dict[str, Any]:
    """Get one of your garments."""
    return garment_dict(_own_garment(garment_id))


@bp.delete("/<garment_id>")
@bp.doc(**AUTH_DOC, responses={204: "Deleted"})
@roles(Role.MERCHANT)
@bp.output({}, status_code=204)
def delete_garment(garment_id: str) -> tuple[str, int]:
    """Delete a garment: open try-ons using it are canceled, its files removed (with the
    engine data derived from it)."""
    from tryon.storage import derived_prefix

    svc = services()
    session = db_session()
    g = _own_garment(garment_id)
    g.deleted_at = utcnow()
    keys = [g.image_key, g.mask_key]
    # every derived object lives under this prefix, recorded in g.derived or not (a worker
    # may have stored one and lost the race to record it)
    prefix = derived_prefix(g.owner_id, g.id)
    open_jobs = session.scalars(
        select(TryOnJob.id).where(TryOnJob.garment_id == g.id,
                                  TryOnJob.status.in_(("queued", "running")))
    ).all()
    for job_id in open_jobs:
        cancel_open_job(session, job_id)
    session.commit()
    for key in keys:
        svc.storage.delete(key)
    svc.storage.delete_prefix(prefix)
    return "", 204
