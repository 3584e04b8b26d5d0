"""Route x principal matrix (S-10, S-11, R-17), built from ``app.url_map``.

Every route must have an entry here: a new route without one fails
``test_every_route_has_a_matrix_entry``. Objects belong to shopper A (photos, jobs, results) and
merchant X (garments); everyone else must get 404 for them, anonymous callers 401.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

import pytest
from webapi_support import Ctx, garment_png, jpeg_bytes

PRINCIPALS = ["anon", "shopper_a", "shopper_b", "merchant_x", "merchant_y", "ops"]
IGNORED_METHODS = {"HEAD", "OPTIONS"}

Builder = Callable[[Ctx, str, dict[str, str]], tuple[str, dict[str, Any]]]


def _objects(ctx: Ctx) -> dict[str, str]:
    """Fresh objects for one route: shopper A's photo and succeeded job, merchant X's garment."""
    photo = ctx.add_photo("shopper_a")
    garment = ctx.add_garment("merchant_x")
    job = ctx.add_job("shopper_a", photo, garment, status="succeeded")
    queued = ctx.add_job("shopper_a", photo, garment, status="queued")
    failed = ctx.add_job("shopper_a", photo, garment, status="failed", error_code="timeout")
    compose, batch = _compose_and_batch(ctx, photo, garment)
    return {"photo": photo, "garment": garment, "job": job, "queued": queued, "failed": failed,
            "compose": compose, "batch": batch}


def _compose_and_batch(ctx: Ctx, photo: str, garment: str) -> tuple[str, str]:
    """Shopper A's queued compose job and a running batch with one queued child."""
    from tryon.records.db import session_scope
    from tryon.records.jobs import create_batch, create_job

    with session_scope(ctx.factory) as s:
        owner = ctx.ids["shopper_a"]
        c = create_job(s, owner_id=owner, photo_id=photo, garment_id=garment, engine="preview",
                       queue="cpu", params={"op": "insert", "box": [10, 10, 100, 100]},
                       max_attempts=3, kind="compose")
        b = create_batch(s, owner_id=owner, engine="preview", queue="cpu",
                         params={"item_kind": "tryon"})
        create_job(s, owner_id=owner, photo_id=photo, garment_id=garment, engine="preview",
                   queue="cpu", params={"batch_index": 0}, max_attempts=3, parent_id=b.id)
        return c.id, b.id


def _compose_create(ctx: Ctx, who: str, o: dict[str, str]) -> tuple[str, dict[str, Any]]:
    data = {"scene": (io.BytesIO(jpeg_bytes()), "scene.jpg"),
            "reference": (io.BytesIO(garment_png()), "ref.png"), "box": "20,20,200,200"}
    return "/v1/compose", {"method": "POST", "data": data, "content_type": "multipart/form-data"}


def _batch_create(ctx: Ctx, who: str, o: dict[str, str]) -> tuple[str, dict[str, Any]]:
    photo = ctx.add_photo(who) if who.startswith("shopper") else o["photo"]
    body = {"kind": "tryon", "photo_ids": [photo], "garment_ids": [o["garment"]]}
    return "/v1/batches", {"method": "POST", "json": body}


def _get(path: str) -> Builder:
    return lambda ctx, who, o: (path.format(**o), {"method": "GET"})


def _photo_upload(ctx: Ctx, who: str, o: dict[str, str]) -> tuple[str, dict[str, Any]]:
    data = {"image": (io.BytesIO(jpeg_bytes()), "me.jpg"), "consent": "true"}
    return "/v1/photos", {"method": "POST", "data": data, "content_type": "multipart/form-data"}


def _garment_upload(ctx: Ctx, who: str, o: dict[str, str]) -> tuple[str, dict[str, Any]]:
    data = {"image": (io.BytesIO(garment_png()), "g.png"), "category": "upper_body",
            "name": "Shirt", "sku": "S-1"}
    return "/v1/garments", {"method": "POST", "data": data, "content_type": "multipart/form-data"}


def _tryon_create(ctx: Ctx, who: str, o: dict[str, str]) -> tuple[str, dict[str, Any]]:
    photo = ctx.add_photo(who) if who.startswith("shopper") else o["photo"]
    body = {"photo_id": photo, "garment_id": o["garment"], "num_samples": 2}
    return "/v1/tryons", {"method": "POST", "json": body}


def _signed(ctx: Ctx, who: str, o: dict[str, str]) -> tuple[str, dict[str, Any]]:
    with ctx.app.test_request_context():
        from tryon.records.models import TryOnJob
        from web.api.tryons import job_dict
        from web.services import db_session

        url = job_dict(db_session().get(TryOnJob, o["job"]))["results"][0]["url"]
    return url.replace("http://localhost", ""), {"method": "GET"}


# kind: public | owner:<role> (object of shopper_a / merchant_x) | role:<role> (collection/ops)
MATRIX: dict[tuple[str, str], tuple[str, Builder]] = {
    ("health.healthz", "GET"): ("public", _get("/healthz")),
    ("health.readyz", "GET"): ("public", _get("/readyz")),
    ("openapi.spec", "GET"): ("public", _get("/openapi.json")),
    ("openapi.docs", "GET"): ("public", _get("/docs")),
    ("openapi.swagger_ui_oauth_redirect", "GET"): ("public", _get("/docs/oauth2-redirect")),
    ("files.signed_result", "GET"): ("public", _signed),
    ("health.metrics", "GET"): ("role:ops", _get("/metrics")),
    ("garments.create_garment", "POST"): ("role:merchant", _garment_upload),
    ("garments.list_garments", "GET"): ("role:merchant", _get("/v1/garments")),
    ("garments.get_garment", "GET"): ("owner:merchant", _get("/v1/garments/{garment}")),
    ("garments.delete_garment", "DELETE"): (
        "owner:merchant", lambda c, w, o: (f"/v1/garments/{o['garment']}", {"method": "DELETE"})),
    ("photos.create_photo", "POST"): ("role:shopper", _photo_upload),
    ("photos.list_photos", "GET"): ("role:shopper", _get("/v1/photos")),
    ("photos.get_photo", "GET"): ("owner:shopper", _get("/v1/photos/{photo}")),
    ("photos.delete_photo", "DELETE"): (
        "owner:shopper", lambda c, w, o: (f"/v1/photos/{o['photo']}", {"method": "DELETE"})),
    ("photos.placement_preview", "GET"): (
        "owner:shopper", _get("/v1/photos/{photo}/placement?category=upper_body")),
    ("tryons.create_tryon", "POST"): ("role:shopper", _tryon_create),
    ("tryons.list_tryons", "GET"): ("role:shopper", _get("/v1/tryons")),
    ("tryons.get_tryon", "GET"): ("owner:shopper", _get("/v1/tryons/{job}")),
    ("tryons.cancel_tryon", "POST"): (
        "owner:shopper", lambda c, w, o: (f"/v1/tryons/{o['queued']}/cancel", {"method": "POST"})),
    ("tryons.get_result", "GET"): ("owner:shopper", _get("/v1/tryons/{job}/results/0")),
    ("compose.create_compose", "POST"): ("role:shopper", _compose_create),
    ("compose.get_compose", "GET"): ("owner:shopper", _get("/v1/compose/{compose}")),
    ("compose.cancel_compose", "POST"): (
        "owner:shopper", lambda c, w, o: (f"/v1/compose/{o['compose']}/cancel", {"method": "POST"})),
    ("batches.create_batch", "POST"): ("role:shopper", _batch_create),
    ("batches.get_batch", "GET"): ("owner:shopper", _get("/v1/batches/{batch}")),
    ("batches.get_manifest", "GET"): ("owner:shopper", _get("/v1/batches/{batch}/manifest")),
    ("batches.get_archive", "GET"): ("owner:shopper", _get("/v1/batches/{batch}/archive")),
    ("batches.cancel_batch", "POST"): (
        "owner:shopper", lambda c, w, o: (f"/v1/batches/{o['batch']}/cancel", {"method": "POST"})),
    ("me.erase_me", "DELETE"): (
        "role:shopper", lambda c, w, o: ("/v1/me", {"method": "DELETE"})),
    ("ops.queues", "GET"): ("role:ops", _get("/v1/ops/queues")),
    ("ops.workers", "GET"): ("role:ops", _get("/v1/ops/workers")),
    ("ops.jobs", "GET"): ("role:ops", _get("/v1/ops/jobs?status=failed")),
    ("ops.retry", "POST"): (
        "role:ops", lambda c, w, o: (f"/v1/ops/tryons/{o['failed']}/retry", {"method": "POST"})),
}

OWNERS = {"shopper": "shopper_a", "merchant": "merchant_x"}


# --- the server-rendered pages: the same principals, signed in with a session cookie ---------
def _page_get(path: str) -> Builder:
    return lambda ctx, who, o: (path.format(**o), {"method": "GET"})


def _page_post(path: str, **form: Any) -> Builder:
    return lambda ctx, who, o: (path.format(**o), {"method": "POST", "data": dict(form)})


def _page_photo_upload(ctx: Ctx, who: str, o: dict[str, str]) -> tuple[str, dict[str, Any]]:
    data = {"image": (io.BytesIO(jpeg_bytes()), "me.jpg"), "consent": "yes"}
    return "/me/photos", {"method": "POST", "data": data, "content_type": "multipart/form-data"}


def _page_garment_upload(ctx: Ctx, who: str, o: dict[str, str]) -> tuple[str, dict[str, Any]]:
    data = {"image": (io.BytesIO(garment_png()), "g.png"), "category": "upper_body",
            "length": "regular", "name": "Shirt", "sku": "S-1"}
    return "/shop/garments/new", {"method": "POST", "data": data,
                                  "content_type": "multipart/form-data"}


def _with_pending(method: str, path: str, **form: Any) -> Builder:
    """A merchant first uploads a garment (its mask waits for approval in the session)."""

    def build(ctx: Ctx, who: str, o: dict[str, str]) -> tuple[str, dict[str, Any]]:
        if who.startswith("merchant"):
            upath, kwargs = _page_garment_upload(ctx, who, o)
            client = ctx.page_clients[who]  # type: ignore[attr-defined]
            kwargs["data"]["csrf_token"] = page_csrf(client)
            kwargs.pop("method")
            assert client.post(upath, **kwargs).status_code == 302
        return path, {"method": method, "data": dict(form)} if form else {"method": method}

    return build


def _page_start(ctx: Ctx, who: str, o: dict[str, str]) -> tuple[str, dict[str, Any]]:
    photo = ctx.add_photo(who) if who.startswith("shopper") else o["photo"]
    return "/me/tryons", {"method": "POST", "data": {"photo_id": photo,
                                                     "garment_id": o["garment"]}}


def _page_sign_in(ctx: Ctx, who: str, o: dict[str, str]) -> tuple[str, dict[str, Any]]:
    return "/sign-in", {"method": "POST",
                        "data": {"api_key": ctx.keys.get(who, ctx.keys["shopper_a"])}}


PAGE_MATRIX: dict[tuple[str, str], tuple[str, Builder]] = {
    ("pages.static", "GET"): ("public", _page_get("/static/app.css")),
    ("pages.swagger_asset", "GET"): ("public", _page_get("/static/swagger-ui/swagger-ui.css")),
    ("pages.index", "GET"): ("public", _page_get("/")),
    ("pages.sign_in_form", "GET"): ("public", _page_get("/sign-in")),
    ("pages.sign_in", "POST"): ("public", _page_sign_in),
    ("pages.sign_out", "POST"): ("public", _page_post("/sign-out")),
    # shopper
    ("pages.my_photos", "GET"): ("role:shopper", _page_get("/me/photos")),
    ("pages.upload_my_photo", "POST"): ("role:shopper", _page_photo_upload),
    ("pages.my_photo", "GET"): ("owner:shopper", _page_get("/me/photos/{photo}")),
    ("pages.my_photo_image", "GET"): ("owner:shopper", _page_get("/me/photos/{photo}/image")),
    ("pages.my_photo_placement", "GET"): (
        "owner:shopper", _page_get("/me/photos/{photo}/placement/upper_body.png")),
    ("pages.delete_my_photo", "POST"): ("owner:shopper", _page_post("/me/photos/{photo}/delete")),
    ("pages.catalog", "GET"): ("role:shopper", _page_get("/catalog")),
    ("pages.garment_image", "GET"): ("catalog", _page_get("/catalog/{garment}/image")),
    ("pages.start_my_tryon", "POST"): ("role:shopper", _page_start),
    ("pages.my_tryons", "GET"): ("role:shopper", _page_get("/me/tryons")),
    ("pages.my_tryon", "GET"): ("owner:shopper", _page_get("/me/tryons/{job}")),
    ("pages.my_tryon_status", "GET"): ("owner:shopper", _page_get("/me/tryons/{job}/status.json")),
    ("pages.my_result", "GET"): ("owner:shopper", _page_get("/me/tryons/{job}/results/0.png")),
    ("pages.cancel_my_tryon", "POST"): ("owner:shopper", _page_post("/me/tryons/{queued}/cancel")),
    ("pages.erase_form", "GET"): ("role:shopper", _page_get("/me/erase")),
    ("pages.erase_me", "POST"): ("role:shopper", _page_post("/me/erase", confirm="ERASE")),
    # merchant
    ("pages.shop_garments", "GET"): ("role:merchant", _page_get("/shop/garments")),
    ("pages.new_garment", "GET"): ("role:merchant", _page_get("/shop/garments/new")),
    ("pages.upload_garment", "POST"): ("role:merchant", _page_garment_upload),
    ("pages.review_garment", "GET"): ("role:merchant", _with_pending("GET", "/shop/garments/review")),
    ("pages.pending_image", "GET"): (
        "role:merchant", _with_pending("GET", "/shop/garments/review/cutout.png")),
    ("pages.approve_garment", "POST"): (
        "role:merchant", _with_pending("POST", "/shop/garments/review", decision="approve")),
    ("pages.shop_garment", "GET"): ("owner:merchant", _page_get("/shop/garments/{garment}")),
    ("pages.edit_garment", "POST"): ("owner:merchant", _page_post(
        "/shop/garments/{garment}", name="New name", category="upper_body", length="long")),
    ("pages.remove_garment", "POST"): (
        "owner:merchant", _page_post("/shop/garments/{garment}/delete")),
    ("pages.garment_cutout", "GET"): (
        "owner:merchant", _page_get("/shop/garments/{garment}/cutout.png")),
    ("pages.garment_sample", "GET"): (
        "owner:merchant", _page_get("/shop/garments/{garment}/sample.png")),
    # ops
    ("pages.ops_home", "GET"): ("role:ops", _page_get("/ops")),
    ("pages.ops_jobs", "GET"): ("role:ops", _page_get("/ops/jobs?status=failed")),
    ("pages.ops_job", "GET"): ("role:ops", _page_get("/ops/jobs/{job}")),
    ("pages.ops_retry", "POST"): ("role:ops", _page_post("/ops/jobs/{failed}/retry")),
    ("pages.ops_cancel", "POST"): ("role:ops", _page_post("/ops/jobs/{queued}/cancel")),
    ("pages.ops_webhooks", "GET"): ("role:ops", _page_get("/ops/webhooks")),
}
#: page lists that must never show another principal's objects
PAGE_LISTS = {"pages.my_photos": "shopper", "pages.my_tryons": "shopper",
              "pages.shop_garments": "merchant"}


def expected(kind: str, who: str) -> str:
    """'2xx', '401' or '404'."""
    if kind == "public":
        return "2xx"
    if kind == "catalog":  # any live garment for shoppers, merchants only their own
        if who == "anon":
            return "401"
        return "2xx" if who.startswith("shopper") or who == OWNERS["merchant"] else "404"
    if who == "anon":
        return "401"
    scope, role = kind.split(":")
    if scope == "owner":
        return "2xx" if who == OWNERS[role] else "404"
    return "2xx" if who.startswith(role) else "404"


def _routes(app: Any) -> set[tuple[str, str]]:
    return {(r.endpoint, m) for r in app.url_map.iter_rules()
            for m in r.methods - IGNORED_METHODS}


def test_every_route_has_a_matrix_entry(ctx: Ctx) -> None:
    routes = _routes(ctx.app)
    missing = routes - MATRIX.keys() - PAGE_MATRIX.keys()
    stale = (MATRIX.keys() | PAGE_MATRIX.keys()) - routes
    assert not missing, f"routes without an authorization matrix entry: {sorted(missing)}"
    assert not stale, f"matrix entries for routes that no longer exist: {sorted(stale)}"


@pytest.mark.parametrize("route", sorted(MATRIX), ids=lambda r: f"{r[1]} {r[0]}")
def test_route_matrix(ctx: Ctx, route: tuple[str, str]) -> None:
    kind, build = MATRIX[route]
    objs = _objects(ctx)
    # the owner goes last: DELETE and cancel change the object
    order = sorted(PRINCIPALS, key=lambda w: w in OWNERS.values())
    failures = []
    unauthorized_2xx = 0
    for who in order:
        path, kwargs = build(ctx, who, objs)
        method = kwargs.pop("method")
        headers = ctx.h(None if who == "anon" else who)
        resp = ctx.client.open(path, method=method, headers=headers, **kwargs)
        want = expected(kind, who)
        got = resp.status_code
        ok = (200 <= got < 300) if want == "2xx" else got == int(want)
        if want != "2xx" and 200 <= got < 300:
            unauthorized_2xx += 1
        if not ok:
            failures.append((who, method, path, got, want, resp.get_data(as_text=True)[:200]))
        # a list never shows another principal's objects
        if method == "GET" and got == 200 and route[0].endswith(".list_" + route[0].split("_")[-1]):
            text = resp.get_data(as_text=True)
            if who != OWNERS.get(kind.split(":")[-1]):
                for name in ("photo", "job", "queued", "failed", "garment"):
                    assert objs[name] not in text, (who, route, name)
        if ok and want != "2xx":
            code = resp.get_json()["error"]["code"]
            assert code == "unauthorized" or code.endswith("not_found"), code
    assert unauthorized_2xx == 0
    assert not failures, failures


def test_revoked_and_expired_keys_get_401(ctx: Ctx) -> None:
    from datetime import timedelta

    from tryon.records.accounts import create_api_key, revoke_api_key
    from tryon.records.db import session_scope
    from tryon.records.models import ApiKey

    with session_scope(ctx.factory) as s:
        live = create_api_key(s, account_id=ctx.ids["shopper_a"])
        short = create_api_key(s, account_id=ctx.ids["shopper_a"], expires_in=timedelta(seconds=-1))
    assert ctx.client.get("/v1/photos", headers={"Authorization": f"Bearer {live.plaintext}"}).status_code == 200
    assert ctx.client.get("/v1/photos", headers={"Authorization": f"Bearer {short.plaintext}"}).status_code == 401
    with session_scope(ctx.factory) as s:
        revoke_api_key(s, live.id)
    r = ctx.client.get("/v1/photos", headers={"Authorization": f"Bearer {live.plaintext}"})
    assert r.status_code == 401 and r.get_json()["error"]["code"] == "unauthorized"
    for bad in ("Bearer", "Basic abc", f"Bearer {live.plaintext}x", "Bearer tk_" + "A" * 43):
        assert ctx.client.get("/v1/photos", headers={"Authorization": bad}).status_code == 401
    # no plaintext key is stored anywhere
    with ctx.factory() as s:
        for row in s.query(ApiKey):
            assert row.key_hash != live.plaintext and live.plaintext not in row.prefix + row.key_hash


def page_csrf(client: Any) -> str:
    """The CSRF token of ``client``'s session (a page sets it when it renders a form)."""
    import re

    html = client.get("/sign-in").get_data(as_text=True)
    m = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert m, html[:300]
    return m.group(1)


def page_client(ctx: Ctx, who: str) -> Any:
    """A browser-like client: anonymous (with a CSRF token) or signed in as ``who``."""
    client = ctx.app.test_client()
    token = page_csrf(client)
    if who != "anon":
        r = client.post("/sign-in", data={"api_key": ctx.keys[who], "csrf_token": token})
        assert r.status_code == 302, r.get_data(as_text=True)[:300]
    return client


@pytest.mark.parametrize("route", sorted(PAGE_MATRIX), ids=lambda r: f"{r[1]} {r[0]}")
def test_page_matrix(ctx: Ctx, route: tuple[str, str]) -> None:
    """Pages get the API's treatment: other principals' objects and other roles' pages answer
    404, anonymous visitors are sent to sign in (GET) or refused with 401."""
    kind, build = PAGE_MATRIX[route]
    objs = _objects(ctx)
    ctx.page_clients = {who: page_client(ctx, who) for who in PRINCIPALS}  # type: ignore[attr-defined]
    order = sorted(PRINCIPALS, key=lambda w: w in OWNERS.values())
    failures = []
    for who in order:
        client = ctx.page_clients[who]  # type: ignore[attr-defined]
        path, kwargs = build(ctx, who, objs)
        method = kwargs.pop("method")
        if method == "POST":
            kwargs.setdefault("data", {})["csrf_token"] = page_csrf(client)
        resp = client.open(path, method=method, **kwargs)
        want, got = expected(kind, who), resp.status_code
        location = resp.headers.get("Location", "")
        if want == "2xx":
            ok = 200 <= got < 400 and not location.startswith("/sign-in?")
        elif want == "401" and method == "GET" and not path.endswith(".json"):
            ok = got == 302 and location.startswith("/sign-in?next=")  # sent to sign in
        else:
            ok = got == int(want)
            if ok and want == "404" and resp.mimetype == "text/html":
                assert 'data-error-code="' in resp.get_data(as_text=True)
                assert "not_found" in resp.get_data(as_text=True)
        if not ok:
            failures.append((who, method, path, got, want, location,
                             resp.get_data(as_text=True)[:200]))
        if route[0] in PAGE_LISTS and got == 200 and who != OWNERS[PAGE_LISTS[route[0]]]:
            text = resp.get_data(as_text=True)
            for name in ("photo", "job", "queued", "failed", "garment"):
                assert objs[name] not in text, (who, route, name)
    assert not failures, failures


def test_page_post_without_csrf_token_is_refused(ctx: Ctx) -> None:
    client = page_client(ctx, "shopper_a")
    photo = ctx.add_photo("shopper_a")
    r = client.post(f"/me/photos/{photo}/delete", data={})
    assert r.status_code == 400 and 'data-error-code="csrf_failed"' in r.get_data(as_text=True)
    r = client.post(f"/me/photos/{photo}/delete", data={"csrf_token": "x" * 43})
    assert r.status_code == 400
    assert client.get(f"/me/photos/{photo}").status_code == 200  # still there
