"""Bug 4: the API admits a try-on only for an engine a live worker advertises (the worker
registry, tryon.records.workers), decides the default engine from the workers (never from its
own TRYON_WEIGHTS), and /v1/ops/workers shows what each worker runs."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from webapi_support import Ctx, make_ctx

from tryon.records import workers as registry
from tryon.records.jobs import db_now
from tryon.records.models import TryOnJob, WorkerProcess
from web.services import RegistryEngines


@pytest.fixture
def rctx(tmp_path: Path) -> Any:
    # the real registry (webapi_support stubs it with a preview worker)
    ctx = make_ctx(tmp_path, TRYON_ENGINE_DIRECTORY=RegistryEngines(30.0))
    yield ctx
    ctx.factory.kw["bind"].dispose()


def _register(ctx: Ctx, wid: str, queues: list[str], engines: list[str],
              state: str = "ready", age_s: float = 0.0) -> None:
    with ctx.factory() as s:
        registry.register(s, wid, queues=queues, engines=engines)
        registry.beat(s, wid, state=state)
        if age_s:
            row = s.get(WorkerProcess, wid)
            row.heartbeat_at = db_now(s) - timedelta(seconds=age_s)
        s.commit()


def _post(ctx: Ctx, **body: Any) -> Any:
    photo, garment = ctx.add_photo("shopper_a"), ctx.add_garment("merchant_x")
    return ctx.client.post("/v1/tryons", headers=ctx.h("shopper_a"),
                           json={"photo_id": photo, "garment_id": garment, **body})


def test_no_worker_yet_is_a_503_engine_unavailable(rctx: Ctx) -> None:
    r = _post(rctx)
    assert r.status_code == 503, r.get_json()
    assert r.get_json()["error"]["code"] == "engine_unavailable"
    assert "No worker is running" in r.get_json()["error"]["message"]
    assert r.headers["Retry-After"]
    assert rctx.publisher.published == []
    with rctx.factory() as s:
        assert s.query(TryOnJob).count() == 0


def test_default_engine_comes_from_the_workers_not_the_api_env(rctx: Ctx) -> None:
    # a GPU worker without weights advertises nothing on gpu; the cpu worker serves preview
    _register(rctx, "h:1", ["gpu"], [])
    _register(rctx, "h:2", ["cpu"], ["preview"])
    r = _post(rctx)
    assert r.status_code == 202 and r.get_json()["engine"] == "preview"
    r = _post(rctx, engine="anydoor")
    assert r.status_code == 503 and r.get_json()["error"]["code"] == "engine_unavailable"
    assert r.get_json()["error"]["details"]["available"] == ["preview"]
    # once a GPU worker advertises anydoor, it becomes the default, on the gpu queue
    _register(rctx, "h:3", ["gpu"], ["anydoor"], state="loading")
    r = _post(rctx)
    assert r.status_code == 202 and r.get_json()["engine"] == "anydoor"
    assert rctx.publisher.published[-1][1] == "gpu"


def test_stale_workers_and_wrong_queues_do_not_count(rctx: Ctx) -> None:
    _register(rctx, "h:1", ["cpu"], ["preview"], age_s=120)
    assert _post(rctx).status_code == 503
    # an engine advertised on a queue it does not run on is not served
    _register(rctx, "h:2", ["cpu"], ["anydoor"])
    assert _post(rctx, engine="anydoor").status_code == 503
    assert _post(rctx, engine="nope").status_code == 503


def test_ops_workers_shows_engines_queue_ready_heartbeat_and_job(rctx: Ctx) -> None:
    _register(rctx, "h:1", ["cpu"], ["preview"])
    _register(rctx, "h:2", ["gpu"], ["anydoor"], state="loading", age_s=120)
    photo, garment = rctx.add_photo("shopper_a"), rctx.add_garment("merchant_x")
    job = rctx.add_job("shopper_a", photo, garment, status="running")
    with rctx.factory() as s:
        s.get(TryOnJob, job).worker_id = "h:1"
        s.commit()
    r = rctx.client.get("/v1/ops/workers", headers=rctx.h("ops"))
    assert r.status_code == 200
    out = r.get_json()
    assert out["stale_after_s"] == 30.0
    w1, w2 = out["workers"]
    assert w1["id"] == "h:1" and w1["alive"] and w1["ready"] and w1["state"] == "ready"
    assert w1["queues"] == ["cpu"] and w1["engines"] == ["preview"]
    assert w1["current_job"] == job and w1["heartbeat_at"]
    assert w2["id"] == "h:2" and not w2["alive"] and not w2["ready"] and w2["current_job"] is None


def test_registry_forgets_long_dead_rows_on_register(tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path)
    try:
        _register(ctx, "old:1", ["cpu"], ["preview"], age_s=3 * 86400)
        _register(ctx, "new:1", ["cpu"], ["preview"])
        with ctx.factory() as s:
            assert {w.id for w in registry.list_workers(s, 30.0)} == {"new:1"}
            registry.forget(s, "new:1")
            s.commit()
            assert registry.list_workers(s, 30.0) == []
    finally:
        ctx.factory.kw["bind"].dispose()
