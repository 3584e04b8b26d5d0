"""What AnyDoor training optimises (reference §5): the trainable parts and the eps-MSE loss.

What trains and what does not (reference ``run_train_anydoor.py`` with ``sd_locked=False``):

* trainable: the whole detail extractor (ControlNet) except its ``conv_in`` (zero, so it
  never reads x_t: pitfall 1; the reference's ``input_blocks.0.0`` gets no gradient either),
  the UNet decoder (``up_blocks``, ``conv_norm_out``, ``conv_out``) and the ID projector
  (on purpose: the released code froze it by accident, pitfall 6);
* frozen: VAE, DINOv2, UNet encoder, middle block and time embedding. The VAE and DINOv2 run
  under ``torch.no_grad()``; the UNet encoder and middle block see detached ID tokens, so,
  as in the reference's ``ControlledUnetModel`` (whose encoder runs under ``no_grad``), no
  gradient flows through them and no activations are kept for them.

Loss: eps-MSE over the whole latent at the sample's own timestep (adaptive timestep
sampling happens in the dataset), noise added with the config's DDPM schedule. No ID-token
dropout (pitfall 7). The randomness of a micro-batch (posterior sample, noise) comes from
:func:`step_generator`, a pure function of its coordinates.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tryon.anydoor.models import AnyDoorComponents

UNET_DECODER = ("up_blocks", "conv_norm_out", "conv_out")


def configure_trainable(components: AnyDoorComponents) -> None:
    """Set ``requires_grad`` on every parameter: True for the trainable parts, False elsewhere."""
    for module in components.modules().values():
        module.requires_grad_(False)
    components.controlnet.requires_grad_(True)
    components.controlnet.conv_in.requires_grad_(False)
    for name in UNET_DECODER:
        part = getattr(components.unet, name, None)
        if part is not None:
            part.requires_grad_(True)
    components.id_extractor.projector.requires_grad_(True)


class Denoiser(nn.Module):
    """The trainable graph: projector -> detail extractor -> UNet, as one module for DDP.

    ``forward(noisy, timesteps, hint, dino_hidden)``: ``noisy`` float ``(B, 4, h, w)``,
    ``timesteps`` int64 ``(B,)``, ``hint`` float ``(B, 4, T, T)``, ``dino_hidden`` the DINOv2
    output ``(B, N, projector_in)`` -> eps ``(B, 4, h, w)``.

    The UNet's encoder blocks and middle block receive the ID tokens detached (forward
    pre-hooks), which makes them gradient-free like the reference's ``no_grad`` encoder.
    """

    def __init__(self, components: AnyDoorComponents) -> None:
        super().__init__()
        self.unet = components.unet
        self.controlnet = components.controlnet
        self.projector = components.id_extractor.projector
        self._hooks = [
            block.register_forward_pre_hook(_detach_context, with_kwargs=True)
            for block in [*self.unet.down_blocks, self.unet.mid_block]
            if block is not None
        ]

    def remove_hooks(self) -> None:
        for handle in self._hooks:
            handle.remove()
        self._hooks = []

    def forward(self, noisy: Tensor, timesteps: Tensor, hint: Tensor, dino_hidden: Tensor) -> Tensor:
        tokens = self.projector(dino_hidden.to(self.projector.weight.dtype))
        down, mid = self.controlnet(
            noisy,
            timesteps,
            encoder_hidden_states=tokens,
            controlnet_cond=hint,
            return_dict=False,
        )
        return self.unet(
            noisy,
            timesteps,
            encoder_hidden_states=tokens,
            down_block_additional_residuals=down,
            mid_block_additional_residual=mid,
            return_dict=False,
        )[0]


def _detach_context(
    module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[tuple[Any, ...], dict[str, Any]] | None:
    ctx = kwargs.get("encoder_hidden_states")
    if isinstance(ctx, Tensor) and ctx.requires_grad:
        return args, {**kwargs, "encoder_hidden_states": ctx.detach()}
    return None


@torch.no_grad()
def dino_hidden_states(id_extractor: nn.Module, images: Tensor) -> Tensor:
    """DINOv2 output (the projector's input) for ``images`` ``(B, 3, S, S)`` RGB in [0, 1].

    Runs :class:`~tryon.anydoor.models.IDExtractor` as the engine does and captures what
    enters the projector, so training sees exactly the engine's features.
    """
    captured: list[Tensor] = []
    projector: Any = id_extractor.projector
    handle = projector.register_forward_pre_hook(
        lambda _m, args: captured.append(args[0])
    )
    try:
        id_extractor(images)
    finally:
        handle.remove()
    return captured[0]


def noise_schedule(config: Any) -> Any:
    """The training noise schedule: DDPM, LDM "linear" (= diffusers scaled_linear)."""
    from diffusers import DDPMScheduler

    return DDPMScheduler(
        num_train_timesteps=config.num_train_timesteps,
        beta_start=config.beta_start,
        beta_end=config.beta_end,
        beta_schedule="scaled_linear",
        prediction_type="epsilon",
        clip_sample=False,
    )


def denoising_loss(
    denoiser: nn.Module,
    components: AnyDoorComponents,
    batch: Mapping[str, Any],
    scheduler: Any,
    generator: torch.Generator,
    *,
    device: torch.device,
    autocast: Callable[[], contextlib.AbstractContextManager[Any]] = contextlib.nullcontext,
    sample_posterior: bool = True,
) -> Tensor:
    """eps-MSE for one batch (keys ``ref``, ``hint``, ``jpg``, ``time_steps``; see
    :func:`~tryon.anydoor.training.batches.collate_training`). Scalar float32 tensor, mean over batch and all latent elements.

    ``generator`` (on ``device``) draws the VAE posterior sample and the noise.
    """
    ref = batch["ref"].to(device, non_blocking=True)
    hint = batch["hint"].to(device, non_blocking=True)
    target = batch["jpg"].to(device, non_blocking=True)
    timesteps = batch["time_steps"].to(device=device, dtype=torch.long)
    vae: Any = components.vae
    with torch.no_grad(), autocast():
        dist = vae.encode(target.to(vae.dtype)).latent_dist
        latents = dist.sample(generator) if sample_posterior else dist.mode()
        latents = latents.float() * vae.config.scaling_factor
        hidden = dino_hidden_states(components.id_extractor, ref)
    noise = torch.randn(latents.shape, generator=generator, device=device, dtype=latents.dtype)
    noisy = scheduler.add_noise(latents, noise, timesteps)
    with autocast():
        eps = denoiser(noisy, timesteps, hint, hidden)
    return F.mse_loss(eps.float(), noise, reduction="mean")


def step_generator(seed: int, step: int, micro: int, rank: int, device: torch.device) -> torch.Generator:
    """The generator of one micro-batch: a pure function of its coordinates."""
    value = int(np.random.SeedSequence([seed, step, micro, rank]).generate_state(1, np.uint64)[0])
    return torch.Generator(device=device).manual_seed(value % (2**63))


__all__ = [
    "UNET_DECODER",
    "Denoiser",
    "configure_trainable",
    "denoising_loss",
    "dino_hidden_states",
    "noise_schedule",
    "step_generator",
]
