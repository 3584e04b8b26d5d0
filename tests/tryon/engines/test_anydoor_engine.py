"""The AnyDoor engine shell on a tiny random model saved like real weights."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from tryon.anydoor.config import AnyDoorConfig
from tryon.anydoor.models import build_components, randomize_parameters
from tryon.anydoor.preprocess import PREPROCESS_VERSION
from tryon.anydoor.weights import save_pretrained, weights_checksum
from tryon.config import Settings
from tryon.engines import registry
from tryon.engines.anydoor import AnyDoorEngine, resolve_device_dtype
from tryon.engines.base import RenderParams, RenderRequest
from tryon.errors import CanceledError, ConfigError, WeightsNotFoundError
from tryon.types import Box, Category, MaskMode

STEPS = 2


@pytest.fixture(scope="module")
def weights_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    return save_pretrained(build_components(AnyDoorConfig.tiny()), tmp_path_factory.mktemp("w") / "tiny")


def _request(seeds: tuple[int, ...] = (7,)) -> RenderRequest:
    rng = np.random.default_rng(0)
    person = rng.integers(0, 256, (96, 80, 3), dtype=np.uint8)
    garment = rng.integers(0, 256, (48, 40, 3), dtype=np.uint8)
    gmask = np.zeros((48, 40), dtype=bool)
    gmask[6:42, 5:35] = True
    box = Box(20, 30, 60, 80)
    target = np.zeros((96, 80), dtype=bool)
    target[30:80, 20:60] = True
    return RenderRequest(
        person=person, garment=garment, garment_mask=gmask, box=box, target_mask=target,
        category=Category.UPPER_BODY,
        params=RenderParams(num_inference_steps=STEPS, num_samples=len(seeds), seeds=seeds),
    )


def test_loads_weights_on_first_render_and_records_them(weights_dir: Path) -> None:
    engine = AnyDoorEngine(Settings(weights=str(weights_dir), device="cpu"))
    assert engine._pipeline is None  # nothing heavy at construction
    progress: list[tuple[int, int]] = []
    out = engine.render(_request((7, 8)), callback=lambda i, n: progress.append((i, n)))
    assert len(out.images) == 2 and out.seeds == [7, 8]
    assert out.images[0].shape == (96, 80, 3) and out.images[0].dtype == np.uint8
    assert progress == [(i, 2 * STEPS) for i in range(1, 2 * STEPS + 1)]
    rec = out.record
    assert rec["engine"] == "anydoor"
    assert rec["weights_checksum"] == weights_checksum(weights_dir)
    assert rec["preprocess_version"] == PREPROCESS_VERSION
    assert rec["device"] == "cpu" and rec["dtype"] == "float32"
    assert rec["params"]["num_inference_steps"] == STEPS and rec["params"]["seeds"] == [7, 8]
    # same seed -> same image; another seed -> another image
    again = engine.render(_request((7,)))
    assert np.array_equal(again.images[0], out.images[0])
    assert not np.array_equal(out.images[0], out.images[1])


def test_cancel_maps_to_interrupt(weights_dir: Path) -> None:
    engine = AnyDoorEngine(Settings(weights=str(weights_dir), device="cpu"))
    polls = iter([False, False, True, True, True])
    with pytest.raises(CanceledError):
        engine.render(_request(), should_cancel=lambda: next(polls))


def test_from_components_renders_without_a_weights_dir() -> None:
    torch.manual_seed(0)
    engine = AnyDoorEngine.from_components(build_components(AnyDoorConfig.tiny()))
    out = engine.render(_request())
    assert out.record["weights_checksum"] is None and out.images[0].shape == (96, 80, 3)


def test_registry_serves_anydoor_when_weights_are_configured(weights_dir: Path) -> None:
    registry.clear_cache()
    try:
        s = Settings(weights=str(weights_dir))
        assert registry.default_engine_name(s) == "anydoor"
        assert isinstance(registry.get_engine(None, s), AnyDoorEngine)
    finally:
        registry.clear_cache()


def test_missing_weights_path(tmp_path: Path) -> None:
    with pytest.raises(WeightsNotFoundError):
        AnyDoorEngine(Settings(weights=str(tmp_path / "nope")))


def test_device_dtype_resolution() -> None:
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device_dtype("auto", "auto") == (
        expected, "float16" if expected == "cuda" else "float32"
    )
    assert resolve_device_dtype("cpu", "bfloat16") == ("cpu", "bfloat16")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError):
            resolve_device_dtype("cuda", "auto")


def _shape_request(mode: MaskMode) -> RenderRequest:
    base = _request()
    target = np.zeros((96, 80), dtype=bool)
    target[34:78, 28:52] = True  # a "person" narrower than the box
    return dataclasses.replace(base, target_mask=target, mask_mode=mode)


def test_shape_mode_uses_the_target_mask_as_the_hint_mask_channel() -> None:
    components = build_components(AnyDoorConfig.tiny())
    # random zero-convs too, so the hint reaches the output
    randomize_parameters(components, seed=2, std=0.05)
    engine = AnyDoorEngine.from_components(components)
    shaped = engine.render(_shape_request(MaskMode.SHAPE))
    boxed = engine.render(_shape_request(MaskMode.BOX))
    assert shaped.record["params"]["mask"] == "shape" and boxed.record["params"]["mask"] == "box"
    assert not np.array_equal(shaped.images[0], boxed.images[0])
    # each equals the pipeline called the official way: box mode exactly as before the option
    pipe = engine._ensure_pipeline()
    for mode, out in ((True, shaped), (False, boxed)):
        req = _shape_request(MaskMode.SHAPE if mode else MaskMode.BOX)
        direct = pipe(reference_image=req.garment, reference_mask=req.garment_mask,
                      target_image=req.person, target_mask=req.target_mask,
                      num_inference_steps=STEPS, guidance_scale=req.params.guidance_scale,
                      generator=torch.Generator().manual_seed(7), expand_ratio=1.2,
                      shape_mask=mode)
        np.testing.assert_array_equal(direct.image, out.images[0])
