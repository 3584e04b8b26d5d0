"""The AnyDoor engine's per-garment reference cache on a tiny saved model: a hit skips the
DINOv2 pass and gives the same image; bad or failing caches cost a recomputation, never the
render; data is keyed on the garment's pixels and the model version."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tryon.anydoor.config import AnyDoorConfig
from tryon.anydoor.models import IDExtractor, build_components, randomize_parameters
from tryon.anydoor.preprocess import PREPROCESS_VERSION
from tryon.anydoor.weights import save_pretrained, weights_checksum
from tryon.config import Settings
from tryon.engines.anydoor import (
    AnyDoorEngine,
    decode_reference_inputs,
    decode_tokens,
    garment_fingerprint,
    reference_cache_names,
)
from tryon.engines.base import RenderParams, RenderRequest
from tryon.types import Box, Category


class DictCache:
    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}
        self.gets: list[str] = []
        self.puts: list[str] = []

    def get(self, name: str) -> bytes | None:
        self.gets.append(name)
        return self.data.get(name)

    def put(self, name: str, data: bytes) -> None:
        self.puts.append(name)
        self.data[name] = data


class BrokenCache:
    def get(self, name: str) -> bytes | None:
        raise OSError("cache backend down")

    def put(self, name: str, data: bytes) -> None:
        raise OSError("cache backend down")


@pytest.fixture(scope="module")
def weights_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    components = build_components(AnyDoorConfig.tiny())
    randomize_parameters(components, seed=1, std=0.05)  # tokens matter through cross-attention
    return save_pretrained(components, tmp_path_factory.mktemp("w") / "tiny")


@pytest.fixture
def forwards(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts IDExtractor.forward calls (each one is a DINOv2 pass)."""
    calls: list[int] = []
    real = IDExtractor.forward

    def spy(self: IDExtractor, images: torch.Tensor) -> torch.Tensor:
        calls.append(int(images.shape[0]))
        return real(self, images)

    monkeypatch.setattr(IDExtractor, "forward", spy)
    return calls


def _request(cache: object = None, seeds: tuple[int, ...] = (7,), shade: int = 0) -> RenderRequest:
    rng = np.random.default_rng(0)
    person = rng.integers(0, 256, (96, 80, 3), dtype=np.uint8)
    garment = rng.integers(0, 256, (48, 40, 3), dtype=np.uint8)
    garment[0, 0] = shade
    gmask = np.zeros((48, 40), dtype=bool)
    gmask[6:42, 5:35] = True
    target = np.zeros((96, 80), dtype=bool)
    target[30:80, 20:60] = True
    return RenderRequest(
        person=person, garment=garment, garment_mask=gmask, box=Box(20, 30, 60, 80),
        target_mask=target, category=Category.UPPER_BODY,
        params=RenderParams(num_inference_steps=2, num_samples=len(seeds), seeds=seeds),
        reference_cache=cache,  # type: ignore[arg-type]
    )


def test_second_render_hits_the_cache_and_skips_dinov2(weights_dir: Path,
                                                      forwards: list[int]) -> None:
    engine = AnyDoorEngine(Settings(weights=str(weights_dir), device="cpu"))
    cache = DictCache()
    first = engine.render(_request(cache))
    rec = first.record["reference_cache"]
    assert rec["status"] == "miss"
    assert len(forwards) == 2  # the unconditional (black) image once per process, then ours
    assert sorted(cache.data) == sorted([rec["reference"], rec["tokens"]])
    assert rec["version"] == (f"{weights_checksum(weights_dir)}:{PREPROCESS_VERSION}"
                              ":float32:cpu")

    second = engine.render(_request(cache))
    assert second.record["reference_cache"]["status"] == "hit"
    assert len(forwards) == 2  # no DINOv2 pass at all
    np.testing.assert_array_equal(second.images[0], first.images[0])

    # and the same image as a render that uses no cache (one pass, for the reference)
    plain = engine.render(_request(None))
    assert plain.record["reference_cache"] == {"status": "off"}
    assert len(forwards) == 3
    np.testing.assert_array_equal(plain.images[0], first.images[0])


def test_reference_encoded_once_per_render_not_per_sample(weights_dir: Path,
                                                          forwards: list[int]) -> None:
    engine = AnyDoorEngine(Settings(weights=str(weights_dir), device="cpu"))
    engine.load()
    engine.render(_request(None, seeds=(1,)))  # warms the unconditional tokens
    before = len(forwards)
    out = engine.render(_request(None, seeds=(1, 2, 3)))
    assert len(out.images) == 3 and len(forwards) - before == 1


def test_cached_bytes_round_trip_exactly(weights_dir: Path) -> None:
    engine = AnyDoorEngine(Settings(weights=str(weights_dir), device="cpu"))
    cache = DictCache()
    rec = engine.render(_request(cache)).record["reference_cache"]
    pipe = engine._ensure_pipeline()
    req = _request()
    ref = pipe.prepare_reference_inputs(req.garment, req.garment_mask, 1.2)
    size = pipe.config.reference_size
    got = decode_reference_inputs(cache.data[rec["reference"]], size)
    for name in ("image", "mask", "hf_map"):
        np.testing.assert_array_equal(getattr(got, name), getattr(ref, name))
    tokens = pipe.reference_tokens(ref)
    np.testing.assert_array_equal(decode_tokens(cache.data[rec["tokens"]], tuple(tokens.shape)),
                                  tokens.numpy())
    with pytest.raises(ValueError):
        decode_tokens(cache.data[rec["tokens"]], (1, 2, 3))


def test_corrupt_or_failing_cache_is_a_miss_not_a_failure(weights_dir: Path,
                                                          forwards: list[int]) -> None:
    engine = AnyDoorEngine(Settings(weights=str(weights_dir), device="cpu"))
    good = engine.render(_request(None)).images[0]
    cache = DictCache()
    rec = engine.render(_request(cache)).record["reference_cache"]
    cache.data[rec["reference"]] = b"not an npz"
    cache.data[rec["tokens"]] = cache.data[rec["tokens"]][:-7]
    n = len(forwards)
    out = engine.render(_request(cache))
    assert out.record["reference_cache"]["status"] == "miss" and len(forwards) == n + 1
    np.testing.assert_array_equal(out.images[0], good)
    # the bad entries were replaced: the next render hits
    assert engine.render(_request(cache)).record["reference_cache"]["status"] == "hit"

    broken = engine.render(_request(BrokenCache()))
    assert broken.record["reference_cache"]["status"] == "miss"
    np.testing.assert_array_equal(broken.images[0], good)


def test_names_follow_the_garment_and_the_model_version(weights_dir: Path) -> None:
    engine = AnyDoorEngine(Settings(weights=str(weights_dir), device="cpu"))
    cache = DictCache()
    a = engine.render(_request(cache)).record["reference_cache"]
    b = engine.render(_request(cache, shade=1)).record["reference_cache"]  # one pixel differs
    assert b["status"] == "miss" and {a["reference"], a["tokens"]}.isdisjoint(
        {b["reference"], b["tokens"]})
    req = _request()
    fp = garment_fingerprint(req.garment, req.garment_mask)
    base = reference_cache_names(fp, weights_checksum="w1", reference_size=28, dtype="float32",
                                 device_type="cpu")
    assert base.reference.startswith("ref-") and len(base.reference) == 44
    other_weights = reference_cache_names(fp, weights_checksum="w2", reference_size=28,
                                          dtype="float32", device_type="cpu")
    fp16 = reference_cache_names(fp, weights_checksum="w1", reference_size=28, dtype="float16",
                                 device_type="cuda")
    assert other_weights.tokens != base.tokens and other_weights.reference != base.reference
    assert fp16.tokens != base.tokens and fp16.reference == base.reference
    assert fp16.version != base.version
    # the mask is part of the fingerprint
    m2 = req.garment_mask.copy()
    m2[6, 5] = False
    assert garment_fingerprint(req.garment, m2) != fp


def test_without_a_weights_checksum_the_cache_is_not_used() -> None:
    torch.manual_seed(0)
    engine = AnyDoorEngine.from_components(build_components(AnyDoorConfig.tiny()))
    cache = DictCache()
    out = engine.render(_request(cache))
    assert out.record["reference_cache"] == {"status": "off"}
    assert cache.gets == [] and cache.puts == []

