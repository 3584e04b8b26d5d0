"""S-13 rate limits (issue 11.7): uploads and try-on creation per API key and per client
address, failed authentication per address; 429 with Retry-After and the usual error body;
counters shared by every API process when they live in Redis."""

from __future__ import annotations

import io
import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from webapi_support import Ctx, jpeg_bytes, make_ctx

from tryon.errors import ConfigError


def _ctx(tmp_path: Path, **limits: str) -> Ctx:
    return make_ctx(tmp_path, settings_changes=limits)


def _photo(ctx: Ctx, who: str, addr: str) -> Any:
    return ctx.client.post(
        "/v1/photos", headers=ctx.h(who), environ_base={"REMOTE_ADDR": addr},
        data={"image": (io.BytesIO(jpeg_bytes()), "me.jpg", "image/jpeg"), "consent": "true"})


def _is_429(resp: Any) -> None:
    assert resp.status_code == 429, resp.get_data(as_text=True)[:300]
    assert resp.get_json()["error"]["code"] == "rate_limited"
    assert int(resp.headers["Retry-After"]) >= 1


def test_uploads_limited_per_key_across_addresses(tmp_path: Path) -> None:
    ctx = _ctx(tmp_path, rate_limit_uploads="2/minute")
    assert _photo(ctx, "shopper_a", "10.0.0.1").status_code == 201
    assert _photo(ctx, "shopper_a", "10.0.0.2").status_code == 201
    _is_429(_photo(ctx, "shopper_a", "10.0.0.3"))
    # another key is not affected
    assert _photo(ctx, "shopper_b", "10.0.0.3").status_code == 201


def test_uploads_limited_per_address_across_keys(tmp_path: Path) -> None:
    ctx = _ctx(tmp_path, rate_limit_per_address="2/minute")
    assert _photo(ctx, "shopper_a", "10.0.0.9").status_code == 201
    assert _photo(ctx, "shopper_b", "10.0.0.9").status_code == 201
    _is_429(_photo(ctx, "shopper_a", "10.0.0.9"))
    assert _photo(ctx, "shopper_a", "10.0.0.10").status_code == 201


def test_tryon_creation_limited_per_key(tmp_path: Path) -> None:
    ctx = _ctx(tmp_path, rate_limit_tryons="1/minute")
    photo, garment = ctx.add_photo("shopper_a"), ctx.add_garment("merchant_x")
    body = json.dumps({"photo_id": photo, "garment_id": garment})
    headers = ctx.h("shopper_a", **{"Content-Type": "application/json"})
    assert ctx.client.post("/v1/tryons", data=body, headers=headers).status_code == 202
    _is_429(ctx.client.post("/v1/tryons", data=body, headers=headers))
    # reads are not limited
    assert ctx.client.get("/v1/tryons", headers=ctx.h("shopper_a")).status_code == 200


def test_failed_authentication_limited_per_address(tmp_path: Path) -> None:
    ctx = _ctx(tmp_path, rate_limit_auth_failures="3/minute")
    bad = {"Authorization": "Bearer tryon_sk_wrong"}
    for _ in range(3):
        r = ctx.client.get("/v1/photos", headers=bad, environ_base={"REMOTE_ADDR": "10.1.1.1"})
        assert r.status_code == 401
    _is_429(ctx.client.get("/v1/photos", headers=bad, environ_base={"REMOTE_ADDR": "10.1.1.1"}))
    # the address is locked out even with a valid key; another address is not
    _is_429(ctx.client.get("/v1/photos", headers=ctx.h("shopper_a"),
                           environ_base={"REMOTE_ADDR": "10.1.1.1"}))
    assert ctx.client.get("/v1/photos", headers=ctx.h("shopper_a"),
                          environ_base={"REMOTE_ADDR": "10.1.1.2"}).status_code == 200
    # public endpoints stay reachable
    assert ctx.client.get("/healthz", environ_base={"REMOTE_ADDR": "10.1.1.1"}).status_code == 200


def test_invalid_limit_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="TRYON_RATE_LIMIT_UPLOADS"):
        _ctx(tmp_path, rate_limit_uploads="lots")


def test_counters_are_shared_through_redis(tmp_path: Path) -> None:
    """Two API processes (two apps) on one Redis share each budget."""
    import redis
    from service_checks import require_service

    url = "redis://127.0.0.1:6379/13"
    try:
        redis.Redis.from_url(url, socket_connect_timeout=2).ping()
    except Exception as exc:  # noqa: BLE001
        require_service(f"Redis is not reachable: {exc}")
    prefix = f"rl{uuid.uuid4().hex[:8]}-"
    limits = {"rate_limit_uploads": "2/minute", "rate_limit_storage_url": url,
              "rate_limit_auth_failures": "2/minute", "queue_prefix": prefix}
    one = make_ctx(tmp_path / "one", settings_changes=limits)
    two = make_ctx(tmp_path / "one", settings_changes=limits, session_factory=one.factory)
    two.keys, two.ids = one.keys, one.ids
    try:
        assert _photo(one, "shopper_a", "10.2.0.1").status_code == 201
        assert _photo(two, "shopper_a", "10.2.0.2").status_code == 201
        _is_429(_photo(one, "shopper_a", "10.2.0.3"))
        bad = {"Authorization": "Bearer tryon_sk_wrong"}
        env = {"REMOTE_ADDR": "10.2.9.9"}
        assert one.client.get("/v1/photos", headers=bad, environ_base=env).status_code == 401
        assert two.client.get("/v1/photos", headers=bad, environ_base=env).status_code == 401
        _is_429(one.client.get("/v1/photos", headers=bad, environ_base=env))
    finally:
        r = redis.Redis.from_url(url)
        for key in r.scan_iter(f"*{prefix}*"):
            r.delete(key)


def test_counter_storage_down_lets_requests_through(tmp_path: Path) -> None:
    """Redis for the counters unreachable: no 500, the limits just do not apply."""
    ctx = _ctx(tmp_path, rate_limit_uploads="1/minute", rate_limit_auth_failures="1/minute",
               rate_limit_storage_url="redis://127.0.0.1:9/0")
    assert _photo(ctx, "shopper_a", "10.3.0.1").status_code == 201
    assert _photo(ctx, "shopper_a", "10.3.0.1").status_code == 201
    bad = {"Authorization": "Bearer tryon_sk_wrong"}
    for _ in range(2):
        assert ctx.client.get("/v1/photos", headers=bad).status_code == 401
