"""Build an AnyDoor state dict in the *released* layout, for tests.

Written from the original module trees, not from diffusers: LDM ``UNetModel`` (SD 2.x:
linear SpatialTransformer, GEGLU feed-forward), cldm ``ControlNet`` (``input_hint_block``,
``zero_convs``, ``middle_block_out``), LDM ``Encoder``/``Decoder`` (``down.i.block.j``,
``mid.attn_1`` with 1x1-conv q/k/v), Meta's DINOv2 (``blocks.i.attn.qkv``, ``mlp.w12``/``w3``,
``ls1.gamma``) and the projector, plus the DDPM buffers a Lightning checkpoint carries.

Sizes come from :class:`AnyDoorConfig` (for the official config this enumerates the
SD 2.1-base + ViT-g/14 tree). Values are random and never zero, so a test can tell every tensor
apart and a wrong mapping cannot hide behind zeros.
"""

from __future__ import annotations

import torch
from torch import Tensor

from tryon.anydoor.config import AnyDoorConfig

Shapes = dict[str, tuple[int, ...]]

DDPM_BUFFERS = (
    "betas",
    "alphas_cumprod",
    "alphas_cumprod_prev",
    "sqrt_alphas_cumprod",
    "sqrt_one_minus_alphas_cumprod",
    "log_one_minus_alphas_cumprod",
    "sqrt_recip_alphas_cumprod",
    "sqrt_recipm1_alphas_cumprod",
    "posterior_variance",
    "posterior_log_variance_clipped",
    "posterior_mean_coef1",
    "posterior_mean_coef2",
    "logvar",
)


def _norm(out: Shapes, name: str, ch: int) -> None:
    out[f"{name}.weight"] = (ch,)
    out[f"{name}.bias"] = (ch,)


def _linear(out: Shapes, name: str, cout: int, cin: int, bias: bool = True) -> None:
    out[f"{name}.weight"] = (cout, cin)
    if bias:
        out[f"{name}.bias"] = (cout,)


def _conv(out: Shapes, name: str, cout: int, cin: int, k: int) -> None:
    out[f"{name}.weight"] = (cout, cin, k, k)
    out[f"{name}.bias"] = (cout,)


# --- LDM UNet / cldm ControlNet ------------------------------------------------------------


def _ldm_resblock(out: Shapes, p: str, cin: int, cout: int, emb: int) -> None:
    # ResBlock: in_layers = [GroupNorm, SiLU, conv3x3], emb_layers = [SiLU, Linear],
    # out_layers = [GroupNorm, SiLU, Dropout, conv3x3]; skip 1x1 conv when channels change
    _norm(out, f"{p}.in_layers.0", cin)
    _conv(out, f"{p}.in_layers.2", cout, cin, 3)
    _linear(out, f"{p}.emb_layers.1", cout, emb)
    _norm(out, f"{p}.out_layers.0", cout)
    _conv(out, f"{p}.out_layers.3", cout, cout, 3)
    if cin != cout:
        _conv(out, f"{p}.skip_connection", cout, cin, 1)


def _ldm_spatial_transformer(out: Shapes, p: str, ch: int, context: int, depth: int) -> None:
    # SpatialTransformer(use_linear=True): inner dim = heads * head_dim = ch
    _norm(out, f"{p}.norm", ch)
    _linear(out, f"{p}.proj_in", ch, ch)
    for d in range(depth):
        b = f"{p}.transformer_blocks.{d}"
        for q in ("to_q", "to_k", "to_v"):
            _linear(out, f"{b}.attn1.{q}", ch, ch, bias=False)
        _linear(out, f"{b}.attn1.to_out.0", ch, ch)
        _linear(out, f"{b}.ff.net.0.proj", 2 * 4 * ch, ch)  # GEGLU: value and gate
        _linear(out, f"{b}.ff.net.2", ch, 4 * ch)
        _linear(out, f"{b}.attn2.to_q", ch, ch, bias=False)
        _linear(out, f"{b}.attn2.to_k", ch, context, bias=False)
        _linear(out, f"{b}.attn2.to_v", ch, context, bias=False)
        _linear(out, f"{b}.attn2.to_out.0", ch, ch)
        for n in ("norm1", "norm2", "norm3"):
            _norm(out, f"{b}.{n}", ch)
    _linear(out, f"{p}.proj_out", ch, ch)


def _ldm_encoder_half(out: Shapes, p: str, cfg: AnyDoorConfig) -> list[int]:
    """time_embed + input_blocks + middle_block; returns the channel count of each input block."""
    mc = cfg.unet_block_out_channels[0]
    emb = 4 * mc
    depth = cfg.transformer_layers_per_block
    _linear(out, f"{p}.time_embed.0", emb, mc)
    _linear(out, f"{p}.time_embed.2", emb, emb)
    _conv(out, f"{p}.input_blocks.0.0", mc, cfg.latent_channels, 3)
    chans = [mc]
    ch = mc
    idx = 1
    levels = cfg.unet_block_out_channels
    for level, level_ch in enumerate(levels):
        for _ in range(cfg.unet_layers_per_block):
            _ldm_resblock(out, f"{p}.input_blocks.{idx}.0", ch, level_ch, emb)
            ch = level_ch
            if cfg.unet_cross_attn_levels[level]:
                _ldm_spatial_transformer(
                    out, f"{p}.input_blocks.{idx}.1", ch, cfg.cross_attention_dim, depth
                )
            chans.append(ch)
            idx += 1
        if level != len(levels) - 1:
            _conv(out, f"{p}.input_blocks.{idx}.0.op", ch, ch, 3)  # Downsample(use_conv)
            chans.append(ch)
            idx += 1
    # the middle block always has a transformer, even where the deepest level has none
    _ldm_resblock(out, f"{p}.middle_block.0", ch, ch, emb)
    _ldm_spatial_transformer(out, f"{p}.middle_block.1", ch, cfg.cross_attention_dim, depth)
    _ldm_resblock(out, f"{p}.middle_block.2", ch, ch, emb)
    return chans


def ldm_unet_shapes(cfg: AnyDoorConfig, prefix: str = "model.diffusion_model") -> Shapes:
    out: Shapes = {}
    chans = _ldm_encoder_half(out, prefix, cfg)
    mc = cfg.unet_block_out_channels[0]
    emb = 4 * mc
    ch = chans[-1]
    idx = 0
    levels = cfg.unet_block_out_channels
    for level in reversed(range(len(levels))):
        level_ch = levels[level]
        for i in range(cfg.unet_layers_per_block + 1):
            skip = chans.pop()
            _ldm_resblock(out, f"{prefix}.output_blocks.{idx}.0", ch + skip, level_ch, emb)
            ch = level_ch
            pos = 1
            if cfg.unet_cross_attn_levels[level]:
                _ldm_spatial_transformer(
                    out,
                    f"{prefix}.output_blocks.{idx}.1",
                    ch,
                    cfg.cross_attention_dim,
                    cfg.transformer_layers_per_block,
                )
                pos = 2
            if level and i == cfg.unet_layers_per_block:
                _conv(out, f"{prefix}.output_blocks.{idx}.{pos}.conv", ch, ch, 3)  # Upsample
            idx += 1
    _norm(out, f"{prefix}.out.0", mc)
    _conv(out, f"{prefix}.out.2", cfg.latent_channels, mc, 3)
    return out


def cldm_controlnet_shapes(cfg: AnyDoorConfig, prefix: str = "control_model") -> Shapes:
    out: Shapes = {}
    chans = _ldm_encoder_half(out, prefix, cfg)
    for i, ch in enumerate(chans):
        _conv(out, f"{prefix}.zero_convs.{i}.0", ch, ch, 1)
    # input_hint_block: conv, SiLU, (conv, SiLU, conv stride 2, SiLU) per step, zero conv out
    hint = cfg.hint_embedding_channels
    convs: list[tuple[int, int]] = [(hint[0], cfg.hint_channels)]
    for a, b in zip(hint[:-1], hint[1:], strict=True):
        convs += [(a, a), (b, a)]
    convs.append((cfg.unet_block_out_channels[0], hint[-1]))
    for j, (cout, cin) in enumerate(convs):
        _conv(out, f"{prefix}.input_hint_block.{2 * j}", cout, cin, 3)
    _conv(out, f"{prefix}.middle_block_out.0", chans[-1], chans[-1], 1)
    return out


# --- LDM AutoencoderKL -----------------------------------------------------------------------


def _vae_resnet(out: Shapes, p: str, cin: int, cout: int) -> None:
    _norm(out, f"{p}.norm1", cin)
    _conv(out, f"{p}.conv1", cout, cin, 3)
    _norm(out, f"{p}.norm2", cout)
    _conv(out, f"{p}.conv2", cout, cout, 3)
    if cin != cout:
        _conv(out, f"{p}.nin_shortcut", cout, cin, 1)


def _vae_mid(out: Shapes, p: str, ch: int) -> None:
    _vae_resnet(out, f"{p}.mid.block_1", ch, ch)
    _norm(out, f"{p}.mid.attn_1.norm", ch)
    for n in ("q", "k", "v", "proj_out"):
        _conv(out, f"{p}.mid.attn_1.{n}", ch, ch, 1)  # AttnBlock uses 1x1 convs
    _vae_resnet(out, f"{p}.mid.block_2", ch, ch)


def ldm_vae_shapes(cfg: AnyDoorConfig, prefix: str = "first_stage_model") -> Shapes:
    out: Shapes = {}
    chs = cfg.vae_block_out_channels
    z = cfg.latent_channels
    nrb = cfg.vae_layers_per_block
    e = f"{prefix}.encoder"
    _conv(out, f"{e}.conv_in", chs[0], 3, 3)
    block_in = chs[0]
    for i, cout in enumerate(chs):
        for j in range(nrb):
            _vae_resnet(out, f"{e}.down.{i}.block.{j}", block_in, cout)
            block_in = cout
        if i != len(chs) - 1:
            _conv(out, f"{e}.down.{i}.downsample.conv", block_in, block_in, 3)
    _vae_mid(out, e, block_in)
    _norm(out, f"{e}.norm_out", block_in)
    _conv(out, f"{e}.conv_out", 2 * z, block_in, 3)  # double_z
    _conv(out, f"{prefix}.quant_conv", 2 * z, 2 * z, 1)
    _conv(out, f"{prefix}.post_quant_conv", z, z, 1)
    d = f"{prefix}.decoder"
    block_in = chs[-1]
    _conv(out, f"{d}.conv_in", block_in, z, 3)
    _vae_mid(out, d, block_in)
    for i in reversed(range(len(chs))):
        for j in range(nrb + 1):
            _vae_resnet(out, f"{d}.up.{i}.block.{j}", block_in, chs[i])
            block_in = chs[i]
        if i != 0:
            _conv(out, f"{d}.up.{i}.upsample.conv", block_in, block_in, 3)
    _norm(out, f"{d}.norm_out", block_in)
    _conv(out, f"{d}.conv_out", 3, block_in, 3)
    return out


# --- Meta DINOv2 + projector -------------------------------------------------------------------


def meta_dinov2_shapes(cfg: AnyDoorConfig, prefix: str = "") -> Shapes:
    """Meta's ``DinoVisionTransformer`` (block_chunks=0, SwiGLU ``w12``/``w3``, LayerScale)."""
    dim = cfg.dino_hidden_size
    hidden = cfg.dino_mlp_hidden
    grid = cfg.dino_image_size // cfg.dino_patch_size
    p = cfg.dino_patch_size
    out: Shapes = {
        f"{prefix}cls_token": (1, 1, dim),
        f"{prefix}pos_embed": (1, 1 + grid * grid, dim),
        f"{prefix}mask_token": (1, dim),
    }
    _conv(out, f"{prefix}patch_embed.proj", dim, 3, p)
    for i in range(cfg.dino_num_layers):
        b = f"{prefix}blocks.{i}"
        _norm(out, f"{b}.norm1", dim)
        _linear(out, f"{b}.attn.qkv", 3 * dim, dim)
        _linear(out, f"{b}.attn.proj", dim, dim)
        out[f"{b}.ls1.gamma"] = (dim,)
        _norm(out, f"{b}.norm2", dim)
        _linear(out, f"{b}.mlp.w12", 2 * hidden, dim)
        _linear(out, f"{b}.mlp.w3", dim, hidden)
        out[f"{b}.ls2.gamma"] = (dim,)
    _norm(out, f"{prefix}norm", dim)
    return out


def official_shapes(cfg: AnyDoorConfig, *, with_dinov2: bool = True) -> Shapes:
    out: Shapes = {}
    out.update(ldm_unet_shapes(cfg))
    out.update(cldm_controlnet_shapes(cfg))
    out.update(ldm_vae_shapes(cfg))
    if with_dinov2:
        out.update(meta_dinov2_shapes(cfg, prefix="cond_stage_model.model."))
    _linear(out, "cond_stage_model.projector", cfg.projector_out, cfg.projector_in)
    return out


# --- values ----------------------------------------------------------------------------------


def random_tensors(
    shapes: Shapes, *, seed: int = 0, dtype: torch.dtype = torch.float32
) -> dict[str, Tensor]:
    """Random values, never exactly zero: norms near 1, biases small, weights ~1/sqrt(fan_in)."""
    gen = torch.Generator().manual_seed(seed)
    out: dict[str, Tensor] = {}
    for name, shape in shapes.items():
        t = torch.randn(shape, generator=gen, dtype=torch.float64)
        leaf = name.rsplit(".", 1)[-1]
        parent = name.rsplit(".", 2)[-2] if name.count(".") >= 1 else ""
        if leaf == "gamma":
            t = 0.5 + 0.1 * t
        elif "norm" in parent and leaf == "weight":
            t = 1.0 + 0.1 * t
        elif leaf == "bias" or len(shape) <= 1 or leaf in {"cls_token", "mask_token", "pos_embed"}:
            t = 0.1 * t
        else:
            fan_in = 1
            for s in shape[1:]:
                fan_in *= s
            t = t / max(fan_in, 1) ** 0.5
        t = t.to(dtype)
        t[t == 0] = 1e-3
        out[name] = t
    return out


def ddpm_buffers(cfg: AnyDoorConfig) -> dict[str, Tensor]:
    betas = torch.linspace(cfg.beta_start**0.5, cfg.beta_end**0.5, cfg.num_train_timesteps) ** 2
    alphas = torch.cumprod(1 - betas, 0)
    out = {name: alphas.clone() for name in DDPM_BUFFERS}
    out["betas"] = betas
    out["logvar"] = torch.zeros(cfg.num_train_timesteps)
    return out


def official_state_dict(
    cfg: AnyDoorConfig,
    *,
    seed: int = 0,
    with_dinov2: bool = True,
    with_buffers: bool = True,
    dtype: torch.dtype = torch.float32,
) -> dict[str, Tensor]:
    """A complete state dict in the released checkpoint's layout (random values)."""
    sd = random_tensors(official_shapes(cfg, with_dinov2=with_dinov2), seed=seed, dtype=dtype)
    if with_buffers:
        sd.update(ddpm_buffers(cfg))
    return sd
