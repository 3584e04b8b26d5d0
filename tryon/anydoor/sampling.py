"""DDIM (eta = 0) with the timesteps and alphas of the original LDM sampler.

AnyDoor samples with ``cldm/ddim_hacked.py``: LDM "uniform" discretisation
(``c = 1000 // S``, ``t = range(0, 1000, c) + 1``), eta 0, no clipping, and the final step
uses ``alphas_cumprod[0]`` as the "previous" alpha (diffusers ``set_alpha_to_one=False``).
For step counts that do not divide 1000 this gives ``len(range(0, 1000, c))`` timesteps, e.g.
S=30 -> 31 timesteps [991, 958, ..., 1], where diffusers' "leading" spacing gives 30
(reference pitfall 3). We therefore keep our own small schedule object rather than
``DDIMScheduler.set_timesteps``; :func:`configure_diffusers_scheduler` sets a diffusers
``DDIMScheduler`` to the same timesteps for code that wants one (tests show both agree).

The alphas table is computed like LDM: betas in float64 (``linspace(sqrt b0, sqrt b1)**2``),
cumulative product in float64, stored as float32. diffusers builds it in float32, which
differs by about 1e-6 relative (at most 9.5e-7, measured with diffusers 0.42.1).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from diffusers.schedulers.scheduling_ddim import DDIMScheduler
from diffusers.schedulers.scheduling_dpmsolver_multistep import DPMSolverMultistepScheduler
from numpy.typing import NDArray
from torch import Tensor

from tryon.anydoor.config import AnyDoorConfig


def ldm_timesteps(num_inference_steps: int, num_train_timesteps: int = 1000) -> NDArray[np.int64]:
    """LDM "uniform" DDIM timesteps, descending (the order they are sampled in).

    ``c = num_train_timesteps // num_inference_steps``; timesteps ``range(0, T, c) + 1``.
    50 -> 50 timesteps [981, 961, ..., 1]; 30 -> 31 timesteps [991, 958, ..., 1];
    3 -> [667, 334, 1] (see below).
    """
    if not isinstance(num_inference_steps, (int, np.integer)) or isinstance(
        num_inference_steps, bool
    ):
        raise TypeError(
            f"num_inference_steps must be an int, got {type(num_inference_steps).__name__}"
        )
    if not 1 <= num_inference_steps <= num_train_timesteps:
        raise ValueError(
            f"num_inference_steps must be in [1, {num_train_timesteps}], got {num_inference_steps}"
        )
    c = num_train_timesteps // int(num_inference_steps)
    steps = np.arange(0, num_train_timesteps, c, dtype=np.int64) + 1
    # When c divides T - 1 (S = 3, 9, 27, 36, 37, > 500 for T = 1000) the last one is T, past
    # the end of the alphas table: the reference crashes there; we drop it.
    steps = steps[steps < num_train_timesteps]
    return steps[::-1].copy()


def ldm_alphas_cumprod(
    num_train_timesteps: int = 1000, beta_start: float = 0.00085, beta_end: float = 0.012
) -> NDArray[np.float32]:
    """``alphas_cumprod`` of the LDM "linear" schedule (= diffusers "scaled_linear"), float32."""
    betas = np.linspace(beta_start**0.5, beta_end**0.5, num_train_timesteps, dtype=np.float64) ** 2
    return np.cumprod(1.0 - betas).astype(np.float32)


@dataclass(frozen=True)
class DDIMSchedule:
    """The per-step constants of one sampling run.

    ``timesteps[i]`` is the model timestep of step ``i`` (descending); ``alphas[i]`` is
    ``alphas_cumprod[timesteps[i]]`` and ``alphas_prev[i]`` the alpha of the step that follows
    (``alphas_cumprod[timesteps[i] - c]``, or ``alphas_cumprod[0]`` for the last step).
    """

    timesteps: NDArray[np.int64]
    alphas: NDArray[np.float32]
    alphas_prev: NDArray[np.float32]

    @classmethod
    def create(
        cls,
        num_inference_steps: int,
        *,
        num_train_timesteps: int = 1000,
        beta_start: float = 0.00085,
        beta_end: float = 0.012,
    ) -> DDIMSchedule:
        timesteps = ldm_timesteps(num_inference_steps, num_train_timesteps)
        table = ldm_alphas_cumprod(num_train_timesteps, beta_start, beta_end)
        ascending = timesteps[::-1]
        alphas_prev_asc = np.concatenate([table[:1], table[ascending[:-1]]])
        return cls(
            timesteps=timesteps,
            alphas=table[timesteps],
            alphas_prev=alphas_prev_asc[::-1].copy(),
        )

    @classmethod
    def from_config(cls, config: AnyDoorConfig, num_inference_steps: int) -> DDIMSchedule:
        return cls.create(
            num_inference_steps,
            num_train_timesteps=config.num_train_timesteps,
            beta_start=config.beta_start,
            beta_end=config.beta_end,
        )

    def __len__(self) -> int:
        return len(self.timesteps)

    def step(self, noise_pred: Tensor, index: int, latents: Tensor) -> Tensor:
        """One DDIM eta=0 update from step ``index``: x_t -> x_{t_prev}.

        ``x0 = (x_t - sqrt(1 - a_t) eps) / sqrt(a_t)``;
        ``x_prev = sqrt(a_prev) x0 + sqrt(1 - a_prev) eps``. Computed in float32, returned in
        ``latents.dtype`` (half-precision latents would lose the small differences).
        """
        a_t = float(self.alphas[index])
        a_prev = float(self.alphas_prev[index])
        x = latents.float()
        eps = noise_pred.float()
        x0 = (x - (1.0 - a_t) ** 0.5 * eps) / a_t**0.5
        out = a_prev**0.5 * x0 + (1.0 - a_prev) ** 0.5 * eps
        return out.to(latents.dtype)


def configure_diffusers_scheduler(scheduler: DDIMScheduler, num_inference_steps: int) -> None:
    """Set a diffusers ``DDIMScheduler`` to the LDM timesteps (in place).

    ``DDIMScheduler.step`` takes ``prev = t - T // num_inference_steps`` and
    ``final_alpha_cumprod`` below 0, which is the LDM rule once the timesteps are LDM's.
    """
    scheduler.set_timesteps(num_inference_steps)
    ts = ldm_timesteps(num_inference_steps, scheduler.config["num_train_timesteps"])
    scheduler.timesteps = torch.from_numpy(ts)


#: the samplers :meth:`tryon.anydoor.pipeline.AnyDoorPipeline.sample` runs. ``ddim`` is the
#: reference's sampler, exactly; ``dpmpp_2m`` (DPM-Solver++ 2M) is a deviation from the
#: reference that reaches a comparable image in 20-25 steps instead of 50 (docs/anydoor-engine.md)
SAMPLERS = ("ddim", "dpmpp_2m")


def dpmpp_2m_scheduler(config: AnyDoorConfig, num_inference_steps: int) -> DPMSolverMultistepScheduler:
    """A fresh diffusers DPM-Solver++ 2M scheduler, set to ``num_inference_steps``.

    Same noise schedule as the reference (scaled-linear betas, eps prediction), "trailing"
    timesteps (the first step at t = 999, the last one down to t = 0; "leading" spacing stops
    at t = 48 for 20 steps and lands measurably farther from the converged solution),
    first-order final step (stable at few steps). Fresh per call: the scheduler keeps the
    previous model outputs as state.
    """
    scheduler = DPMSolverMultistepScheduler(
        num_train_timesteps=config.num_train_timesteps,
        beta_start=config.beta_start,
        beta_end=config.beta_end,
        beta_schedule="scaled_linear",
        prediction_type="epsilon",
        algorithm_type="dpmsolver++",
        solver_order=2,
        lower_order_final=True,
        timestep_spacing="trailing",
    )
    scheduler.set_timesteps(num_inference_steps)
    return scheduler
