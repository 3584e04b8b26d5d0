"""AnyDoorPipeline with a precomputed reference and ID tokens (the per-garment cache's inputs):
bit-identical to computing them in the call, the steps really skipped, bad shapes refused."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

import tryon.anydoor.pipeline as pipeline_module
from tryon.anydoor.config import AnyDoorConfig
from tryon.anydoor.models import IDExtractor, build_components, randomize_parameters
from tryon.anydoor.pipeline import AnyDoorPipeline
from tryon.anydoor.preprocess import ReferenceInputs
from tryon.errors import InvalidInputError


@pytest.fixture(scope="module")
def pipe() -> AnyDoorPipeline:
    components = build_components(AnyDoorConfig.tiny())
    randomize_parameters(components, seed=0, std=0.05)
    return AnyDoorPipeline(components)


@pytest.fixture(scope="module")
def inputs() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    ref = rng.integers(0, 256, (60, 50, 3), dtype=np.uint8)
    ref_mask = np.zeros((60, 50), np.uint8)
    ref_mask[8:52, 10:42] = 1
    target = rng.integers(0, 256, (100, 90, 3), dtype=np.uint8)
    target_mask = np.zeros((100, 90), np.uint8)
    target_mask[30:70, 20:60] = 1
    return {"reference_image": ref, "reference_mask": ref_mask, "target_image": target,
            "target_mask": target_mask}


def _run(pipe: AnyDoorPipeline, inputs: dict[str, Any], seed: int = 3, **kw: Any) -> Any:
    return pipe(**inputs, num_inference_steps=2, guidance_scale=3.0,
                generator=torch.Generator().manual_seed(seed), **kw)


def test_precomputed_reference_and_tokens_are_bit_identical(
    pipe: AnyDoorPipeline, inputs: dict[str, np.ndarray], monkeypatch: pytest.MonkeyPatch
) -> None:
    plain = _run(pipe, inputs)
    ref = pipe.prepare_reference_inputs(inputs["reference_image"], inputs["reference_mask"])
    tokens = pipe.reference_tokens(ref)
    # a float32 round trip (how the cache stores them) must not change a bit either
    stored = torch.from_numpy(tokens.float().numpy().copy())

    calls = {"forward": 0, "prepare": 0}
    real_forward, real_prepare = IDExtractor.forward, pipeline_module.prepare_reference

    def counting_forward(self: IDExtractor, images: torch.Tensor) -> torch.Tensor:
        calls["forward"] += 1
        return real_forward(self, images)

    def counting_prepare(*a: Any, **k: Any) -> ReferenceInputs:
        calls["prepare"] += 1
        return real_prepare(*a, **k)

    monkeypatch.setattr(IDExtractor, "forward", counting_forward)
    monkeypatch.setattr(pipeline_module, "prepare_reference", counting_prepare)
    cached = _run(pipe, inputs, reference=ref, reference_tokens=stored)
    assert calls == {"forward": 0, "prepare": 0}  # both steps skipped (uncond tokens cached)
    np.testing.assert_array_equal(cached.image, plain.image)
    np.testing.assert_array_equal(cached.crop, plain.crop)

    # each alone is honoured too, and still identical
    only_ref = _run(pipe, inputs, reference=ref)
    assert calls == {"forward": 1, "prepare": 0}
    only_tokens = _run(pipe, inputs, reference_tokens=stored)
    assert calls == {"forward": 1, "prepare": 1}
    np.testing.assert_array_equal(only_ref.image, plain.image)
    np.testing.assert_array_equal(only_tokens.image, plain.image)


def test_tokens_really_condition_the_output(
    pipe: AnyDoorPipeline, inputs: dict[str, np.ndarray]
) -> None:
    """The given tokens are the ones used: other tokens give another image (so the
    bit-identity above is not vacuous)."""
    ref = pipe.prepare_reference_inputs(inputs["reference_image"], inputs["reference_mask"])
    tokens = pipe.reference_tokens(ref)
    plain = _run(pipe, inputs, reference=ref, reference_tokens=tokens)
    other = _run(pipe, inputs, reference=ref, reference_tokens=tokens + 0.5)
    assert (plain.crop != other.crop).any()


def test_bad_precomputed_inputs_are_refused(
    pipe: AnyDoorPipeline, inputs: dict[str, np.ndarray]
) -> None:
    ref = pipe.prepare_reference_inputs(inputs["reference_image"], inputs["reference_mask"])
    tokens = pipe.reference_tokens(ref)
    with pytest.raises(InvalidInputError) as err:
        _run(pipe, inputs, reference_tokens=tokens[:, :-1])
    assert err.value.details.get("argument") == "reference_tokens"
    small = ReferenceInputs(image=ref.image[:-1], mask=ref.mask, hf_map=ref.hf_map)
    with pytest.raises(InvalidInputError) as err:
        _run(pipe, inputs, reference=small)
    assert err.value.details.get("argument") == "reference"
