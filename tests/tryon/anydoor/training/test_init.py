"""Initialisation from SD + DINOv2 (the reference recipe), from AnyDoor weights, and export."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from transformers import Dinov2Config, Dinov2Model

from tests.tryon.anydoor.official_layout import meta_dinov2_shapes, random_tensors
from tryon.anydoor.config import AnyDoorConfig
from tryon.anydoor.training.init import (
    export_model,
    init_from_anydoor,
    init_from_sd,
    init_tiny_random,
)
from tryon.anydoor.weights import load_pretrained
from tryon.errors import WeightsError

CFG = AnyDoorConfig.tiny()


def _randomise(module: torch.nn.Module, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.05 + 0.01)


@pytest.fixture(scope="module")
def sd_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("sd")
    unet = UNet2DConditionModel(**CFG.unet_kwargs())
    _randomise(unet, 1)
    unet.save_pretrained(root / "unet")
    vae = AutoencoderKL(**{**CFG.vae_kwargs(), "scaling_factor": 1.0})
    _randomise(vae, 2)
    vae.save_pretrained(root / "vae")
    dino = Dinov2Model(Dinov2Config(**CFG.dinov2_kwargs()))
    _randomise(dino, 3)
    dino.save_pretrained(root / "dinov2")
    return root


def test_init_from_sd_copies_the_encoder_and_initialises_new_layers(sd_dir: Path) -> None:
    comp = init_from_sd(sd_dir, sd_dir / "dinov2", CFG)
    unet_src = UNet2DConditionModel.from_pretrained(sd_dir / "unet")
    assert all(torch.equal(a, b) for a, b in zip(comp.unet.state_dict().values(),
                                                 unet_src.state_dict().values(), strict=True))
    cn = comp.controlnet.state_dict()
    un = comp.unet.state_dict()
    # the detail extractor's trunk is the UNet encoder
    copied = [k for k in cn if k.startswith(("down_blocks.", "mid_block.", "time_embedding."))]
    assert copied and all(torch.equal(cn[k], un[k]) for k in copied)
    # conv_in zero (pitfall 1); zero convs zero; the hint block's last conv zero, others not
    assert not comp.controlnet.conv_in.weight.any() and not comp.controlnet.conv_in.bias.any()
    for k, v in cn.items():
        if k.startswith(("controlnet_down_blocks.", "controlnet_mid_block.",
                         "controlnet_cond_embedding.conv_out.")):
            assert not v.any(), k
    assert comp.controlnet.controlnet_cond_embedding.conv_in.weight.abs().sum() > 0
    assert comp.controlnet.config.conditioning_channels == 4
    # DINOv2 from the folder, a fresh non-zero projector, VAE scale set to SD's 0.18215
    dino_src = Dinov2Model.from_pretrained(sd_dir / "dinov2")
    assert all(torch.equal(a, b) for a, b in zip(comp.id_extractor.dino.state_dict().values(),
                                                 dino_src.state_dict().values(), strict=True))
    proj = comp.id_extractor.projector
    assert proj.weight.shape == (CFG.projector_out, CFG.projector_in) and proj.weight.std() > 0
    assert comp.vae.config.scaling_factor == pytest.approx(0.18215)
    # it runs: tokens of the right shape
    tokens = comp.id_extractor(torch.rand(1, 3, CFG.reference_size, CFG.reference_size))
    assert tokens.shape == (1, CFG.num_tokens, CFG.projector_out)


def test_init_from_sd_reads_meta_dinov2_pth(sd_dir: Path, tmp_path: Path) -> None:
    meta = random_tensors(meta_dinov2_shapes(CFG), seed=5)
    pth = tmp_path / "dinov2.pth"
    torch.save(meta, pth)
    comp = init_from_sd(sd_dir, pth, CFG)
    dino = comp.id_extractor.dino
    assert torch.equal(dino.embeddings.cls_token, meta["cls_token"])
    q = dino.state_dict()["encoder.layer.1.attention.q_proj.weight"]
    assert torch.equal(q, meta["blocks.1.attn.qkv.weight"][: CFG.dino_hidden_size])


def test_init_from_sd_rejects_a_mismatched_unet(sd_dir: Path, tmp_path: Path) -> None:
    other = AnyDoorConfig.tiny(unet_block_out_channels=(32, 32))
    with pytest.raises(WeightsError, match="block_out_channels"):
        init_from_sd(sd_dir, sd_dir / "dinov2", other)


def test_export_round_trips_through_load_pretrained_and_init_from_anydoor(tmp_path: Path) -> None:
    comp = init_tiny_random(CFG, seed=4)
    out = export_model(comp, tmp_path / "model")
    loaded = load_pretrained(out)
    again = init_from_anydoor(out)
    for a, b in ((comp, loaded), (comp, again)):
        for name, module in a.modules().items():
            other = b.modules()[name].state_dict()
            assert all(torch.equal(v, other[k]) for k, v in module.state_dict().items()), name


def test_export_refuses_a_detail_extractor_that_reads_x_t(tmp_path: Path) -> None:
    comp = init_tiny_random(CFG, seed=4)
    with torch.no_grad():
        comp.controlnet.conv_in.weight.add_(1.0)
    with pytest.raises(WeightsError, match="conv_in"):
        export_model(comp, tmp_path / "model")
