"""The latent-space step hooks of :class:`~tryon.anydoor.pipeline.AnyDoorPipeline`: noise
prediction (ControlNet + UNet), classifier-free guidance, the sampling loop, and the VAE
encode/decode on either side of it.

:class:`LatentSteps` is a mixin: the pipeline provides the attributes declared on it (the
placed components, device, dtype, memory layout and the possibly compiled forwards) and
inherits the hooks, so tests, training and the engine call them on the pipeline as before.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from torch import Tensor

from tryon.anydoor.config import AnyDoorConfig
from tryon.anydoor.models import AnyDoorComponents
from tryon.anydoor.sampling import SAMPLERS, DDIMSchedule, dpmpp_2m_scheduler
from tryon.errors import CanceledError, InvalidInputError

#: ``callback_on_step_end(step_index, timestep, latents)``; a returned tensor replaces latents
StepCallback = Callable[[int, int, Tensor], "Tensor | None"]


class LatentSteps:
    """Denoising and VAE hooks shared by :class:`~tryon.anydoor.pipeline.AnyDoorPipeline`."""

    components: AnyDoorComponents
    config: AnyDoorConfig
    device: torch.device
    dtype: torch.dtype
    channels_last: bool
    # the forwards the sampler calls: the modules, or torch.compile wrappers around them
    _controlnet: Callable[..., Any]
    _unet: Callable[..., Any]

    @torch.no_grad()
    def predict_noise(
        self,
        latents: Tensor,
        t: int | Tensor,
        hint: Tensor,
        tokens: Tensor,
        control_strength: float = 1.0,
    ) -> Tensor:
        """eps for ``latents`` ``(B, 4, h, w)`` at timestep ``t``, conditioned on ``hint``
        ``(B, 4, T, T)`` (collage RGB in [-1, 1] + mask in {-1, 0, 1}) and ``tokens`` ``(B, N, D)``.

        The ControlNet gets the same tokens as the UNet; its 13 residuals, scaled by
        ``control_strength``, are added to the UNet's skips and middle block.
        """
        batch = latents.shape[0]
        timestep = timestep_tensor(t, batch, self.device)
        sample = latents.to(device=self.device, dtype=self.dtype)
        context = tokens.to(device=self.device, dtype=self.dtype)
        if self.channels_last:
            sample = sample.contiguous(memory_format=torch.channels_last)
        down, mid = self._controlnet(
            sample,
            timestep,
            encoder_hidden_states=context,
            controlnet_cond=hint.to(device=self.device, dtype=self.dtype),
            conditioning_scale=float(control_strength),
            return_dict=False,
        )
        return self._unet(
            sample,
            timestep,
            encoder_hidden_states=context,
            down_block_additional_residuals=down,
            mid_block_additional_residual=mid,
            return_dict=False,
        )[0]

    @torch.no_grad()
    def guided_noise(
        self,
        latents: Tensor,
        t: int | Tensor,
        hint: Tensor,
        cond_tokens: Tensor,
        uncond_tokens: Tensor,
        guidance_scale: float,
        control_strength: float = 1.0,
        batched: bool = True,
    ) -> Tensor:
        """Classifier-free guided eps: ``eps_u + s * (eps_c - eps_u)``.

        ``batched=True`` runs both branches in one ControlNet and one UNet forward (batch 2B);
        ``batched=False`` runs them one after the other (less memory). With ``s == 1`` only
        the conditional branch runs, as in the reference sampler.
        """
        if guidance_scale == 1.0:
            return self.predict_noise(latents, t, hint, cond_tokens, control_strength)
        if batched:
            eps = self.predict_noise(
                torch.cat([latents, latents]),
                t,
                torch.cat([hint, hint]),
                torch.cat([uncond_tokens.to(cond_tokens), cond_tokens]),
                control_strength,
            )
            eps_u, eps_c = eps.chunk(2)
        else:
            eps_u = self.predict_noise(latents, t, hint, uncond_tokens, control_strength)
            eps_c = self.predict_noise(latents, t, hint, cond_tokens, control_strength)
        return eps_u + guidance_scale * (eps_c - eps_u)

    @torch.no_grad()
    def sample(
        self,
        latents: Tensor,
        hint: Tensor,
        cond_tokens: Tensor,
        uncond_tokens: Tensor,
        timesteps: DDIMSchedule | int,
        *,
        guidance_scale: float = 4.5,
        control_strength: float = 1.0,
        batched_cfg: bool = True,
        callback_on_step_end: StepCallback | None = None,
        interrupt: Callable[[], bool] | None = None,
        sampler: str = "ddim",
    ) -> Tensor:
        """Sampling loop from the initial ``latents`` (x_T, batch B); returns x_0 latents in
        float32. ``hint`` and the tokens have batch B too (one row per sample).

        ``sampler="ddim"`` (the reference's, exact): ``timesteps`` is a :class:`DDIMSchedule`
        or a step count. ``sampler="dpmpp_2m"``: DPM-Solver++ 2M from diffusers, ``timesteps``
        a step count (20-25 come close to 50 DDIM steps; a deviation from the reference).
        Before each step ``interrupt()`` is polled; True raises :class:`CanceledError`. After
        each step ``callback_on_step_end(step_index, timestep, latents)`` is called.
        """
        if sampler not in SAMPLERS:
            raise InvalidInputError(
                f"sampler must be one of {list(SAMPLERS)}, got {sampler!r}", argument="sampler"
            )
        schedule = (
            timesteps
            if isinstance(timesteps, DDIMSchedule)
            else DDIMSchedule.from_config(self.config, timesteps)
        )
        dpm = None
        if sampler == "dpmpp_2m":
            count = len(timesteps) if isinstance(timesteps, DDIMSchedule) else int(timesteps)
            dpm = dpmpp_2m_scheduler(self.config, count)
        steps = dpm.timesteps.tolist() if dpm is not None else schedule.timesteps.tolist()
        # the loop state stays float32 even for half-precision models
        x = latents.to(device=self.device, dtype=torch.float32)
        for i, t in enumerate(steps):
            if interrupt is not None and interrupt():
                raise CanceledError(f"canceled before sampling step {i + 1} of {len(steps)}")
            eps = self.guided_noise(
                x,
                t,
                hint,
                cond_tokens,
                uncond_tokens,
                guidance_scale,
                control_strength,
                batched_cfg,
            )
            if dpm is not None:
                x = dpm.step(eps.float(), t, x, return_dict=False)[0]
            else:
                x = schedule.step(eps, i, x)
            if callback_on_step_end is not None:
                replaced = callback_on_step_end(i, t, x)
                if isinstance(replaced, Tensor):
                    x = replaced.to(device=self.device, dtype=torch.float32)
        return x

    @torch.no_grad()
    def vae_encode(self, images: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
        """``(B, 3, H, W)`` RGB in [-1, 1] -> scaled latents ``(B, 4, H/8, W/8)``.

        Takes the posterior mean; pass ``generator`` to sample it instead (the reference's
        training draws a sample).
        """
        vae = self.components.vae
        dist = vae.encode(images.to(device=self.device, dtype=self.dtype)).latent_dist
        z = dist.sample(generator) if generator is not None else dist.mode()
        return z * vae.config["scaling_factor"]

    @torch.no_grad()
    def vae_decode(self, latents: Tensor) -> Tensor:
        """Scaled latents ``(B, 4, h, w)`` -> images ``(B, 3, 8h, 8w)`` float, nominally [-1, 1]."""
        vae = self.components.vae
        z = latents.to(device=self.device, dtype=self.dtype) / vae.config["scaling_factor"]
        return vae.decode(z, return_dict=False)[0]

    @staticmethod
    def to_pixels(images: Tensor) -> NDArray[np.float32]:
        """Decoded ``(B, 3, H, W)`` -> float32 ``(B, H, W, 3)`` in [0, 255]: ``x*127.5+127.5``,
        clipped, as the reference does before its paste-back (which then truncates to uint8)."""
        arr = images.float().permute(0, 2, 3, 1).cpu().numpy() * 127.5 + 127.5
        return np.clip(arr, 0, 255).astype(np.float32)

    @classmethod
    def to_uint8(cls, images: Tensor) -> NDArray[np.uint8]:
        """Decoded ``(B, 3, H, W)`` -> uint8 ``(B, H, W, 3)`` (:meth:`to_pixels`, truncated)."""
        return cls.to_pixels(images).astype(np.uint8)


def timestep_tensor(t: int | Tensor, batch: int, device: torch.device) -> Tensor:
    if isinstance(t, Tensor):
        t = t.to(device)
        return t.expand(batch) if t.ndim == 0 else t
    return torch.full((batch,), int(t), dtype=torch.long, device=device)
