"""Helpers for API tests: an app on a fresh SQLite file, local storage, a recording publisher,
a fake photo analyzer, and five principals (shoppers A and B, merchants X and Y, ops)."""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from tryon.config import Settings
from tryon.records.accounts import create_account, create_api_key
from tryon.records.db import make_engine, make_session_factory, session_scope
from tryon.records.models import Base, Garment, Photo, TryOnJob, TryOnResult
from tryon.storage import new_key, result_key
from tryon.types import Category
from web.publisher import RecordingPublisher

PHOTO_SIZE = (384, 512)  # (w, h) of the generated photo


def jpeg_bytes(size: tuple[int, int] = PHOTO_SIZE, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def garment_png(size: tuple[int, int] = (300, 400)) -> bytes:
    """A red shirt-like block on a plain light backdrop (separable by background removal)."""
    arr = np.full((size[1], size[0], 3), 240, np.uint8)
    arr[100:300, 80:220] = (200, 30, 30)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG")
    return buf.getvalue()


def png_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG")
    return buf.getvalue()


class FakeAnalyzer:
    """Stands in for the MediaPipe pool: every category usable unless told otherwise."""

    def __init__(self) -> None:
        self.verdicts: dict[str, str | None] = {c.value: None for c in Category}
        #: extra error details per category (e.g. ``missing``, ``reason``)
        self.details: dict[str, dict[str, Any]] = {}
        self.calls = 0
        #: every AnalysisInput received, in order
        self.inputs: list[Any] = []

    def __call__(self, photo: Any, categories: Any = None) -> dict[str, Any]:
        self.calls += 1
        self.inputs.append(photo)
        w, h = photo.photo_size
        box = [w // 4, h // 5, 3 * w // 4, 4 * h // 5]
        placements = {
            c: {"box": box, "category": c, "rule": "fake", "length": "regular", "clipped": False}
            for c, v in self.verdicts.items() if v is None
        }
        return {
            "image_size": [w, h], "pose": None, "person_mask_coverage": 0.3, "people": 1,
            "placements": placements, "verdicts": dict(self.verdicts),
            "details": {
                c: {"message": f"fake verdict {v}", **self.details.get(c, {})}
                for c, v in self.verdicts.items() if v
            },
        }


@dataclass
class Ctx:
    app: Any
    client: Any
    settings: Settings
    factory: Any
    publisher: RecordingPublisher
    analyzer: FakeAnalyzer
    keys: dict[str, str] = field(default_factory=dict)
    ids: dict[str, str] = field(default_factory=dict)

    def h(self, who: str | None, **extra: str) -> dict[str, str]:
        headers = dict(extra)
        if who is not None:
            headers["Authorization"] = f"Bearer {self.keys[who]}"
        return headers

    @property
    def storage(self) -> Any:
        return self.app.extensions["tryon"].storage

    # direct record builders (fast; the API paths are tested separately)
    def add_photo(self, owner: str) -> str:
        key = new_key("photos", self.ids[owner], "jpg")
        self.storage.put(key, jpeg_bytes(), "image/jpeg")
        w, h = PHOTO_SIZE
        box = [w // 4, h // 5, 3 * w // 4, 4 * h // 5]
        with session_scope(self.factory) as s:
            p = Photo(owner_id=self.ids[owner], image_key=key, width=w, height=h,
                      verdicts={c.value: None for c in Category},
                      placements={c.value: {"box": box, "category": c.value, "rule": "fake",
                                            "length": "regular", "clipped": False}
                                  for c in Category})
            s.add(p)
            s.flush()
            return p.id

    def add_garment(self, owner: str, category: str = "upper_body") -> str:
        ik = new_key("garments", self.ids[owner], "png")
        mk = new_key("masks", self.ids[owner], "png")
        self.storage.put(ik, garment_png(), "image/png")
        self.storage.put(mk, garment_png(), "image/png")
        with session_scope(self.factory) as s:
            g = Garment(owner_id=self.ids[owner], category=category, image_key=ik, mask_key=mk,
                        width=300, height=400)
            s.add(g)
            s.flush()
            return g.id

    def add_job(self, owner: str, photo_id: str, garment_id: str, status: str = "succeeded",
                **values: Any) -> str:
        with session_scope(self.factory) as s:
            j = TryOnJob(owner_id=self.ids[owner], photo_id=photo_id, garment_id=garment_id,
                         engine="preview", queue="cpu", status=status, attempt=1,
                         params={"num_samples": 1}, **values)
            s.add(j)
            s.flush()
            if status == "succeeded":
                key = result_key(self.ids[owner], j.id, 1, 0)
                self.storage.put(key, png_bytes(np.zeros((8, 8, 3), np.uint8)), "image/png")
                s.add(TryOnResult(job_id=j.id, index=0, attempt=1, storage_key=key, seed=1,
                                  width=8, height=8, sha256="0" * 64))
            return j.id


#: rate limits are off in API tests unless a test asks for them (tests/web/test_rate_limits.py)
NO_RATE_LIMITS = {"rate_limit_uploads": "", "rate_limit_tryons": "",
                  "rate_limit_per_address": "", "rate_limit_auth_failures": ""}


def make_ctx(tmp_path: Path, database_url: str = "", *, settings_changes: dict[str, Any] | None = None,
             flask_config: dict[str, Any] | None = None, **service_overrides: Any) -> Ctx:
    """An app on a fresh database. ``service_overrides`` are :class:`ServiceOverrides` fields
    (``publisher=``, ``analyzer=``, ``engines=``, ``webhook_resolver=``, ``broker_probe=``...),
    ``settings_changes`` are :class:`Settings` fields (rate limits are off unless given here),
    ``flask_config`` Flask's own keys."""
    from web import create_app
    from web.services import ServiceOverrides

    settings = Settings(data_dir=tmp_path, secret_key="test-secret", min_image_side=64,
                        max_upload_bytes=2 * 1024 * 1024, database_url=database_url,
                        **NO_RATE_LIMITS)
    if settings_changes:
        settings = settings.replace(**settings_changes)
    engine = make_engine(settings.resolved_database_url)
    Base.metadata.create_all(engine)
    factory = make_session_factory(engine)
    over: dict[str, Any] = {"publisher": RecordingPublisher(), "analyzer": FakeAnalyzer(),
                            "session_factory": factory, "broker_probe": lambda: None,
                            # a live worker serving preview (the registry is tested on its own)
                            "engines": lambda session: {"preview": True}}
    over.update(service_overrides)
    app = create_app(settings, ServiceOverrides(**over),
                     config={"TESTING": True, **(flask_config or {})})
    ctx = Ctx(app, app.test_client(), settings, factory, over["publisher"], over["analyzer"])
    with session_scope(factory) as s:
        for who, role in [("shopper_a", "shopper"), ("shopper_b", "shopper"),
                          ("merchant_x", "merchant"), ("merchant_y", "merchant"), ("ops", "ops")]:
            acc = create_account(s, name=who, role=role)
            ctx.ids[who] = acc.id
            ctx.keys[who] = create_api_key(s, account_id=acc.id).plaintext
    return ctx


