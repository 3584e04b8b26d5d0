"""/v1/compose and /v1/batches through the API, with the jobs run by the real job runner on the
preview engine (in-process; tests/integration runs them through a Celery worker)."""

from __future__ import annotations

import io
import json
import zipfile
from typing import Any

import numpy as np
import pytest
from webapi_support import Ctx, png_bytes

from tryon.records.db import session_scope
from tryon.records.models import TryOnJob
from workers.runner import JobRunner

H, W = 256, 320


def _scene() -> np.ndarray:
    arr = np.full((H, W, 3), 210, np.uint8)
    arr[40:100, 50:120] = (200, 30, 30)  # object A
    arr[150:220, 200:290] = (30, 30, 200)  # object B
    return arr


def _mask(y1: int, y2: int, x1: int, x2: int) -> bytes:
    m = np.zeros((H, W), np.uint8)
    m[y1:y2, x1:x2] = 255
    return png_bytes(np.dstack([m, m, m]))


def _reference() -> bytes:
    arr = np.full((200, 160, 3), 245, np.uint8)
    arr[40:160, 30:130] = (20, 160, 20)
    return png_bytes(arr)


def _post(ctx: Ctx, data: dict[str, Any], key: str | None = None, who: str = "shopper_a") -> Any:
    files = {k: (io.BytesIO(v), f"{k}.png") if isinstance(v, bytes) else v
             for k, v in data.items()}
    headers = ctx.h(who, **({"Idempotency-Key": key} if key else {}))
    return ctx.client.post("/v1/compose", data=files, headers=headers,
                           content_type="multipart/form-data")


def _run_published(ctx: Ctx) -> list[str]:
    runner = JobRunner(settings=ctx.settings, session_factory=ctx.factory, storage=ctx.storage)
    out = []
    for job_id, _queue in list(ctx.publisher.published):
        out.append(runner.run(job_id).status)
    ctx.publisher.published.clear()
    return out


def test_insert_with_uploads_runs_and_records_what_was_done(ctx: Ctx) -> None:
    r = _post(ctx, {"scene": png_bytes(_scene()), "reference": _reference(),
                    "box": "150,20,230,110", "num_samples": "2", "seed": "7"}, key="k1")
    assert r.status_code == 202, r.get_json()
    body = r.get_json()
    assert body["kind"] == "compose" and body["status"] == "queued"
    assert sorted(body["params"]["inputs"]) == ["reference", "reference_mask", "scene"]
    assert all(k.startswith(f"results/{ctx.ids['shopper_a']}/{body['id']}/in/")
               for k in body["params"]["inputs"].values())
    # idempotent replay: same response, no second job
    again = _post(ctx, {"scene": png_bytes(_scene()), "reference": _reference(),
                        "box": "150,20,230,110", "num_samples": "2", "seed": "7"}, key="k1")
    assert again.status_code == 202 and again.get_json() == body
    assert _run_published(ctx) == ["succeeded"]
    got = ctx.client.get(f"/v1/compose/{body['id']}", headers=ctx.h("shopper_a")).get_json()
    assert got["status"] == "succeeded" and [x["seed"] for x in got["results"]] == [7, 8]
    with ctx.factory() as s:
        job = s.get(TryOnJob, body["id"])
        rec = job.results[0].record
    assert rec["compose"]["op"] == "insert" and rec["compose"]["boxes"] == [[150, 20, 230, 110]]
    png = ctx.client.get(f"/v1/tryons/{body['id']}/results/0", headers=ctx.h("shopper_a")).data
    from PIL import Image

    out = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
    # the scene as the intake stored it (re-encoded JPEG)
    stored = ctx.storage.get(body["params"]["inputs"]["scene"])
    scene = np.asarray(Image.open(io.BytesIO(stored)).convert("RGB"))
    assert out.shape == scene.shape
    assert (out[:, :150] == scene[:, :150]).all()  # nothing outside the box changed
    assert np.abs(out[20:110, 150:230].astype(int) - scene[20:110, 150:230]).mean() > 10
    # another shopper sees nothing
    assert ctx.client.get(f"/v1/compose/{body['id']}", headers=ctx.h("shopper_b")).status_code \
        == 404


def test_move_fills_the_hole_and_places_the_object(ctx: Ctx) -> None:
    r = _post(ctx, {"op": "move", "scene": png_bytes(_scene()),
                    "object_mask": _mask(40, 100, 50, 120), "box": "160,30,230,90"})
    assert r.status_code == 202, r.get_json()
    assert _run_published(ctx) == ["succeeded"]
    job_id = r.get_json()["id"]
    png = ctx.client.get(f"/v1/tryons/{job_id}/results/0", headers=ctx.h("shopper_a")).data
    from PIL import Image

    out = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)
    # the hole: no red left where the object was (filled from the grey around it)
    assert np.abs(out[50:90, 60:110] - 210).max() < 30
    # the object is at the new box (reddish)
    centre = out[45:75, 175:215].mean(axis=(0, 1))
    assert centre[0] > centre[2] + 60
    with ctx.factory() as s:
        rec = s.get(TryOnJob, job_id).results[0].record["compose"]
    assert rec["moved_from"] == [50, 40, 120, 100] and rec["fill"] == "opencv_telea"


def test_swap_and_replace_are_one_job_each(ctx: Ctx) -> None:
    a, b = _mask(40, 100, 50, 120), _mask(150, 220, 200, 290)
    r1 = _post(ctx, {"op": "swap", "scene": png_bytes(_scene()), "object_mask": a,
                     "object_mask_b": b})
    r2 = _post(ctx, {"op": "replace", "scene": png_bytes(_scene()), "object_mask": a,
                     "reference": _reference()})
    assert r1.status_code == 202 and r2.status_code == 202, (r1.get_json(), r2.get_json())
    assert _run_published(ctx) == ["succeeded", "succeeded"]
    with ctx.factory() as s:
        swap = s.get(TryOnJob, r1.get_json()["id"]).results[0].record["compose"]
        repl = s.get(TryOnJob, r2.get_json()["id"]).results[0].record["compose"]
    assert swap["op"] == "swap" and swap["boxes"] == [[200, 150, 290, 220], [50, 40, 120, 100]]
    assert repl["op"] == "replace" and repl["object_area"] == 60 * 70


@pytest.mark.parametrize(("data", "code"), [
    ({"box": "10,10,10,50"}, "empty_region"),
    ({"box": "10,10,20,20"}, "region_too_small"),
    ({"box": "500,500,600,600"}, "empty_region"),
    ({}, "empty_region"),
    ({"box": "a,b"}, "invalid_box"),
])
def test_region_errors_are_typed(ctx: Ctx, data: dict[str, Any], code: str) -> None:
    r = _post(ctx, {"scene": png_bytes(_scene()), "reference": _reference(), **data})
    assert r.status_code == 422 and r.get_json()["error"]["code"] == code, r.get_json()
    assert ctx.publisher.published == []


def test_object_not_separable_and_missing_inputs(ctx: Ctx) -> None:
    noise = np.random.default_rng(0).integers(0, 256, (200, 160, 3), dtype=np.uint8)
    r = _post(ctx, {"scene": png_bytes(_scene()), "reference": png_bytes(noise),
                    "box": "20,20,120,120"})
    assert r.status_code == 422 and r.get_json()["error"]["code"] == "object_not_separable"
    whole = _mask(0, H, 0, W)
    r = _post(ctx, {"op": "move", "scene": png_bytes(_scene()), "object_mask": whole,
                    "box": "20,20,120,120"})
    assert r.get_json()["error"]["code"] == "object_not_separable"
    r = _post(ctx, {"op": "move", "scene": png_bytes(_scene()), "box": "20,20,120,120"})
    assert r.status_code == 422 and r.get_json()["error"]["code"] == "missing_input"
    r = _post(ctx, {"reference": _reference(), "box": "20,20,120,120"})
    assert r.get_json()["error"]["code"] == "missing_input"


def test_compose_with_a_photo_and_a_garment_and_cancel(ctx: Ctx) -> None:
    photo = ctx.add_photo("shopper_a")
    garment = ctx.add_garment("merchant_x")
    r = _post(ctx, {"photo_id": photo, "garment_id": garment, "box": "40,40,200,300"})
    assert r.status_code == 202, r.get_json()
    job_id = r.get_json()["id"]
    c = ctx.client.post(f"/v1/compose/{job_id}/cancel", headers=ctx.h("shopper_a"))
    assert c.status_code == 200 and c.get_json()["status"] == "canceled"
    assert _run_published(ctx) == ["skipped"]
    other = ctx.add_photo("shopper_b")
    r = _post(ctx, {"photo_id": other, "garment_id": garment, "box": "40,40,200,300"})
    assert r.status_code == 404


# --- batches -----------------------------------------------------------------------------


def _batch(ctx: Ctx, body: dict[str, Any], who: str = "shopper_a", **kw: Any) -> Any:
    return ctx.client.post("/v1/batches", json=body, headers=ctx.h(who), **kw)


def test_tryon_batch_3x3_runs_and_archives_with_a_manifest(ctx: Ctx) -> None:
    photos = [ctx.add_photo("shopper_a") for _ in range(3)]
    garments = [ctx.add_garment("merchant_x") for _ in range(3)]
    r = _batch(ctx, {"kind": "tryon", "photo_ids": photos, "garment_ids": garments,
                     "seed": 100, "num_samples": 1})
    assert r.status_code == 202, r.get_json()
    b = r.get_json()
    assert b["status"] == "running" and b["progress"] == {
        "done": 0, "total": 9, "succeeded": 0, "failed": 0, "canceled": 0}
    assert len(ctx.publisher.published) == 9
    assert _run_published(ctx) == ["succeeded"] * 9
    got = ctx.client.get(f"/v1/batches/{b['id']}", headers=ctx.h("shopper_a")).get_json()
    assert got["status"] == "succeeded" and got["progress"]["done"] == 9
    assert [i["index"] for i in got["items"]] == list(range(9))
    man = ctx.client.get(f"/v1/batches/{b['id']}/manifest", headers=ctx.h("shopper_a"))
    lines = [json.loads(x) for x in man.data.decode().splitlines()]
    assert [x["seed"] for x in lines] == [100 + i for i in range(9)]
    assert {x["engine"] for x in lines} == {"preview"} and all("weights_checksum" in x
                                                              for x in lines)
    assert all(x["box"] and x["inputs"]["photo_id"] in photos for x in lines)
    z = ctx.client.get(f"/v1/batches/{b['id']}/archive", headers=ctx.h("shopper_a"))
    assert z.status_code == 200 and z.mimetype == "application/zip"
    with zipfile.ZipFile(io.BytesIO(z.data)) as zf:
        names = zf.namelist()
        assert "manifest.jsonl" in names and len([n for n in names if n.endswith(".png")]) == 9
        import hashlib

        for x in lines:
            assert hashlib.sha256(zf.read(f"results/{x['file']}")).hexdigest() == x["sha256"]
    # the child jobs are not try-ons of the standalone list's cap
    assert ctx.client.get(f"/v1/batches/{b['id']}", headers=ctx.h("shopper_b")).status_code \
        == 404


def test_compose_batch_with_uploads_and_cancel_of_the_whole_batch(ctx: Ctx) -> None:
    scenes = [(io.BytesIO(png_bytes(_scene())), f"s{j}.png") for j in range(2)]
    refs = [(io.BytesIO(_reference()), f"r{i}.png") for i in range(2)]
    data = {"kind": "compose", "scene": scenes, "reference": refs,
            "boxes": json.dumps([[150, 20, 230, 110], [20, 120, 120, 230]])}
    r = ctx.client.post("/v1/batches", data=data, headers=ctx.h("shopper_a"),
                        content_type="multipart/form-data")
    assert r.status_code == 202, r.get_json()
    b = r.get_json()
    assert b["progress"]["total"] == 4 and b["item_kind"] == "compose"
    runner = JobRunner(settings=ctx.settings, session_factory=ctx.factory, storage=ctx.storage)
    first = ctx.publisher.published[0][0]
    assert runner.run(first).status == "succeeded"
    c = ctx.client.post(f"/v1/batches/{b['id']}/cancel", headers=ctx.h("shopper_a")).get_json()
    assert c["status"] == "canceled"
    assert c["progress"] == {"done": 4, "total": 4, "succeeded": 1, "failed": 0, "canceled": 3}
    assert [runner.run(j).status for j, _ in ctx.publisher.published[1:]] == ["skipped"] * 3
    man = ctx.client.get(f"/v1/batches/{b['id']}/manifest", headers=ctx.h("shopper_a"))
    lines = [json.loads(x) for x in man.data.decode().splitlines()]
    assert [x["status"] for x in lines] == ["succeeded", "canceled", "canceled", "canceled"]
    assert lines[0]["compose"]["boxes"] == [[150, 20, 230, 110]]
    again = ctx.client.post(f"/v1/batches/{b['id']}/cancel", headers=ctx.h("shopper_a"))
    assert again.status_code == 200


def test_batch_bounds(ctx: Ctx, monkeypatch: pytest.MonkeyPatch) -> None:
    photos = [ctx.add_photo("shopper_a") for _ in range(2)]
    garments = [ctx.add_garment("merchant_x") for _ in range(2)]
    import dataclasses

    svc = ctx.app.extensions["tryon"]

    def limits(**kw: int) -> None:
        monkeypatch.setattr(svc, "settings", dataclasses.replace(svc.settings, **kw))

    limits(max_batch_items=3)
    r = _batch(ctx, {"kind": "tryon", "photo_ids": photos, "garment_ids": garments})
    assert r.status_code == 422 and r.get_json()["error"]["code"] == "batch_too_large"
    limits(max_batch_items=10, max_open_batch_jobs=6)
    assert _batch(ctx, {"kind": "tryon", "photo_ids": photos, "garment_ids": garments}
                  ).status_code == 202
    r = _batch(ctx, {"kind": "tryon", "photo_ids": photos, "garment_ids": garments})
    assert r.status_code == 429 and r.get_json()["error"]["code"] == "too_many_open_batch_jobs"
    # a bad item names itself, and nothing is left behind
    r = _batch(ctx, {"kind": "tryon", "photo_ids": photos[:1], "garment_ids": garments[:1],
                     "boxes": {photos[0]: [0, 0, 9999, 10]}})
    assert r.status_code == 422 and r.get_json()["error"]["details"]["item"] == 0
    with session_scope(ctx.factory) as s:
        assert s.query(TryOnJob).filter(TryOnJob.kind == "batch").count() == 1


def test_erasure_removes_compose_uploads_batches_and_their_objects(ctx: Ctx) -> None:
    r = _post(ctx, {"scene": png_bytes(_scene()), "reference": _reference(),
                    "box": "150,20,230,110"})
    assert r.status_code == 202
    data = {"kind": "compose", "scene": [(io.BytesIO(png_bytes(_scene())), "s.png")],
            "reference": [(io.BytesIO(_reference()), "r.png")], "box": "[20, 20, 120, 120]"}
    b = ctx.client.post("/v1/batches", data=data, headers=ctx.h("shopper_a"),
                        content_type="multipart/form-data")
    assert b.status_code == 202, b.get_json()
    assert _run_published(ctx) == ["succeeded", "succeeded"]
    owner = ctx.ids["shopper_a"]
    root = ctx.storage.root / "results" / owner
    assert any(root.rglob("*.png")) and any(root.rglob("in/*"))
    assert ctx.client.delete("/v1/me", headers=ctx.h("shopper_a")).status_code == 204
    assert not any(p.is_file() for p in root.rglob("*")) if root.exists() else True
    with ctx.factory() as s:
        assert s.query(TryOnJob).filter(TryOnJob.owner_id == owner).count() == 0


def test_compose_batch_over_photos_and_garments_by_id(ctx: Ctx) -> None:
    photos = [ctx.add_photo("shopper_a") for _ in range(2)]
    garment = ctx.add_garment("merchant_x")
    r = _batch(ctx, {"kind": "compose", "photo_ids": photos, "garment_ids": [garment],
                     "box": [40, 40, 200, 300], "seed": 9, "num_samples": 2})
    assert r.status_code == 202, r.get_json()
    assert _run_published(ctx) == ["succeeded", "succeeded"]
    man = ctx.client.get(f"/v1/batches/{r.get_json()['id']}/manifest",
                         headers=ctx.h("shopper_a"))
    lines = [json.loads(x) for x in man.data.decode().splitlines()]
    assert [(x["item"], x["sample"], x["seed"]) for x in lines] == [
        (0, 0, 9), (0, 1, 10), (1, 0, 11), (1, 1, 12)]
    assert [x["inputs"]["photo_id"] for x in lines] == [photos[0]] * 2 + [photos[1]] * 2
    assert {x["inputs"]["garment_id"] for x in lines} == {garment}
    # a region outside a scene is refused up front, naming the item
    r = _batch(ctx, {"kind": "compose", "photo_ids": photos, "garment_ids": [garment],
                     "box": [900, 900, 999, 999]})
    assert r.status_code == 422 and r.get_json()["error"]["code"] == "empty_region"
    assert r.get_json()["error"]["details"]["item"] == 0
