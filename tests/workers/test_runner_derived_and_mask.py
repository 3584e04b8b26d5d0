"""The runner's per-garment derived-data cache (AnyDoor on a tiny saved model: the first job
stores the reference and tokens under the garment's ``derived`` prefix, the second hits them)
and the shape-aware target mask (``params["mask"] == "shape"``, with the preview engine)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from jobkit import add_job, seed_inputs
from PIL import Image
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from tryon.anydoor.config import AnyDoorConfig
from tryon.anydoor.models import IDExtractor, build_components, randomize_parameters
from tryon.anydoor.weights import save_pretrained
from tryon.config import Settings
from tryon.engines.anydoor import AnyDoorEngine
from tryon.engines.base import RenderOutput, RenderRequest
from tryon.engines.preview import PreviewEngine
from tryon.engines.request import JobParams, target_mask_for
from tryon.images import encode_png
from tryon.records.models import Garment, Photo, TryOnResult
from tryon.storage import LocalStorage, derived_key, derived_prefix, new_key
from tryon.types import Box, MaskMode
from workers.inputs import load_inputs
from workers.runner import JobRunner


def shape_target_mask(box: Box, size: tuple[int, int], person: Any) -> Any:
    mask, used = target_mask_for(box, size, MaskMode.SHAPE, person)
    return mask if used is MaskMode.SHAPE else None


def build_render_inputs(photo: Any, garment: Any, params: dict[str, Any], seeds: list[int],
                        get: Any) -> Any:
    return load_inputs(photo, garment, JobParams.from_dict(params, category=garment.category),
                       seeds, get)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path, heartbeat_interval_s=0.5, stale_after_s=5.0,
                    max_retry_backoff_s=0.1)


@pytest.fixture(scope="module")
def anydoor(tmp_path_factory: pytest.TempPathFactory) -> AnyDoorEngine:
    components = build_components(AnyDoorConfig.tiny())
    randomize_parameters(components, seed=2, std=0.05)
    path = save_pretrained(components, tmp_path_factory.mktemp("w") / "tiny")
    return AnyDoorEngine(Settings(weights=str(path), device="cpu"))


def _runner(settings: Settings, factory: sessionmaker[Session], storage: Any,
            engine: Any) -> JobRunner:
    return JobRunner(settings=settings, session_factory=factory, storage=storage,
                     engine_loader=lambda name, s: engine, sleep=lambda s: None)


def _job(factory: sessionmaker[Session], ids: dict[str, str], **params: Any) -> str:
    with factory() as s:
        job_id = add_job(s, ids, engine=params.pop("engine", "preview"), params=params)
        s.commit()
    return job_id


def _results(factory: sessionmaker[Session], job_id: str) -> list[TryOnResult]:
    with factory() as s:
        return list(s.scalars(select(TryOnResult).where(TryOnResult.job_id == job_id)
                              .order_by(TryOnResult.index)))


def _png(storage: LocalStorage, key: str) -> np.ndarray:
    with Image.open(io.BytesIO(storage.get(key))) as im:
        return np.asarray(im.convert("RGB"))


# --- derived garment data ---------------------------------------------------------------------


def test_first_job_stores_derived_data_second_job_hits_it(settings, factory, storage, anydoor,
                                                          monkeypatch) -> None:
    with factory() as s:
        ids = seed_inputs(s, storage)
        s.commit()
    forwards: list[int] = []
    real = IDExtractor.forward

    def spy(self: IDExtractor, images: torch.Tensor) -> torch.Tensor:
        forwards.append(1)
        return real(self, images)

    monkeypatch.setattr(IDExtractor, "forward", spy)
    runner = _runner(settings, factory, storage, anydoor)
    first = _job(factory, ids, engine="anydoor", steps=2, seed=5)
    assert runner.run(first).status == "succeeded"
    rec1 = _results(factory, first)[0].record
    assert rec1["reference_cache"]["status"] == "miss"
    with factory() as s:
        g = s.get(Garment, ids["garment"])
        assert g is not None
        owner = g.owner_id
    for name in (rec1["reference_cache"]["reference"], rec1["reference_cache"]["tokens"]):
        key = derived_key(owner, ids["garment"], name)
        assert key.startswith(derived_prefix(owner, ids["garment"]) + "/")
        assert storage.exists(key)

    n = len(forwards)
    second = _job(factory, ids, engine="anydoor", steps=2, seed=5)
    assert runner.run(second).status == "succeeded"
    res2 = _results(factory, second)[0]
    assert res2.record["reference_cache"]["status"] == "hit"
    assert len(forwards) == n  # no DINOv2 pass for the second job
    assert res2.sha256 == _results(factory, first)[0].sha256  # same seed, same image


class DeletesGarmentMidRender:
    """Stores derived data through the request's cache, then the garment is deleted (as a
    merchant's DELETE racing the job would), then reports it like the AnyDoor engine."""

    name = "fake"

    def __init__(self, factory: sessionmaker[Session], garment_id: str) -> None:
        self.factory, self.garment_id = factory, garment_id

    def render(self, request: RenderRequest, **_: Any) -> RenderOutput:
        assert request.reference_cache is not None
        request.reference_cache.put("ref-a", b"r")
        request.reference_cache.put("tok-a", b"t")
        with self.factory() as s:
            g = s.get(Garment, self.garment_id)
            assert g is not None
            g.deleted_at = g.created_at
            s.commit()
        record = {"reference_cache": {"status": "miss", "version": "v", "reference": "ref-a",
                                      "tokens": "tok-a"}}
        return RenderOutput(images=[request.person.copy()], seeds=[1], record=record)


def test_derived_data_of_a_garment_deleted_meanwhile_is_removed(settings, factory,
                                                                storage) -> None:
    with factory() as s:
        ids = seed_inputs(s, storage)
        s.commit()
    runner = _runner(settings, factory, storage, DeletesGarmentMidRender(factory, ids["garment"]))
    runner.run(_job(factory, ids, engine="fake"))
    with factory() as s:
        g = s.get(Garment, ids["garment"])
        assert g is not None
        owner = g.owner_id
    base = storage.root / derived_prefix(owner, ids["garment"])
    assert not base.exists() or list(base.iterdir()) == []


def test_preview_engine_leaves_no_derived_data(settings, factory, storage) -> None:
    with factory() as s:
        ids = seed_inputs(s, storage)
        s.commit()
    job = _job(factory, ids)
    assert _runner(settings, factory, storage, PreviewEngine()).run(job).status == "succeeded"
    assert not (storage.root / "derived").exists()


# --- shape-aware target mask ------------------------------------------------------------------

SIZE = (160, 200)  # (w, h) of the seeded photo
BOX = [10, 20, 150, 180]


def _person_mask() -> np.ndarray:
    """A 'person' covering columns 10..49 of the photo, all rows."""
    m = np.zeros((SIZE[1], SIZE[0]), np.uint8)
    m[:, 10:50] = 255
    return m


def _seed_with_mask(factory: sessionmaker[Session], storage: LocalStorage,
                    with_mask: bool = True) -> dict[str, str]:
    with factory() as s:
        ids = seed_inputs(s, storage, size=SIZE)
        if with_mask:
            photo = s.get(Photo, ids["photo"])
            assert photo is not None
            key = new_key("personmasks", photo.owner_id, "png")
            storage.put(key, encode_png(_person_mask()), "image/png")
            photo.person_mask_key = key
        s.commit()
    return ids


def test_shape_mask_is_box_and_dilated_person() -> None:
    box = Box(*BOX)
    mask = shape_target_mask(box, SIZE, _person_mask() > 127)
    assert mask is not None and mask.shape == (SIZE[1], SIZE[0])
    # inside the box only; covers the person, spreads 15 px beyond it, not further
    assert not mask[:20].any() and not mask[180:].any() and not mask[:, :10].any()
    assert mask[20:180, 10:50].all() and mask[100, 64] and not mask[100, 66:].any()
    # the person outside the box, or a mask of another size: no shape
    assert shape_target_mask(Box(100, 20, 150, 180), SIZE, _person_mask() > 127) is None
    assert shape_target_mask(box, SIZE, np.ones((10, 10), bool)) is None


def test_job_with_shape_mask_repaints_only_the_shape(settings, factory, storage) -> None:
    ids = _seed_with_mask(factory, storage)
    runner = _runner(settings, factory, storage, PreviewEngine())
    shaped = _job(factory, ids, box=BOX, mask="shape")
    boxed = _job(factory, ids, box=BOX)
    assert runner.run(shaped).status == "succeeded" and runner.run(boxed).status == "succeeded"
    with factory() as s:
        photo = s.get(Photo, ids["photo"])
        assert photo is not None
        person = _png(storage, photo.image_key)
    rs, rb = _results(factory, shaped)[0], _results(factory, boxed)[0]
    assert rs.record["inputs"]["mask"] == "shape" and rb.record["inputs"]["mask"] == "box"
    out_s, out_b = _png(storage, rs.storage_key), _png(storage, rb.storage_key)
    target = shape_target_mask(Box(*BOX), SIZE, _person_mask() > 127)
    assert target is not None
    # every pixel outside the shape is the photo's own; inside, the garment was painted
    np.testing.assert_array_equal(out_s[~target], person[~target])
    assert (out_s[target] != person[target]).any()
    # the plain box job did paint there (so the equality above is not vacuous)
    outside_shape_in_box = np.zeros_like(target)
    outside_shape_in_box[20:180, 10:150] = True
    outside_shape_in_box &= ~target
    assert (out_b[outside_shape_in_box] != person[outside_shape_in_box]).any()


def test_shape_request_without_a_person_mask_falls_back_to_the_box(settings, factory,
                                                                  storage) -> None:
    ids = _seed_with_mask(factory, storage, with_mask=False)
    job = _job(factory, ids, box=BOX, mask="shape")
    assert _runner(settings, factory, storage, PreviewEngine()).run(job).status == "succeeded"
    assert _results(factory, job)[0].record["inputs"]["mask"] == "box"


def test_lost_or_corrupt_person_mask_falls_back_to_the_box(factory, storage) -> None:
    ids = _seed_with_mask(factory, storage)
    with factory() as s:
        photo = s.get(Photo, ids["photo"])
        garment = s.get(Garment, ids["garment"])
        assert photo is not None and garment is not None and photo.person_mask_key
        storage.delete(photo.person_mask_key)
        built = build_render_inputs(photo, garment, {"box": BOX, "mask": "shape"}, [1],
                                    storage.get)
    assert built.mask_used == "box"
    assert built.request.target_mask[20:180, 10:150].all()
    # an unreadable one too
    storage.put(photo.person_mask_key, b"\x89PNG garbage", "image/png")
    built = build_render_inputs(photo, garment, {"box": BOX, "mask": "shape"}, [1], storage.get)
    assert built.mask_used == "box"
