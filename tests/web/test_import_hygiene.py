"""R-16: the web process never imports torch, diffusers or mediapipe, even after a photo upload
analysed by the real MediaPipe pool (run in a fresh interpreter so other tests cannot pollute
``sys.modules``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = r"""
import io, json, sys
from pathlib import Path
import numpy as np
from PIL import Image
from skimage import data as skdata

from tryon.config import Settings
from tryon.records.accounts import create_account, create_api_key
from tryon.records.db import make_engine, make_session_factory, session_scope
from tryon.records.models import Base
from web import create_app
from web.publisher import RecordingPublisher

BANNED = ("torch", "diffusers", "mediapipe")
root = Path(sys.argv[1])
settings = Settings(data_dir=root, secret_key="s")
engine = make_engine(settings.resolved_database_url)
Base.metadata.create_all(engine)
factory = make_session_factory(engine)
app = create_app(settings, TESTING=True, TRYON_PUBLISHER=RecordingPublisher(),
                 TRYON_SESSION_FACTORY=factory)
after_create = [m for m in BANNED if m in sys.modules]
with session_scope(factory) as s:
    acc = create_account(s, name="a", role="shopper")
    key = create_api_key(s, account_id=acc.id).plaintext
    merch = create_account(s, name="m", role="merchant")
    mkey = create_api_key(s, account_id=merch.id).plaintext
buf = io.BytesIO()
Image.fromarray(skdata.astronaut()).save(buf, "JPEG", quality=92)
client = app.test_client()
r = client.post("/v1/photos", headers={"Authorization": f"Bearer {key}"},
                content_type="multipart/form-data",
                data={"image": (io.BytesIO(buf.getvalue()), "a.jpg"), "consent": "true"})
photo = r.get_json()
from tryon.records.models import Photo
with factory() as s:
    row = s.get(Photo, photo["id"]) if r.status_code == 201 else None
    mask_key = row.person_mask_key if row is not None else None
person_mask = bool(mask_key) and app.extensions["tryon"].storage.exists(mask_key)
preview = None
if r.status_code == 201 and photo["usable_categories"]:
    cat = photo["usable_categories"][0]
    p = client.get(f"/v1/photos/{photo['id']}/placement?category={cat}",
                   headers={"Authorization": f"Bearer {key}"})
    preview = [p.status_code, p.mimetype]
g = np.full((400, 300, 3), 240, np.uint8); g[100:300, 80:220] = (200, 30, 30)
gb = io.BytesIO(); Image.fromarray(g).save(gb, "PNG")
gr = client.post("/v1/garments", headers={"Authorization": f"Bearer {mkey}"},
                 content_type="multipart/form-data",
                 data={"image": (io.BytesIO(gb.getvalue()), "g.png"), "category": "upper_body"})
# the pages too: a merchant's garment page (its sample placement analyses the demo person in
# the pool) and a shopper's photo page with its placement overlay
import re
pages = []
def signed_in(k):
    c = app.test_client()
    tok = re.search(r'name="csrf_token" value="([^"]+)"', c.get("/sign-in").get_data(as_text=True))
    c.post("/sign-in", data={"api_key": k, "csrf_token": tok.group(1)})
    return c
if gr.status_code == 201:
    mc = signed_in(mkey)
    gid = gr.get_json()["id"]
    pages += [mc.get(f"/shop/garments/{gid}").status_code,
              mc.get(f"/shop/garments/{gid}/sample.png").status_code]
if r.status_code == 201:
    sc = signed_in(key)
    pages += [sc.get(f"/me/photos/{photo['id']}").status_code,
              sc.get(f"/me/photos/{photo['id']}/placement/upper_body.png").status_code]
app.extensions["tryon"].analyzer.shutdown()
print(json.dumps({"pages": pages, "after_create": after_create, "after_upload": [m for m in BANNED if m in sys.modules],
                  "status": r.status_code, "photo": photo, "preview": preview,
                  "garment": gr.status_code, "person_mask": person_mask}))
"""


@pytest.mark.slow
def test_web_never_imports_heavy_modules_with_real_pool(tmp_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parents[2])}
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path)], capture_output=True, text=True,
        timeout=300, env=env, cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["after_create"] == [] and out["after_upload"] == [], out
    # the real analyzer ran in the pool: the astronaut photo has a person and a pose
    assert out["status"] == 201, out["photo"]
    photo = out["photo"]
    assert "upper_body" in photo["usable_categories"], photo["verdicts"]
    x1, y1, x2, y2 = photo["placements"]["upper_body"]["box"]
    assert 0 <= x1 < x2 <= photo["width"] and 0 <= y1 < y2 <= photo["height"]
    assert out["preview"] == [200, "image/png"]
    assert out["garment"] == 201
    assert out["pages"] == [200, 200, 200, 200], out["pages"]
    # the pool's segmentation was stored for shape-aware target masks
    assert out["person_mask"] is True
