"""AnyDoorPipeline on a tiny random model: the step hooks against the spec, end to end, errors."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from tryon.anydoor.config import AnyDoorConfig
from tryon.anydoor.models import AnyDoorComponents, build_components, randomize_parameters
from tryon.anydoor.pipeline import AnyDoorOutput, AnyDoorPipeline
from tryon.anydoor.sampling import DDIMSchedule
from tryon.errors import CanceledError, InvalidInputError, InvalidMaskError, NumericalError
from tryon.types import Box


def _components() -> AnyDoorComponents:
    components = build_components(AnyDoorConfig.tiny())
    # every parameter random (diffusers starts the zero convs at 0, which would hide control)
    randomize_parameters(components, seed=0, std=0.05)
    return components


@pytest.fixture(scope="module")
def pipe() -> AnyDoorPipeline:
    return AnyDoorPipeline(_components())


@pytest.fixture(scope="module")
def inputs() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
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


def _step_inputs(pipe: AnyDoorPipeline, batch: int = 1, seed: int = 0) -> dict[str, torch.Tensor]:
    cfg = pipe.config
    gen = torch.Generator().manual_seed(seed)
    side = cfg.image_size // cfg.vae_downscale
    ref = torch.rand(batch, 3, cfg.reference_size, cfg.reference_size, generator=gen)
    return {
        "latents": torch.randn(batch, 4, side, side, generator=gen),
        "hint": torch.rand(batch, 4, cfg.image_size, cfg.image_size, generator=gen) * 2 - 1,
        "tokens": pipe.encode_reference(ref),
    }


def _spec_eps(
    pipe: AnyDoorPipeline,
    x: torch.Tensor,
    t: int,
    hint: torch.Tensor,
    ctx: torch.Tensor,
    strength: float,
) -> torch.Tensor:
    """ControlledUnetModel + ControlNet written from the reference (§1), block by block.

    The detail extractor starts from the hint embedding alone (no conv_in(x_t)); its 13
    residuals (zero convs + middle_block_out), times the strength, are added to the middle
    block output and to every skip connection as the decoder pops it.
    """
    cn, unet = pipe.components.controlnet, pipe.components.unet
    ts = torch.full((x.shape[0],), t, dtype=torch.long)

    def run_down(blocks: Any, h: torch.Tensor, temb: torch.Tensor) -> list[torch.Tensor]:
        skips = [h]
        for block in blocks:
            if getattr(block, "has_cross_attention", False):
                h, res = block(h, temb, encoder_hidden_states=ctx)
            else:
                h, res = block(h, temb)
            skips.extend(res)
        return [*skips, h]

    with torch.no_grad():
        temb = cn.time_embedding(cn.time_proj(ts))
        *skips, h = run_down(cn.down_blocks, cn.controlnet_cond_embedding(hint), temb)
        h = cn.mid_block(h, temb, encoder_hidden_states=ctx)
        control = [zc(s) * strength for zc, s in zip(cn.controlnet_down_blocks, skips, strict=True)]
        control_mid = cn.controlnet_mid_block(h) * strength

        temb = unet.time_embedding(unet.time_proj(ts))
        *skips, h = run_down(unet.down_blocks, unet.conv_in(x), temb)
        h = unet.mid_block(h, temb, encoder_hidden_states=ctx) + control_mid
        for block in unet.up_blocks:
            n = len(block.resnets)
            popped = [skips.pop() + control.pop() for _ in range(n)][::-1]
            if getattr(block, "has_cross_attention", False):
                h = block(h, tuple(popped), temb, encoder_hidden_states=ctx)
            else:
                h = block(h, tuple(popped), temb)
        assert not skips and not control
        return unet.conv_out(unet.conv_act(unet.conv_norm_out(h)))


@pytest.mark.parametrize("strength", [1.0, 0.5])
def test_predict_noise_equals_the_spec_forward(pipe: AnyDoorPipeline, strength: float) -> None:
    s = _step_inputs(pipe, batch=2)
    got = pipe.predict_noise(s["latents"], 801, s["hint"], s["tokens"], control_strength=strength)
    expected = _spec_eps(pipe, s["latents"], 801, s["hint"], s["tokens"], strength)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_control_changes_the_prediction(pipe: AnyDoorPipeline) -> None:
    s = _step_inputs(pipe)
    with_control = pipe.predict_noise(s["latents"], 500, s["hint"], s["tokens"], 1.0)
    without = pipe.predict_noise(s["latents"], 500, s["hint"], s["tokens"], 0.0)
    other_hint = pipe.predict_noise(s["latents"], 500, -s["hint"], s["tokens"], 1.0)
    assert (with_control - without).abs().max() > 1e-3
    assert (with_control - other_hint).abs().max() > 1e-3


def test_batched_cfg_equals_two_passes(pipe: AnyDoorPipeline) -> None:
    s = _step_inputs(pipe)
    uncond = pipe.unconditional_tokens(1)
    args = (s["latents"], 641, s["hint"], s["tokens"], uncond, 4.5, 1.0)
    batched = pipe.guided_noise(*args, batched=True)
    two_pass = pipe.guided_noise(*args, batched=False)
    torch.testing.assert_close(batched, two_pass, rtol=1e-5, atol=1e-5)
    eps_c = pipe.predict_noise(s["latents"], 641, s["hint"], s["tokens"])
    eps_u = pipe.predict_noise(s["latents"], 641, s["hint"], uncond)
    torch.testing.assert_close(two_pass, eps_u + 4.5 * (eps_c - eps_u), rtol=1e-6, atol=1e-6)
    assert (eps_c - eps_u).abs().max() > 1e-4  # the tokens reach the networks
    # scale 1 is the conditional prediction alone
    torch.testing.assert_close(pipe.guided_noise(*args[:5], 1.0, 1.0), eps_c)


def test_unconditional_tokens_are_the_encoded_black_image(pipe: AnyDoorPipeline) -> None:
    size = pipe.config.reference_size
    tokens = pipe.unconditional_tokens(3)
    assert tokens.shape == (3, pipe.config.num_tokens, pipe.config.cross_attention_dim)
    with torch.no_grad():
        expected = pipe.components.id_extractor(torch.zeros(1, 3, size, size))
    torch.testing.assert_close(tokens[2:], expected, rtol=0, atol=0)
    assert tokens.abs().max() > 0.01
    # cached: the same storage comes back
    assert pipe.unconditional_tokens(1).data_ptr() == tokens.data_ptr()


def test_vae_round_trip_shapes_and_scaling(pipe: AnyDoorPipeline) -> None:
    size = pipe.config.image_size
    images = torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(2)) * 2 - 1
    z = pipe.vae_encode(images)
    assert z.shape == (2, 4, size // 8, size // 8)
    with torch.no_grad():
        mode = pipe.components.vae.encode(images).latent_dist.mode()
    torch.testing.assert_close(z, mode * 0.18215)
    decoded = pipe.vae_decode(z)
    assert decoded.shape == images.shape
    with torch.no_grad():
        direct = pipe.components.vae.decode(mode).sample
    torch.testing.assert_close(decoded, direct, rtol=1e-5, atol=1e-5)
    pixels = pipe.to_uint8(
        torch.tensor([[[[-2.0, -1.0, 0.0, 0.999, 1.0, 3.0]]]]).expand(1, 3, 1, 6)
    )
    assert pixels.dtype == np.uint8
    assert pixels[0, 0, :, 0].tolist() == [0, 0, 127, 254, 255, 255]


def test_sample_accepts_a_step_count_or_a_schedule(pipe: AnyDoorPipeline) -> None:
    s = _step_inputs(pipe)
    uncond = pipe.unconditional_tokens(1)
    a = pipe.sample(s["latents"], s["hint"], s["tokens"], uncond, 3)
    b = pipe.sample(s["latents"], s["hint"], s["tokens"], uncond, DDIMSchedule.create(3))
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert a.dtype == torch.float32 and a.shape == s["latents"].shape


def test_end_to_end_gives_a_full_size_image_changed_only_in_the_box(
    pipe: AnyDoorPipeline, inputs: dict[str, np.ndarray]
) -> None:
    out = pipe(**inputs, num_inference_steps=3, generator=torch.Generator().manual_seed(0))
    assert isinstance(out, AnyDoorOutput)
    target = inputs["target_image"]
    assert out.image.shape == target.shape and out.image.dtype == np.uint8
    assert out.crop.shape == (64, 64, 3) and out.crop.dtype == np.uint8
    assert out.timesteps == (667, 334, 1)
    y1, y2, x1, x2 = out.prepared.box
    # mask rows 30..69: centre 49.5, 1.1 * (69 - 30 + 1) = 44 -> rows int(27.5)..int(71.5)
    assert (y1, y2, x1, x2) == (27, 71, 17, 61)
    outside = np.ones(target.shape[:2], bool)
    outside[y1:y2, x1:x2] = False
    np.testing.assert_array_equal(out.image[outside], target[outside])
    assert (out.image[y1:y2, x1:x2] != target[y1:y2, x1:x2]).mean() > 0.5


def test_same_seed_same_image(pipe: AnyDoorPipeline, inputs: dict[str, np.ndarray]) -> None:
    def run(seed: int) -> np.ndarray:
        return pipe(
            **inputs, num_inference_steps=2, generator=torch.Generator().manual_seed(seed)
        ).crop

    first, again, other = run(7), run(7), run(8)
    np.testing.assert_array_equal(first, again)
    assert (first != other).any()


def test_latents_override_the_generator(
    pipe: AnyDoorPipeline, inputs: dict[str, np.ndarray]
) -> None:
    latents = torch.randn(pipe.latent_shape(1), generator=torch.Generator().manual_seed(5))
    a = pipe(**inputs, num_inference_steps=2, latents=latents)
    b = pipe(
        **inputs, num_inference_steps=2, latents=latents, generator=torch.Generator().manual_seed(9)
    )
    np.testing.assert_array_equal(a.crop, b.crop)


def test_two_pass_cfg_pipeline_matches_batched(
    pipe: AnyDoorPipeline, inputs: dict[str, np.ndarray]
) -> None:
    latents = torch.randn(pipe.latent_shape(1), generator=torch.Generator().manual_seed(5))
    a = pipe(**inputs, num_inference_steps=2, latents=latents)
    b = pipe(**inputs, num_inference_steps=2, latents=latents, batched_cfg=False)
    assert np.abs(a.crop.astype(int) - b.crop.astype(int)).max() <= 1


def test_callback_once_per_step_in_order(
    pipe: AnyDoorPipeline, inputs: dict[str, np.ndarray]
) -> None:
    calls: list[tuple[int, int, tuple[int, ...]]] = []

    def callback(i: int, t: int, latents: torch.Tensor) -> None:
        calls.append((i, t, tuple(latents.shape)))

    out = pipe(**inputs, num_inference_steps=4, callback_on_step_end=callback)
    side = pipe.config.image_size // 8
    assert calls == [(i, t, (1, 4, side, side)) for i, t in enumerate(out.timesteps)]
    assert len(calls) == 4


def test_callback_can_replace_latents(pipe: AnyDoorPipeline) -> None:
    s = _step_inputs(pipe)
    uncond = pipe.unconditional_tokens(1)
    zeros = pipe.sample(
        s["latents"],
        s["hint"],
        s["tokens"],
        uncond,
        2,
        callback_on_step_end=lambda i, t, x: torch.zeros_like(x),
    )
    assert torch.count_nonzero(zeros) == 0


def test_interrupt_raises_canceled(pipe: AnyDoorPipeline, inputs: dict[str, np.ndarray]) -> None:
    steps: list[int] = []
    with pytest.raises(CanceledError, match="step 3 of 5"):
        pipe(
            **inputs,
            num_inference_steps=5,
            callback_on_step_end=lambda i, t, x: steps.append(i),
            interrupt=lambda: len(steps) >= 2,
        )
    assert steps == [0, 1]


def test_target_box_instead_of_a_mask(pipe: AnyDoorPipeline, inputs: dict[str, np.ndarray]) -> None:
    latents = torch.randn(pipe.latent_shape(1), generator=torch.Generator().manual_seed(5))
    mask_kwargs = {k: v for k, v in inputs.items() if k != "target_mask"}
    by_box = pipe(
        **mask_kwargs, target_mask=Box(20, 30, 60, 70), num_inference_steps=2, latents=latents
    )
    by_mask = pipe(**inputs, num_inference_steps=2, latents=latents)
    np.testing.assert_array_equal(by_box.image, by_mask.image)


def test_offloaded_id_extractor_gives_the_same_tokens(inputs: dict[str, np.ndarray]) -> None:
    plain = AnyDoorPipeline(_components())
    offloaded = AnyDoorPipeline(_components(), offload_id_extractor=True)
    ref = torch.rand(1, 3, 28, 28, generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(offloaded.encode_reference(ref), plain.encode_reference(ref))
    assert next(offloaded.components.id_extractor.parameters()).device.type == "cpu"


def test_bfloat16_on_cpu_runs(inputs: dict[str, np.ndarray]) -> None:
    pipe = AnyDoorPipeline(_components(), dtype=torch.bfloat16)
    assert pipe.unconditional_tokens(1).dtype == torch.bfloat16
    out = pipe(**inputs, num_inference_steps=2, generator=torch.Generator().manual_seed(0))
    assert out.image.shape == inputs["target_image"].shape


# --- check_inputs --------------------------------------------------------------------------


def _with(inputs: dict[str, np.ndarray], **changes: Any) -> dict[str, Any]:
    return {**inputs, **changes}


def _bad_inputs(inputs: dict[str, np.ndarray]) -> list[tuple[dict[str, Any], type, str]]:
    ref, target = inputs["reference_image"], inputs["target_image"]
    return [
        (
            _with(inputs, reference_mask=np.zeros((60, 50), np.uint8)),
            InvalidMaskError,
            "reference_mask",
        ),
        (_with(inputs, target_mask=np.zeros((100, 90), bool)), InvalidMaskError, "target_mask"),
        (_with(inputs, target_mask=np.ones((99, 90), np.uint8)), InvalidMaskError, "target_mask"),
        (
            _with(inputs, reference_mask=np.ones((60, 51), np.uint8)),
            InvalidMaskError,
            "reference_mask",
        ),
        (
            _with(inputs, reference_mask=inputs["reference_mask"] * 255),
            InvalidMaskError,
            "reference_mask",
        ),
        (_with(inputs, reference_image=ref[..., 0]), InvalidInputError, "reference_image"),
        (
            _with(inputs, target_image=np.dstack([target, target[..., :1]])),
            InvalidInputError,
            "target_image",
        ),
        (_with(inputs, target_image=target.astype(np.float32)), InvalidInputError, "target_image"),
        (_with(inputs, reference_image=ref.tolist()), InvalidInputError, "reference_image"),
        (_with(inputs, target_mask=Box(50, 50, 95, 90)), InvalidInputError, "target_mask"),
        (_with(inputs, target_mask=Box(-5, 0, 10, 10)), InvalidInputError, "target_mask"),
        (_with(inputs, target_mask=Box(10, 10, 10, 20)), InvalidInputError, "target_mask"),
        (_with(inputs, num_inference_steps=0), InvalidInputError, "num_inference_steps"),
        (_with(inputs, num_inference_steps=2.5), InvalidInputError, "num_inference_steps"),
        (_with(inputs, num_inference_steps=1001), InvalidInputError, "num_inference_steps"),
        (_with(inputs, guidance_scale=0.0), InvalidInputError, "guidance_scale"),
        (_with(inputs, guidance_scale=float("nan")), InvalidInputError, "guidance_scale"),
        (_with(inputs, guidance_scale=31), InvalidInputError, "guidance_scale"),
        (_with(inputs, guidance_scale="4.5"), InvalidInputError, "guidance_scale"),
        (_with(inputs, control_strength=-0.1), InvalidInputError, "control_strength"),
        (_with(inputs, expand_ratio=0.9), InvalidInputError, "expand_ratio"),
        (_with(inputs, crop_ratio=float("inf")), InvalidInputError, "crop_ratio"),
        (_with(inputs, latents=torch.zeros(1, 4, 4, 4)), InvalidInputError, "latents"),
    ]


def test_check_inputs_names_the_bad_argument(
    pipe: AnyDoorPipeline, inputs: dict[str, np.ndarray]
) -> None:
    cases = _bad_inputs(inputs)
    for kwargs, error, name in cases:
        with pytest.raises(error) as info:
            pipe(**{"num_inference_steps": 2, **kwargs})
        assert name in str(info.value), (name, str(info.value))
        assert info.value.details.get("argument") == name
    # the good inputs pass
    pipe.check_inputs(**inputs, num_inference_steps=50, guidance_scale=4.5)


def test_non_finite_output_raises_instead_of_a_garbled_image(inputs: dict[str, np.ndarray]) -> None:
    pipe = AnyDoorPipeline(_components())
    with torch.no_grad():
        pipe.components.unet.conv_out.bias.fill_(float("inf"))
    with pytest.raises(NumericalError):
        pipe(**inputs, num_inference_steps=2)
