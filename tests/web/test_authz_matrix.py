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
    return {"photo": photo, "garment": garment, "job": job, "queued": queued, "failed": failed}


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
    ("me.erase_me", "DELETE"): (
        "role:shopper", lambda c, w, o: ("/v1/me", {"method": "DELETE"})),
    ("ops.queues", "GET"): ("role:ops", _get("/v1/ops/queues")),
    ("ops.workers", "GET"): ("role:ops", _get("/v1/ops/workers")),
    ("ops.jobs", "GET"): ("role:ops", _get("/v1/ops/jobs?status=failed")),
    ("ops.retry", "POST"): (
        "role:ops", lambda c, w, o: (f"/v1/ops/tryons/{o['failed']}/retry", {"method": "POST"})),
}

OWNERS = {"shopper": "shopper_a", "merchant": "merchant_x"}


def expected(kind: str, who: str) -> str:
    """'2xx', '401' or '404'."""
    if kind == "public":
        return "2xx"
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
    missing = routes - MATRIX.keys()
    stale = MATRIX.keys() - routes
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
