"""Try-on creation (R-4, S-14), status, cancel (R-15), results and signed URLs (S-12), ops (R-17)."""

from __future__ import annotations

import string
import threading
from datetime import timedelta
from typing import Any

import pytest
from webapi_support import Ctx, make_ctx

from tryon.records.db import session_scope
from tryon.records.models import TryOnJob, TryOnResult


def _setup(ctx: Ctx, who: str = "shopper_a") -> tuple[str, str]:
    return ctx.add_photo(who), ctx.add_garment("merchant_x")


def _post(ctx: Ctx, body: dict[str, Any], who: str = "shopper_a", key: str | None = None) -> Any:
    extra = {"Idempotency-Key": key} if key else {}
    return ctx.client.post("/v1/tryons", json=body, headers=ctx.h(who, **extra))


def test_create_commits_then_publishes_and_polls(ctx: Ctx) -> None:
    photo, garment = _setup(ctx)
    r = _post(ctx, {"photo_id": photo, "garment_id": garment, "num_samples": 3, "seed": 7,
                    "steps": 20, "guidance": 3.0, "box": [10, 20, 200, 300]})
    assert r.status_code == 202, r.get_json()
    job = r.get_json()
    assert job["status"] == "queued" and job["progress"] == 0.0 and job["engine"] == "preview"
    assert job["params"]["num_samples"] == 3 and job["params"]["box"] == [10, 20, 200, 300]
    assert ctx.publisher.published == [(job["id"], "cpu")]
    with ctx.factory() as s:
        row = s.get(TryOnJob, job["id"])
        assert row.published_at is not None and row.status == "queued"
    # the worker makes progress; the poll shows it as percent
    with session_scope(ctx.factory) as s:
        row = s.get(TryOnJob, job["id"])
        row.status, row.progress, row.stage, row.attempt = "running", 0.4, "sampling", 1
    got = ctx.client.get(f"/v1/tryons/{job['id']}", headers=ctx.h("shopper_a")).get_json()
    assert got["status"] == "running" and got["progress"] == 40.0 and got["stage"] == "sampling"


@pytest.mark.parametrize(
    "patch,code",
    [({"num_samples": 5}, "invalid_input"), ({"num_samples": 0}, "invalid_input"),
     ({"steps": 0}, "invalid_input"), ({"seed": -1}, "invalid_input"),
     ({"box": [0, 0, 10]}, "invalid_input"), ({"box": [50, 50, 40, 60]}, "invalid_box"),
     ({"box": [0, 0, 10_000, 10]}, "invalid_box"),
     ({"webhook_url": "http://127.0.0.1/hook"}, "webhook_url_not_allowed"),
     ({"webhook_url": "https://169.254.169.254/latest"}, "webhook_url_not_allowed")],
)
def test_create_validation(ctx: Ctx, patch: dict[str, Any], code: str) -> None:
    photo, garment = _setup(ctx)
    r = _post(ctx, {"photo_id": photo, "garment_id": garment, **patch})
    assert r.status_code == 422, r.get_json()
    assert r.get_json()["error"]["code"] == code
    assert ctx.publisher.published == []


@pytest.mark.parametrize(
    "field,value",
    [("num_samples", "2"), ("num_samples", 2.5), ("num_samples", True), ("steps", "20"),
     ("steps", 20.9), ("seed", "7"), ("box", [0.5, 0, 10.7, 10]), ("box", ["0", 0, 10, 10]),
     ("guidance", "4.5"), ("guidance", True)],
)
def test_number_fields_are_strict_not_coerced(ctx: Ctx, field: str, value: Any) -> None:
    """A string or a fractional number is a 422 naming the field, never coerced or truncated
    (box [0.5, 0, 10.7, 10] used to become [0, 0, 10, 10])."""
    photo, garment = _setup(ctx)
    r = _post(ctx, {"photo_id": photo, "garment_id": garment, field: value})
    assert r.status_code == 422, r.get_json()
    err = r.get_json()["error"]
    assert err["code"] == "invalid_input" and field in err["message"]
    assert field in err["details"]["json"]
    assert ctx.publisher.published == []


def test_webhook_host_resolving_private_is_refused(tmp_path: Any) -> None:
    ctx = make_ctx(tmp_path, TRYON_WEBHOOK_RESOLVER=lambda host, port: ["10.0.0.5"])
    photo, garment = _setup(ctx)
    r = _post(ctx, {"photo_id": photo, "garment_id": garment,
                    "webhook_url": "https://hooks.example.test/x"})
    assert r.status_code == 422 and r.get_json()["error"]["code"] == "webhook_url_not_allowed"
    ctx2 = make_ctx(tmp_path / "b", TRYON_WEBHOOK_RESOLVER=lambda host, port: ["93.184.216.34"])
    photo, garment = _setup(ctx2)
    r = _post(ctx2, {"photo_id": photo, "garment_id": garment,
                     "webhook_url": "https://hooks.example.test/x"})
    assert r.status_code == 202


def test_unusable_photo_for_category_is_refused_unless_box_given(ctx: Ctx) -> None:
    photo, _ = _setup(ctx)
    garment = ctx.add_garment("merchant_x", category="lower_body")
    with session_scope(ctx.factory) as s:
        from tryon.records.models import Photo

        p = s.get(Photo, photo)
        p.verdicts = {**p.verdicts, "lower_body": "pose_not_usable"}
        p.verdict_details = {"lower_body": {
            "message": "A lower body garment needs these body parts clearly in view...",
            "missing": ["left_knee", "right_knee"], "reason": "missing_landmarks"}}
    r = _post(ctx, {"photo_id": photo, "garment_id": garment})
    assert r.status_code == 422 and r.get_json()["error"]["code"] == "pose_not_usable"
    err = r.get_json()["error"]
    assert err["message"].startswith("A lower body garment")
    assert err["details"] == {"missing": ["left_knee", "right_knee"], "reason": "missing_landmarks"}
    r = _post(ctx, {"photo_id": photo, "garment_id": garment, "box": [10, 10, 100, 100]})
    assert r.status_code == 202


def test_publish_failure_still_202_and_unpublished(tmp_path: Any) -> None:
    from web.publisher import RecordingPublisher

    ctx = make_ctx(tmp_path, TRYON_PUBLISHER=RecordingPublisher(fail=True))
    photo, garment = _setup(ctx)
    r = _post(ctx, {"photo_id": photo, "garment_id": garment})
    assert r.status_code == 202
    with ctx.factory() as s:
        row = s.get(TryOnJob, r.get_json()["id"])
        # committed, queued, and visibly unpublished: the reaper's republish condition
        assert row.status == "queued" and row.published_at is None


def test_open_job_cap(ctx: Ctx) -> None:
    photo, garment = _setup(ctx)
    for _ in range(ctx.settings.max_open_jobs_per_shopper):
        assert _post(ctx, {"photo_id": photo, "garment_id": garment}).status_code == 202
    r = _post(ctx, {"photo_id": photo, "garment_id": garment})
    assert r.status_code == 429 and r.get_json()["error"]["code"] == "too_many_open_jobs"
    # another shopper is not affected
    p_b = ctx.add_photo("shopper_b")
    assert _post(ctx, {"photo_id": p_b, "garment_id": garment}, who="shopper_b").status_code == 202


def test_other_shoppers_photo_is_404(ctx: Ctx) -> None:
    photo, garment = _setup(ctx, who="shopper_b")
    r = _post(ctx, {"photo_id": photo, "garment_id": garment})
    assert r.status_code == 404 and r.get_json()["error"]["code"] == "photo_not_found"


# --- idempotency (S-14) --------------------------------------------------------------------


def test_idempotent_replay_and_mismatch(ctx: Ctx) -> None:
    photo, garment = _setup(ctx)
    body = {"photo_id": photo, "garment_id": garment, "num_samples": 2}
    first = _post(ctx, body, key="order-1")
    assert first.status_code == 202
    # same body in another key order and spacing: same response, no second job or publish
    again = ctx.client.post(
        "/v1/tryons", data=f'{{"num_samples":2, "garment_id":"{garment}","photo_id":"{photo}"}}',
        content_type="application/json", headers=ctx.h("shopper_a", **{"Idempotency-Key": "order-1"}))
    assert again.status_code == 202 and again.get_json() == first.get_json()
    assert len(ctx.publisher.published) == 1
    other = _post(ctx, {**body, "num_samples": 3}, key="order-1")
    assert other.status_code == 422 and other.get_json()["error"]["code"] == "idempotency_mismatch"
    # keys are scoped per principal: shopper B's "order-1" is independent
    p_b = ctx.add_photo("shopper_b")
    r_b = _post(ctx, {"photo_id": p_b, "garment_id": garment}, who="shopper_b", key="order-1")
    assert r_b.status_code == 202 and r_b.get_json()["id"] != first.get_json()["id"]
    # the replay is the stored response even after the job moved on
    with session_scope(ctx.factory) as s:
        s.get(TryOnJob, first.get_json()["id"]).status = "running"
    assert _post(ctx, body, key="order-1").get_json() == first.get_json()


def test_idempotency_key_expires(ctx: Ctx) -> None:
    photo, garment = _setup(ctx)
    body = {"photo_id": photo, "garment_id": garment}
    first = _post(ctx, body, key="k").get_json()
    with session_scope(ctx.factory) as s:
        job = s.get(TryOnJob, first["id"])
        job.created_at = job.created_at - timedelta(seconds=ctx.settings.idempotency_ttl_s + 5)
        job.status = "succeeded"
    second = _post(ctx, {**body, "num_samples": 2}, key="k")
    assert second.status_code == 202 and second.get_json()["id"] != first["id"]


def test_idempotency_in_flight_is_409(ctx: Ctx) -> None:
    photo, garment = _setup(ctx)
    body = {"photo_id": photo, "garment_id": garment}
    # a committed row without a stored response is a request still being processed
    ctx.add_job("shopper_a", photo, garment, status="queued", idempotency_key="busy",
                request_hash=__import__("web.api.tryons", fromlist=["x"]).request_hash(
                    {"photo_id": photo, "garment_id": garment, "engine": None, "num_samples": 1,
                     "seed": None, "steps": None, "guidance": None, "box": None,
                     "webhook_url": None}))
    r = _post(ctx, body, key="busy")
    assert r.status_code == 409 and r.get_json()["error"]["code"] == "idempotency_in_flight"


def test_idempotency_row_without_response_is_rebuilt_after_the_grace_period(ctx: Ctx) -> None:
    """A keyed row with no stored response (left by an older release, or any request that died
    before storing it) answers 409 only briefly, then replays the job (202), not for 24 h."""
    from web.api.tryons import IN_FLIGHT_GRACE_S, request_hash

    photo, garment = _setup(ctx)
    body = {"photo_id": photo, "garment_id": garment}
    digest = request_hash({"photo_id": photo, "garment_id": garment, "engine": None,
                           "num_samples": 1, "seed": None, "steps": None, "guidance": None,
                           "box": None, "webhook_url": None})
    job = ctx.add_job("shopper_a", photo, garment, status="queued", idempotency_key="old",
                      request_hash=digest)
    assert _post(ctx, body, key="old").status_code == 409
    with session_scope(ctx.factory) as s:
        row = s.get(TryOnJob, job)
        row.created_at = row.created_at - timedelta(seconds=IN_FLIGHT_GRACE_S + 1)
    r = _post(ctx, body, key="old")
    assert r.status_code == 202, r.get_json()
    assert r.get_json()["id"] == job and r.get_json()["status"] == "queued"
    assert ctx.publisher.published == []  # no second job, nothing re-sent
    with ctx.factory() as s:
        assert s.query(TryOnJob).count() == 1
        assert s.get(TryOnJob, job).response_body == r.get_json()  # stored: later replays agree
    assert _post(ctx, body, key="old").get_json() == r.get_json()


class _AbortingPublisher:
    """A broker publish that hangs until gunicorn's worker timeout fires: the sync worker's
    SIGABRT handler calls ``sys.exit(1)``, i.e. SystemExit inside the view, after the commit."""

    def __init__(self) -> None:
        self.abort = True
        self.published: list[tuple[str, str]] = []

    def publish(self, job_id: str, queue: str) -> None:
        if self.abort:
            raise SystemExit(1)
        self.published.append((job_id, queue))


def test_idempotency_key_replays_after_a_request_aborted_during_publish(tmp_path: Any) -> None:
    """The response is stored in the same commit as the job row, so a request killed after the
    commit leaves a key that replays (202), not one stuck on 409 idempotency_in_flight."""
    publisher = _AbortingPublisher()
    ctx = make_ctx(tmp_path, TRYON_PUBLISHER=publisher)
    try:
        photo, garment = ctx.add_photo("shopper_a"), ctx.add_garment("merchant_x")
        body = {"photo_id": photo, "garment_id": garment}
        headers = ctx.h("shopper_a", **{"Idempotency-Key": "order-1"})
        with pytest.raises(SystemExit):
            ctx.client.post("/v1/tryons", json=body, headers=headers)
        publisher.abort = False  # the worker process is replaced; the client retries
        r = ctx.client.post("/v1/tryons", json=body, headers=headers)
        assert r.status_code == 202, (r.status_code, r.get_json())
        with ctx.factory() as s:
            rows = s.query(TryOnJob).all()
        assert [j.id for j in rows] == [r.get_json()["id"]]
        assert rows[0].published_at is None  # the reaper publishes it; the replay does not
        assert publisher.published == []
    finally:
        ctx.factory.kw["bind"].dispose()


def test_idempotency_concurrent_requests(ctx: Ctx) -> None:
    """N threads send the same key at once: one job, one publish; every answer is the same 202
    or a 409 in-flight (never a 5xx, never a second job)."""
    photo, garment = _setup(ctx)
    body = {"photo_id": photo, "garment_id": garment}
    n = 6
    barrier = threading.Barrier(n)
    results: list[tuple[int, Any]] = []
    lock = threading.Lock()

    def send() -> None:
        client = ctx.app.test_client()
        barrier.wait()
        r = client.post("/v1/tryons", json=body,
                        headers=ctx.h("shopper_a", **{"Idempotency-Key": "same"}))
        with lock:
            results.append((r.status_code, r.get_json()))

    threads = [threading.Thread(target=send) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    codes = sorted(c for c, _ in results)
    assert set(codes) <= {202, 409}, results
    assert 202 in codes
    ok_bodies = {b["id"] for c, b in results if c == 202}
    assert len(ok_bodies) == 1
    with ctx.factory() as s:
        assert s.query(TryOnJob).filter_by(idempotency_key="same").count() == 1
    assert len(ctx.publisher.published) == 1
    # once settled, a retry replays
    assert _post(ctx, body, key="same").get_json()["id"] in ok_bodies


# --- cancel, results, signed URLs ----------------------------------------------------------


def test_cancel(ctx: Ctx) -> None:
    photo, garment = _setup(ctx)
    job = _post(ctx, {"photo_id": photo, "garment_id": garment}).get_json()
    r = ctx.client.post(f"/v1/tryons/{job['id']}/cancel", headers=ctx.h("shopper_a"))
    assert r.status_code == 200 and r.get_json()["status"] == "canceled"
    assert r.get_json()["error"]["code"] == "canceled"
    # idempotent; a finished job is not cancelable
    assert ctx.client.post(f"/v1/tryons/{job['id']}/cancel", headers=ctx.h("shopper_a")).status_code == 200
    done = ctx.add_job("shopper_a", photo, garment, status="succeeded")
    r = ctx.client.post(f"/v1/tryons/{done}/cancel", headers=ctx.h("shopper_a"))
    assert r.status_code == 409 and r.get_json()["error"]["code"] == "job_not_cancelable"


def _result_url(ctx: Ctx, job_id: str) -> str:
    got = ctx.client.get(f"/v1/tryons/{job_id}", headers=ctx.h("shopper_a")).get_json()
    assert got["status"] == "succeeded" and len(got["results"]) == 1
    res = got["results"][0]
    assert res["url_expires_in"] <= 900
    return res["url"].replace("http://localhost", "")


def test_results_owner_and_signed_url(ctx: Ctx, monkeypatch: pytest.MonkeyPatch) -> None:
    photo, garment = _setup(ctx)
    job = ctx.add_job("shopper_a", photo, garment)
    r = ctx.client.get(f"/v1/tryons/{job}/results/0", headers=ctx.h("shopper_a"))
    assert r.status_code == 200 and r.mimetype == "image/png" and r.data[:4] == b"\x89PNG"
    assert r.headers["Content-Security-Policy"] == "default-src 'none'"
    assert ctx.client.get(f"/v1/tryons/{job}/results/1", headers=ctx.h("shopper_a")).status_code == 404

    url = _result_url(ctx, job)
    r = ctx.client.get(url)  # no API key needed
    assert r.status_code == 200 and r.mimetype == "image/png"
    assert r.headers["X-Content-Type-Options"] == "nosniff"
    assert r.headers["Content-Security-Policy"] == "default-src 'none'"
    cc = r.headers["Cache-Control"]
    assert cc.startswith("private, max-age=") and 0 < int(cc.split("=")[1]) <= 900
    # one changed character anywhere in the token -> 403
    token = url.rsplit("/", 1)[1]
    b64 = string.ascii_uppercase + string.ascii_lowercase + string.digits + "-_"
    for pos in (0, len(token) // 2, len(token) - 1):
        if token[pos] not in b64:
            pos -= 1
        # flip the top bit of the 6-bit group: the low bits of a final base64 character may be
        # padding that decodes to the same bytes (A <-> B can be a no-op there)
        ch = b64[b64.index(token[pos]) ^ 0b100000]
        bad = token[:pos] + ch + token[pos + 1:]
        r = ctx.client.get(f"/files/results/{bad}")
        assert r.status_code == 403 and r.get_json()["error"]["code"] == "forbidden"
    # expired (16 minutes later) -> 403
    import time as _time

    real = _time.time
    monkeypatch.setattr(_time, "time", lambda: real() + 16 * 60)
    assert ctx.client.get(url).status_code == 403
    monkeypatch.setattr(_time, "time", real)
    # deleted result -> 404
    with session_scope(ctx.factory) as s:
        for row in s.query(TryOnResult).filter_by(job_id=job):
            s.delete(row)
    assert ctx.client.get(url).status_code == 404


def test_signed_url_is_bound_to_its_purpose(ctx: Ctx) -> None:
    """A token signed with the same secret for another purpose (salt) is refused."""
    from itsdangerous import URLSafeTimedSerializer

    photo, garment = _setup(ctx)
    job = ctx.add_job("shopper_a", photo, garment)
    with ctx.factory() as s:
        key = s.query(TryOnResult).filter_by(job_id=job).one().storage_key
    forged = URLSafeTimedSerializer("test-secret", salt="something-else").dumps(
        {"k": key, "j": job, "i": 0})
    assert ctx.client.get(f"/files/results/{forged}").status_code == 403


def test_result_urls_cannot_be_signed_with_the_webhook_or_master_secret(ctx: Ctx) -> None:
    """Result URLs and webhooks use different keys derived from the master secret: a webhook
    receiver (who holds the webhook secret) cannot mint result URLs, nor can the raw master."""
    from itsdangerous import URLSafeTimedSerializer

    from tryon.webhooks import load_or_create_secret, webhook_secrets
    from web.signing import RESULT_SALT

    photo, garment = _setup(ctx)
    job = ctx.add_job("shopper_a", photo, garment)
    assert ctx.client.get(_result_url(ctx, job)).status_code == 200
    with ctx.factory() as s:
        key = s.query(TryOnResult).filter_by(job_id=job).one().storage_key
    payload = {"k": key, "j": job, "i": 0}
    webhook = webhook_secrets(ctx.settings)[0]
    assert load_or_create_secret(ctx.settings) == webhook  # what workers sign webhooks with
    for secret in (webhook, ctx.settings.secret_key):
        forged = URLSafeTimedSerializer(secret, salt=RESULT_SALT).dumps(payload)
        assert ctx.client.get(f"/files/results/{forged}").status_code == 403, secret


def test_delete_photo_removes_results_and_cancels(ctx: Ctx) -> None:
    photo, garment = _setup(ctx)
    done = ctx.add_job("shopper_a", photo, garment)
    url = _result_url(ctx, done)
    queued = ctx.add_job("shopper_a", photo, garment, status="queued")
    assert ctx.client.delete(f"/v1/photos/{photo}", headers=ctx.h("shopper_a")).status_code == 204
    assert ctx.client.get(url).status_code == 404
    assert ctx.client.get(f"/v1/photos/{photo}", headers=ctx.h("shopper_a")).status_code == 404
    got = ctx.client.get(f"/v1/tryons/{queued}", headers=ctx.h("shopper_a")).get_json()
    assert got["status"] == "canceled"
    root = ctx.settings.resolved_storage_root
    assert not list((root / "results").rglob("*.png"))
    assert not list((root / "photos").rglob("*.jpg"))


def _finish_before_cancel(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Make every cancel race with a worker: the job succeeds between the delete's status read
    and ``cancel_job`` (so the real ``cancel_job`` raises job_not_cancelable)."""
    from sqlalchemy import update

    import tryon.records.jobs as jobs

    real = jobs.cancel_job
    raced: list[str] = []

    def racing(session: Any, job_id: str, now: Any = None) -> Any:
        session.execute(update(TryOnJob).where(TryOnJob.id == job_id).values(status="succeeded"))
        raced.append(job_id)
        return real(session, job_id, now)

    monkeypatch.setattr(jobs, "cancel_job", racing)
    return raced


def test_delete_photo_when_a_job_finishes_during_the_delete(
        ctx: Ctx, monkeypatch: pytest.MonkeyPatch) -> None:
    photo, garment = _setup(ctx)
    running = ctx.add_job("shopper_a", photo, garment, status="running")
    raced = _finish_before_cancel(monkeypatch)
    r = ctx.client.delete(f"/v1/photos/{photo}", headers=ctx.h("shopper_a"))
    assert r.status_code == 204, r.get_json()
    assert raced == [running]
    assert ctx.client.get(f"/v1/photos/{photo}", headers=ctx.h("shopper_a")).status_code == 404


def test_delete_garment_when_a_job_finishes_during_the_delete(
        ctx: Ctx, monkeypatch: pytest.MonkeyPatch) -> None:
    photo, garment = _setup(ctx)
    queued = ctx.add_job("shopper_a", photo, garment, status="queued")
    raced = _finish_before_cancel(monkeypatch)
    r = ctx.client.delete(f"/v1/garments/{garment}", headers=ctx.h("merchant_x"))
    assert r.status_code == 204, r.get_json()
    assert raced == [queued]
    assert ctx.client.get(f"/v1/garments/{garment}", headers=ctx.h("merchant_x")).status_code == 404


# --- ops -----------------------------------------------------------------------------------


def test_ops_queues_counts_and_retry(ctx: Ctx) -> None:
    photo, garment = _setup(ctx)
    for status in ("queued", "queued", "running", "succeeded", "failed", "canceled"):
        ctx.add_job("shopper_a", photo, garment, status=status, error_code="timeout"
                    if status == "failed" else None)
    q = ctx.client.get("/v1/ops/queues", headers=ctx.h("ops")).get_json()
    assert q["counts"] == {"queued": 2, "running": 1, "succeeded": 1, "failed": 1, "canceled": 1}
    assert q["oldest_queued_age_s"] is not None and q["oldest_queued_age_s"] >= 0
    assert q["broker"]["source"] in {"sqla_table", None}
    failed = ctx.client.get("/v1/ops/jobs?status=failed", headers=ctx.h("ops")).get_json()["items"]
    assert len(failed) == 1 and failed[0]["error"]["code"] == "timeout"
    r = ctx.client.post(f"/v1/ops/tryons/{failed[0]['id']}/retry", headers=ctx.h("ops"))
    assert r.status_code == 202 and r.get_json()["status"] == "queued"
    assert ctx.publisher.published[-1] == (failed[0]["id"], "cpu")
    r = ctx.client.post(f"/v1/ops/tryons/{failed[0]['id']}/retry", headers=ctx.h("ops"))
    assert r.status_code == 409
    assert ctx.client.get("/v1/ops/workers", headers=ctx.h("ops")).get_json()["workers"] == []
    m = ctx.client.get("/metrics", headers=ctx.h("ops"))
    assert m.status_code == 200 and b'tryon_jobs{queue="cpu",status="queued"} 3.0' in m.data


def test_pagination(ctx: Ctx) -> None:
    ids = {ctx.add_photo("shopper_a") for _ in range(5)}
    seen: list[str] = []
    cursor = None
    while True:
        url = "/v1/photos?limit=2" + (f"&cursor={cursor}" if cursor else "")
        page = ctx.client.get(url, headers=ctx.h("shopper_a")).get_json()
        seen += [p["id"] for p in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert len(seen) == 5 and set(seen) == ids
    r = ctx.client.get("/v1/photos?cursor=!!!", headers=ctx.h("shopper_a"))
    assert r.status_code == 422 and r.get_json()["error"]["code"] == "invalid_cursor"


@pytest.mark.parametrize("ts", ["9999-12-31T23:59:59-14:00", "0001-01-01T00:00:00+14:00"])
def test_cursor_at_the_edge_of_the_date_range_is_422_invalid_cursor(ctx: Ctx, ts: str) -> None:
    """Well-formed, but converting it to UTC overflows: 422, not a 500 OverflowError."""
    import base64

    cursor = base64.urlsafe_b64encode(f"{ts}|x".encode()).decode().rstrip("=")
    for path in ("/v1/tryons", "/v1/photos"):
        r = ctx.client.get(path, query_string={"cursor": cursor}, headers=ctx.h("shopper_a"))
        assert r.status_code == 422, (r.status_code, r.get_json())
        assert r.get_json()["error"]["code"] == "invalid_cursor"
