"""Issue 11.1: a NUL byte or a lone surrogate anywhere a client can put text (path ids, a
cursor, JSON and form fields) is a 4xx with the usual error body, on SQLite and PostgreSQL
alike; before, PostgreSQL raised ``DataError`` and a surrogate ``UnicodeEncodeError`` (500)."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from webapi_support import Ctx, garment_png, make_ctx

NUL_ID = "ab\x00" + "0" * 29
SURROGATE = "\ud800"


@pytest.fixture(params=["sqlite", "postgresql"])
def dbctx(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Ctx]:
    url = request.getfixturevalue("pg_url") if request.param == "postgresql" else ""
    c = make_ctx(tmp_path, database_url=url)
    yield c
    c.factory.kw["bind"].dispose()


def _assert_error(resp: Any, *statuses: int) -> None:
    assert resp.status_code in statuses, (resp.status_code, resp.get_data(as_text=True)[:300])
    body = resp.get_json()
    assert set(body["error"]) >= {"code", "message"}


@pytest.mark.parametrize("bad", ["%00", "ab%00cd", "0" * 31 + "%00"])
def test_nul_in_every_object_path_is_404(dbctx: Ctx, bad: str) -> None:
    routes = [
        ("merchant_x", "get", f"/v1/garments/{bad}"),
        ("merchant_x", "delete", f"/v1/garments/{bad}"),
        ("shopper_a", "get", f"/v1/photos/{bad}"),
        ("shopper_a", "delete", f"/v1/photos/{bad}"),
        ("shopper_a", "get", f"/v1/photos/{bad}/placement?category=upper_body"),
        ("shopper_a", "get", f"/v1/tryons/{bad}"),
        ("shopper_a", "post", f"/v1/tryons/{bad}/cancel"),
        ("shopper_a", "get", f"/v1/tryons/{bad}/results/0"),
        ("ops", "post", f"/v1/ops/tryons/{bad}/retry"),
    ]
    for who, method, url in routes:
        resp = getattr(dbctx.client, method)(url, headers=dbctx.h(who))
        _assert_error(resp, 404)


def _cursor(row_id: str) -> str:
    raw = f"2026-01-01T00:00:00+00:00|{row_id}".encode("utf-8", "surrogatepass")
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@pytest.mark.parametrize("who,url", [("merchant_x", "/v1/garments"), ("shopper_a", "/v1/photos"),
                                     ("shopper_a", "/v1/tryons"), ("ops", "/v1/ops/jobs")])
@pytest.mark.parametrize("cursor", [_cursor(NUL_ID), _cursor("ab" + SURROGATE), "a%00b"])
def test_cursor_with_nul_or_surrogate_is_422(dbctx: Ctx, who: str, url: str, cursor: str) -> None:
    resp = dbctx.client.get(f"{url}?cursor={cursor}", headers=dbctx.h(who))
    _assert_error(resp, 422)


@pytest.mark.parametrize("field,value", [
    ("photo_id", NUL_ID), ("garment_id", NUL_ID), ("photo_id", SURROGATE * 32),
    ("garment_id", "\x00" * 32), ("engine", "pre\x00view"), ("engine", SURROGATE),
    ("webhook_url", "https://example.com/\x00"), ("webhook_url", "https://ex" + SURROGATE),
])
def test_nul_or_surrogate_in_tryon_json_is_422(dbctx: Ctx, field: str, value: str) -> None:
    photo = dbctx.add_photo("shopper_a")
    garment = dbctx.add_garment("merchant_x")
    body = {"photo_id": photo, "garment_id": garment, field: value}
    # json.dumps writes a lone surrogate as the escape \ud800, exactly what a client sends
    resp = dbctx.client.post("/v1/tryons", data=json.dumps(body),
                             headers=dbctx.h("shopper_a", **{"Content-Type": "application/json"}))
    _assert_error(resp, 422)


def test_surrogate_in_an_unknown_json_key_is_422(dbctx: Ctx) -> None:
    resp = dbctx.client.post("/v1/tryons", data='{"\\ud800": 1}',
                             headers=dbctx.h("shopper_a", **{"Content-Type": "application/json"}))
    _assert_error(resp, 422)


# (a multipart body is bytes: a lone surrogate cannot be sent as UTF-8, only NUL can)
@pytest.mark.parametrize("field,value", [("name", "shirt\x00"), ("sku", "\x00")])
def test_nul_or_surrogate_in_garment_form_is_422(dbctx: Ctx, field: str, value: str) -> None:
    import io

    data = {"image": (io.BytesIO(garment_png()), "g.png"), "category": "upper_body", field: value}
    resp = dbctx.client.post("/v1/garments", data=data, content_type="multipart/form-data",
                             headers=dbctx.h("merchant_x"))
    _assert_error(resp, 422)
