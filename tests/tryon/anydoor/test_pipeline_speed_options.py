"""Speed and memory options of AnyDoorPipeline on a tiny random model: samples in one batch,
DPM-Solver++ 2M, half precision with the non-finite guard, the ID-extractor offload swap (run
on the CPU through an injected offload device), channels_last, torch.compile, SDPA."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from diffusers.models.attention_processor import AttnProcessor

from tryon.anydoor.config import AnyDoorConfig
from tryon.anydoor.models import AnyDoorComponents, build_components, randomize_parameters
from tryon.anydoor.pipeline import AnyDoorPipeline
from tryon.errors import InvalidInputError, NumericalError

#: a sample drawn in a batch of N against the same seed drawn alone: batched kernels may
#: round differently, so the final latents agree to this tolerance, the images to one level
LATENT_TOL = {"rtol": 1e-4, "atol": 1e-4}


def _components() -> AnyDoorComponents:
    components = build_components(AnyDoorConfig.tiny())
    randomize_parameters(components, seed=0, std=0.05)
    return components


@pytest.fixture(scope="module")
def pipe() -> AnyDoorPipeline:
    return AnyDoorPipeline(_components())


@pytest.fixture(scope="module")
def inputs() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    ref = rng.integers(0, 256, (60, 50, 3), dtype=np.uint8)
    ref_mask = np.zeros((60, 50), np.uint8)
    ref_mask[8:52, 10:42] = 1
    target = rng.integers(0, 256, (100, 90, 3), dtype=np.uint8)
    target_mask = np.zeros((100, 90), np.uint8)
    target_mask[30:70, 20:60] = 1
    return {
        "reference_image": ref,
        "reference_mask": ref_mask,
        "target_image": target,
        "target_mask": target_mask,
    }


def _run(pipe: AnyDoorPipeline, inputs: dict[str, np.ndarray], seeds: list[int], **kw: Any):  # type: ignore[no-untyped-def]
    final: list[torch.Tensor] = []

    def keep(i: int, t: int, x: torch.Tensor) -> None:
        final[:] = [x.clone()]

    out = pipe(
        **inputs,
        num_inference_steps=kw.pop("steps", 3),
        num_samples=len(seeds),
        generator=[torch.Generator().manual_seed(s) for s in seeds],
        callback_on_step_end=keep,
        **kw,
    )
    return out, final[0]


# --- samples in one batch ---------------------------------------------------------------------


@pytest.mark.parametrize("batched_cfg", [True, False])
def test_each_batched_sample_equals_a_single_run_with_its_seed(
    pipe: AnyDoorPipeline, inputs: dict[str, np.ndarray], batched_cfg: bool
) -> None:
    seeds = [11, 12, 13]
    batch, batch_latents = _run(pipe, inputs, seeds, batched_cfg=batched_cfg)
    assert len(batch.images) == len(batch.crops) == 3
    assert batch.image is batch.images[0]
    for k, seed in enumerate(seeds):
        alone, alone_latents = _run(pipe, inputs, [seed], batched_cfg=batched_cfg)
        torch.testing.assert_close(batch_latents[k : k + 1], alone_latents, **LATENT_TOL)
        diff = np.abs(batch.images[k].astype(int) - alone.image.astype(int))
        assert diff.max() <= 1, (k, diff.max())
    # and the samples are different images
    assert not np.array_equal(batch.crops[0], batch.crops[1])


def test_the_reference_and_tokens_are_computed_once(
    pipe: AnyDoorPipeline, inputs: dict[str, np.ndarray], monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []
    real = pipe.components.id_extractor.forward

    def counting(images: torch.Tensor) -> torch.Tensor:
        calls.append(images.shape[0])
        return real(images)

    pipe.unconditional_tokens(1)  # cached before: only the reference pass is counted
    monkeypatch.setattr(pipe.components.id_extractor, "forward", counting)
    _run(pipe, inputs, [1, 2, 3, 4])
    assert calls == [1]


def test_one_denoiser_call_per_step_for_all_samples(
    pipe: AnyDoorPipeline, inputs: dict[str, np.ndarray], monkeypatch: pytest.MonkeyPatch
) -> None:
    batches: list[int] = []
    real = pipe._unet

    def counting(sample: torch.Tensor, *a: Any, **kw: Any) -> Any:
        batches.append(sample.shape[0])
        return real(sample, *a, **kw)

    monkeypatch.setattr(pipe, "_unet", counting)
    _run(pipe, inputs, [1, 2, 3], steps=2)
    assert batches == [6, 6]  # 2 x samples (classifier-free guidance), once per step


def test_sample_count_and_generators_are_checked(
    pipe: AnyDoorPipeline, inputs: dict[str, np.ndarray]
) -> None:
    with pytest.raises(InvalidInputError) as info:
        pipe(**inputs, num_inference_steps=2, num_samples=0)
    assert info.value.details.get("argument") == "num_samples"
    with pytest.raises(InvalidInputError) as info:
        pipe(
            **inputs,
            num_inference_steps=2,
            num_samples=2,
            generator=[torch.Generator().manual_seed(0)],
        )
    assert info.value.details.get("argument") == "generator"
    with pytest.raises(InvalidInputError) as info:
        pipe(**inputs, num_inference_steps=2, num_samples=2, latents=torch.zeros(1, 4, 8, 8))
    assert info.value.details.get("argument") == "latents"


# --- DPM-Solver++ 2M -----------------------------------------------------------------------------


def test_dpmpp_2m_runs_its_own_timesteps_and_differs_from_ddim(
    pipe: AnyDoorPipeline, inputs: dict[str, np.ndarray]
) -> None:
    ddim, _ = _run(pipe, inputs, [5], steps=20)
    dpm, _ = _run(pipe, inputs, [5], steps=20, sampler="dpmpp_2m")
    assert len(dpm.timesteps) == 20 and dpm.timesteps != ddim.timesteps
    assert dpm.image.shape == ddim.image.shape
    assert not np.array_equal(dpm.crop, ddim.crop)
    again, _ = _run(pipe, inputs, [5], steps=20, sampler="dpmpp_2m")
    np.testing.assert_array_equal(again.image, dpm.image)  # stateless between calls
    with pytest.raises(InvalidInputError) as info:
        pipe(**inputs, num_inference_steps=2, sampler="euler")
    assert info.value.details.get("argument") == "sampler"


# --- precision ---------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_runs_close_to_float32(
    pipe: AnyDoorPipeline, inputs: dict[str, np.ndarray], dtype: torch.dtype
) -> None:
    half = AnyDoorPipeline(_components(), dtype=dtype)
    assert next(half.components.unet.parameters()).dtype == dtype
    out, latents = _run(half, inputs, [3])
    ref, ref_latents = _run(pipe, inputs, [3])
    assert latents.dtype == torch.float32  # the loop state stays float32
    assert torch.isfinite(latents).all()
    assert (latents - ref_latents).abs().mean() < 0.05 * ref_latents.abs().mean()


def test_float16_overflow_is_refused_not_returned(inputs: dict[str, np.ndarray]) -> None:
    half = AnyDoorPipeline(_components(), dtype=torch.float16)
    # the decoder's last layer scaled past float16's 65504 (about 1.2e5: finite in float32,
    # inf in float16, computed in float16 like a real overflow)
    half.components.vae.decoder.conv_out.register_forward_hook(
        lambda module, args, output: (output.abs() + 2) * 6e4
    )
    with pytest.raises(NumericalError) as info:
        half(**inputs, num_inference_steps=2)
    assert info.value.details.get("dtype") == "float16"


# --- ID-extractor offload swap -------------------------------------------------------------


class RecordingPipeline(AnyDoorPipeline):
    """Logs every move the offload swap makes, and where each part is at every moment."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.moves: list[tuple[str, str]] = []
        self.where: dict[str, str] = {}
        super().__init__(*args, **kwargs)
        self.where = {"unet": str(self.device), "controlnet": str(self.device),
                      "id_extractor": str(self.offload_device)}

    def _place(self, module: torch.nn.Module, device: torch.device) -> None:
        name = next(k for k, m in self.components.modules().items() if m is module)
        self.moves.append((name, str(device)))
        self.where[name] = str(device)
        super()._place(module, device)


def test_offload_swap_never_holds_both_on_the_device() -> None:
    # the offload device is injected: "cpu:0" is the host's memory too, but not equal to
    # "cpu", so the swap runs exactly as it does between a GPU and the host
    plain = AnyDoorPipeline(_components())
    pipe = RecordingPipeline(_components(), offload_id_extractor=True, offload_device="cpu:0")
    seen: list[dict[str, str]] = []
    pipe.components.id_extractor.register_forward_pre_hook(
        lambda module, args: seen.append(dict(pipe.where))
    )
    ref = torch.rand(1, 3, 28, 28, generator=torch.Generator().manual_seed(4))
    tokens = pipe.encode_reference(ref)
    torch.testing.assert_close(tokens, plain.encode_reference(ref), rtol=0, atol=0)
    # while DINOv2 runs it is alone on the device; the denoisers wait on the host
    assert seen == [{"unet": "cpu:0", "controlnet": "cpu:0", "id_extractor": "cpu"}]
    assert pipe.moves == [
        ("unet", "cpu:0"), ("controlnet", "cpu:0"), ("id_extractor", "cpu"),
        ("id_extractor", "cpu:0"), ("unet", "cpu"), ("controlnet", "cpu"),
    ]
    assert pipe.where == {"unet": "cpu", "controlnet": "cpu", "id_extractor": "cpu:0"}


def test_offload_swap_restores_placement_when_the_extractor_fails() -> None:
    pipe = RecordingPipeline(_components(), offload_id_extractor=True, offload_device="cpu:0")
    with pytest.raises(ValueError):
        pipe.encode_reference(torch.rand(1, 3, 27, 28))  # not square: the extractor refuses
    assert pipe.where == {"unet": "cpu", "controlnet": "cpu", "id_extractor": "cpu:0"}


def test_no_swap_without_offload_or_on_the_same_device() -> None:
    for kwargs in ({}, {"offload_id_extractor": True}):
        pipe = RecordingPipeline(_components(), **kwargs)
        pipe.encode_reference(torch.rand(1, 3, 28, 28))
        assert pipe.moves == []


# --- layout, compile, attention ----------------------------------------------------------------


def test_channels_last_is_off_on_cpu_and_gives_the_same_image_when_forced(
    pipe: AnyDoorPipeline, inputs: dict[str, np.ndarray]
) -> None:
    assert pipe.channels_last is False
    nhwc = AnyDoorPipeline(_components(), channels_last=True)
    weight = nhwc.components.unet.conv_in.weight
    assert weight.is_contiguous(memory_format=torch.channels_last)
    out, latents = _run(nhwc, inputs, [2])
    ref, ref_latents = _run(pipe, inputs, [2])
    torch.testing.assert_close(latents, ref_latents, **LATENT_TOL)


def test_compile_wraps_the_denoisers_and_keeps_the_result(
    pipe: AnyDoorPipeline, inputs: dict[str, np.ndarray]
) -> None:
    # the eager backend exercises the wrapping without a C++ toolchain or minutes of compiling
    compiled = AnyDoorPipeline(
        _components(), compile=True, compile_kwargs={"backend": "eager", "dynamic": False}
    )
    assert compiled._unet is not compiled.components.unet
    assert isinstance(compiled.components.unet, torch.nn.Module)  # modules stay plain
    out, latents = _run(compiled, inputs, [7])
    ref, ref_latents = _run(pipe, inputs, [7])
    torch.testing.assert_close(latents, ref_latents, rtol=0, atol=0)


def test_attention_must_be_sdpa() -> None:
    components = _components()
    components.unet.set_attn_processor(AttnProcessor())
    with pytest.raises(RuntimeError, match="unet attention"):
        AnyDoorPipeline(components)
