"""The `mask` field of POST /v1/tryons, the person mask stored at photo upload (and deleted
with the photo), and a garment delete removing its derived engine data."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pytest
from PIL import Image
from webapi_support import Ctx, jpeg_bytes, png_bytes

from tryon.records.models import Photo, TryOnJob
from tryon.storage import derived_key


def _post(ctx: Ctx, body: dict[str, Any], key: str | None = None) -> Any:
    extra = {"Idempotency-Key": key} if key else {}
    return ctx.client.post("/v1/tryons", json=body, headers=ctx.h("shopper_a", **extra))


def test_mask_field_defaults_to_box_and_is_stored(ctx: Ctx) -> None:
    photo, garment = ctx.add_photo("shopper_a"), ctx.add_garment("merchant_x")
    r = _post(ctx, {"photo_id": photo, "garment_id": garment, "mask": "shape"})
    assert r.status_code == 202, r.get_json()
    assert r.get_json()["params"]["mask"] == "shape"
    r = _post(ctx, {"photo_id": photo, "garment_id": garment})
    assert r.status_code == 202 and r.get_json()["params"]["mask"] == "box"
    with ctx.factory() as s:
        assert s.get(TryOnJob, r.get_json()["id"]).params["mask"] == "box"


@pytest.mark.parametrize("value", ["blob", "", "SHAPE", 1, None])
def test_mask_field_is_validated(ctx: Ctx, value: Any) -> None:
    photo, garment = ctx.add_photo("shopper_a"), ctx.add_garment("merchant_x")
    r = _post(ctx, {"photo_id": photo, "garment_id": garment, "mask": value})
    assert r.status_code == 422 and r.get_json()["error"]["code"] == "invalid_input"
    assert ctx.publisher.published == []


def test_mask_is_part_of_the_idempotent_request(ctx: Ctx) -> None:
    photo, garment = ctx.add_photo("shopper_a"), ctx.add_garment("merchant_x")
    body = {"photo_id": photo, "garment_id": garment}
    first = _post(ctx, body, key="k1")
    # an explicit default is the same request; another mask is another request
    assert _post(ctx, {**body, "mask": "box"}, key="k1").get_json() == first.get_json()
    other = _post(ctx, {**body, "mask": "shape"}, key="k1")
    assert other.status_code == 422 and other.get_json()["error"]["code"] == "idempotency_mismatch"


def test_openapi_documents_the_mask_field(ctx: Ctx) -> None:
    spec = ctx.client.get("/openapi.json").get_json()
    prop = spec["components"]["schemas"]["TryOnIn"]["properties"]["mask"]
    assert prop["enum"] == ["box", "shape"] and prop["default"] == "box"
    assert "silhouette" in prop["description"]


def _mask_png(w: int, h: int) -> bytes:
    m = np.zeros((h, w), np.uint8)
    m[:, w // 3: 2 * w // 3] = 255
    return png_bytes(m)


def _upload(ctx: Ctx) -> Any:
    return ctx.client.post(
        "/v1/photos", headers=ctx.h("shopper_a"), content_type="multipart/form-data",
        data={"image": (io.BytesIO(jpeg_bytes()), "me.jpg", "image/jpeg"), "consent": "true"})


def test_upload_stores_the_person_mask_and_delete_removes_it(ctx: Ctx) -> None:
    fake = ctx.analyzer

    def with_mask(photo: Any, categories: Any = None) -> dict[str, Any]:
        out = fake(photo, categories)
        w, h = out["image_size"]
        return {**out, "person_mask_png": _mask_png(w, h)}

    ctx.app.extensions["tryon"].analyzer = with_mask
    r = _upload(ctx)
    assert r.status_code == 201, r.get_json()
    pid = r.get_json()["id"]
    assert "person_mask_png" not in r.get_json() and "person_mask_key" not in r.get_json()
    with ctx.factory() as s:
        photo = s.get(Photo, pid)
        key = photo.person_mask_key
    assert key and key.startswith(f"personmasks/{ctx.ids['shopper_a']}/")
    with Image.open(io.BytesIO(ctx.storage.get(key))) as im:
        assert im.mode == "L" and im.size == (photo.width, photo.height)
    assert ctx.client.delete(f"/v1/photos/{pid}", headers=ctx.h("shopper_a")).status_code == 204
    assert not ctx.storage.exists(key) and not ctx.storage.exists(photo.image_key)


def test_upload_without_a_person_mask_leaves_the_column_empty(ctx: Ctx) -> None:
    r = _upload(ctx)  # the plain fake analyzer returns no mask
    assert r.status_code == 201
    with ctx.factory() as s:
        assert s.get(Photo, r.get_json()["id"]).person_mask_key is None
    assert not (ctx.settings.resolved_storage_root / "personmasks").exists()


def test_garment_delete_removes_its_derived_objects(ctx: Ctx) -> None:
    gid = ctx.add_garment("merchant_x")
    other = ctx.add_garment("merchant_x")
    owner = ctx.ids["merchant_x"]
    recorded = derived_key(owner, gid, "ref-" + "a" * 40)
    unrecorded = derived_key(owner, gid, "tok-" + "b" * 40)
    kept = derived_key(owner, other, "ref-" + "a" * 40)
    for k in (recorded, unrecorded, kept):
        ctx.storage.put(k, b"x", "application/octet-stream")
    assert ctx.client.delete(f"/v1/garments/{gid}", headers=ctx.h("merchant_x")).status_code == 204
    assert not ctx.storage.exists(recorded) and not ctx.storage.exists(unrecorded)
    assert ctx.storage.exists(kept)
