"""P-1 erasure: ``DELETE /v1/me`` and ``tryon accounts erase`` remove every row and object of a
shopper, fence their running worker out, and leave everyone else alone."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import select
from webapi_support import Ctx, png_bytes

from tryon.records import jobs
from tryon.records.models import (
    Account,
    ApiKey,
    Photo,
    TryOnJob,
    TryOnResult,
    WebhookDelivery,
)
from tryon.storage import new_key, result_key


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def _seed_shopper(ctx: Ctx, who: str) -> dict[str, object]:
    """3 succeeded jobs + 1 running (with a partial output object and a webhook) and a photo
    with a person mask."""
    import numpy as np

    from tryon.records.db import session_scope

    photo = ctx.add_photo(who)
    garment = ctx.add_garment("merchant_x")
    done = [ctx.add_job(who, photo, garment, status="succeeded") for _ in range(3)]
    running = ctx.add_job(who, photo, garment, status="running",
                          webhook_url="https://hooks.example.com/x")
    ctx.storage.put(result_key(ctx.ids[who], running, 1, 0),
                    png_bytes(np.zeros((8, 8, 3), np.uint8)), "image/png")
    mask_key = new_key("personmasks", ctx.ids[who], "png")
    ctx.storage.put(mask_key, png_bytes(np.zeros((8, 8), np.uint8)), "image/png")
    with session_scope(ctx.factory) as s:
        s.get(Photo, photo).person_mask_key = mask_key  # type: ignore[union-attr]
    return {"photo": photo, "garment": garment, "done": done, "running": running}


def _rows_of(ctx: Ctx, account_id: str) -> dict[str, int]:
    with ctx.factory() as s:
        job_ids = list(s.scalars(select(TryOnJob.id).where(TryOnJob.owner_id == account_id)))
        return {
            "photos": len(s.scalars(select(Photo).where(Photo.owner_id == account_id)).all()),
            "jobs": len(job_ids),
            "results": len(s.scalars(select(TryOnResult).join(TryOnJob)
                                     .where(TryOnJob.owner_id == account_id)).all()),
            "keys": len(s.scalars(select(ApiKey).where(ApiKey.account_id == account_id)).all()),
            "deliveries": len(s.scalars(select(WebhookDelivery).join(TryOnJob)
                                        .where(TryOnJob.owner_id == account_id)).all()),
        }


def test_delete_me_erases_everything_of_the_shopper(ctx: Ctx) -> None:
    a, b = ctx.ids["shopper_a"], ctx.ids["shopper_b"]
    mine = _seed_shopper(ctx, "shopper_a")
    theirs = _seed_shopper(ctx, "shopper_b")
    root = ctx.storage.root
    before_b = [f for f in _files(root) if b in f]
    assert any(a in f for f in _files(root)) and len(before_b) >= 6
    done0 = mine["done"][0]  # type: ignore[index]
    url = ctx.client.get(f"/v1/tryons/{done0}", headers=ctx.h("shopper_a")).get_json()[
        "results"][0]["url"].replace("http://localhost", "")
    assert ctx.client.get(url).status_code == 200

    r = ctx.client.delete("/v1/me", headers=ctx.h("shopper_a"))
    assert r.status_code == 204, r.get_data(as_text=True)

    # no object of A left under any prefix (the whole local backend walked)
    assert [f for f in _files(root) if a in f] == []
    # no row with A's id except the tombstone
    assert _rows_of(ctx, a) == {"photos": 0, "jobs": 0, "results": 0, "keys": 0, "deliveries": 0}
    with ctx.factory() as s:
        acc = s.get(Account, a)
        assert acc is not None and acc.deleted_at is not None and acc.name == "deleted"
    # the old signed URL and the key are dead
    assert ctx.client.get(url).status_code == 404
    r = ctx.client.get("/v1/photos", headers=ctx.h("shopper_a"))
    assert r.status_code == 401 and r.get_json()["error"]["code"] == "unauthorized"
    assert ctx.client.delete("/v1/me", headers=ctx.h("shopper_a")).status_code == 401
    # the running attempt is fenced out: its heartbeat and finish write nothing
    with ctx.factory() as s:
        running = str(mine["running"])
        assert not jobs.heartbeat(s, running, 1, progress=0.5)
        assert not jobs.finish_success(s, running, 1, [])
        s.commit()
        assert s.get(TryOnJob, running) is None
    # B untouched
    assert [f for f in _files(root) if b in f] == before_b
    assert _rows_of(ctx, b) == {"photos": 1, "jobs": 4, "results": 3, "keys": 1, "deliveries": 0}
    r = ctx.client.get(f"/v1/tryons/{theirs['done'][0]}", headers=ctx.h("shopper_b"))  # type: ignore[index]
    assert r.status_code == 200 and len(r.get_json()["results"]) == 1
    # merchant garments are not the shopper's
    assert ctx.client.get(f"/v1/garments/{mine['garment']}",
                          headers=ctx.h("merchant_x")).status_code == 200


@pytest.mark.parametrize("who", ["merchant_x", "ops"])
def test_delete_me_is_404_for_other_roles(ctx: Ctx, who: str) -> None:
    r = ctx.client.delete("/v1/me", headers=ctx.h(who))
    assert r.status_code == 404
    with ctx.factory() as s:
        assert s.get(Account, ctx.ids[who]).deleted_at is None  # type: ignore[union-attr]
    assert ctx.client.delete("/v1/me").status_code == 401


def test_storage_failure_keeps_rows_and_key_so_the_request_can_be_repeated(ctx: Ctx) -> None:
    from tryon.errors import StorageUnavailableError

    a = ctx.ids["shopper_a"]
    _seed_shopper(ctx, "shopper_a")
    real = ctx.storage.delete_prefix
    ctx.storage.delete_prefix = lambda prefix: (_ for _ in ()).throw(  # type: ignore[method-assign]
        StorageUnavailableError("down"))
    try:
        r = ctx.client.delete("/v1/me", headers=ctx.h("shopper_a"))
        assert r.status_code == 503
    finally:
        ctx.storage.delete_prefix = real  # type: ignore[method-assign]
    rows = _rows_of(ctx, a)
    assert rows["photos"] == 1 and rows["keys"] == 1
    assert ctx.client.delete("/v1/me", headers=ctx.h("shopper_a")).status_code == 204
    assert [f for f in _files(ctx.storage.root) if a in f] == []
    assert _rows_of(ctx, a)["jobs"] == 0


def test_cli_erase(ctx: Ctx, monkeypatch: pytest.MonkeyPatch) -> None:
    from tryon.cli import cli

    a = ctx.ids["shopper_a"]
    _seed_shopper(ctx, "shopper_a")
    _seed_shopper(ctx, "shopper_b")
    monkeypatch.setenv("TRYON_DATA_DIR", str(ctx.settings.data_dir))
    monkeypatch.delenv("TRYON_STORAGE", raising=False)
    monkeypatch.delenv("TRYON_STORAGE_ROOT", raising=False)
    url = ctx.settings.resolved_database_url
    runner = CliRunner()
    r = runner.invoke(cli, ["accounts", "erase", ctx.ids["merchant_x"], "--yes", "--url", url])
    assert r.exit_code != 0 and "only shopper" in r.output
    r = runner.invoke(cli, ["accounts", "erase", a, "--yes", "--url", url])
    assert r.exit_code == 0, r.output
    assert "4 try-ons (1 canceled)" in r.output
    assert [f for f in _files(ctx.storage.root) if a in f] == []
    assert _rows_of(ctx, a) == {"photos": 0, "jobs": 0, "results": 0, "keys": 0, "deliveries": 0}
    assert _rows_of(ctx, ctx.ids["shopper_b"])["jobs"] == 4
    assert ctx.client.get("/v1/photos", headers=ctx.h("shopper_a")).status_code == 401
    # repeating it is harmless
    r = runner.invoke(cli, ["accounts", "erase", a, "--yes", "--url", url])
    assert r.exit_code == 0, r.output


def test_purged_results_show_results_expired(ctx: Ctx) -> None:
    """P-2 as the API shows it: a succeeded job whose results were purged keeps its status."""
    from datetime import timedelta

    from tryon.records.models import utcnow
    from tryon.records.retention import purge_expired

    photo = ctx.add_photo("shopper_a")
    garment = ctx.add_garment("merchant_x")
    job = ctx.add_job("shopper_a", photo, garment, status="succeeded")
    body = ctx.client.get(f"/v1/tryons/{job}", headers=ctx.h("shopper_a")).get_json()
    assert body["results_expired"] is False and len(body["results"]) == 1
    url = body["results"][0]["url"].replace("http://localhost", "")
    with ctx.factory() as s:
        purge_expired(s, ctx.storage, photo_ttl_s=0, result_ttl_s=60,
                      now=utcnow() + timedelta(seconds=120))
    body = ctx.client.get(f"/v1/tryons/{job}", headers=ctx.h("shopper_a")).get_json()
    assert body["status"] == "succeeded" and body["results"] == []
    assert body["results_expired"] is True
    assert ctx.client.get(url).status_code == 404
    assert ctx.client.get(f"/v1/tryons/{job}/results/0",
                          headers=ctx.h("shopper_a")).status_code == 404


def test_photo_delete_removes_objects_before_rows(ctx: Ctx, monkeypatch: pytest.MonkeyPatch) -> None:
    """One deletion path (tryon.records.erasure.delete_photos): a storage failure leaves the
    photo and its results as they were, so the shopper can repeat the delete; before, the rows
    were committed first and the objects were orphaned under a "deleted" photo."""
    from tryon.errors import StorageUnavailableError
    from tryon.records.models import Photo, TryOnResult

    photo, garment = ctx.add_photo("shopper_a"), ctx.add_garment("merchant_x")
    job = ctx.add_job("shopper_a", photo, garment)
    real = ctx.storage.delete

    def down(key: str) -> None:
        raise StorageUnavailableError()

    monkeypatch.setattr(ctx.storage, "delete", down)
    r = ctx.client.delete(f"/v1/photos/{photo}", headers=ctx.h("shopper_a"))
    assert r.status_code == 503
    with ctx.factory() as s:
        p = s.get(Photo, photo)
        assert p.deleted_at is None and ctx.storage.exists(p.image_key)
        assert s.query(TryOnResult).filter_by(job_id=job).count() == 1
    monkeypatch.setattr(ctx.storage, "delete", real)
    assert ctx.client.delete(f"/v1/photos/{photo}", headers=ctx.h("shopper_a")).status_code == 204
    with ctx.factory() as s:
        p = s.get(Photo, photo)
        assert p.deleted_at is not None and not ctx.storage.exists(p.image_key)
        assert s.query(TryOnResult).filter_by(job_id=job).count() == 0
    got = ctx.client.get(f"/v1/tryons/{job}", headers=ctx.h("shopper_a")).get_json()
    assert got["results"] == [] and got["results_expired"] is True
