"""Issue 16 end to end with a real Celery worker (Redis + PostgreSQL) on the preview engine:
a compose move through the API, and a 3 references x 3 scenes compose batch created through
the API with uploads, run by the worker, listed, and downloaded as a zip with its manifest.
``TRYON_E2E_MANIFEST_OUT=path`` keeps a copy of the manifest (for the issue's closing note)."""

from __future__ import annotations

import io
import json
import os
import zipfile
from typing import Any

import numpy as np
import pytest
from PIL import Image

pytestmark = pytest.mark.integration

H, W = 288, 384


def _png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG")
    return buf.getvalue()


def _scene(j: int) -> bytes:
    rng = np.random.default_rng(j)
    arr = np.empty((H, W, 3), np.uint8)
    arr[:] = rng.integers(120, 230, 3, dtype=np.uint8)  # a plain wall of its own colour
    arr[220:, :] = (90, 70, 50)  # a floor
    return _png(arr)


def _reference(i: int) -> bytes:
    arr = np.full((300, 260, 3), 250, np.uint8)  # plain backdrop: background removal works
    colour = [(200, 30, 30), (30, 160, 30), (30, 30, 200)][i % 3]
    arr[50:260, 40 + 10 * i:220 - 10 * i] = colour
    return _png(arr)


def test_compose_and_a_3x3_batch_through_a_real_worker(stack_factory) -> None:  # type: ignore[no-untyped-def]
    from tryon.records.accounts import create_api_key
    from tryon.records.workers import live_engines
    from web.app import create_app

    st = stack_factory()
    st.start_worker()

    def advertised() -> bool:
        with st.factory() as s:
            return live_engines(s, st.settings.stale_after_s).get("preview") is True

    st.wait_until(advertised, 60, "the worker advertising preview")
    ids = st.seed()
    app = create_app(st.settings)
    client = app.test_client()
    with st.factory() as s:
        key = create_api_key(s, account_id=ids["owner"]).plaintext
        s.commit()
    headers = {"Authorization": f"Bearer {key}"}

    # 1. a move: one request, one job, its result says what was done
    obj = np.zeros((H, W), np.uint8)
    obj[40:100, 40:100] = 255
    scene = np.asarray(Image.open(io.BytesIO(_scene(0))).convert("RGB")).copy()
    scene[40:100, 40:100] = (200, 30, 30)
    r = client.post("/v1/compose", headers=headers, content_type="multipart/form-data",
                    data={"op": "move", "engine": "preview", "box": "200,60,260,120",
                          "scene": (io.BytesIO(_png(scene)), "scene.png"),
                          "object_mask": (io.BytesIO(_png(obj)), "mask.png")})
    assert r.status_code == 202, r.get_json()
    job = st.wait_status(r.get_json()["id"], {"succeeded", "failed"}, 60)
    assert job.status == "succeeded", (job.error_code, st.logs())
    got = client.get(f"/v1/compose/{job.id}", headers=headers).get_json()
    assert got["results"] and got["kind"] == "compose"

    # 2. a 3 x 3 compose batch with uploads
    data: dict[str, Any] = {
        "kind": "compose", "engine": "preview", "seed": "1000",
        "scene": [(io.BytesIO(_scene(j)), f"scene{j}.png") for j in range(3)],
        "reference": [(io.BytesIO(_reference(i)), f"ref{i}.png") for i in range(3)],
        "boxes": json.dumps([[40, 60, 140, 200], [120, 40, 220, 190], [200, 80, 300, 230]]),
    }
    r = client.post("/v1/batches", headers=headers, content_type="multipart/form-data",
                    data=data)
    assert r.status_code == 202, r.get_json()
    batch_id = r.get_json()["id"]

    def finished() -> bool:
        b = client.get(f"/v1/batches/{batch_id}", headers=headers).get_json()
        return b["status"] in {"succeeded", "failed", "canceled"}

    st.wait_until(finished, 180, "the batch to finish")
    b = client.get(f"/v1/batches/{batch_id}", headers=headers).get_json()
    assert b["status"] == "succeeded", (b, st.logs())
    assert b["progress"] == {"done": 9, "total": 9, "succeeded": 9, "failed": 0, "canceled": 0}
    z = client.get(f"/v1/batches/{batch_id}/archive", headers=headers)
    assert z.status_code == 200
    with zipfile.ZipFile(io.BytesIO(z.data)) as zf:
        manifest = zf.read("manifest.jsonl").decode()
        lines = [json.loads(x) for x in manifest.splitlines()]
        assert len([n for n in zf.namelist() if n.endswith(".png")]) == 9
    assert [x["seed"] for x in lines] == [1000 + i for i in range(9)]
    assert {x["engine"] for x in lines} == {"preview"}
    assert [x["compose"]["boxes"][0] for x in lines[:3]] == [
        [40, 60, 140, 200], [120, 40, 220, 190], [200, 80, 300, 230]]
    out = os.environ.get("TRYON_E2E_MANIFEST_OUT")
    if out:
        with open(out, "w") as fh:
            fh.write(manifest)
