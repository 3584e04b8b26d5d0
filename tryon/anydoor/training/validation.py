"""Validation during training: a fixed batch, its denoising loss and a sample grid.

:func:`render_samples` samples with the engine's own pipeline, so what the grid shows is
what ``tryon render`` would produce with these weights at that step.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from tryon.anydoor.models import AnyDoorComponents
from tryon.anydoor.training.batches import collate_training
from tryon.anydoor.training.objective import configure_trainable, denoising_loss
from tryon.anydoor.training.trainconfig import TrainConfig


def _to_uint8(chw: Tensor) -> np.ndarray:
    arr = chw.detach().float().cpu().permute(1, 2, 0).numpy()
    return np.clip(arr * 127.5 + 127.5, 0, 255).astype(np.uint8)


@torch.no_grad()
def render_samples(
    components: AnyDoorComponents,
    batch: Mapping[str, Any],
    *,
    device: torch.device,
    num_inference_steps: int,
    guidance_scale: float,
    seed: int,
) -> tuple[np.ndarray, Tensor]:
    """Sample every item of ``batch`` with the engine's pipeline from seeded noise.

    Returns ``(grid, latents)``: ``grid`` uint8 ``(B*T, 3*T, 3)`` rows of
    [hint collage | result | target], ``latents`` the sampled x_0 latents ``(B, 4, h, w)``.
    Leaves every module frozen and in eval mode: call :func:`configure_trainable` after it
    when training continues.
    """
    from tryon.anydoor.pipeline import AnyDoorPipeline

    pipe = AnyDoorPipeline(components, device=device, dtype=torch.float32)
    n = batch["ref"].shape[0]
    cond = pipe.encode_reference(batch["ref"])
    uncond = pipe.unconditional_tokens(n)
    gen = torch.Generator().manual_seed(seed)
    noise = torch.randn(pipe.latent_shape(n), generator=gen)
    hint = batch["hint"].to(device)
    latents = pipe.sample(
        noise, hint, cond, uncond, num_inference_steps, guidance_scale=guidance_scale
    )
    images = pipe.vae_decode(latents)
    rows = [
        np.concatenate(
            [_to_uint8(batch["hint"][i, :3]), _to_uint8(images[i]), _to_uint8(batch["jpg"][i])],
            axis=1,
        )
        for i in range(n)
    ]
    return np.concatenate(rows, axis=0), latents


def validation_batch(
    config: TrainConfig, dataset: Any, samples: Sequence[Any] | None, *, sizes: tuple[int, int]
) -> dict[str, Any] | None:
    """The fixed validation batch: ``samples``, else the first ``num_samples`` items of
    ``config.validation.data`` (built at the model's ``sizes``) or of ``dataset``."""
    if samples is None:
        source: Any = dataset
        if config.validation.data is not None:
            from tryon.anydoor.training.mix import build_mix

            source = build_mix(config.validation.data, sizes=sizes)
        count = min(config.validation.num_samples, len(source))
        samples = [source[i] for i in range(count)]
    return collate_training(list(samples)) if samples else None


def validate(
    step: int,
    *,
    config: TrainConfig,
    components: AnyDoorComponents,
    denoiser: torch.nn.Module,
    batch: Mapping[str, Any],
    scheduler: Any,
    device: torch.device,
    autocast: Callable[[], Any],
) -> float:
    """Score ``batch`` at ``step``: returns the denoising loss at seeded timesteps and noise
    (posterior mode) and writes ``validation/step_<step>.png`` (:func:`render_samples`).

    ``denoiser`` is the unwrapped training module; it is put back into training mode after.
    """
    from PIL import Image

    vc = config.validation
    with torch.no_grad():
        probe = dict(batch)
        g = torch.Generator().manual_seed(vc.seed)
        probe["time_steps"] = torch.randint(
            0, components.config.num_train_timesteps, (batch["ref"].shape[0],), generator=g
        )
        loss = denoising_loss(
            denoiser, components, probe, scheduler,
            torch.Generator(device=device).manual_seed(vc.seed), device=device,
            autocast=autocast, sample_posterior=False,
        )
    grid, _ = render_samples(
        components, batch, device=device, num_inference_steps=vc.num_inference_steps,
        guidance_scale=vc.guidance_scale, seed=vc.seed,
    )
    configure_trainable(components)  # the pipeline froze everything
    denoiser.unet.train()  # type: ignore[union-attr]
    denoiser.controlnet.train()  # type: ignore[union-attr]
    folder = Path(config.output_dir) / "validation"
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grid).save(folder / f"step_{step:07d}.png")
    return float(loss)


__all__ = ["render_samples", "validate", "validation_batch"]
