"""Merchant catalog: create, list, get and delete garments."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from apiflask import APIBlueprint
from sqlalchemy import select

from tryon.errors import NotFoundError
from tryon.records.models import Garment, TryOnJob, utcnow
from tryon.types import Role
from web.api.common import AUTH_DOC, consumes, iso, paginate, read_upload
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


def own_garment(garment_id: str) -> Garment:
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
    prepared = prepare_garment(form["image"], form.get("mask"))
    g = record_garment(prepared, name=form.get("name") or "", sku=form.get("sku"),
                       category=form["category"], length=form["length"])
    return garment_dict(g)


@dataclass(frozen=True)
class PreparedGarment:
    """A normalized garment image and its computed mask, stored but not yet recorded."""

    owner_id: str
    image_key: str
    mask_key: str
    mask_source: str
    mask_score: float
    image_sha256: str
    width: int
    height: int

    def discard(self) -> None:
        for key in (self.image_key, self.mask_key):
            services().storage.delete(key)


def prepare_garment(image_file: Any, mask_file: Any = None) -> PreparedGarment:
    """Decode, normalize and mask an uploaded garment and store both files (the API and the
    pages' approve-the-mask flow share this; :func:`record_garment` makes it a catalog row)."""
    import numpy as np

    from tryon.images import IntakeLimits, decode_mask, encode_png, normalize_upload
    from tryon.storage import new_key
    from tryon.vision.masks import garment_mask

    svc = services()
    limits = IntakeLimits.from_settings(svc.settings).for_garments()
    owner = current_principal().account_id
    # 1. decode and normalize (keeps transparency: a cut-out PNG is its own mask)
    image = normalize_upload(read_upload(image_file, limits.max_bytes), limits, keep_alpha=True)
    # 2. garment mask: uploaded, else alpha, else background removal (422 if not separable)
    uploaded = None
    if mask_file is not None:
        uploaded = decode_mask(read_upload(mask_file, limits.max_bytes), image.size, limits)
    gm = garment_mask(image.rgb, alpha=image.alpha, uploaded=uploaded)
    # 3. store the normalized image and the mask under server-made keys
    image_key = new_key("garments", owner, _EXT[image.content_type])
    mask_key = new_key("masks", owner, "png")
    svc.storage.put(image_key, image.encoded, image.content_type)
    svc.storage.put(mask_key, encode_png((gm.mask * 255).astype(np.uint8)), "image/png")
    return PreparedGarment(owner, image_key, mask_key, gm.source, float(gm.score), image.sha256,
                           image.size[0], image.size[1])


def record_garment(prepared: PreparedGarment, *, name: str, sku: str | None, category: str,
                   length: str) -> Garment:
    """Commit the catalog row for stored garment files (they are deleted if that fails)."""
    session = db_session()
    g = Garment(
        owner_id=prepared.owner_id, name=name, sku=sku, category=category, length=length,
        image_key=prepared.image_key, mask_key=prepared.mask_key,
        mask_source=prepared.mask_source, mask_score=prepared.mask_score,
        image_sha256=prepared.image_sha256, width=prepared.width, height=prepared.height,
    )
    session.add(g)
    try:
        session.commit()
    except Exception:
        session.rollback()
        prepared.discard()
        raise
    log.info("garment=%s created owner=%s mask_source=%s", g.id, g.owner_id, g.mask_source)
    return g


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
    return garment_dict(own_garment(garment_id))


@bp.delete("/<garment_id>")
@bp.doc(**AUTH_DOC, responses={204: "Deleted"})
@roles(Role.MERCHANT)
@bp.output({}, status_code=204)
def delete_garment(garment_id: str) -> tuple[str, int]:
    """Delete a garment: open try-ons using it are canceled, its files removed (with the
    engine data derived from it)."""
    delete_garment_record(own_garment(garment_id))
    return "", 204


def delete_garment_record(g: Garment) -> None:
    """Soft-delete ``g``: open try-ons using it are canceled, its files and every object derived
    from it removed."""
    from tryon.records.erasure import cancel_open_jobs
    from tryon.storage import derived_prefix

    svc = services()
    session = db_session()
    g.deleted_at = utcnow()
    keys = [g.image_key, g.mask_key]
    # every derived object (engine caches, tryon.storage.derived_key) lives under this prefix
    prefix = derived_prefix(g.owner_id, g.id)
    open_jobs = session.scalars(
        select(TryOnJob.id).where(TryOnJob.garment_id == g.id,
                                  TryOnJob.status.in_(("queued", "running")))
    ).all()
    cancel_open_jobs(session, open_jobs)
    session.commit()
    for key in keys:
        svc.storage.delete(key)
    svc.storage.delete_prefix(prefix)
