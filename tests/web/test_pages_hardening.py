"""Issue 11's hardening on the server-rendered pages (web/pages): failed sign-ins count against
the address's failed-authentication budget (shared with bad bearer keys), page uploads and
try-on starts draw on the same budgets as /v1, malformed path ids and unstorable form or query
text are refused without reaching the database, and the paginated lists follow the cursor
format of /v1 (web.api.common.paginate)."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path
from typing import Any

from test_authz_matrix import page_client, page_csrf
from webapi_support import Ctx, jpeg_bytes, make_ctx

from web.inputs import CURSOR_PATTERN
from web.pages.shopper import PAGE_SIZE


def _post(client: Any, path: str, data: dict[str, Any] | None = None, **kw: Any) -> Any:
    data = dict(data or {})
    data["csrf_token"] = page_csrf(client)
    return client.post(path, data=data, **kw)


def _is_429_page(resp: Any) -> None:
    assert resp.status_code == 429, resp.get_data(as_text=True)[:300]
    assert "rate_limited" in resp.get_data(as_text=True)
    assert int(resp.headers["Retry-After"]) >= 1


def test_failed_page_sign_ins_count_per_address_with_bad_bearer_keys(tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path, settings_changes={"rate_limit_auth_failures": "3/minute"})
    addr = {"REMOTE_ADDR": "10.3.3.3"}
    client = ctx.app.test_client()
    token = page_csrf(client)
    bad = {"api_key": "tk_" + "A" * 43, "csrf_token": token}
    for _ in range(2):
        assert client.post("/sign-in", data=bad, environ_base=addr).status_code == 401
    # the third failure is a wrong bearer key on /v1: the same budget
    r = ctx.client.get("/v1/photos", headers={"Authorization": "Bearer tk_wrong"},
                       environ_base=addr)
    assert r.status_code == 401
    # spent: the form refuses even the right key from this address, the API too
    _is_429_page(client.post("/sign-in", data={**bad, "api_key": ctx.keys["shopper_a"]},
                             environ_base=addr))
    assert ctx.client.get("/v1/photos", headers=ctx.h("shopper_a"),
                          environ_base=addr).status_code == 429
    # another address signs in
    other = ctx.app.test_client()
    r = other.post("/sign-in", data={"api_key": ctx.keys["shopper_a"],
                                     "csrf_token": page_csrf(other)},
                   environ_base={"REMOTE_ADDR": "10.3.3.4"})
    assert r.status_code == 302


def test_page_uploads_share_the_api_upload_budget(tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path, settings_changes={"rate_limit_uploads": "1/minute"})
    r = ctx.client.post("/v1/photos", headers=ctx.h("shopper_a"),
                        data={"image": (io.BytesIO(jpeg_bytes()), "me.jpg", "image/jpeg"),
                              "consent": "true"})
    assert r.status_code == 201
    client = page_client(ctx, "shopper_a")
    _is_429_page(_post(client, "/me/photos", {"image": (io.BytesIO(jpeg_bytes()), "me.jpg"),
                                              "consent": "yes"},
                       content_type="multipart/form-data"))
    # another shopper still uploads through the page
    other = page_client(ctx, "shopper_b")
    r = _post(other, "/me/photos", {"image": (io.BytesIO(jpeg_bytes()), "me.jpg"),
                                    "consent": "yes"}, content_type="multipart/form-data")
    assert r.status_code == 302


def test_page_try_on_starts_share_the_api_budget(tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path, settings_changes={"rate_limit_tryons": "1/minute"})
    photo, garment = ctx.add_photo("shopper_a"), ctx.add_garment("merchant_x")
    client = page_client(ctx, "shopper_a")
    r = _post(client, "/me/tryons", {"photo_id": photo, "garment_id": garment,
                                     "form_id": "a" * 16})
    assert r.status_code == 302
    body = json.dumps({"photo_id": photo, "garment_id": garment})
    r = ctx.client.post("/v1/tryons", data=body,
                        headers=ctx.h("shopper_a", **{"Content-Type": "application/json"}))
    assert r.status_code == 429 and r.get_json()["error"]["code"] == "rate_limited"


def test_malformed_path_ids_and_unstorable_text_on_pages(ctx: Ctx) -> None:
    anon = ctx.app.test_client()
    # signed out: sent to sign in first, whatever the id looks like
    r = anon.get("/me/photos/not-an-id")
    assert r.status_code == 302 and "/sign-in" in r.headers["Location"]
    client = page_client(ctx, "shopper_a")
    for path in ("/me/photos/not-an-id", "/me/tryons/" + "A" * 32, "/me/photos/%00"):
        r = client.get(path)
        assert r.status_code == 404 and "text/html" in r.content_type, path
    for path in ("/catalog?q=%00", "/me/photos?cursor=%00", "/ops/jobs?queue=%00"):
        r = client.get(path)
        assert r.status_code == 422, (path, r.status_code)
        assert "text/html" in r.content_type
    r = _post(client, "/me/tryons", {"photo_id": "\x00" * 32, "garment_id": "x"})
    assert r.status_code == 422 and "invalid_input" in r.get_data(as_text=True)


def test_page_lists_follow_the_api_cursor(ctx: Ctx) -> None:
    ids = [ctx.add_photo("shopper_a") for _ in range(PAGE_SIZE + 2)]
    client = page_client(ctx, "shopper_a")
    html = client.get("/me/photos").get_data(as_text=True)
    m = re.search(r'href="/me/photos\?cursor=([^"&]+)"', html)
    assert m, "no link to the next page"
    assert re.fullmatch(CURSOR_PATTERN, m.group(1))
    second = client.get(f"/me/photos?cursor={m.group(1)}")
    assert second.status_code == 200
    shown = set(re.findall(r"/me/photos/([0-9a-f]{32})", html))
    shown2 = set(re.findall(r"/me/photos/([0-9a-f]{32})", second.get_data(as_text=True)))
    assert shown | shown2 == set(ids) and not shown & shown2
    r = client.get("/me/photos?cursor=zz")
    assert r.status_code == 422 and "invalid_cursor" in r.get_data(as_text=True)


def test_openapi_leaves_the_pages_out_and_declares_tryon_429_and_503(ctx: Ctx) -> None:
    spec = ctx.client.get("/openapi.json").get_json()
    paths = spec["paths"]
    assert all(p.startswith(("/v1/", "/healthz", "/readyz", "/metrics", "/files")) for p in paths), \
        sorted(paths)
    assert not any(p.startswith(("/me/", "/shop/", "/ops", "/catalog", "/sign-")) for p in paths)
    create = paths["/v1/tryons"]["post"]["responses"]
    for status in ("429", "503"):
        assert "ErrorOut" in json.dumps(create[status]), create[status]
    assert "engine_unavailable" in create["503"]["description"]
    assert "rate_limited" in create["429"]["description"]
