"""The AnyDoor networks, built from :class:`~tryon.anydoor.config.AnyDoorConfig`.

Five parts, all stock diffusers/transformers classes except the thin ID-extractor wrapper:

* ``unet``: ``UNet2DConditionModel`` (SD 2.1-base layout), cross-attends to the ID tokens;
* ``controlnet``: ``ControlNetModel`` with a 4-channel hint (the "detail extractor"); its
  ``conv_in`` is zeroed so it never sees the noisy latent (reference pitfall 1);
* ``vae``: ``AutoencoderKL`` with ``scaling_factor=0.18215``;
* ``id_extractor``: :class:`IDExtractor`, DINOv2 (ViT-g/14) + a 1536->1024 linear projector;
* ``scheduler``: ``DDIMScheduler`` with the LDM schedule (see :mod:`tryon.anydoor.sampling`
  for the LDM "uniform" timesteps).
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from diffusers.models.autoencoders.autoencoder_kl import AutoencoderKL
from diffusers.models.controlnets.controlnet import ControlNetModel
from diffusers.models.unets.unet_2d_condition import UNet2DConditionModel
from diffusers.schedulers.scheduling_ddim import DDIMScheduler
from torch import Tensor, nn
from transformers import Dinov2Config, Dinov2Model

from tryon.anydoor.config import AnyDoorConfig

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def resample_position_table(table: Tensor, grid: int) -> Tensor:
    """Resample a ViT position table ``(1, 1 + N*N, D)`` to ``(1, 1 + grid*grid, D)``.

    The original DINOv2 code (which AnyDoor was trained with) calls bicubic ``F.interpolate``
    with ``scale_factor=(grid + 0.1) / N`` per axis and no antialias; transformers and timm use
    ``size=`` (and timm antialias), which samples at slightly different source positions. We
    reproduce the original so the released projector sees the features it was trained on.
    Computed in float32 (as the original does) and cast back to ``table.dtype``.
    """
    n_pos = table.shape[1] - 1
    side = math.isqrt(n_pos)
    if side * side != n_pos:
        raise ValueError(f"position table has {n_pos} patch entries, not a square grid")
    if grid == side:
        return table
    dim = table.shape[-1]
    cls_pos = table[:, :1].float()
    patch_pos = table[:, 1:].float().reshape(1, side, side, dim).permute(0, 3, 1, 2)
    scale = (grid + 0.1) / side
    patch_pos = F.interpolate(patch_pos, scale_factor=(scale, scale), mode="bicubic")
    if patch_pos.shape[-2:] != (grid, grid):
        raise ValueError(f"resampled grid is {tuple(patch_pos.shape[-2:])}, expected {grid}x{grid}")
    patch_pos = patch_pos.permute(0, 2, 3, 1).reshape(1, grid * grid, dim)
    return torch.cat((cls_pos, patch_pos), dim=1).to(table.dtype)


class IDExtractor(nn.Module):
    """DINOv2 + linear projector: reference image -> cross-attention tokens.

    ``forward(images)``: ``images`` float ``(B, 3, S, S)`` RGB in ``[0, 1]`` with
    ``S = config.reference_size`` (224) -> tokens ``(B, 1 + (S/14)**2, projector_out)``
    (``(B, 257, 1024)`` for the released model), CLS token first, all tokens after DINOv2's
    final LayerNorm, then the projector. No other normalisation (reference §1).

    ``dino.embeddings.position_embeddings`` keeps the checkpoint's ``(1, 1 + 37*37, D)`` table
    so official weights load strictly; it is resampled to the input grid at forward time the
    original way (:func:`resample_position_table`) and cached per (device, dtype, grid).
    """

    mean: Tensor
    std: Tensor

    def __init__(self, config: AnyDoorConfig) -> None:
        super().__init__()
        self.config = config
        self.dino = Dinov2Model(Dinov2Config(**config.dinov2_kwargs()))
        self.projector = nn.Linear(config.projector_in, config.projector_out, bias=True)
        self.register_buffer("mean", torch.empty(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.empty(1, 3, 1, 1), persistent=False)
        self.reset_buffers()
        self._pos_cache: dict[tuple[object, ...], Tensor] = {}

    def reset_buffers(self) -> None:
        """(Re)fill the ImageNet mean/std buffers.

        They are not in the state dict, so ``Module.to_empty`` (which materialises meta tensors
        with uninitialised storage) leaves garbage in them: call this after it.
        """
        with torch.no_grad():
            self.mean.copy_(torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
            self.std.copy_(torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))

    def position_table(self, grid: int, *, dtype: torch.dtype, device: torch.device) -> Tensor:
        """The position table for a ``grid x grid`` patch input, ``(1, 1 + grid**2, D)``."""
        table = self.dino.embeddings.position_embeddings
        if table.requires_grad and torch.is_grad_enabled():
            # training the table: keep the autograd graph, never cache
            return resample_position_table(table, grid).to(device=device, dtype=dtype)
        # keyed on the parameter's storage and version too, so load_state_dict (in place or
        # assign=True) and .to() never serve a stale table
        key = (grid, dtype, device, table.data_ptr(), table._version)
        cached = self._pos_cache.get(key)
        if cached is None:
            with torch.no_grad():
                cached = resample_position_table(table, grid).to(device=device, dtype=dtype)
            self._pos_cache.clear()
            self._pos_cache[key] = cached
        return cached

    def forward(self, images: Tensor) -> Tensor:
        if images.ndim != 4 or images.shape[1] != 3 or images.shape[2] != images.shape[3]:
            raise ValueError(f"images must be (B, 3, S, S), got {tuple(images.shape)}")
        patch = self.config.dino_patch_size
        if images.shape[-1] % patch:
            raise ValueError(f"image side {images.shape[-1]} is not a multiple of {patch}")
        emb = self.dino.embeddings
        dtype = emb.patch_embeddings.projection.weight.dtype
        x = (images.to(self.mean.dtype) - self.mean) / self.std
        x = emb.patch_embeddings(x.to(dtype))
        cls = emb.cls_token.expand(x.shape[0], -1, -1).to(dtype)
        x = torch.cat((cls, x), dim=1)
        x = x + self.position_table(images.shape[-1] // patch, dtype=dtype, device=x.device)
        hidden = self.dino.encoder(x).last_hidden_state
        hidden = self.dino.layernorm(hidden)
        return self.projector(hidden.to(self.projector.weight.dtype))


@dataclass
class AnyDoorComponents:
    """Everything the pipeline runs. Mutable on purpose: the loader swaps weights in place."""

    config: AnyDoorConfig
    unet: UNet2DConditionModel
    controlnet: ControlNetModel
    vae: AutoencoderKL
    id_extractor: IDExtractor
    scheduler: DDIMScheduler

    def modules(self) -> dict[str, nn.Module]:
        return {
            "unet": self.unet,
            "controlnet": self.controlnet,
            "vae": self.vae,
            "id_extractor": self.id_extractor,
        }

    def num_parameters(self) -> dict[str, int]:
        return {name: sum(p.numel() for p in m.parameters()) for name, m in self.modules().items()}


def zero_controlnet_conv_in(controlnet: ControlNetModel) -> None:
    """Zero the ControlNet's ``conv_in`` so its output no longer depends on x_t.

    diffusers computes ``conv_in(x_t) + cond_embedding(hint)``; the reference replaces the first
    block's output by the hint embedding (pitfall 1). With weight and bias zero the sum is the
    hint embedding alone, for any x_t.
    """
    with torch.no_grad():
        controlnet.conv_in.weight.zero_()
        if controlnet.conv_in.bias is not None:
            controlnet.conv_in.bias.zero_()


def build_components(config: AnyDoorConfig, *, empty: bool = False) -> AnyDoorComponents:
    """Build all networks for ``config`` (random init, or meta tensors with ``empty=True``).

    ``empty=True`` builds under ``accelerate.init_empty_weights`` (parameters on the meta
    device, buffers real): use it when real weights follow (``load_state_dict(assign=True)``),
    it skips seconds of random init for the full-size model. The ControlNet's ``conv_in`` is
    zeroed here only when weights are materialised; a loader must zero it after loading. If
    you materialise with ``Module.to_empty`` instead, call ``id_extractor.reset_buffers()``.
    """
    ctx: contextlib.AbstractContextManager[object]
    if empty:
        from accelerate import init_empty_weights

        ctx = init_empty_weights()
    else:
        ctx = contextlib.nullcontext()
    with ctx:
        unet = UNet2DConditionModel(**config.unet_kwargs())
        controlnet = ControlNetModel(**config.controlnet_kwargs())
        vae = AutoencoderKL(**config.vae_kwargs())
        id_extractor = IDExtractor(config)
    if not empty:
        zero_controlnet_conv_in(controlnet)
    for module in (unet, controlnet, vae, id_extractor):
        module.eval()
    scheduler = DDIMScheduler(**config.scheduler_kwargs())
    return AnyDoorComponents(
        config=config,
        unet=unet,
        controlnet=controlnet,
        vae=vae,
        id_extractor=id_extractor,
        scheduler=scheduler,
    )


def randomize_parameters(
    components: AnyDoorComponents, *, seed: int = 0, std: float = 0.02
) -> None:
    """Fill every parameter with seeded random values that keep signals alive (tests, benches).

    diffusers initialises the ControlNet's zero convolutions to zero, which makes control a
    no-op in a randomly built model; tests need every path live. Matrices and kernels get
    ``N(0, 1/fan_in)`` (so activations neither vanish nor explode through deep stacks), scales
    (norm weights, layer scales) ``1 + N(0, std)``, biases and embeddings ``N(0, std)``. The
    ControlNet's ``conv_in`` is zeroed again afterwards, as a weights loader does.
    """
    generators: dict[torch.device, torch.Generator] = {}
    with torch.no_grad():
        for module in components.modules().values():
            for name, param in module.named_parameters():
                # drawn where the parameter lives, so a full-size model never visits host memory
                generator = generators.get(param.device)
                if generator is None:
                    generator = torch.Generator(param.device).manual_seed(seed)
                    generators[param.device] = generator
                noise = torch.randn(
                    param.shape, generator=generator, dtype=torch.float32, device=param.device
                )
                leaf = name.rsplit(".", 1)[-1]
                if param.ndim >= 2 and "embeddings" not in name and "token" not in leaf:
                    value = noise / math.sqrt(param[0].numel())
                elif param.ndim == 1 and leaf in ("weight", "lambda1"):
                    value = 1.0 + std * noise
                else:
                    value = std * noise
                param.copy_(value.to(param.dtype))
    zero_controlnet_conv_in(components.controlnet)
