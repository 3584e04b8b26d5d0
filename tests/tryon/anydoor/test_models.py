"""AnyDoor networks: sizes, the x_t-blind ControlNet, the DINOv2 ID extractor."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from transformers import Dinov2Config, Dinov2Model

from tryon.anydoor.config import AnyDoorConfig
from tryon.anydoor.models import (
    AnyDoorComponents,
    IDExtractor,
    build_components,
    randomize_parameters,
    resample_position_table,
    zero_controlnet_conv_in,
)


@pytest.fixture(scope="module")
def tiny() -> AnyDoorComponents:
    components = build_components(AnyDoorConfig.tiny())
    randomize_parameters(components, seed=0, std=0.05)
    return components


def test_full_size_layout_matches_the_reference() -> None:
    # meta tensors: the full model costs nothing to build this way
    full = build_components(AnyDoorConfig(), empty=True)
    counts = full.num_parameters()
    # reference §1: "DiffusionWrapper has 865.91 M params", ControlNet ~0.36 B, DINOv2-g 1.14 B
    assert counts["unet"] == 865_910_724
    assert 360e6 < counts["controlnet"] < 370e6
    assert 1.13e9 < counts["id_extractor"] - 1536 * 1024 - 1024 < 1.15e9
    assert 80e6 < counts["vae"] < 85e6
    # 12 zero convs + middle_block_out = 13 control residuals
    assert len(full.controlnet.controlnet_down_blocks) == 12
    assert full.controlnet.controlnet_cond_embedding.conv_in.in_channels == 4
    dino = full.id_extractor.dino
    assert dino.embeddings.position_embeddings.shape == (1, 1 + 37 * 37, 1536)
    assert len(dino.encoder.layer) == 40
    assert dino.encoder.layer[0].mlp.down_proj.in_features == 4096
    assert dino.encoder.layer[0].attention.q_proj.out_features == 1536
    assert full.id_extractor.projector.weight.shape == (1024, 1536)
    assert full.vae.config.scaling_factor == pytest.approx(0.18215)
    assert tuple(full.unet.config.attention_head_dim) == (5, 10, 20, 20)
    # non-persistent buffers are real even when parameters are meta
    assert full.id_extractor.mean.device.type == "cpu"
    assert "mean" not in full.id_extractor.state_dict()
    sched = full.scheduler.config
    assert (sched.beta_schedule, sched.set_alpha_to_one, sched.prediction_type) == (
        "scaled_linear",
        False,
        "epsilon",
    )


def test_empty_build_loads_a_state_dict_strictly(tiny: AnyDoorComponents) -> None:
    empty = build_components(tiny.config, empty=True)
    for name, module in empty.modules().items():
        source = tiny.modules()[name]
        module.load_state_dict(source.state_dict(), strict=True, assign=True)
    x = torch.rand(1, 3, 28, 28)
    torch.testing.assert_close(empty.id_extractor(x), tiny.id_extractor(x), rtol=0, atol=0)


def test_tiny_shapes(tiny: AnyDoorComponents) -> None:
    cfg = tiny.config
    tokens = tiny.id_extractor(torch.rand(2, 3, cfg.reference_size, cfg.reference_size))
    assert tokens.shape == (2, cfg.num_tokens, cfg.projector_out) == (2, 5, 32)
    side = cfg.image_size // cfg.vae_downscale
    latents = torch.randn(2, 4, side, side)
    hint = torch.randn(2, 4, cfg.image_size, cfg.image_size)
    down, mid = tiny.controlnet(latents, 10, tokens, hint, return_dict=False)
    eps = tiny.unet(
        latents,
        10,
        tokens,
        down_block_additional_residuals=down,
        mid_block_additional_residual=mid,
        return_dict=False,
    )[0]
    assert eps.shape == latents.shape
    z = tiny.vae.encode(torch.rand(1, 3, cfg.image_size, cfg.image_size)).latent_dist.mode()
    assert z.shape == (1, 4, side, side)


def test_controlnet_ignores_the_noisy_latent_once_conv_in_is_zero(tiny: AnyDoorComponents) -> None:
    cfg = tiny.config
    gen = torch.Generator().manual_seed(3)
    side = cfg.image_size // cfg.vae_downscale
    a, b = torch.randn(2, 1, 4, side, side, generator=gen)
    hint = torch.randn(1, 4, cfg.image_size, cfg.image_size, generator=gen)
    tokens = torch.randn(1, cfg.num_tokens, cfg.cross_attention_dim, generator=gen)

    def residuals(x: torch.Tensor) -> list[torch.Tensor]:
        down, mid = tiny.controlnet(x, 500, tokens, hint, return_dict=False)
        return [*down, mid]

    assert torch.count_nonzero(tiny.controlnet.conv_in.weight) == 0
    for ra, rb in zip(residuals(a), residuals(b), strict=True):
        assert ra.abs().max() > 0  # control is live (random zero convs)
        torch.testing.assert_close(ra, rb, rtol=0, atol=0)

    # negative control: with a live conv_in the residuals do depend on x_t
    with torch.no_grad():
        tiny.controlnet.conv_in.weight.normal_(0, 0.05, generator=gen)
    try:
        assert not torch.allclose(residuals(a)[0], residuals(b)[0])
    finally:
        zero_controlnet_conv_in(tiny.controlnet)
    assert torch.count_nonzero(tiny.controlnet.conv_in.bias) == 0


def _original_resample(table: torch.Tensor, grid: int) -> torch.Tensor:
    """The DINOv2 (April 2023) formula as described in the reference, pitfall 5."""
    n = table.shape[1] - 1
    side = int(math.sqrt(n))
    patch = table[:, 1:].reshape(1, side, side, -1).permute(0, 3, 1, 2)
    w0 = h0 = grid + 0.1
    patch = F.interpolate(
        patch, scale_factor=(w0 / math.sqrt(n), h0 / math.sqrt(n)), mode="bicubic"
    )
    return torch.cat([table[:, :1], patch.permute(0, 2, 3, 1).reshape(1, grid * grid, -1)], dim=1)


def test_position_table_is_resampled_the_original_way() -> None:
    gen = torch.Generator().manual_seed(0)
    table = torch.randn(1, 1 + 37 * 37, 8, generator=gen)
    ours = resample_position_table(table, 16)
    assert ours.shape == (1, 257, 8)
    torch.testing.assert_close(ours, _original_resample(table, 16), rtol=0, atol=0)
    # ... and that differs from transformers' size=(16, 16) resampling (why we do it ourselves)
    by_size = F.interpolate(
        table[:, 1:].reshape(1, 37, 37, 8).permute(0, 3, 1, 2), size=(16, 16), mode="bicubic"
    )
    assert not torch.allclose(ours[:, 1:], by_size.permute(0, 2, 3, 1).reshape(1, 256, 8))
    # CLS entry untouched; same grid returns the table itself
    torch.testing.assert_close(ours[:, :1], table[:, :1])
    assert resample_position_table(table, 37) is table


def test_id_extractor_equals_dinov2_with_a_prepared_table(tiny: AnyDoorComponents) -> None:
    """Our forward == stock Dinov2Model at the input size with the resampled table, + projector."""
    cfg = tiny.config
    extractor = tiny.id_extractor
    kwargs = cfg.dinov2_kwargs() | {"image_size": cfg.reference_size}
    plain = Dinov2Model(Dinov2Config(**kwargs)).eval()
    state = dict(extractor.dino.state_dict())
    table = state["embeddings.position_embeddings"]
    state["embeddings.position_embeddings"] = _original_resample(table, cfg.reference_size // 14)
    plain.load_state_dict(state, strict=True)

    gen = torch.Generator().manual_seed(1)
    images = torch.rand(3, 3, cfg.reference_size, cfg.reference_size, generator=gen)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        hidden = plain(pixel_values=(images - mean) / std).last_hidden_state
        expected = hidden @ extractor.projector.weight.T + extractor.projector.bias
        got = extractor(images)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    assert got.shape[1] == 1 + (cfg.reference_size // 14) ** 2


def test_black_image_tokens_are_not_zero(tiny: AnyDoorComponents) -> None:
    size = tiny.config.reference_size
    with torch.no_grad():
        tokens = tiny.id_extractor(torch.zeros(1, 3, size, size))
    assert tokens.abs().amax() > 0.01
    # normalisation is applied: a black image is not the same as a zero *normalised* input
    with torch.no_grad():
        mean_grey = tiny.id_extractor(tiny.id_extractor.mean.expand(1, 3, size, size).clone())
    assert not torch.allclose(tokens, mean_grey)


def test_position_cache_follows_new_weights() -> None:
    torch.manual_seed(0)
    extractor = IDExtractor(AnyDoorConfig.tiny()).eval()
    x = torch.rand(1, 3, 28, 28)
    table = extractor.dino.embeddings.position_embeddings
    with torch.no_grad():
        before = extractor(x)
        # in place, like load_state_dict; not a constant shift, which LayerNorm would cancel
        table.add_(torch.randn(table.shape, generator=torch.Generator().manual_seed(1)))
        after = extractor(x)
    assert not torch.allclose(before, after)
    dino_state = extractor.dino.state_dict()
    dino_state["embeddings.position_embeddings"] = torch.zeros_like(
        extractor.dino.embeddings.position_embeddings
    )
    extractor.dino.load_state_dict(dino_state, assign=True)
    with torch.no_grad():
        zeroed = extractor(x)
    assert not torch.allclose(after, zeroed)


def test_rejects_non_square_or_misaligned_images(tiny: AnyDoorComponents) -> None:
    with pytest.raises(ValueError, match="multiple of 14"):
        tiny.id_extractor(torch.rand(1, 3, 30, 30))
    with pytest.raises(ValueError, match=r"\(B, 3, S, S\)"):
        tiny.id_extractor(torch.rand(1, 3, 28, 42))


def test_config_rejects_an_inexpressible_mlp_width() -> None:
    with pytest.raises(ValueError, match="dino_mlp_hidden"):
        AnyDoorConfig.tiny(dino_mlp_hidden=60).dinov2_kwargs()


def test_to_empty_then_reset_buffers_restores_the_normalisation() -> None:
    extractor = build_components(AnyDoorConfig.tiny(), empty=True).id_extractor
    extractor.to_empty(device="cpu")
    extractor.reset_buffers()
    torch.testing.assert_close(extractor.mean.flatten(), torch.tensor([0.485, 0.456, 0.406]))
    torch.testing.assert_close(extractor.std.flatten(), torch.tensor([0.229, 0.224, 0.225]))
