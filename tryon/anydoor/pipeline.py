"""AnyDoorPipeline: reference object + target region -> image with the object placed there.

Diffusers-style: one ``__call__`` whose body is numbered steps, plus public step hooks
(:meth:`AnyDoorPipeline.encode_reference`, :meth:`~AnyDoorPipeline.predict_noise`,
:meth:`~AnyDoorPipeline.guided_noise`, :meth:`~AnyDoorPipeline.sample`,
:meth:`~AnyDoorPipeline.vae_encode`, :meth:`~AnyDoorPipeline.vae_decode`,
:meth:`~AnyDoorPipeline.prepare_reference_inputs`, :meth:`~AnyDoorPipeline.reference_tokens`)
that tests, training and the engine's per-garment cache reuse. This module holds the
pipeline's construction, reference encoding and the numbered call; the latent-space hooks
(noise prediction, guidance, the sampling loop, VAE) are :mod:`tryon.anydoor.latents`, the
argument checks :mod:`tryon.anydoor.pipeline_checks`, the result type
:mod:`tryon.anydoor.pipeline_output` (re-exported here). Behaviour follows the reference's
gradio/predict path (see ``docs/anydoor-engine.md``):

* the ControlNet sees the 4-channel hint and the ID tokens, never x_t (its ``conv_in`` is zero);
* classifier-free guidance runs ControlNet *and* UNet for both branches; the unconditional
  tokens are ``id_extractor(black image)``, the hint is the same in both branches;
* DDIM eta 0 with the LDM "uniform" timesteps (:mod:`tryon.anydoor.sampling`);
* the whole 512 crop is generated from noise; the result is pasted back into the target image.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from diffusers.utils.torch_utils import randn_tensor
from numpy.typing import NDArray
from torch import Tensor

from tryon.anydoor.latents import LatentSteps, StepCallback
from tryon.anydoor.limits import CONTROL_STRENGTH, CROP_RATIO, EXPAND_RATIO, GUIDANCE
from tryon.anydoor.models import AnyDoorComponents
from tryon.anydoor.pipeline_checks import (
    check_bound,
    check_box,
    check_mask,
    check_reference,
    check_rgb,
    check_tokens,
    require_sdpa,
)
from tryon.anydoor.pipeline_output import AnyDoorOutput
from tryon.anydoor.preprocess import (
    ReferenceInputs,
    paste_back,
    prepare_reference,
    prepare_target,
)
from tryon.anydoor.sampling import SAMPLERS, DDIMSchedule, dpmpp_2m_scheduler
from tryon.errors import InvalidInputError, NumericalError
from tryon.types import Box

__all__ = ["MAX_GUIDANCE", "AnyDoorOutput", "AnyDoorPipeline", "StepCallback"]

log = logging.getLogger(__name__)

MAX_GUIDANCE = GUIDANCE.high  # the bounds live in tryon.anydoor.limits (shared with the API)


class AnyDoorPipeline(LatentSteps):
    """Run AnyDoor on ``components`` (see :func:`tryon.anydoor.models.build_components`).

    ``device``/``dtype`` (default cpu/float32) place all networks; fp16 and bf16 work on CUDA,
    bf16 on CPU. Attention is PyTorch SDPA (diffusers' ``AttnProcessor2_0``, transformers'
    ``sdpa``), checked at construction.
    ``offload_id_extractor=True`` keeps DINOv2 (1.14 B parameters, the biggest part) on
    ``offload_device`` (the CPU); to encode a reference it swaps places with the UNet +
    ControlNet for that call, so the two never share the device (peak = the larger, not the
    sum; ~2 GiB less in fp16, for about 4.6 GB of host<->device copies per encode). The tokens
    stay on ``device``; the unconditional tokens are encoded once and cached. Arithmetic in
    docs/anydoor-engine.md.

    ``channels_last`` (default: on for CUDA, off elsewhere) stores the convolution-heavy UNet,
    ControlNet and VAE in NHWC, the layout tensor-core convolutions want; off on CPU so the
    default float32 path stays bit-equal to the reference. ``compile=True`` wraps the UNet
    and ControlNet forwards in ``torch.compile`` (``compile_kwargs`` passed through; the
    first call pays the compilation). Neither changes the modules themselves.
    """

    def __init__(
        self,
        components: AnyDoorComponents,
        *,
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
        offload_id_extractor: bool = False,
        offload_device: str | torch.device = "cpu",
        channels_last: bool | None = None,
        compile: bool = False,
        compile_kwargs: dict[str, Any] | None = None,
    ) -> None:
        self.components = components
        self.config = components.config
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.dtype = dtype if dtype is not None else torch.float32
        self.offload_id_extractor = offload_id_extractor
        self.offload_device = torch.device(offload_device)
        self.channels_last = self.device.type == "cuda" if channels_last is None else channels_last
        self._uncond_cache: dict[tuple[Any, ...], Tensor] = {}
        layout = torch.channels_last if self.channels_last else torch.contiguous_format
        for module in (components.unet, components.controlnet, components.vae):
            # nn.Module.to, not ModelMixin.to: diffusers 0.42 warns on every dtype cast even
            # when no module must stay in float32 (an empty list is "not None")
            torch.nn.Module.to(module, device=self.device, dtype=self.dtype)
            torch.nn.Module.to(module, memory_format=layout)  # type: ignore[call-overload]
            module.eval()
        id_device = self.offload_device if offload_id_extractor else self.device
        components.id_extractor.to(device=id_device, dtype=self.dtype).eval()
        require_sdpa(components)
        # the forwards the sampler calls: the modules, or torch.compile wrappers around them
        # (kept apart so state_dict names and training code see the plain modules)
        self._controlnet: Callable[..., Any] = components.controlnet
        self._unet: Callable[..., Any] = components.unet
        if compile:
            kwargs = dict(compile_kwargs or {})
            self._controlnet = torch.compile(components.controlnet, **kwargs)
            self._unet = torch.compile(components.unet, **kwargs)
        # requires_grad is left alone (every hook runs under no_grad) so a training loop can
        # build a pipeline over the modules it trains; it must call .train() again afterwards

    # ------------------------------------------------------------------------------------
    # 0. Inputs
    def check_inputs(
        self,
        reference_image: Any,
        reference_mask: Any,
        target_image: Any,
        target_mask: Any,
        num_inference_steps: Any,
        guidance_scale: Any,
        control_strength: Any = 1.0,
        expand_ratio: Any = 1.2,
        crop_ratio: Any = 2.0,
        latents: Tensor | None = None,
        num_samples: Any = 1,
    ) -> None:
        """Raise :class:`InvalidInputError`/:class:`InvalidMaskError` naming the bad argument."""
        check_rgb("reference_image", reference_image)
        check_rgb("target_image", target_image)
        check_mask("reference_mask", reference_mask, reference_image)
        if isinstance(target_mask, Box):
            check_box("target_mask", target_mask, target_image)
        else:
            check_mask("target_mask", target_mask, target_image)
        if (
            isinstance(num_inference_steps, bool)
            or not isinstance(num_inference_steps, (int, np.integer))
            or not 1 <= num_inference_steps <= self.config.num_train_timesteps
        ):
            raise InvalidInputError(
                f"num_inference_steps must be an integer in [1, {self.config.num_train_timesteps}], "
                f"got {num_inference_steps!r}",
                argument="num_inference_steps",
            )
        check_bound("guidance_scale", guidance_scale, GUIDANCE)
        check_bound("control_strength", control_strength, CONTROL_STRENGTH)
        check_bound("expand_ratio", expand_ratio, EXPAND_RATIO)
        check_bound("crop_ratio", crop_ratio, CROP_RATIO)
        if (
            isinstance(num_samples, bool)
            or not isinstance(num_samples, (int, np.integer))
            or num_samples < 1
        ):
            raise InvalidInputError(
                f"num_samples must be a positive integer, got {num_samples!r}",
                argument="num_samples",
            )
        if latents is not None:
            want = self.latent_shape(int(num_samples))
            if tuple(latents.shape) != want:
                raise InvalidInputError(
                    f"latents must have shape {want}, got {tuple(latents.shape)}",
                    argument="latents",
                )

    def latent_shape(self, batch: int) -> tuple[int, int, int, int]:
        side = self.config.image_size // self.config.vae_downscale
        return (batch, self.config.latent_channels, side, side)

    # ------------------------------------------------------------------------------------
    # Step hooks
    @torch.no_grad()
    def encode_reference(self, ref: Tensor) -> Tensor:
        """ID tokens of reference images: ``(B, 3, S, S)`` float RGB in [0, 1] -> ``(B, N, D)``.

        Returned on ``self.device`` in ``self.dtype``. With ``offload_id_extractor`` (and an
        ``offload_device`` other than ``device``) the extractor swaps places with the UNet +
        ControlNet for this call.
        """
        extractor = self.components.id_extractor
        swap = self.offload_id_extractor and self.offload_device != self.device
        # swap, not just visit: DINOv2 and the UNet + ControlNet never share the device, so
        # the peak is the larger of the two, not their sum
        denoisers = (self.components.unet, self.components.controlnet)
        if swap:
            for module in denoisers:
                self._place(module, self.offload_device)
            _empty_cache(self.device)
            self._place(extractor, self.device)
        try:
            tokens = extractor(ref.to(device=self.device, dtype=self.dtype))
        finally:
            if swap:
                self._place(extractor, self.offload_device)
                _empty_cache(self.device)
                for module in denoisers:
                    self._place(module, self.device)
        return tokens.to(device=self.device, dtype=self.dtype)

    def _place(self, module: torch.nn.Module, device: torch.device) -> None:
        """Move ``module`` to ``device`` (the one seam the offload swap moves through)."""
        torch.nn.Module.to(module, device)

    def unconditional_tokens(self, batch: int) -> Tensor:
        """``(batch, N, D)`` tokens of the unconditional branch: the black image encoded.

        Not zeros (reference pitfall 2): a zero image goes through ImageNet normalisation and
        the whole DINOv2 + projector. Cached per device/dtype and per weights version.
        """
        projector = self.components.id_extractor.projector
        key = (
            self.device,
            self.dtype,
            projector.weight.data_ptr(),
            projector.weight._version,
            id(self.components.id_extractor),
        )
        tokens = self._uncond_cache.get(key)
        if tokens is None:
            size = self.config.reference_size
            tokens = self.encode_reference(torch.zeros(1, 3, size, size))
            self._uncond_cache.clear()
            self._uncond_cache[key] = tokens
        return tokens.expand(batch, -1, -1)

    def prepare_reference_inputs(
        self,
        reference_image: NDArray[np.uint8],
        reference_mask: NDArray[Any],
        expand_ratio: float = 1.2,
    ) -> ReferenceInputs:
        """Step 2a: :func:`~tryon.anydoor.preprocess.prepare_reference` at this model's
        ``reference_size``. Depends only on the inputs, ``expand_ratio`` and the preprocessing
        version, so a caller may cache it per garment."""
        return prepare_reference(
            reference_image,
            reference_mask,
            expand_ratio=expand_ratio,
            size=self.config.reference_size,
        )

    def reference_tokens(self, reference: ReferenceInputs) -> Tensor:
        """Step 3a: ID tokens ``(1, N, D)`` of prepared reference inputs (one DINOv2 pass), on
        ``self.device`` in ``self.dtype``. Cacheable per garment, weights, device and dtype;
        pass them back as ``reference_tokens=`` to skip the pass."""
        ref_tensor = torch.from_numpy(np.ascontiguousarray(reference.image)).permute(2, 0, 1)[None]
        return self.encode_reference(ref_tensor.float())

    # ------------------------------------------------------------------------------------
    @torch.no_grad()
    def __call__(
        self,
        reference_image: NDArray[np.uint8],
        reference_mask: NDArray[Any],
        target_image: NDArray[np.uint8],
        target_mask: NDArray[Any] | Box,
        num_inference_steps: int = 50,
        guidance_scale: float = 4.5,
        control_strength: float = 1.0,
        generator: torch.Generator | list[torch.Generator] | None = None,
        latents: Tensor | None = None,
        callback_on_step_end: StepCallback | None = None,
        interrupt: Callable[[], bool] | None = None,
        expand_ratio: float = 1.2,
        crop_ratio: float = 2.0,
        shape_mask: bool = False,
        batched_cfg: bool = True,
        reference: ReferenceInputs | None = None,
        reference_tokens: Tensor | None = None,
        num_samples: int = 1,
        sampler: str = "ddim",
    ) -> AnyDoorOutput:
        """Place the masked reference object into the target region.

        ``reference_image``/``target_image``: uint8 ``(H, W, 3)`` RGB. ``reference_mask``:
        ``(H, W)`` bool or {0, 1} (1 = object). ``target_mask``: ``(H, W)`` bool or {0, 1}
        mask of the region to fill, or a :class:`~tryon.types.Box` inside the image.
        ``generator`` seeds the initial noise (same seed -> same image); ``latents`` overrides it.

        ``num_samples`` images are drawn in one batched denoising run (batch ``2 * num_samples``
        with classifier-free guidance); preprocessing, the hint and the tokens are computed
        once. Pass one generator per sample (a list) to make sample ``k`` the image a
        one-sample call with ``generator[k]`` gives (equal up to the rounding of batched
        kernels; bit-equal is not promised). ``sampler``: ``"ddim"`` (the reference) or
        ``"dpmpp_2m"`` (see :meth:`sample`).

        ``reference``/``reference_tokens``: the results of :meth:`prepare_reference_inputs`
        (with the same ``expand_ratio``) and :meth:`reference_tokens` for this reference,
        computed earlier (e.g. cached per garment); given, steps 2a/3a are skipped and the
        output is bit-identical to a call without them. Tokens in another float dtype are
        cast (float32 holds fp16/bf16 values exactly). The caller vouches that they belong to
        ``reference_image``/``reference_mask``; only their shapes are checked.
        """
        # 1. Check inputs
        self.check_inputs(
            reference_image,
            reference_mask,
            target_image,
            target_mask,
            num_inference_steps,
            guidance_scale,
            control_strength,
            expand_ratio,
            crop_ratio,
            latents,
            num_samples,
        )
        if sampler not in SAMPLERS:
            raise InvalidInputError(
                f"sampler must be one of {list(SAMPLERS)}, got {sampler!r}", argument="sampler"
            )
        if isinstance(generator, list) and len(generator) != num_samples:
            raise InvalidInputError(
                f"generator is a list of {len(generator)} generators but num_samples is "
                f"{num_samples}: pass one per sample",
                argument="generator",
            )
        if isinstance(target_mask, Box):
            target_mask = _box_mask(target_mask, target_image.shape[:2])

        if reference is not None:
            check_reference(reference, self.config.reference_size)
        if reference_tokens is not None:
            check_tokens(reference_tokens, tuple(self.unconditional_tokens(1).shape))

        # 2. Preprocess the reference (224 masked crop + high-frequency map) and the target
        ref = (
            reference
            if reference is not None
            else self.prepare_reference_inputs(reference_image, reference_mask, expand_ratio)
        )
        prepared = prepare_target(
            target_image,
            target_mask,
            ref.hf_map,
            crop_ratio=crop_ratio,
            size=self.config.image_size,
            shape_mask=shape_mask,
        )

        # 3. Encode the reference: ID tokens for both CFG branches
        if reference_tokens is not None:
            cond_tokens = reference_tokens.to(device=self.device, dtype=self.dtype)
        else:
            cond_tokens = self.reference_tokens(ref)
        # one row per sample: expanded views, so nothing is recomputed or copied
        cond_tokens = cond_tokens.expand(num_samples, -1, -1)
        uncond_tokens = self.unconditional_tokens(num_samples)

        # 4. Prepare the hint (collage RGB in [-1, 1] + mask channel), channels first
        hint = torch.from_numpy(np.ascontiguousarray(prepared.hint)).permute(2, 0, 1)[None]
        hint = hint.to(device=self.device, dtype=self.dtype).expand(num_samples, -1, -1, -1)

        # 5. Prepare timesteps
        schedule = DDIMSchedule.from_config(self.config, num_inference_steps)

        # 6. Prepare the initial noise (drawn on the generator's device, so a CPU generator
        #    gives the same noise whatever device the model runs on; a list draws row k with
        #    generator k, the noise a one-sample call with it would draw)
        if latents is None:
            latents = randn_tensor(
                self.latent_shape(num_samples),
                generator=generator,
                device=self.device,
                dtype=torch.float32,
            )

        # 7. Denoise
        latents = self.sample(
            latents,
            hint,
            cond_tokens,
            uncond_tokens,
            schedule,
            guidance_scale=guidance_scale,
            control_strength=control_strength,
            batched_cfg=batched_cfg,
            callback_on_step_end=callback_on_step_end,
            interrupt=interrupt,
            sampler=sampler,
        )

        # 8. Decode and paste the crop back into the target image
        decoded = self.vae_decode(latents)
        if not torch.isfinite(decoded).all():
            # a half-precision overflow would otherwise become a silently garbled image
            raise NumericalError(
                f"sampling in {self.dtype} produced non-finite values",
                dtype=str(self.dtype).removeprefix("torch."),
            )
        # the float crop goes to paste_back so its resize rounds like the reference's
        pixels = self.to_pixels(decoded)
        images = tuple(paste_back(p, target_image, prepared) for p in pixels)
        crops = tuple(p.astype(np.uint8) for p in pixels)
        run = (
            dpmpp_2m_scheduler(self.config, num_inference_steps).timesteps.tolist()
            if sampler == "dpmpp_2m"
            else schedule.timesteps.tolist()
        )
        return AnyDoorOutput(
            image=images[0],
            crop=crops[0],
            prepared=prepared,
            timesteps=tuple(int(t) for t in run),
            images=images,
            crops=crops,
        )


def _box_mask(box: Box, shape: tuple[int, ...]) -> NDArray[np.uint8]:
    mask = np.zeros(shape[:2], dtype=np.uint8)
    mask[box.y1 : box.y2, box.x1 : box.x2] = 1
    return mask


def _empty_cache(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
