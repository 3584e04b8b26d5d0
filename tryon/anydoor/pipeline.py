"""AnyDoorPipeline: reference object + target region -> image with the object placed there.

Diffusers-style and single-file: one ``__call__`` whose body is numbered steps, plus public
step hooks (:meth:`AnyDoorPipeline.encode_reference`, :meth:`~AnyDoorPipeline.predict_noise`,
:meth:`~AnyDoorPipeline.guided_noise`, :meth:`~AnyDoorPipeline.sample`,
:meth:`~AnyDoorPipeline.vae_encode`, :meth:`~AnyDoorPipeline.vae_decode`,
:meth:`~AnyDoorPipeline.prepare_reference_inputs`, :meth:`~AnyDoorPipeline.reference_tokens`)
that tests, training and the engine's per-garment cache reuse. Behaviour follows the reference's gradio/predict path (see
``docs/anydoor-engine.md``):

* the ControlNet sees the 4-channel hint and the ID tokens, never x_t (its ``conv_in`` is zero);
* classifier-free guidance runs ControlNet *and* UNet for both branches; the unconditional
  tokens are ``id_extractor(black image)``, the hint is the same in both branches;
* DDIM eta 0 with the LDM "uniform" timesteps (:mod:`tryon.anydoor.sampling`);
* the whole 512 crop is generated from noise; the result is pasted back into the target image.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from diffusers.utils.torch_utils import randn_tensor
from numpy.typing import NDArray
from torch import Tensor

from tryon.anydoor.limits import CONTROL_STRENGTH, CROP_RATIO, EXPAND_RATIO, GUIDANCE, Bound
from tryon.anydoor.models import AnyDoorComponents
from tryon.anydoor.preprocess import (
    ReferenceInputs,
    TargetInputs,
    paste_back,
    prepare_reference,
    prepare_target,
)
from tryon.anydoor.sampling import DDIMSchedule
from tryon.errors import CanceledError, InvalidInputError, InvalidMaskError, NumericalError
from tryon.types import Box

log = logging.getLogger(__name__)

#: ``callback_on_step_end(step_index, timestep, latents)``; a returned tensor replaces latents
StepCallback = Callable[[int, int, Tensor], "Tensor | None"]

MAX_GUIDANCE = GUIDANCE.high  # the bounds live in tryon.anydoor.limits (shared with the API)


@dataclass(frozen=True)
class AnyDoorOutput:
    """Result of one :class:`AnyDoorPipeline` call.

    ``image``: uint8 ``(H, W, 3)`` RGB, the target image with the generated crop pasted back;
    ``crop``: uint8 ``(T, T, 3)`` RGB, the generated square crop (T = ``config.image_size``);
    ``prepared``: the target preprocessing (boxes used); ``timesteps``: the DDIM timesteps run.
    """

    image: NDArray[np.uint8]
    crop: NDArray[np.uint8]
    prepared: TargetInputs
    timesteps: tuple[int, ...]


class AnyDoorPipeline:
    """Run AnyDoor on ``components`` (see :func:`tryon.anydoor.models.build_components`).

    ``device``/``dtype`` (default cpu/float32) place all networks; fp16 and bf16 work on CUDA,
    bf16 on CPU. Attention is diffusers'/transformers' default (PyTorch SDPA).
    ``offload_id_extractor=True`` keeps DINOv2 (1.14 B parameters, the biggest part) on the CPU;
    to encode a reference it swaps places with the UNet + ControlNet for that call, so the two
    never share the device (peak = the larger, not the sum; ~2 GiB less in fp16, for about
    4.6 GB of host<->device copies per encode). The tokens stay on ``device``; the
    unconditional tokens are encoded once and cached. Arithmetic in docs/anydoor-engine.md.
    """

    def __init__(
        self,
        components: AnyDoorComponents,
        *,
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
        offload_id_extractor: bool = False,
    ) -> None:
        self.components = components
        self.config = components.config
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.dtype = dtype if dtype is not None else torch.float32
        self.offload_id_extractor = offload_id_extractor
        self._uncond_cache: dict[tuple[Any, ...], Tensor] = {}
        for module in (components.unet, components.controlnet, components.vae):
            # nn.Module.to, not ModelMixin.to: diffusers 0.42 warns on every dtype cast even
            # when no module must stay in float32 (an empty list is "not None")
            torch.nn.Module.to(module, device=self.device, dtype=self.dtype)
            module.eval()
        id_device = torch.device("cpu") if offload_id_extractor else self.device
        components.id_extractor.to(device=id_device, dtype=self.dtype).eval()
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
    ) -> None:
        """Raise :class:`InvalidInputError`/:class:`InvalidMaskError` naming the bad argument."""
        _check_rgb("reference_image", reference_image)
        _check_rgb("target_image", target_image)
        _check_mask("reference_mask", reference_mask, reference_image)
        if isinstance(target_mask, Box):
            _check_box("target_mask", target_mask, target_image)
        else:
            _check_mask("target_mask", target_mask, target_image)
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
        _check_bound("guidance_scale", guidance_scale, GUIDANCE)
        _check_bound("control_strength", control_strength, CONTROL_STRENGTH)
        _check_bound("expand_ratio", expand_ratio, EXPAND_RATIO)
        _check_bound("crop_ratio", crop_ratio, CROP_RATIO)
        if latents is not None:
            want = self.latent_shape(1)
            if tuple(latents.shape) != want:
                raise InvalidInputError(
                    f"latents must have shape {want}, got {tuple(latents.shape)}",
                    argument="latents",
                )

    def _check_reference(self, reference: Any) -> None:
        size = self.config.reference_size
        want = {
            "image": ((size, size, 3), np.float32),
            "mask": ((size, size), np.uint8),
            "hf_map": ((size, size, 3), np.uint8),
        }
        if not isinstance(reference, ReferenceInputs):
            raise InvalidInputError(
                f"reference must be a ReferenceInputs, got {type(reference).__name__}",
                argument="reference",
            )
        for name, (shape, dtype) in want.items():
            arr = getattr(reference, name)
            if not isinstance(arr, np.ndarray) or arr.shape != shape or arr.dtype != dtype:
                raise InvalidInputError(
                    f"reference.{name} must be {np.dtype(dtype).name} {shape}, got "
                    f"{getattr(arr, 'dtype', None)} {getattr(arr, 'shape', None)}",
                    argument="reference",
                )

    def _check_tokens(self, tokens: Any) -> None:
        want = tuple(self.unconditional_tokens(1).shape)
        if (
            not isinstance(tokens, Tensor)
            or not tokens.is_floating_point()
            or tuple(tokens.shape) != want
        ):
            raise InvalidInputError(
                f"reference_tokens must be a float tensor of shape {want}, got "
                f"{getattr(tokens, 'dtype', type(tokens).__name__)} "
                f"{tuple(getattr(tokens, 'shape', ()))}",
                argument="reference_tokens",
            )

    def latent_shape(self, batch: int) -> tuple[int, int, int, int]:
        side = self.config.image_size // self.config.vae_downscale
        return (batch, self.config.latent_channels, side, side)

    # ------------------------------------------------------------------------------------
    # Step hooks
    @torch.no_grad()
    def encode_reference(self, ref: Tensor) -> Tensor:
        """ID tokens of reference images: ``(B, 3, S, S)`` float RGB in [0, 1] -> ``(B, N, D)``.

        Returned on ``self.device`` in ``self.dtype``. With ``offload_id_extractor`` (and a
        non-CPU device) the extractor swaps places with the UNet + ControlNet for this call.
        """
        extractor = self.components.id_extractor
        swap = self.offload_id_extractor and self.device.type != "cpu"
        # swap, not just visit: DINOv2 and the UNet + ControlNet never share the device, so
        # the peak is the larger of the two, not their sum
        denoisers = (self.components.unet, self.components.controlnet)
        if swap:
            for module in denoisers:
                torch.nn.Module.to(module, "cpu")
            _empty_cache(self.device)
            extractor.to(self.device)
        try:
            tokens = extractor(ref.to(device=self.device, dtype=self.dtype))
        finally:
            if swap:
                extractor.to("cpu")
                _empty_cache(self.device)
                for module in denoisers:
                    torch.nn.Module.to(module, self.device)
        return tokens.to(device=self.device, dtype=self.dtype)

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
        timestep = _timestep_tensor(t, batch, self.device)
        sample = latents.to(device=self.device, dtype=self.dtype)
        context = tokens.to(device=self.device, dtype=self.dtype)
        down, mid = self.components.controlnet(
            sample,
            timestep,
            encoder_hidden_states=context,
            controlnet_cond=hint.to(device=self.device, dtype=self.dtype),
            conditioning_scale=float(control_strength),
            return_dict=False,
        )
        return self.components.unet(
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
    ) -> Tensor:
        """DDIM loop from the initial ``latents`` (x_T); returns x_0 latents in float32.

        ``timesteps`` is a :class:`DDIMSchedule` or a step count. Before each step
        ``interrupt()`` is polled; True raises :class:`CanceledError`. After each step
        ``callback_on_step_end(step_index, timestep, latents)`` is called.
        """
        schedule = (
            timesteps
            if isinstance(timesteps, DDIMSchedule)
            else DDIMSchedule.from_config(self.config, timesteps)
        )
        # the loop state stays float32 even for half-precision models
        x = latents.to(device=self.device, dtype=torch.float32)
        for i, t in enumerate(schedule.timesteps.tolist()):
            if interrupt is not None and interrupt():
                raise CanceledError(f"canceled before sampling step {i + 1} of {len(schedule)}")
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
        generator: torch.Generator | None = None,
        latents: Tensor | None = None,
        callback_on_step_end: StepCallback | None = None,
        interrupt: Callable[[], bool] | None = None,
        expand_ratio: float = 1.2,
        crop_ratio: float = 2.0,
        shape_mask: bool = False,
        batched_cfg: bool = True,
        reference: ReferenceInputs | None = None,
        reference_tokens: Tensor | None = None,
    ) -> AnyDoorOutput:
        """Place the masked reference object into the target region.

        ``reference_image``/``target_image``: uint8 ``(H, W, 3)`` RGB. ``reference_mask``:
        ``(H, W)`` bool or {0, 1} (1 = object). ``target_mask``: ``(H, W)`` bool or {0, 1}
        mask of the region to fill, or a :class:`~tryon.types.Box` inside the image.
        ``generator`` seeds the initial noise (same seed -> same image); ``latents`` overrides it.

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
        )
        if isinstance(target_mask, Box):
            target_mask = _box_mask(target_mask, target_image.shape[:2])

        if reference is not None:
            self._check_reference(reference)
        if reference_tokens is not None:
            self._check_tokens(reference_tokens)

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
        uncond_tokens = self.unconditional_tokens(1)

        # 4. Prepare the hint (collage RGB in [-1, 1] + mask channel), channels first
        hint = torch.from_numpy(np.ascontiguousarray(prepared.hint)).permute(2, 0, 1)[None]
        hint = hint.to(device=self.device, dtype=self.dtype)

        # 5. Prepare timesteps
        schedule = DDIMSchedule.from_config(self.config, num_inference_steps)

        # 6. Prepare the initial noise (drawn on the generator's device, so a CPU generator
        #    gives the same noise whatever device the model runs on)
        if latents is None:
            latents = randn_tensor(
                self.latent_shape(1), generator=generator, device=self.device, dtype=torch.float32
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
        )

        # 8. Decode and paste the crop back into the target image
        decoded = self.vae_decode(latents)
        if not torch.isfinite(decoded).all():
            # a half-precision overflow would otherwise become a silently garbled image
            raise NumericalError(
                f"sampling in {self.dtype} produced non-finite values",
                dtype=str(self.dtype).removeprefix("torch."),
            )
        pixels = self.to_pixels(decoded)[0]
        # the float crop goes to paste_back so its resize rounds like the reference's
        image = paste_back(pixels, target_image, prepared)
        crop = pixels.astype(np.uint8)
        return AnyDoorOutput(
            image=image,
            crop=crop,
            prepared=prepared,
            timesteps=tuple(int(t) for t in schedule.timesteps),
        )


# --- input checks ----------------------------------------------------------------------------


def _check_rgb(name: str, image: Any) -> None:
    if not isinstance(image, np.ndarray):
        raise InvalidInputError(
            f"{name} must be a numpy array, got {type(image).__name__}", argument=name
        )
    if image.ndim != 3 or image.shape[2] != 3:
        raise InvalidInputError(
            f"{name} must be an RGB image of shape (H, W, 3), got shape {image.shape}",
            argument=name,
        )
    if image.dtype != np.uint8:
        raise InvalidInputError(f"{name} must be uint8, got {image.dtype}", argument=name)
    if image.shape[0] < 2 or image.shape[1] < 2:
        raise InvalidInputError(
            f"{name} is too small: {image.shape[1]}x{image.shape[0]}", argument=name
        )


def _check_mask(name: str, mask: Any, image: NDArray[Any]) -> None:
    if not isinstance(mask, np.ndarray):
        raise InvalidMaskError(
            f"{name} must be a numpy array, got {type(mask).__name__}", argument=name
        )
    if mask.ndim != 2:
        raise InvalidMaskError(f"{name} must have shape (H, W), got {mask.shape}", argument=name)
    if mask.shape != image.shape[:2]:
        raise InvalidMaskError(
            f"{name} has shape {mask.shape} but its image is {image.shape[:2]}", argument=name
        )
    if mask.dtype != np.bool_ and not np.isin(mask, (0, 1)).all():
        raise InvalidMaskError(
            f"{name} must be bool or {{0, 1}}, got values in [{mask.min()}, {mask.max()}] "
            "(threshold it first, e.g. mask > 127)",
            argument=name,
        )
    if not np.any(mask):
        raise InvalidMaskError(f"{name} is empty: it must mark at least one pixel", argument=name)


def _check_box(name: str, box: Box, image: NDArray[Any]) -> None:
    height, width = image.shape[:2]
    if box.is_empty():
        raise InvalidInputError(f"{name} box {box} is empty", argument=name)
    if box.x1 < 0 or box.y1 < 0 or box.x2 > width or box.y2 > height:
        raise InvalidInputError(
            f"{name} box {box} lies outside the {width}x{height} image (clip it first)",
            argument=name,
        )


def _check_number(
    name: str, value: Any, *, low: float, high: float, low_open: bool = False
) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise InvalidInputError(f"{name} must be a number, got {value!r}", argument=name)
    v = float(value)
    too_low = v <= low if low_open else v < low
    if not math.isfinite(v) or too_low or v > high:
        bracket = "(" if low_open else "["
        raise InvalidInputError(
            f"{name} must be in {bracket}{low}, {high}], got {value!r}", argument=name
        )


def _check_bound(name: str, value: Any, bound: Bound) -> None:
    _check_number(name, value, low=bound.low, high=bound.high, low_open=bound.low_open)


def _box_mask(box: Box, shape: tuple[int, ...]) -> NDArray[np.uint8]:
    mask = np.zeros(shape[:2], dtype=np.uint8)
    mask[box.y1 : box.y2, box.x1 : box.x2] = 1
    return mask


def _empty_cache(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _timestep_tensor(t: int | Tensor, batch: int, device: torch.device) -> Tensor:
    if isinstance(t, Tensor):
        t = t.to(device)
        return t.expand(batch) if t.ndim == 0 else t
    return torch.full((batch,), int(t), dtype=torch.long, device=device)
