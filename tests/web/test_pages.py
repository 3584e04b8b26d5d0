"""The server-rendered pages through Flask's test client: session cookie, CSRF, escaping, the
merchant's approve-the-mask flow, the shopper's try-on start, the ops chart and workers.

Route-by-principal authorization is in test_authz_matrix.py; the real browser is in
tests/integration/test_pages_browser.py.
"""

from __future__ import annotations

import io
import re
from datetime import timedelta
from typing import Any

from test_authz_matrix import page_client, page_csrf
from webapi_support import Ctx, garment_png, jpeg_bytes

XSS = '<script>alert("x")</script><b>Bold</b>'


def _post(client: Any, path: str, data: dict[str, Any] | None = None, **kw: Any) -> Any:
    data = dict(data or {})
    data["csrf_token"] = page_csrf(client)
    return client.post(path, data=data, **kw)


# --- session cookie -----------------------------------------------------------------------------
def _session_cookie(resp: Any) -> str:
    cookies = [v for k, v in resp.headers.items() if k == "Set-Cookie" and "tryon_session=" in v]
    assert cookies, dict(resp.headers)
    return cookies[-1]


def test_sign_in_sets_an_httponly_lax_cookie_secure_only_over_https(ctx: Ctx) -> None:
    for base, secure in (("http://localhost", False), ("https://localhost", True)):
        client = ctx.app.test_client()
        token = re.search(r'name="csrf_token" value="([^"]+)"',
                          client.get("/sign-in", base_url=base).get_data(as_text=True))
        assert token
        r = client.post("/sign-in", base_url=base,
                        data={"api_key": ctx.keys["shopper_a"], "csrf_token": token.group(1)})
        assert r.status_code == 302 and r.headers["Location"] == "/me/photos"
        cookie = _session_cookie(r)
        assert "HttpOnly" in cookie and "SameSite=Lax" in cookie
        assert ("; Secure" in cookie) is secure, cookie
        assert ctx.keys["shopper_a"] not in cookie  # the key id is stored, never the key


def test_a_bad_key_is_refused_and_signs_nobody_in(ctx: Ctx) -> None:
    client = page_client(ctx, "anon")
    r = _post(client, "/sign-in", {"api_key": "tk_" + "A" * 43})
    assert r.status_code == 401 and "invalid, expired or revoked" in r.get_data(as_text=True)
    assert client.get("/me/photos").status_code == 302


def test_revoking_the_key_ends_the_session(ctx: Ctx) -> None:
    from tryon.records.db import session_scope
    from tryon.records.models import ApiKey

    client = page_client(ctx, "shopper_a")
    assert client.get("/me/photos").status_code == 200
    with session_scope(ctx.factory) as s:
        for row in s.query(ApiKey).filter(ApiKey.account_id == ctx.ids["shopper_a"]):
            row.revoked_at = row.created_at
    r = client.get("/me/photos")
    assert r.status_code == 302 and r.headers["Location"].startswith("/sign-in")


def test_sign_out_clears_the_session(ctx: Ctx) -> None:
    client = page_client(ctx, "merchant_x")
    assert client.get("/shop/garments").status_code == 200
    assert _post(client, "/sign-out").status_code == 302
    assert client.get("/shop/garments").status_code == 302


def test_next_after_sign_in_is_a_local_path_only(ctx: Ctx) -> None:
    for target, landing in (("/catalog", "/catalog"), ("//evil.example/x", "/me/photos"),
                            ("https://evil.example/", "/me/photos"), ("/\\evil", "/me/photos")):
        client = page_client(ctx, "anon")
        r = _post(client, "/sign-in", {"api_key": ctx.keys["shopper_a"], "next": target})
        assert r.headers["Location"] == landing, target


def test_forged_form_without_or_with_a_wrong_token_is_refused(ctx: Ctx) -> None:
    client = page_client(ctx, "merchant_x")
    garment = ctx.add_garment("merchant_x")
    for data in ({}, {"csrf_token": ""}, {"csrf_token": "forged"}):
        r = client.post(f"/shop/garments/{garment}/delete", data=data)
        assert r.status_code == 400, data
    # another session's token is not this session's
    other = page_client(ctx, "merchant_x")
    r = client.post(f"/shop/garments/{garment}/delete", data={"csrf_token": page_csrf(other)})
    assert r.status_code == 400
    assert client.get(f"/shop/garments/{garment}").status_code == 200


# --- headers, assets, escaping -------------------------------------------------------------
def test_pages_send_a_strict_content_security_policy(ctx: Ctx) -> None:
    client = page_client(ctx, "shopper_a")
    csp = client.get("/me/photos").headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "default-src 'self'" in csp
    assert "frame-ancestors 'none'" in csp


def _external_refs(html: str) -> list[str]:
    refs = re.findall(r'(?:src|href|action)\s*=\s*["\']([^"\']+)', html)
    refs += re.findall(r'url\(\s*["\']?([^)"\']+)', html)
    return [r for r in refs if re.match(r"^(?:[a-z][a-z0-9+.-]*:)?//", r, re.I)]


def test_no_page_or_asset_refers_to_another_host(ctx: Ctx) -> None:
    client = page_client(ctx, "shopper_a")
    photo = ctx.add_photo("shopper_a")
    for path in ("/sign-in", "/me/photos", f"/me/photos/{photo}", "/catalog", "/docs",
                 "/static/app.css", "/static/app.js"):
        r = client.get(path)
        assert r.status_code == 200, path
        assert not _external_refs(r.get_data(as_text=True)), path
    docs = client.get("/docs").get_data(as_text=True)
    for asset in re.findall(r'(?:src|href)="(/static/swagger-ui/[^"]+)"', docs):
        assert client.get(asset).status_code == 200, asset
    assert '"validatorUrl": null' in docs  # Swagger UI's validator badge would call out
    assert client.get("/static/swagger-ui/LICENSE").status_code == 200
    assert client.get("/static/swagger-ui/index.html").status_code == 404


def test_garment_names_and_skus_are_escaped(ctx: Ctx) -> None:
    from tryon.records.db import session_scope
    from tryon.records.models import Garment

    gid = ctx.add_garment("merchant_x")
    with session_scope(ctx.factory) as s:
        g = s.get(Garment, gid)
        g.name, g.sku = XSS, '"><img src=x onerror=alert(1)>'
    shopper, merchant = page_client(ctx, "shopper_a"), page_client(ctx, "merchant_x")
    for client, path in ((shopper, "/catalog"), (merchant, "/shop/garments"),
                         (merchant, f"/shop/garments/{gid}")):
        html = client.get(path).get_data(as_text=True)
        assert "<script>alert" not in html and "<b>Bold</b>" not in html, path
        assert "&lt;script&gt;alert" in html, path
        assert "<img src=x" not in html, path


# --- shopper ---------------------------------------------------------------------------------
def test_photo_upload_needs_consent_and_shows_the_verdicts(ctx: Ctx) -> None:
    client = page_client(ctx, "shopper_a")
    r = _post(client, "/me/photos", {"image": (io.BytesIO(jpeg_bytes()), "me.jpg")},
              content_type="multipart/form-data")
    assert r.status_code == 422 and "consent_required" in r.get_data(as_text=True)
    assert ctx.analyzer.calls == 0
    ctx.analyzer.verdicts["lower_body"] = "pose_not_usable"
    r = _post(client, "/me/photos", {"image": (io.BytesIO(jpeg_bytes()), "me.jpg"),
                                     "consent": "yes"}, content_type="multipart/form-data")
    assert r.status_code == 302
    html = client.get(r.headers["Location"]).get_data(as_text=True)
    assert "pose_not_usable" in html and 'id="overlay-upper_body"' in html
    assert 'id="overlay-lower_body"' not in html


def test_unusable_photo_is_refused_with_its_typed_error(ctx: Ctx) -> None:
    client = page_client(ctx, "shopper_a")
    for c in list(ctx.analyzer.verdicts):
        ctx.analyzer.verdicts[c] = "no_person"
    r = _post(client, "/me/photos", {"image": (io.BytesIO(jpeg_bytes()), "me.jpg"),
                                     "consent": "yes"}, content_type="multipart/form-data")
    assert r.status_code == 422 and "no_person" in r.get_data(as_text=True)


def test_start_try_on_publishes_once_per_form(ctx: Ctx) -> None:
    client = page_client(ctx, "shopper_a")
    photo, garment = ctx.add_photo("shopper_a"), ctx.add_garment("merchant_x")
    form = {"photo_id": photo, "garment_id": garment, "form_id": "abcdef123456"}
    first = _post(client, "/me/tryons", form)
    again = _post(client, "/me/tryons", form)  # a double-submitted form
    assert first.status_code == again.status_code == 302
    assert first.headers["Location"] == again.headers["Location"]
    assert len(ctx.publisher.published) == 1
    job_id = first.headers["Location"].rsplit("/", 1)[1]
    status = client.get(f"/me/tryons/{job_id}/status.json").get_json()
    assert status["status"] == "queued" and status["progress"] == 0.0
    # another shopper's photo is 404, as in the API
    other = ctx.add_photo("shopper_b")
    r = _post(client, "/me/tryons", {"photo_id": other, "garment_id": garment})
    assert r.status_code == 404


def test_succeeded_try_on_shows_before_after_and_a_download(ctx: Ctx) -> None:
    client = page_client(ctx, "shopper_a")
    photo, garment = ctx.add_photo("shopper_a"), ctx.add_garment("merchant_x")
    job = ctx.add_job("shopper_a", photo, garment)
    html = client.get(f"/me/tryons/{job}").get_data(as_text=True)
    assert f"/me/photos/{photo}/image" in html and f"/me/tryons/{job}/results/0.png" in html
    assert "data-compare-range" in html and "download=1" in html
    r = client.get(f"/me/tryons/{job}/results/0.png?download=1")
    assert r.mimetype == "image/png" and r.headers["Content-Disposition"].startswith("attachment")


def test_erase_needs_the_word_and_then_signs_out(ctx: Ctx) -> None:
    client = page_client(ctx, "shopper_a")
    ctx.add_photo("shopper_a")
    assert _post(client, "/me/erase", {"confirm": "yes"}).status_code == 422
    r = _post(client, "/me/erase", {"confirm": "ERASE"})
    assert r.status_code == 200 and "erased" in r.get_data(as_text=True)
    assert client.get("/me/photos").status_code == 302


# --- merchant --------------------------------------------------------------------------------
def _upload_garment(client: Any, **fields: str) -> Any:
    data = {"image": (io.BytesIO(garment_png()), "g.png"), "category": "upper_body",
            "length": "regular", "name": "Shirt", "sku": "S-1", **fields}
    return _post(client, "/shop/garments/new", data, content_type="multipart/form-data")


def _stored_keys(ctx: Ctx) -> set[str]:
    root = ctx.settings.resolved_storage_root
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


def test_a_garment_is_saved_only_after_its_mask_is_approved(ctx: Ctx) -> None:
    from tryon.records.models import Garment

    client = page_client(ctx, "merchant_x")
    before = _stored_keys(ctx)
    r = _upload_garment(client)
    assert r.headers["Location"] == "/shop/garments/review"
    with ctx.factory() as s:
        assert s.query(Garment).count() == 0  # nothing in the catalog yet
    assert len(_stored_keys(ctx) - before) == 2
    assert client.get("/shop/garments/review/cutout.png").mimetype == "image/png"
    # discarding removes the stored files
    assert _post(client, "/shop/garments/review", {"decision": "discard"}).status_code == 302
    assert _stored_keys(ctx) == before
    assert client.get("/shop/garments/review").status_code == 404
    # approving saves it
    _upload_garment(client, name="Approved")
    r = _post(client, "/shop/garments/review", {"decision": "approve"})
    assert r.status_code == 302 and "/shop/garments/" in r.headers["Location"]
    with ctx.factory() as s:
        g = s.query(Garment).one()
        assert g.name == "Approved" and g.owner_id == ctx.ids["merchant_x"]


def test_garment_upload_errors_are_shown_on_the_form(ctx: Ctx) -> None:
    import numpy as np
    from webapi_support import png_bytes

    client = page_client(ctx, "merchant_x")
    r = _upload_garment(client, category="hat")
    assert r.status_code == 422 and "Choose a category" in r.get_data(as_text=True)
    noise = np.random.default_rng(0).integers(0, 256, (400, 300, 3), dtype=np.uint8)
    r = _post(client, "/shop/garments/new", {
        "image": (io.BytesIO(png_bytes(noise)), "n.png"), "category": "upper_body"},
        content_type="multipart/form-data")
    assert r.status_code == 422 and "garment_not_separable" in r.get_data(as_text=True)


def test_edit_and_delete_a_garment(ctx: Ctx) -> None:
    from tryon.records.models import Garment

    client = page_client(ctx, "merchant_x")
    gid = ctx.add_garment("merchant_x")
    r = _post(client, f"/shop/garments/{gid}",
              {"name": "Renamed", "sku": "R-2", "category": "outerwear", "length": "long"})
    assert r.status_code == 302
    with ctx.factory() as s:
        g = s.get(Garment, gid)
        assert (g.name, g.sku, g.category, g.length) == ("Renamed", "R-2", "outerwear", "long")
    assert _post(client, f"/shop/garments/{gid}", {"category": "x"}).status_code == 422
    assert _post(client, f"/shop/garments/{gid}/delete").status_code == 302
    assert client.get(f"/shop/garments/{gid}").status_code == 404


def test_sample_placement_on_the_demo_person(ctx: Ctx) -> None:
    client = page_client(ctx, "merchant_x")
    gid = ctx.add_garment("merchant_x")
    r = client.get(f"/shop/garments/{gid}/sample.png")
    assert r.status_code == 200 and r.mimetype == "image/png"
    assert ctx.analyzer.calls == 1  # analysed once, then cached
    client.get(f"/shop/garments/{gid}/sample.png")
    assert ctx.analyzer.calls == 1


# --- ops -----------------------------------------------------------------------------------------
def test_throughput_chart_counts_the_last_hour(ctx: Ctx) -> None:
    from tryon.records.db import session_scope
    from tryon.records.models import TryOnJob, utcnow

    photo, garment = ctx.add_photo("shopper_a"), ctx.add_garment("merchant_x")
    now = utcnow()
    finished = [("succeeded", 1), ("succeeded", 2), ("failed", 3), ("succeeded", 90)]
    ids = [ctx.add_job("shopper_a", photo, garment, status=s) for s, _ in finished]
    with session_scope(ctx.factory) as s:
        for job_id, (_, minutes_ago) in zip(ids, finished, strict=True):
            s.get(TryOnJob, job_id).finished_at = now - timedelta(minutes=minutes_ago)
    html = page_client(ctx, "ops").get("/ops").get_data(as_text=True)
    assert "3 finished, 1 failed" in html and "33.3 %" in html  # the 90-minute-old one is out
    assert html.count('class="bar-bad"') == 12 and "<svg" in html


def test_ops_page_shows_registered_workers(ctx: Ctx) -> None:
    from tryon.records import workers as registry
    from tryon.records.db import session_scope
    from tryon.records.models import utcnow

    with session_scope(ctx.factory) as s:
        registry.register(s, "gpu-1@host", queues=["gpu"], engines=["anydoor", "preview"])
        registry.beat(s, "gpu-1@host", state="ready")
    # a worker the ping cannot see (the embedded broker) shows up through its job rows
    photo, garment = ctx.add_photo("shopper_a"), ctx.add_garment("merchant_x")
    ctx.add_job("shopper_a", photo, garment, worker_id="cpu-9@box", finished_at=utcnow())
    html = page_client(ctx, "ops").get("/ops").get_data(as_text=True)
    assert '<th scope="row">gpu-1@host</th>' in html and "anydoor, preview" in html
    assert ">ready<" in html
    assert '<th scope="row">cpu-9@box</th>' in html


def test_ops_retry_and_cancel(ctx: Ctx) -> None:
    from tryon.records.models import TryOnJob

    client = page_client(ctx, "ops")
    photo, garment = ctx.add_photo("shopper_a"), ctx.add_garment("merchant_x")
    failed = ctx.add_job("shopper_a", photo, garment, status="failed", error_code="timeout")
    queued = ctx.add_job("shopper_a", photo, garment, status="queued")
    html = client.get(f"/ops/jobs/{failed}").get_data(as_text=True)
    assert "timeout" in html and "Retry" in html
    assert _post(client, f"/ops/jobs/{failed}/retry").status_code == 302
    assert (failed, "cpu") in ctx.publisher.published
    # retrying a job that is not failed shows the typed error on the job page
    r = _post(client, f"/ops/jobs/{queued}/retry")
    assert r.status_code == 409 and "job_not_retryable" in r.get_data(as_text=True)
    assert _post(client, f"/ops/jobs/{queued}/cancel").status_code == 302
    with ctx.factory() as s:
        assert s.get(TryOnJob, queued).status == "canceled"
    jobs = client.get("/ops/jobs?status=canceled").get_data(as_text=True)
    assert queued[:12] in jobs
