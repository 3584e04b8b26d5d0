"""Merchant pages: catalog grid (search, category filter), add a garment and approve its computed
mask before it is saved, edit, delete, and a sample placement on the shipped demo person."""

from __future__ import annotations

import io
import logging
from typing import Any

from flask import Response, redirect, render_template, request, session, url_for

from tryon.errors import InvalidInputError, NotFoundError, TryOnError
from tryon.records.models import Garment
from tryon.types import GarmentLength, Role
from web.api.common import paginate
from web.auth import current_principal, roles
from web.pages import bp
from web.pages.shopper import CATEGORIES, PAGE_SIZE, catalog_query, image_page_response
from web.services import db_session, services

log = logging.getLogger(__name__)
LENGTHS = [g.value for g in GarmentLength]
#: session key of the garment waiting for its mask to be approved
PENDING = "pending_garment"


def _fields(form: Any) -> dict[str, Any]:
    """Validated name, SKU, category and length from a form (422 on a bad value)."""
    name = form.get("name", "").strip()
    sku = form.get("sku", "").strip() or None
    category = form.get("category", "")
    length = form.get("length", GarmentLength.REGULAR.value)
    if category not in CATEGORIES:
        raise InvalidInputError("Choose a category.", code="invalid_input")
    if length not in LENGTHS:
        raise InvalidInputError("Choose a length.", code="invalid_input")
    if len(name) > 200 or (sku is not None and len(sku) > 100):
        raise InvalidInputError("Name at most 200 characters, SKU at most 100.",
                                code="invalid_input")
    return {"name": name, "sku": sku, "category": category, "length": length}


@bp.get("/shop/garments")
@roles(Role.MERCHANT)
def shop_garments() -> str:
    q = request.args.get("q", "").strip()[:100]
    category = request.args.get("category", "")
    stmt = catalog_query(q, category, owner_id=current_principal().account_id)
    rows, nxt = paginate(db_session(), stmt, Garment, PAGE_SIZE, request.args.get("cursor"))
    return render_template("merchant/garments.html", garments=rows, next_cursor=nxt, q=q,
                           category=category, categories=CATEGORIES)


@bp.get("/shop/garments/new")
@roles(Role.MERCHANT)
def new_garment() -> str:
    return render_template("merchant/new.html", categories=CATEGORIES, lengths=LENGTHS,
                           form={})


@bp.post("/shop/garments/new")
@roles(Role.MERCHANT)
def upload_garment() -> Any:
    """Step 1: store the image and its computed mask; nothing is in the catalog yet."""
    from web.api.garments import prepare_garment

    _discard_pending()
    try:
        fields = _fields(request.form)
        image = request.files.get("image")
        if image is None or not image.filename:
            raise InvalidInputError("Choose a garment image.", code="invalid_input")
        mask = request.files.get("mask")
        prepared = prepare_garment(image, mask if mask is not None and mask.filename else None)
    except TryOnError as exc:
        if exc.http_status >= 500:
            raise
        return render_template("merchant/new.html", categories=CATEGORIES, lengths=LENGTHS,
                               form=request.form, error=exc), exc.http_status
    session[PENDING] = {**prepared.__dict__, **fields}
    return redirect(url_for("pages.review_garment"))


def _pending() -> dict[str, Any]:
    pending = session.get(PENDING)
    if not isinstance(pending, dict) or pending.get("owner_id") != current_principal().account_id:
        raise NotFoundError("No garment is waiting for approval.")
    return pending


def _discard_pending() -> None:
    from web.api.garments import PreparedGarment

    pending = session.pop(PENDING, None)
    if isinstance(pending, dict) and pending.get("owner_id") == current_principal().account_id:
        PreparedGarment(**{k: pending[k] for k in PreparedGarment.__dataclass_fields__}).discard()


@bp.get("/shop/garments/review")
@roles(Role.MERCHANT)
def review_garment() -> str:
    return render_template("merchant/review.html", pending=_pending())


@bp.get("/shop/garments/review/<which>.png")
@roles(Role.MERCHANT)
def pending_image(which: str) -> Response:
    pending = _pending()
    if which != "cutout":
        raise NotFoundError()
    return image_page_response(_cutout_png(pending["image_key"], pending["mask_key"]),
                               "image/png")


@bp.post("/shop/garments/review")
@roles(Role.MERCHANT)
def approve_garment() -> Any:
    """Step 2: approve the mask (the catalog row is made) or discard the upload."""
    from web.api.garments import PreparedGarment, record_garment

    if request.form.get("decision") != "approve":
        _discard_pending()
        return redirect(url_for("pages.new_garment"))
    pending = _pending()
    session.pop(PENDING, None)
    prepared = PreparedGarment(**{k: pending[k] for k in PreparedGarment.__dataclass_fields__})
    g = record_garment(prepared, name=pending["name"], sku=pending["sku"],
                       category=pending["category"], length=pending["length"])
    return redirect(url_for("pages.shop_garment", garment_id=g.id, saved="1"))


@bp.get("/shop/garments/<garment_id>")
@roles(Role.MERCHANT)
def shop_garment(garment_id: str) -> str:
    from web.api.garments import own_garment

    g = own_garment(garment_id)
    return render_template("merchant/garment.html", garment=g, categories=CATEGORIES,
                           lengths=LENGTHS, sample_error=_sample_error(g))


@bp.post("/shop/garments/<garment_id>")
@roles(Role.MERCHANT)
def edit_garment(garment_id: str) -> Any:
    from web.api.garments import own_garment

    g = own_garment(garment_id)
    try:
        fields = _fields(request.form)
    except TryOnError as exc:
        return render_template("merchant/garment.html", garment=g, categories=CATEGORIES,
                               lengths=LENGTHS, error=exc, sample_error=_sample_error(g)), 422
    for k, v in fields.items():
        setattr(g, k, v)
    db_session().commit()
    return redirect(url_for("pages.shop_garment", garment_id=g.id, saved="1"))


@bp.post("/shop/garments/<garment_id>/delete")
@roles(Role.MERCHANT)
def remove_garment(garment_id: str) -> Any:
    from web.api.garments import delete_garment_record, own_garment

    delete_garment_record(own_garment(garment_id))
    return redirect(url_for("pages.shop_garments", deleted="1"))


@bp.get("/shop/garments/<garment_id>/cutout.png")
@roles(Role.MERCHANT)
def garment_cutout(garment_id: str) -> Response:
    from web.api.garments import own_garment

    g = own_garment(garment_id)
    return image_page_response(_cutout_png(g.image_key, g.mask_key), "image/png")


@bp.get("/shop/garments/<garment_id>/sample.png")
@roles(Role.MERCHANT)
def garment_sample(garment_id: str) -> Response:
    from web.api.garments import own_garment

    g = own_garment(garment_id)
    return image_page_response(_sample_png(g), "image/png")


# --- images -------------------------------------------------------------------------------------
def _cutout_png(image_key: str, mask_key: str) -> bytes:
    """The garment over a checkerboard where its mask is off: what will be pasted."""
    import numpy as np
    from PIL import Image

    storage = services().storage
    with Image.open(io.BytesIO(storage.get(image_key))) as im:
        rgb = np.asarray(im.convert("RGB"), dtype=np.uint8)
    with Image.open(io.BytesIO(storage.get(mask_key))) as im:
        mask = np.asarray(im.convert("L"), dtype=np.uint8) > 127
    h, w = mask.shape
    yy, xx = np.mgrid[0:h, 0:w]
    board = np.where(((yy // 16 + xx // 16) % 2 == 0)[..., None], 205, 150).astype(np.uint8)
    out = np.where(mask[..., None], rgb, np.broadcast_to(board, rgb.shape))
    buf = io.BytesIO()
    Image.fromarray(out.astype(np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def demo_person() -> dict[str, Any]:
    """The shipped sample person and its analysis (run once per app through the analyzer
    process: MediaPipe never loads in the web process)."""
    svc = services()
    cached = svc.extra.get("demo_person")
    if cached is None:
        from importlib import resources

        from tryon.vision.analysis_input import analysis_input_from_bytes

        data = (resources.files("tryon") / "assets" / "person_astronaut.png").read_bytes()
        analysis = svc.analyzer(analysis_input_from_bytes(data), CATEGORIES)
        cached = {"png": data, "analysis": analysis}
        svc.extra["demo_person"] = cached
    return cached


def _sample_error(g: Garment) -> str | None:
    try:
        verdict = demo_person()["analysis"].get("verdicts", {}).get(g.category, "pose_not_usable")
    except Exception as exc:  # noqa: BLE001 - the sample is a courtesy; the page still works
        log.warning("demo person analysis failed: %s", type(exc).__name__)
        return "analysis_unavailable"
    return verdict


def _sample_png(g: Garment) -> bytes:
    """The garment cut out and scaled into the placement box computed for its category on the
    demo person, with the box drawn: where it would go (the engines render the real thing)."""
    from PIL import Image, ImageDraw

    demo = demo_person()
    verdict = _sample_error(g)
    placement = demo["analysis"].get("placements", {}).get(g.category)
    if verdict is not None or not placement:
        raise InvalidInputError(f"The demo person cannot show {g.category}: {verdict}.",
                                code=verdict or "pose_not_usable")
    x1, y1, x2, y2 = (int(v) for v in placement["box"])
    storage = services().storage
    with Image.open(io.BytesIO(demo["png"])) as im:
        person = im.convert("RGB")
    with Image.open(io.BytesIO(storage.get(g.image_key))) as im:
        garment = im.convert("RGB")
    with Image.open(io.BytesIO(storage.get(g.mask_key))) as im:
        mask = im.convert("L")
    bbox = mask.getbbox()
    if bbox is not None:
        garment, mask = garment.crop(bbox), mask.crop(bbox)
    # fit inside the box, keeping the garment's aspect ratio, centred
    bw, bh = max(1, x2 - x1), max(1, y2 - y1)
    scale = min(bw / garment.width, bh / garment.height)
    size = (max(1, round(garment.width * scale)), max(1, round(garment.height * scale)))
    garment, mask = garment.resize(size, Image.Resampling.LANCZOS), mask.resize(size)
    ox, oy = x1 + (bw - size[0]) // 2, y1 + (bh - size[1]) // 2
    person.paste(garment, (ox, oy), mask)
    ImageDraw.Draw(person).rectangle((x1, y1, x2 - 1, y2 - 1), outline=(255, 200, 0), width=3)
    buf = io.BytesIO()
    person.save(buf, "PNG")
    return buf.getvalue()

