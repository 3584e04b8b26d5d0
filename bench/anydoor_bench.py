"""Cost of AnyDoor sampling: time per DDIM step (batched vs two-pass CFG) and peak memory.

    OMP_NUM_THREADS=1 .venv/bin/python bench/anydoor_bench.py              # tiny model, CPU
    OMP_NUM_THREADS=2 .venv/bin/python bench/anydoor_bench.py --full       # + full size, CPU
    .venv/bin/python bench/anydoor_bench.py --device cuda                  # full size, fp16 GPU

All weights are random (no checkpoint needed): costs do not depend on the values.

* CPU, tiny: per-step time of ``AnyDoorPipeline.sample`` with batched and two-pass CFG, one
  whole call, peak RSS.
* CPU, ``--full``: the released sizes (UNet 866 M + ControlNet 364 M + VAE 84 M) in fp32 (or
  ``--dtype bf16``), ``--steps`` steps of each CFG mode (default 1). The 1.14 B-parameter DINOv2
  is replaced by a small stand-in and the ID tokens are random ``(1, 257, 1024)``, which keeps
  RAM near 6 GB; DINOv2-g costs ~4.3 s per 224 image on these CPUs (docs/stack-notes).
  Roughly 20 s per two-pass step on 2 cores.
* ``--device cuda``: the whole full-size model in fp16 (``--dtype``), one whole 50-step call
  (``--steps``) with batched CFG, the same with two-pass CFG, the same with the ID extractor
  offloaded to the CPU, and per-step times; peak CUDA memory (``max_memory_allocated``) for
  each. A few minutes at most on a recent GPU. ``--config tiny`` runs the same code on the tiny
  model (a dry run of this mode on any device).
"""

from __future__ import annotations

import argparse
import gc
import resource
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np
import torch

from tryon.anydoor.config import AnyDoorConfig
from tryon.anydoor.models import (
    AnyDoorComponents,
    IDExtractor,
    build_components,
    randomize_parameters,
)
from tryon.anydoor.pipeline import AnyDoorPipeline
from tryon.anydoor.sampling import DDIMSchedule

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
GIB = 1024**3


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GIB


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], device: torch.device) -> tuple[float, Any]:
    sync(device)
    t0 = time.perf_counter()
    out = fn()
    sync(device)
    return time.perf_counter() - t0, out


def random_components(
    config: AnyDoorConfig, device: torch.device, *, with_dino: bool = True, seed: int = 0
) -> AnyDoorComponents:
    """Full-size-capable random build: meta tensors materialised straight on ``device``."""
    components = build_components(config, empty=True)
    if not with_dino:
        # a stand-in so the pipeline can be built; the bench feeds random tokens instead
        stand_in = AnyDoorConfig.tiny(projector_out=config.cross_attention_dim)
        components.id_extractor = IDExtractor(stand_in)
    for module in components.modules().values():
        if any(p.is_meta for p in module.parameters()):
            module.to_empty(device=device)
    # to_empty leaves the non-persistent ImageNet mean/std buffers uninitialised
    components.id_extractor.reset_buffers()
    randomize_parameters(components, seed=seed)
    return components


def synthetic_inputs(target_hw: tuple[int, int]) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    h, w = target_hw
    ref = rng.integers(0, 256, (480, 360, 3), dtype=np.uint8)
    ref_mask = np.zeros((480, 360), np.uint8)
    ref_mask[40:440, 40:320] = 1
    target = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    target_mask = np.zeros((h, w), np.uint8)
    target_mask[h // 4 : h * 3 // 4, w // 4 : w * 3 // 4] = 1
    return {
        "reference_image": ref,
        "reference_mask": ref_mask,
        "target_image": target,
        "target_mask": target_mask,
    }


def step_times(
    pipe: AnyDoorPipeline, steps: int, tokens: torch.Tensor, uncond: torch.Tensor
) -> dict[str, float]:
    """Seconds per DDIM step of ``pipe.sample`` for batched and two-pass CFG (after a warm-up)."""
    cfg, dev = pipe.config, pipe.device
    gen = torch.Generator().manual_seed(0)
    latents = torch.randn(pipe.latent_shape(1), generator=gen)
    hint = (torch.rand(1, 4, cfg.image_size, cfg.image_size, generator=gen) * 2 - 1).to(dev)
    n_steps = len(DDIMSchedule.from_config(cfg, steps))
    out: dict[str, float] = {}
    for mode, batched in (("batched", True), ("two_pass", False)):
        run = partial(pipe.sample, latents, hint, tokens, uncond, batched_cfg=batched)
        timed(partial(run, 1), dev)  # warm-up: kernels, allocator
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats(dev)
        seconds, _ = timed(partial(run, steps), dev)
        out[f"{mode}_s_per_step"] = seconds / n_steps
        if dev.type == "cuda":
            out[f"{mode}_peak_gib"] = torch.cuda.max_memory_allocated(dev) / GIB
    return out


def param_gib(components: AnyDoorComponents, dtype: torch.dtype) -> dict[str, float]:
    size = torch.tensor([], dtype=dtype).element_size()
    return {k: v * size / GIB for k, v in components.num_parameters().items()}


def report(title: str, values: dict[str, Any]) -> None:
    print(f"\n== {title}")
    for key, value in values.items():
        shown = f"{value:.4f}" if isinstance(value, float) else str(value)
        print(f"  {key:<34} {shown}")


# ---------------------------------------------------------------------------------------------


def bench_cpu_tiny(steps: int) -> None:
    device = torch.device("cpu")
    components = random_components(AnyDoorConfig.tiny(), device)
    pipe = AnyDoorPipeline(components)
    ref = torch.rand(1, 3, 28, 28)
    tokens, uncond = pipe.encode_reference(ref), pipe.unconditional_tokens(1)
    values: dict[str, Any] = {"steps": steps, **step_times(pipe, steps, tokens, uncond)}
    values["batched_over_two_pass"] = values["batched_s_per_step"] / values["two_pass_s_per_step"]
    seconds, _ = timed(
        lambda: pipe(**synthetic_inputs((160, 120)), num_inference_steps=steps), device
    )
    values["whole_call_s"] = seconds
    values["peak_rss_gib"] = peak_rss_gib()
    report(f"tiny model, CPU fp32, {torch.get_num_threads()} threads", values)


def bench_cpu_full(steps: int, dtype: torch.dtype) -> None:
    device = torch.device("cpu")
    config = AnyDoorConfig()
    t0 = time.perf_counter()
    components = random_components(config, device, with_dino=False)
    pipe = AnyDoorPipeline(components, dtype=dtype)
    build_s = time.perf_counter() - t0
    gen = torch.Generator().manual_seed(1)
    shape = (1, config.num_tokens, config.cross_attention_dim)
    tokens = torch.randn(shape, generator=gen).to(dtype)
    uncond = torch.randn(shape, generator=gen).to(dtype)
    values: dict[str, Any] = {"steps": steps, "build_and_random_init_s": build_s}
    values |= step_times(pipe, steps, tokens, uncond)
    values["batched_over_two_pass"] = values["batched_s_per_step"] / values["two_pass_s_per_step"]
    values["peak_rss_gib"] = peak_rss_gib()
    name = {v: k for k, v in DTYPES.items()}[dtype]
    report(f"full size (no DINOv2), CPU {name}, {torch.get_num_threads()} threads", values)


def bench_device(
    device: torch.device, dtype: torch.dtype, config: AnyDoorConfig, steps: int
) -> None:
    is_cuda = device.type == "cuda"
    t0 = time.perf_counter()
    components = random_components(config, device)  # float32; the pipeline casts
    sync(device)
    build_s = time.perf_counter() - t0
    name = {v: k for k, v in DTYPES.items()}[dtype]
    report(
        f"parameters ({name})",
        {f"{k}_gib": v for k, v in param_gib(components, dtype).items()}
        | {"total_gib": sum(param_gib(components, dtype).values()), "build_s": build_s},
    )
    inputs = synthetic_inputs((768, 576))
    gen_seed = 0

    def whole_call(pipe: AnyDoorPipeline, batched: bool) -> dict[str, float]:
        pipe(**inputs, num_inference_steps=2, batched_cfg=batched)  # warm-up
        gc.collect()
        if is_cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
        seconds, _ = timed(
            lambda: pipe(
                **inputs,
                num_inference_steps=steps,
                batched_cfg=batched,
                generator=torch.Generator().manual_seed(gen_seed),
            ),
            device,
        )
        out = {"call_s": seconds}
        if is_cuda:
            out["peak_gib"] = torch.cuda.max_memory_allocated(device) / GIB
            out["resident_after_gib"] = torch.cuda.memory_allocated(device) / GIB
        return out

    pipe = AnyDoorPipeline(components, device=device, dtype=dtype)
    tokens = pipe.encode_reference(torch.rand(1, 3, config.reference_size, config.reference_size))
    uncond = pipe.unconditional_tokens(1)
    per_step = step_times(pipe, min(steps, 20), tokens, uncond)
    report(f"{config.image_size} px, {name}, per DDIM step (sample loop only)", per_step)
    report(f"whole call, {steps} steps, batched CFG, all on {device}", whole_call(pipe, True))
    report(f"whole call, {steps} steps, two-pass CFG, all on {device}", whole_call(pipe, False))

    # same components, ID extractor kept on the CPU between encodes
    offloaded = AnyDoorPipeline(components, device=device, dtype=dtype, offload_id_extractor=True)
    del pipe
    gc.collect()
    for mode, batched in (("batched", True), ("two-pass", False)):
        values = whole_call(offloaded, batched)
        report(f"whole call, {steps} steps, {mode} CFG, ID extractor offloaded", values)
    report("host", {"peak_rss_gib": peak_rss_gib()})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument("--full", action="store_true", help="CPU: also time the full-size model")
    parser.add_argument("--steps", type=int, default=None, help="DDIM steps per measurement")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default=None)
    parser.add_argument("--config", choices=("full", "tiny"), default="full", help="device mode")
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cpu" and args.config == "full":
        bench_cpu_tiny(args.steps or 20)
        if args.full:
            bench_cpu_full(args.steps or 1, DTYPES[args.dtype or "fp32"])
        return
    dtype = DTYPES[args.dtype or ("fp16" if device.type == "cuda" else "fp32")]
    config = AnyDoorConfig() if args.config == "full" else AnyDoorConfig.tiny()
    print(f"torch {torch.__version__}, device {device}", end="")
    if device.type == "cuda":
        print(f" ({torch.cuda.get_device_name(device)})", end="")
    print()
    bench_device(device, dtype, config, args.steps or 50)


if __name__ == "__main__":
    main()
