"""Shopper pages: photos (upload with consent, verdicts, placement overlays), the catalog, try-ons
(start, live progress, result with a before/after comparison and a download), erasure."""

from __future__ import annotations

from typing import Any

from flask import Response, redirect, render_template, request, session, url_for
from sqlalchemy import or_, select

from tryon.errors import InvalidInputError, NotFoundError, TryOnError
from tryon.records.models import Garment, Photo, TryOnJob
from tryon.types import Category, Role
from web.api.common import paginate
from web.auth import current_principal, roles
from web.pages import bp
from web.services import db_session, services

CATEGORIES = [c.value for c in Category]
PAGE_SIZE = 24


def image_page_response(data: bytes, mimetype: str, *, download: str | None = None) -> Response:
    resp = Response(data, mimetype=mimetype)
    resp.headers["Content-Security-Policy"] = "default-src 'none'"
    resp.headers["Content-Disposition"] = (f'attachment; filename="{download}"' if download
                                           else "inline")
    resp.headers["Cache-Control"] = "private, no-store"
    return resp


def _mimetype(key: str) -> str:
    return {"png": "image/png", "jpg": "image/jpeg", "webp": "image/webp"}.get(
        key.rsplit(".", 1)[-1], "application/octet-stream")


def catalog_query(q: str, category: str, owner_id: str | None = None) -> Any:
    """Live garments matching a name/SKU search and a category (all merchants', or one's)."""
    stmt = select(Garment).where(Garment.deleted_at.is_(None))
    if owner_id is not None:
        stmt = stmt.where(Garment.owner_id == owner_id)
    if category in CATEGORIES:
        stmt = stmt.where(Garment.category == category)
    if q:
        like = "%" + q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        stmt = stmt.where(or_(Garment.name.ilike(like, escape="\\"),
                              Garment.sku.ilike(like, escape="\\")))
    return stmt


def live_garment(garment_id: str) -> Garment:
    g = db_session().get(Garment, garment_id)
    if g is None or g.deleted_at is not None:
        raise NotFoundError("Garment not found.", code="garment_not_found")
    return g


# --- photos ---------------------------------------------------------------------------------------
@bp.get("/me/photos")
@roles(Role.SHOPPER)
def my_photos() -> str:
    stmt = select(Photo).where(Photo.owner_id == current_principal().account_id,
                               Photo.deleted_at.is_(None))
    rows, nxt = paginate(db_session(), stmt, Photo, PAGE_SIZE, request.args.get("cursor"))
    return render_template("shopper/photos.html", photos=rows, next_cursor=nxt)


@bp.post("/me/photos")
@roles(Role.SHOPPER)
def upload_my_photo() -> Any:
    from web.api.photos import upload_photo

    image = request.files.get("image")
    try:
        if image is None or not image.filename:
            raise InvalidInputError("Choose a photo to upload.")
        p = upload_photo(image, consent=request.form.get("consent") == "yes")
    except TryOnError as exc:
        if exc.http_status >= 500:
            raise
        stmt = select(Photo).where(Photo.owner_id == current_principal().account_id,
                                   Photo.deleted_at.is_(None))
        rows, nxt = paginate(db_session(), stmt, Photo, PAGE_SIZE, None)
        return render_template("shopper/photos.html", photos=rows, next_cursor=nxt,
                               error=exc), exc.http_status
    return redirect(url_for("pages.my_photo", photo_id=p.id))


@bp.get("/me/photos/<photo_id>")
@roles(Role.SHOPPER)
def my_photo(photo_id: str) -> str:
    from web.api.photos import own_photo

    p = own_photo(photo_id)
    garments = list(db_session().scalars(
        catalog_query("", "").order_by(Garment.created_at.desc()).limit(200)))
    usable = [g for g in garments if p.verdicts.get(g.category, "x") is None]
    return render_template("shopper/photo.html", photo=p, categories=CATEGORIES,
                           garments=usable, selected=request.args.get("garment"))


@bp.get("/me/photos/<photo_id>/image")
@roles(Role.SHOPPER)
def my_photo_image(photo_id: str) -> Response:
    from web.api.photos import own_photo

    p = own_photo(photo_id)
    return image_page_response(services().storage.get(p.image_key), _mimetype(p.image_key))


@bp.get("/me/photos/<photo_id>/placement/<category>.png")
@roles(Role.SHOPPER)
def my_photo_placement(photo_id: str, category: str) -> Response:
    from web.api.photos import own_photo, placement_png

    p = own_photo(photo_id)
    if category not in CATEGORIES:
        raise NotFoundError()
    return image_page_response(placement_png(p, category), "image/png")


@bp.post("/me/photos/<photo_id>/delete")
@roles(Role.SHOPPER)
def delete_my_photo(photo_id: str) -> Any:
    from web.api.photos import delete_photo_record, own_photo

    delete_photo_record(own_photo(photo_id))
    return redirect(url_for("pages.my_photos", deleted="1"))


# --- catalog ----------------------------------------------------------------------------------
@bp.get("/catalog")
@roles(Role.SHOPPER)
def catalog() -> str:
    q = request.args.get("q", "").strip()[:100]
    category = request.args.get("category", "")
    stmt = catalog_query(q, category)
    rows, nxt = paginate(db_session(), stmt, Garment, PAGE_SIZE, request.args.get("cursor"))
    photos = list(db_session().scalars(
        select(Photo).where(Photo.owner_id == current_principal().account_id,
                            Photo.deleted_at.is_(None)).order_by(Photo.created_at.desc())
        .limit(20)))
    return render_template("shopper/catalog.html", garments=rows, next_cursor=nxt, q=q,
                           category=category, categories=CATEGORIES, photos=photos)


@bp.get("/catalog/<garment_id>/image")
@roles(Role.SHOPPER, Role.MERCHANT)
def garment_image(garment_id: str) -> Response:
    g = live_garment(garment_id)
    if current_principal().role == Role.MERCHANT and g.owner_id != current_principal().account_id:
        raise NotFoundError("Garment not found.", code="garment_not_found")
    return image_page_response(services().storage.get(g.image_key), _mimetype(g.image_key))


# --- try-ons ----------------------------------------------------------------------------------
@bp.post("/me/tryons")
@roles(Role.SHOPPER)
def start_my_tryon() -> Any:
    from marshmallow import ValidationError

    from web.api.tryons import start_tryon
    from web.schemas import TryOnIn

    raw: dict[str, Any] = {"photo_id": request.form.get("photo_id", ""),
                           "garment_id": request.form.get("garment_id", ""),
                           "mask": request.form.get("mask") or "box"}
    if request.form.get("engine"):
        raw["engine"] = request.form["engine"]
    try:
        body = TryOnIn().load(raw)
    except ValidationError as exc:
        return _photo_error(raw["photo_id"], InvalidInputError(
            f"Choose one of your photos and a garment ({exc.messages})."))
    # one idempotency key per rendered form: a double-submitted form starts one job
    form_key = request.form.get("form_id", "")
    key = f"page-{form_key}" if 8 <= len(form_key) <= 64 and form_key.isalnum() else None
    try:
        out, _ = start_tryon(body, key)
    except TryOnError as exc:
        if exc.http_status >= 500:
            raise
        return _photo_error(raw["photo_id"], exc)
    return redirect(url_for("pages.my_tryon", job_id=out["id"]))


def _photo_error(photo_id: str, exc: TryOnError) -> Any:
    from web.api.photos import own_photo

    p = own_photo(photo_id)  # 404 when not the caller's
    garments = list(db_session().scalars(catalog_query("", "").limit(200)))
    usable = [g for g in garments if p.verdicts.get(g.category, "x") is None]
    return render_template("shopper/photo.html", photo=p, categories=CATEGORIES,
                           garments=usable, error=exc, selected=None), exc.http_status


@bp.get("/me/tryons")
@roles(Role.SHOPPER)
def my_tryons() -> str:
    stmt = select(TryOnJob).where(TryOnJob.owner_id == current_principal().account_id,
                                  TryOnJob.kind == "tryon")
    rows, nxt = paginate(db_session(), stmt, TryOnJob, PAGE_SIZE, request.args.get("cursor"))
    names = _garment_names([j.garment_id for j in rows if j.garment_id])
    return render_template("shopper/tryons.html", jobs=rows, next_cursor=nxt, names=names)


def _garment_names(ids: list[str]) -> dict[str, str]:
    if not ids:
        return {}
    return {g.id: g.name or g.sku or g.id[:8] for g in db_session().scalars(
        select(Garment).where(Garment.id.in_(set(ids))))}


@bp.get("/me/tryons/<job_id>")
@roles(Role.SHOPPER)
def my_tryon(job_id: str) -> str:
    from web.api.tryons import job_dict, own_job

    job = own_job(job_id)
    return render_template("shopper/tryon.html", job=job, view=job_dict(job),
                           names=_garment_names([job.garment_id] if job.garment_id else []))


@bp.get("/me/tryons/<job_id>/status.json")
@roles(Role.SHOPPER)
def my_tryon_status(job_id: str) -> dict[str, Any]:
    """What the progress script polls: status, stage, percent, error (no result URLs)."""
    from web.api.tryons import own_job

    job = own_job(job_id)
    return {"status": job.status, "stage": job.stage,
            "progress": round(float(job.progress or 0.0) * 100.0, 1),
            "error": {"code": job.error_code, "message": job.error_message or ""}
            if job.error_code else None}


@bp.get("/me/tryons/<job_id>/results/<int:index>.png")
@roles(Role.SHOPPER)
def my_result(job_id: str, index: int) -> Response:
    from web.api.tryons import own_job, result_png

    job = own_job(job_id)
    download = f"tryon-{job.id[:8]}-{index}.png" if request.args.get("download") else None
    return image_page_response(result_png(job, index), "image/png", download=download)


@bp.post("/me/tryons/<job_id>/cancel")
@roles(Role.SHOPPER)
def cancel_my_tryon(job_id: str) -> Any:
    from tryon.records.jobs import cancel_job
    from web.api.tryons import own_job

    own_job(job_id)
    cancel_job(db_session(), job_id)
    db_session().commit()
    return redirect(url_for("pages.my_tryon", job_id=job_id))


# --- erasure ----------------------------------------------------------------------------------
@bp.get("/me/erase")
@roles(Role.SHOPPER)
def erase_form() -> str:
    return render_template("shopper/erase.html")


@bp.post("/me/erase")
@roles(Role.SHOPPER)
def erase_me() -> Any:
    from tryon.records.erasure import erase_account

    if request.form.get("confirm") != "ERASE":
        return render_template("shopper/erase.html", error="Type ERASE to confirm."), 422
    erase_account(db_session(), services().storage, current_principal().account_id)
    session.clear()
    return render_template("sign_in.html", notice="Your photos, try-ons and keys were erased.",
                           next=None)
