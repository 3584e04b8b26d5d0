"""LDM "uniform" DDIM: timesteps and the eta=0 update against the reference formulas."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler

from tryon.anydoor.config import AnyDoorConfig
from tryon.anydoor.sampling import (
    DDIMSchedule,
    configure_diffusers_scheduler,
    ldm_alphas_cumprod,
    ldm_timesteps,
)


def test_timesteps_50() -> None:
    ts = ldm_timesteps(50)
    assert len(ts) == 50
    assert ts[:3].tolist() == [981, 961, 941] and ts[-2:].tolist() == [21, 1]
    assert (np.diff(ts) == -20).all()


def test_timesteps_30_has_31_steps() -> None:
    ts = ldm_timesteps(30)
    assert len(ts) == 31  # range(0, 1000, 33) has 31 elements (pitfall 3)
    assert ts[:3].tolist() == [991, 958, 925] and ts[-3:].tolist() == [67, 34, 1]
    assert (np.diff(ts) == -33).all()


def test_timesteps_25() -> None:
    ts = ldm_timesteps(25)
    assert len(ts) == 25
    assert ts[0] == 961 and ts[-1] == 1 and (np.diff(ts) == -40).all()


@pytest.mark.parametrize(
    ("steps", "expected"), [(3, [667, 334, 1]), (1000, list(range(999, 0, -1)))]
)
def test_timesteps_never_index_past_the_table(steps: int, expected: list[int]) -> None:
    # range(0, 1000, c) + 1 reaches 1000 when c divides 999; the reference would crash there
    assert ldm_timesteps(steps).tolist() == expected
    assert len(DDIMSchedule.create(steps)) == len(expected)


@pytest.mark.parametrize("steps", [50, 25, 20, 100])
def test_timesteps_match_diffusers_leading_where_1000_divides(steps: int) -> None:
    sched = DDIMScheduler(**AnyDoorConfig().scheduler_kwargs())
    sched.set_timesteps(steps)
    assert ldm_timesteps(steps).tolist() == sched.timesteps.tolist()


def test_timesteps_differ_from_diffusers_for_30() -> None:
    sched = DDIMScheduler(**AnyDoorConfig().scheduler_kwargs())
    sched.set_timesteps(30)
    assert len(sched.timesteps) == 30 and len(ldm_timesteps(30)) == 31


@pytest.mark.parametrize("bad", [0, -1, 1001])
def test_timesteps_reject_bad_counts(bad: int) -> None:
    with pytest.raises(ValueError, match="num_inference_steps"):
        ldm_timesteps(bad)


def test_alphas_are_the_ldm_float64_table() -> None:
    # LDM: betas = linspace(sqrt b0, sqrt b1, 1000, float64) ** 2; cumprod(1 - betas); float32
    betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float64) ** 2
    expected = torch.cumprod(1.0 - betas, dim=0).float().numpy()
    np.testing.assert_array_equal(ldm_alphas_cumprod(), expected)
    # diffusers builds it in float32: close, not identical
    sched = DDIMScheduler(**AnyDoorConfig().scheduler_kwargs())
    np.testing.assert_allclose(ldm_alphas_cumprod(), sched.alphas_cumprod.numpy(), rtol=2e-4)


def _fake_eps(x: torch.Tensor, t: int) -> torch.Tensor:
    """A deterministic stand-in for the network that depends on x and t."""
    return 0.3 * torch.tanh(x) + 0.01 * (t % 17) - 0.05


def _reference_ddim(x: torch.Tensor, steps: int) -> torch.Tensor:
    """ldm DDIMSampler, eta 0, written from the reference (§3), in float64."""
    c = 1000 // steps
    ddim_ts = np.asarray(list(range(0, 1000, c))) + 1
    alphacums = torch.from_numpy(ldm_alphas_cumprod()).double()
    alphas = alphacums[ddim_ts]
    alphas_prev = torch.cat([alphacums[:1], alphacums[ddim_ts[:-1]]])
    x = x.double()
    for index in reversed(range(len(ddim_ts))):
        t = int(ddim_ts[index])
        e_t = _fake_eps(x.float(), t).double()
        a_t, a_prev = alphas[index], alphas_prev[index]
        pred_x0 = (x - (1 - a_t).sqrt() * e_t) / a_t.sqrt()
        dir_xt = (1.0 - a_prev).sqrt() * e_t
        x = a_prev.sqrt() * pred_x0 + dir_xt
    return x


@pytest.mark.parametrize("steps", [50, 30, 25])
def test_ddim_loop_equals_the_reference_formula(steps: int) -> None:
    x_t = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(steps))
    schedule = DDIMSchedule.create(steps)
    x = x_t.clone()
    for i, t in enumerate(schedule.timesteps.tolist()):
        x = schedule.step(_fake_eps(x, t), i, x)
    expected = _reference_ddim(x_t, steps).float()
    torch.testing.assert_close(x, expected, rtol=1e-4, atol=1e-4)
    # the last step lands on alphas_cumprod[0]; the one before lands on t = 1
    table = ldm_alphas_cumprod()
    assert schedule.alphas_prev[-1] == table[0]
    assert schedule.alphas_prev[-2] == table[1]
    assert schedule.alphas[0] == table[schedule.timesteps[0]]


@pytest.mark.parametrize("steps", [50, 30, 25])
def test_diffusers_scheduler_configured_to_ldm_timesteps_agrees(steps: int) -> None:
    sched = DDIMScheduler(**AnyDoorConfig().scheduler_kwargs())
    configure_diffusers_scheduler(sched, steps)
    assert sched.timesteps.tolist() == ldm_timesteps(steps).tolist()
    x_t = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    x = x_t.clone()
    for t in sched.timesteps.tolist():
        x = sched.step(_fake_eps(x, t), t, x, eta=0.0).prev_sample
    # float32 alphas in diffusers vs float64-derived ones here
    torch.testing.assert_close(x, _reference_ddim(x_t, steps).float(), rtol=2e-3, atol=2e-3)


def test_step_keeps_half_precision_latents_in_their_dtype() -> None:
    schedule = DDIMSchedule.create(10)
    x = torch.randn(1, 4, 8, 8).half()
    out = schedule.step(torch.zeros_like(x), 0, x)
    assert out.dtype == torch.float16
    # eps = 0 -> x_prev = sqrt(a_prev / a_t) * x_t
    ratio = float(np.sqrt(schedule.alphas_prev[0] / schedule.alphas[0]))
    torch.testing.assert_close(out.float(), (x.float() * ratio).half().float())
