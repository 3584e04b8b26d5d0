"""Uploads through the API (S-2, S-7, S-8), size limits (S-1), error bodies and headers (S-16),
the OpenAPI document, readiness and database outages (R-14)."""

from __future__ import annotations

import io
import json
from typing import Any

import numpy as np
import pytest
from PIL import Image
from webapi_support import Ctx, garment_png, jpeg_bytes, make_ctx, png_bytes

from tryon.records.models import Garment


def _upload_photo(ctx: Ctx, data: bytes, name: str = "me.jpg", consent: str = "true",
                  who: str = "shopper_a") -> Any:
    return ctx.client.post(
        "/v1/photos", headers=ctx.h(who), content_type="multipart/form-data",
        data={"image": (io.BytesIO(data), name, "image/jpeg"), "consent": consent})


def _assert_error(resp: Any, status: int, code: str | None = None) -> None:
    assert resp.status_code == status, resp.get_data(as_text=True)[:300]
    body = resp.get_json()
    assert set(body) == {"error"} and {"code", "message"} <= set(body["error"])
    if code:
        assert body["error"]["code"] == code
    text = resp.get_data(as_text=True)
    assert "Traceback" not in text and 'File "' not in text
    assert resp.headers["Cache-Control"] == "no-store"
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    assert resp.mimetype == "application/json"


# --- photos ----------------------------------------------------------------------------------


def test_photo_upload_stores_normalized_copy_under_uuid_key(ctx: Ctx) -> None:
    arr = np.random.default_rng(1).integers(0, 256, (500, 400, 3), dtype=np.uint8)
    buf = io.BytesIO()
    exif = Image.Exif()
    exif[0x010F] = "SecretCam"  # Make
    Image.fromarray(arr).save(buf, "JPEG", exif=exif)
    payload = buf.getvalue() + b"PK\x03\x04<script>alert(1)</script>"
    r = _upload_photo(ctx, payload, name="../../etc/passwd")
    assert r.status_code == 201, r.get_json()
    body = r.get_json()
    assert body["usable_categories"] and body["consent_at"]
    root = ctx.settings.resolved_storage_root
    files = list((root / "photos").rglob("*"))
    stored = [f for f in files if f.is_file()]
    assert len(stored) == 1 and "passwd" not in str(stored[0])
    data = stored[0].read_bytes()
    assert b"<script>" not in data and b"SecretCam" not in data
    assert ctx.analyzer.calls == 1


def test_photo_upload_hands_the_analyzer_the_intake_pixels_not_the_stored_bytes(
    ctx: Ctx, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 10.6: the analysis gets the pixels the intake decoded, reduced once to analysis
    resolution, and the stored photo's size; nothing decodes the stored (PNG) photo again."""
    import cv2

    from tryon.vision.analysis_input import ANALYSIS_SIDE, AnalysisInput, reduce_for_analysis

    rng = np.random.default_rng(2)
    raw = rng.integers(0, 256, (900, 1600, 3), dtype=np.uint8)  # sideways, EXIF says rotate
    buf = io.BytesIO()
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(raw).save(buf, "JPEG", exif=exif)
    opened: list[bytes] = []  # every encoded image decoded while the upload runs
    pil_open, cv_decode = Image.open, cv2.imdecode

    def spy_open(fp: Any, *a: Any, **k: Any) -> Any:
        if isinstance(fp, io.BytesIO):
            opened.append(fp.getvalue())
        return pil_open(fp, *a, **k)

    def spy_decode(data: Any, *a: Any, **k: Any) -> Any:
        opened.append(bytes(np.asarray(data, np.uint8)))
        return cv_decode(data, *a, **k)

    with monkeypatch.context() as m:
        m.setattr(Image, "open", spy_open)
        m.setattr(cv2, "imdecode", spy_decode)
        r = _upload_photo(ctx, buf.getvalue())
    assert r.status_code == 201, r.get_json()
    body = r.get_json()
    assert (body["width"], body["height"]) == (900, 1600)
    [photo] = ctx.analyzer.inputs
    assert isinstance(photo, AnalysisInput) and not isinstance(photo, bytes)
    assert photo.photo_size == (900, 1600)
    assert photo.image.shape == (ANALYSIS_SIDE, 360, 3)
    stored = next(f for f in (ctx.settings.resolved_storage_root / "photos").rglob("*")
                  if f.is_file())
    again = sum(data == stored.read_bytes() for data in opened)
    assert again == 0, "the stored photo was decoded again in the upload path"
    with Image.open(stored) as im:
        assert im.format == "PNG"  # rotated: stored lossless as PNG
        full = np.asarray(im.convert("RGB"))
    assert np.array_equal(photo.image, reduce_for_analysis(full))


@pytest.mark.parametrize(
    "payload,name,status,code",
    [
        (b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>', "x.svg", 415, "unsupported_format"),
        (b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg"/>', "x.png", 415, "unsupported_format"),
        (b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n", "x.jpg", 415, "unsupported_format"),
        (b"%PDF-1.4\n1 0 obj<<>>endobj\n", "x.jpg", 415, "unsupported_format"),
        (b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic", "x.heic", 415, "unsupported_format"),
        (b"PK\x03\x04" + b"\x00" * 40, "x.jpg", 415, "unsupported_format"),
        (b"", "x.jpg", None, None),
    ],
)
def test_bad_uploads(ctx: Ctx, payload: bytes, name: str, status: int | None, code: str | None) -> None:
    r = _upload_photo(ctx, payload, name=name)
    if status is None:
        assert 400 <= r.status_code < 500
        _assert_error(r, r.status_code)
    else:
        _assert_error(r, status, code)
    assert ctx.analyzer.calls == 0


def test_truncated_and_tiny_images(ctx: Ctx) -> None:
    _assert_error(_upload_photo(ctx, jpeg_bytes()[:300]), 422, "corrupt_image")
    _assert_error(_upload_photo(ctx, jpeg_bytes(size=(32, 32))), 422, "image_too_small")


def test_header_bomb_is_refused(ctx: Ctx) -> None:
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 100000, 100000, 8, 2, 0, 0, 0)) + chunk(b"IEND", b"")
    r = _upload_photo(ctx, png, name="bomb.png")
    assert r.status_code in (413, 422)
    _assert_error(r, r.status_code)


def test_consent_required(ctx: Ctx) -> None:
    _assert_error(_upload_photo(ctx, jpeg_bytes(), consent="false"), 422, "consent_required")
    r = ctx.client.post("/v1/photos", headers=ctx.h("shopper_a"), content_type="multipart/form-data",
                        data={"image": (io.BytesIO(jpeg_bytes()), "a.jpg")})
    _assert_error(r, 422, "invalid_input")


@pytest.mark.parametrize("code", ["no_person", "multiple_people", "person_too_small"])
def test_preflight_verdict_when_no_category_usable(ctx: Ctx, code: str) -> None:
    ctx.analyzer.verdicts = {k: code for k in ctx.analyzer.verdicts}
    _assert_error(_upload_photo(ctx, jpeg_bytes()), 422, code)
    assert not list(ctx.settings.resolved_storage_root.rglob("*.jpg"))  # nothing kept


def test_partial_verdicts_are_stored_and_preview(ctx: Ctx) -> None:
    ctx.analyzer.verdicts = {**ctx.analyzer.verdicts, "lower_body": "pose_not_usable",
                             "dress": "pose_not_usable"}
    ctx.analyzer.details = {"lower_body": {"missing": ["left_knee"], "reason": "missing_landmarks",
                                           "category": "lower_body"}}
    r = _upload_photo(ctx, jpeg_bytes())
    assert r.status_code == 201
    body = r.get_json()
    assert body["verdicts"]["lower_body"] == "pose_not_usable"
    assert set(body["usable_categories"]) == {"upper_body", "outerwear"}
    pid = body["id"]
    r = ctx.client.get(f"/v1/photos/{pid}/placement?category=upper_body", headers=ctx.h("shopper_a"))
    assert r.status_code == 200 and r.mimetype == "image/png"
    with Image.open(io.BytesIO(r.data)) as im:
        assert im.size == (body["width"], body["height"])
    r = ctx.client.get(f"/v1/photos/{pid}/placement?category=lower_body", headers=ctx.h("shopper_a"))
    _assert_error(r, 422, "pose_not_usable")
    # the analysis's message and details come back on every later refusal
    err = r.get_json()["error"]
    assert err["message"] == "fake verdict pose_not_usable"
    assert err["details"] == {"missing": ["left_knee"], "reason": "missing_landmarks",
                              "category": "lower_body"}
    r = ctx.client.get(f"/v1/photos/{pid}/placement?category=hat", headers=ctx.h("shopper_a"))
    _assert_error(r, 422, "invalid_input")


# --- garments --------------------------------------------------------------------------------


def _upload_garment(ctx: Ctx, image: bytes, mask: bytes | None = None, **fields: str) -> Any:
    data: dict[str, Any] = {"image": (io.BytesIO(image), "g.png"), "category": "upper_body", **fields}
    if mask is not None:
        data["mask"] = (io.BytesIO(mask), "m.png")
    return ctx.client.post("/v1/garments", headers=ctx.h("merchant_x"),
                           content_type="multipart/form-data", data=data)


def test_garment_sources(ctx: Ctx) -> None:
    r = _upload_garment(ctx, garment_png(), name="Red tee", sku="RT-1", length="cropped")
    assert r.status_code == 201, r.get_json()
    g = r.get_json()
    assert g["mask_source"] == "background_removal" and g["length"] == "cropped" and g["sku"] == "RT-1"
    rgba = np.zeros((400, 300, 4), np.uint8)
    rgba[50:350, 60:240] = (10, 120, 200, 255)
    r = _upload_garment(ctx, png_bytes(rgba))
    assert r.status_code == 201 and r.get_json()["mask_source"] == "alpha"
    noise = np.random.default_rng(0).integers(0, 256, (400, 300, 3), dtype=np.uint8)
    _assert_error(_upload_garment(ctx, png_bytes(noise)), 422, "garment_not_separable")
    mask = np.zeros((400, 300), np.uint8)
    mask[100:300, 50:250] = 255
    r = _upload_garment(ctx, png_bytes(noise), mask=png_bytes(mask))
    assert r.status_code == 201 and r.get_json()["mask_source"] == "uploaded"
    _assert_error(_upload_garment(ctx, png_bytes(noise), mask=png_bytes(np.zeros((400, 300), np.uint8))),
                  422, "invalid_mask")
    _assert_error(_upload_garment(ctx, garment_png(), category="hat"), 422, "invalid_input")
    listed = ctx.client.get("/v1/garments", headers=ctx.h("merchant_x")).get_json()["items"]
    assert len(listed) == 3
    with ctx.factory() as s:
        for row in s.query(Garment):
            assert ctx.storage.exists(row.image_key) and ctx.storage.exists(row.mask_key)
    gid = listed[0]["id"]
    assert ctx.client.delete(f"/v1/garments/{gid}", headers=ctx.h("merchant_x")).status_code == 204
    assert ctx.client.get(f"/v1/garments/{gid}", headers=ctx.h("merchant_x")).status_code == 404


# --- limits ----------------------------------------------------------------------------------


def test_request_limits_413(ctx: Ctx) -> None:
    limit = ctx.app.config["MAX_CONTENT_LENGTH"]
    assert limit and ctx.app.config["MAX_FORM_MEMORY_SIZE"] and ctx.app.config["MAX_FORM_PARTS"]
    big = b"\xff\xd8" + b"\x00" * (limit + 1)
    _assert_error(_upload_photo(ctx, big), 413, "payload_too_large")
    # too many parts
    data = {f"f{i}": "x" for i in range(ctx.app.config["MAX_FORM_PARTS"] + 1)}
    data["image"] = (io.BytesIO(jpeg_bytes()), "a.jpg")
    r = ctx.client.post("/v1/photos", headers=ctx.h("shopper_a"), data=data,
                        content_type="multipart/form-data")
    _assert_error(r, 413, "payload_too_large")
    # one oversize text field
    data = {"consent": "true", "name": "x" * (ctx.app.config["MAX_FORM_MEMORY_SIZE"] + 1),
            "image": (io.BytesIO(jpeg_bytes()), "a.jpg")}
    r = ctx.client.post("/v1/photos", headers=ctx.h("shopper_a"), data=data,
                        content_type="multipart/form-data")
    _assert_error(r, 413, "payload_too_large")
    # a JSON body over the limit
    r = ctx.client.post("/v1/tryons", headers=ctx.h("shopper_a"), content_type="application/json",
                        data=b'{"a":"' + b"x" * (limit + 1) + b'"}')
    _assert_error(r, 413, "payload_too_large")
    # an image under the body limit but over the image byte limit
    over = jpeg_bytes() + b"\x00" * (ctx.settings.max_upload_bytes + 1)
    r = _upload_photo(ctx, over)
    assert r.status_code == 413
    _assert_error(r, 413)


# --- errors and headers on every response ----------------------------------------------------


def test_error_shapes_and_headers(ctx: Ctx) -> None:
    cases = [
        (ctx.client.get("/nope"), 404, "not_found"),
        (ctx.client.get("/v1/photos"), 401, "unauthorized"),
        (ctx.client.put("/v1/photos", headers=ctx.h("shopper_a")), 405, "method_not_allowed"),
        (ctx.client.post("/v1/tryons", headers=ctx.h("shopper_a"), data="x=1",
                         content_type="application/x-www-form-urlencoded"), 415, "unsupported_media_type"),
        (ctx.client.post("/v1/tryons", headers=ctx.h("shopper_a"), data="{not json",
                         content_type="application/json"), 400, None),
        (ctx.client.post("/v1/photos", headers=ctx.h("shopper_a"), json={}), 415, "unsupported_media_type"),
        (ctx.client.post("/v1/tryons", headers=ctx.h("shopper_a"), json={"photo_id": 5}), 422, "invalid_input"),
    ]
    for resp, status, code in cases:
        if status == 400:
            assert resp.status_code in (400, 422)
            _assert_error(resp, resp.status_code)
        else:
            _assert_error(resp, status, code)
    assert "Allow" in cases[2][0].headers


def test_deeply_nested_json_body_is_400_bad_request(ctx: Ctx) -> None:
    """5000 nested objects (30 KB, far below MAX_CONTENT_LENGTH) make the JSON decoder raise
    RecursionError: a client error with the usual JSON body, not a 500."""
    body = '{"a":' * 5000 + "1" + "}" * 5000
    r = ctx.client.post("/v1/tryons", data=body, content_type="application/json",
                        headers=ctx.h("shopper_a"))
    _assert_error(r, 400, "bad_request")
    assert "nested" in r.get_json()["error"]["message"]


def test_recursion_error_outside_a_json_body_stays_500(tmp_path: Any) -> None:
    """Only JSON bodies map RecursionError to 400; a server-side one is still a generic 500."""
    def deep(*a: Any, **k: Any) -> Any:
        raise RecursionError("maximum recursion depth exceeded")

    ctx = make_ctx(tmp_path, analyzer=deep, flask_config={"PROPAGATE_EXCEPTIONS": False})
    try:
        _assert_error(_upload_photo(ctx, jpeg_bytes()), 500, "internal_error")
    finally:
        ctx.factory.kw["bind"].dispose()


def test_unexpected_error_is_generic_500(tmp_path: Any) -> None:
    class Boom:
        def __call__(self, *a: Any, **k: Any) -> Any:
            raise RuntimeError("secret internals /etc/shadow")

    ctx = make_ctx(tmp_path, analyzer=Boom(), flask_config={"PROPAGATE_EXCEPTIONS": False})
    r = _upload_photo(ctx, jpeg_bytes())
    _assert_error(r, 500, "internal_error")
    assert b"shadow" not in r.data and b"RuntimeError" not in r.data


def test_success_headers(ctx: Ctx) -> None:
    for path, who in [("/healthz", None), ("/openapi.json", None), ("/v1/photos", "shopper_a"),
                      ("/v1/ops/queues", "ops"), ("/metrics", "ops")]:
        r = ctx.client.get(path, headers=ctx.h(who))
        assert r.status_code == 200
        assert r.headers["Cache-Control"] == "no-store"
        assert r.headers["X-Content-Type-Options"] == "nosniff"
        assert r.headers["Content-Type"]


def test_database_down_is_503_with_retry_after(tmp_path: Any) -> None:
    from tryon.records.db import make_engine, make_session_factory

    dead = make_session_factory(make_engine("postgresql+psycopg://nobody@127.0.0.1:1/none",
                                            connect_args={"connect_timeout": 1}))
    ctx = make_ctx(tmp_path)
    ctx.app.extensions["tryon"].session_factory = dead
    r = ctx.client.get("/v1/photos", headers=ctx.h("shopper_a"))
    _assert_error(r, 503, "database_unavailable")
    assert int(r.headers["Retry-After"]) > 0
    r = ctx.client.get("/readyz")
    assert r.status_code == 503 and r.get_json()["checks"]["database"] == "unreachable"
    assert r.headers["Retry-After"]
    assert ctx.client.get("/healthz").status_code == 200


def test_readyz_broker_down(tmp_path: Any) -> None:
    def down() -> None:
        raise ConnectionError("no broker")

    ctx = make_ctx(tmp_path, broker_probe=down)
    r = ctx.client.get("/readyz")
    assert r.status_code == 503 and r.get_json()["checks"] == {"database": "ok", "broker": "unreachable"}
    ok = make_ctx(tmp_path / "ok")
    assert ok.client.get("/readyz").status_code == 200


def test_readyz_real_embedded_broker(tmp_path: Any) -> None:
    """Without a probe override, readiness opens the real (SQLAlchemy transport) broker."""
    ctx = make_ctx(tmp_path)
    ctx.app.extensions["tryon"].broker_probe = None
    r = ctx.client.get("/readyz")
    assert r.status_code == 200 and r.get_json()["checks"]["broker"] == "ok"


# --- OpenAPI ---------------------------------------------------------------------------------


def test_openapi_covers_every_route(ctx: Ctx) -> None:
    spec = ctx.client.get("/openapi.json").get_json()
    assert spec["openapi"].startswith("3.")
    paths = spec["paths"]
    documented = {(p, m.upper()) for p, ops in paths.items() for m in ops}
    skip = {"openapi.spec", "openapi.docs", "openapi.swagger_ui_oauth_redirect"}
    for rule in ctx.app.url_map.iter_rules():
        if rule.endpoint in skip:
            continue
        if rule.endpoint.startswith("pages."):  # the HTML pages are not API (docs/pages.md)
            assert not any(p == rule.rule or p.startswith(rule.rule + "/") for p in paths), rule
            continue
        path = rule.rule
        for conv in ("int:", "path:"):
            path = path.replace("<" + conv, "<")
        path = path.replace("<", "{").replace(">", "}")
        for m in rule.methods - {"HEAD", "OPTIONS"}:
            assert (path, m) in documented, f"{m} {path} missing from /openapi.json"
    assert "BearerAuth" in json.dumps(spec["components"])
    docs = ctx.client.get("/docs")
    assert docs.status_code == 200 and b"openapi.json" in docs.data
