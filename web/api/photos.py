"""Shopper photos: upload (validated by the pre-flight analysis), get, delete, placement preview."""

from __future__ import annotations

import io
import logging
from typing import Any

from apiflask import APIBlueprint
from flask import Response
from sqlalchemy import select

from tryon.errors import (
    InvalidInputError,
    NotFoundError,
    PreflightError,
    TryOnError,
    all_error_classes,
)
from tryon.records.models import Photo, utcnow
from tryon.types import Category, Role
from web.api.common import (
    AUTH_DOC,
    consumes,
    iso,
    paginate,
    png_responses,
    read_upload,
)
from web.auth import current_principal, roles
from web.schemas import PageQuery, PhotoIn, PhotoOut, PhotoPage, PlacementQuery
from web.services import db_session, services

log = logging.getLogger(__name__)
bp = APIBlueprint("photos", __name__, tag="Photos (shoppers)", url_prefix="/v1/photos")

#: when no category is usable, report the most fundamental reason first
_REASON_PRIORITY = ("no_person", "multiple_people", "person_too_small", "pose_not_usable")


def photo_dict(p: Photo) -> dict[str, Any]:
    return {
        "id": p.id, "width": p.width, "height": p.height, "verdicts": dict(p.verdicts),
        "usable_categories": sorted(c for c, v in p.verdicts.items() if v is None),
        "placements": dict(p.placements), "consent_at": iso(p.consent_at),
        "created_at": iso(p.created_at),
    }


def own_photo(photo_id: str) -> Photo:
    p = db_session().get(Photo, photo_id)
    if p is None or p.deleted_at is not None or p.owner_id != current_principal().account_id:
        raise NotFoundError("Photo not found.", code="photo_not_found")
    return p


def verdict_error(code: str, details: dict[str, Any] | None) -> TryOnError:
    """Rebuild the typed pre-flight error for ``code`` with the analysis's message and
    details (``missing``, ``reason``, ``boxes``...) when given."""
    info = dict(details or {})
    message = info.pop("message", None)
    info.pop("code", None)
    for cls in all_error_classes():
        if cls.code == code and issubclass(cls, PreflightError):
            return cls(message, **info)
    return PreflightError(message or "The photo cannot be used.", code=code, **info)


def stored_verdict_error(p: Photo, category: str) -> TryOnError:
    """The pre-flight error recorded for ``category`` on photo ``p``."""
    code = p.verdicts.get(category) or "pose_not_usable"
    return verdict_error(code, (p.verdict_details or {}).get(category))


@bp.post("")
@bp.doc(**AUTH_DOC, responses={201: "Created", 413: "Too large", 415: "Unsupported format",
                               422: "Not usable: no_person, multiple_people, pose_not_usable..."})
@roles(Role.SHOPPER)
@consumes("multipart/form-data")
@bp.input(PhotoIn, location="form_and_files", arg_name="form")
@bp.output(PhotoOut, status_code=201)
def create_photo(form: dict[str, Any]) -> dict[str, Any]:
    """Upload a photo of yourself (multipart: image, consent=true); it is checked at once."""
    return photo_dict(upload_photo(form["image"], consent=form["consent"]))


def upload_photo(image_file: Any, *, consent: bool) -> Photo:
    """Check, store and record an uploaded photo of the caller (the API and the pages)."""
    from tryon.images import IntakeLimits, normalize_upload
    from tryon.storage import new_key
    from tryon.vision.analysis_input import analysis_input

    if not consent:
        raise InvalidInputError("Set consent=true to agree to the photo being processed.",
                                code="consent_required")
    svc = services()
    limits = IntakeLimits.from_settings(svc.settings)
    owner = current_principal().account_id
    # 1. decode and normalize (EXIF applied and stripped, re-encoded)
    image = normalize_upload(read_upload(image_file, limits.max_bytes), limits)
    # 2. pre-flight: pose and people, one verdict per category (in the analysis process), on
    # the intake's pixels reduced once to analysis resolution: the stored bytes are never
    # decoded again (a full-size PNG decode was most of a 2048 px pre-flight)
    analysis = svc.analyzer(analysis_input(image.rgb), [c.value for c in Category])
    verdicts: dict[str, str | None] = dict(analysis.get("verdicts", {}))
    if not verdicts or all(v is not None for v in verdicts.values()):
        codes = [v for v in verdicts.values() if v]
        code = next((c for c in _REASON_PRIORITY if c in codes), codes[0] if codes else "no_person")
        cat = next((k for k, v in verdicts.items() if v == code), None)
        raise verdict_error(code, analysis.get("details", {}).get(cat or "", {}))
    # 3. store and record (the person mask too, for shape-aware target masks)
    key = new_key("photos", owner, "jpg" if image.content_type == "image/jpeg" else "png")
    svc.storage.put(key, image.encoded, image.content_type)
    keys = [key]
    mask_png = analysis.get("person_mask_png")
    mask_key = None
    try:
        if isinstance(mask_png, bytes) and mask_png:
            mask_key = new_key("personmasks", owner, "png")
            svc.storage.put(mask_key, mask_png, "image/png")
            keys.append(mask_key)
        session = db_session()
        p = Photo(
            owner_id=owner, image_key=key, image_sha256=image.sha256, width=image.size[0],
            height=image.size[1], pose=analysis.get("pose"), verdicts=verdicts,
            placements=dict(analysis.get("placements", {})), consent_at=utcnow(),
            person_mask_key=mask_key, verdict_details=dict(analysis.get("details", {})),
            body={"spans": dict(analysis.get("spans") or {}),
                  "on_body": list(analysis.get("on_body") or [])},
        )
        session.add(p)
        session.commit()
    except Exception:
        db_session().rollback()
        for k in keys:
            svc.storage.delete(k)
        raise
    log.info("photo=%s created owner=%s usable=%s", p.id, owner,
             [c for c, v in verdicts.items() if v is None])
    return p


@bp.get("")
@bp.doc(**AUTH_DOC)
@roles(Role.SHOPPER)
@bp.input(PageQuery, location="query", arg_name="query")
@bp.output(PhotoPage)
def list_photos(query: dict[str, Any]) -> dict[str, Any]:
    """List your photos, newest first."""
    stmt = select(Photo).where(
        Photo.owner_id == current_principal().account_id, Photo.deleted_at.is_(None)
    )
    rows, nxt = paginate(db_session(), stmt, Photo, query["limit"], query["cursor"])
    return {"items": [photo_dict(p) for p in rows], "next_cursor": nxt}


@bp.get("/<photo_id>")
@bp.doc(**AUTH_DOC)
@roles(Role.SHOPPER)
@bp.output(PhotoOut)
def get_photo(photo_id: str) -> dict[str, Any]:
    """Get one of your photos with its verdicts and placement boxes."""
    return photo_dict(own_photo(photo_id))


@bp.delete("/<photo_id>")
@bp.doc(**AUTH_DOC, responses={204: "Deleted"})
@roles(Role.SHOPPER)
@bp.output({}, status_code=204)
def delete_photo(photo_id: str) -> tuple[str, int]:
    """Delete a photo and everything made from it: open try-ons are canceled, results removed."""
    delete_photo_record(own_photo(photo_id))
    return "", 204


def delete_photo_record(p: Photo) -> None:
    """Delete ``p`` and everything made from it: open try-ons are canceled, then objects, then
    rows (a storage failure leaves the photo intact and the delete can be repeated; rows
    committed first would orphan its objects)."""
    from tryon.records.erasure import delete_photos

    delete_photos(db_session(), services().storage, [p.id], keep_rows=True)


@bp.get("/<photo_id>/placement")
@bp.doc(**AUTH_DOC, responses=png_responses(_422="The photo is not usable for this category"))
@roles(Role.SHOPPER)
@bp.input(PlacementQuery, location="query", arg_name="query")
def placement_preview(photo_id: str, query: dict[str, Any]) -> Response:
    """The photo with the pose and the placement box for `category` drawn on it (PNG)."""
    png = placement_png(own_photo(photo_id), query["category"])
    resp = Response(png, mimetype="image/png")
    resp.headers["Content-Security-Policy"] = "default-src 'none'"
    return resp


def placement_png(p: Photo, category: str) -> bytes:
    """The photo with the pose and the placement box for ``category`` drawn on it (PNG);
    the typed pre-flight error when the photo is not usable for it."""
    import numpy as np
    from PIL import Image

    from tryon.vision.overlay import render_overlay
    from tryon.vision.placement import Placement
    from tryon.vision.pose import PoseResult

    verdict = p.verdicts.get(category, "pose_not_usable")
    if verdict is not None or category not in p.placements:
        raise stored_verdict_error(p, category)
    data = services().storage.get(p.image_key)
    with Image.open(io.BytesIO(data), formats=["JPEG", "PNG"]) as im:
        rgb = np.asarray(im.convert("RGB"), dtype=np.uint8)
    png = render_overlay(
        rgb,
        pose=PoseResult.from_dict(p.pose) if p.pose else None,
        placement=Placement.from_dict(p.placements[category]),
    )
    return png
