"""A request id per API request: the client's X-Request-ID when sane, echoed, on every log line."""

from __future__ import annotations

import logging

import pytest
from webapi_support import Ctx

from tryon import logs


def test_request_id_is_echoed_or_generated(ctx: Ctx) -> None:
    r = ctx.client.get("/healthz", headers={"X-Request-ID": "order-42.retry:1"})
    assert r.headers["X-Request-ID"] == "order-42.retry:1"
    r = ctx.client.get("/healthz", headers={"X-Request-ID": "bad id\twith spaces"})
    assert len(r.headers["X-Request-ID"]) == 32 and " " not in r.headers["X-Request-ID"]
    a = ctx.client.get("/v1/photos").headers["X-Request-ID"]  # 401 answers carry one too
    b = ctx.client.get("/v1/photos").headers["X-Request-ID"]
    assert a != b


def test_request_and_job_ids_on_the_log_lines(ctx: Ctx, capsys: pytest.CaptureFixture[str]) -> None:
    photo, garment = ctx.add_photo("shopper_a"), ctx.add_garment("merchant_x")
    root = logging.getLogger()
    try:
        logs.configure_logging("text", "INFO")
        r = ctx.client.post("/v1/tryons", json={"photo_id": photo, "garment_id": garment},
                            headers={**ctx.h("shopper_a"), "X-Request-ID": "rid-7"})
    finally:
        for h in [h for h in root.handlers if isinstance(h, logs._TryonHandler)]:
            root.removeHandler(h)
        root.setLevel(logging.WARNING)
    assert r.status_code == 202
    created = [ln for ln in capsys.readouterr().err.splitlines() if "msg=\"created" in ln]
    assert created and "request_id=rid-7" in created[0]
    assert f"job_id={r.get_json()['id']}" in created[0]
    assert logs.current("request_id") is None
