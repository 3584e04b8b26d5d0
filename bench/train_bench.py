"""AnyDoor training throughput: optimiser steps per second and peak memory.

Runs the training loop's own pieces (:func:`~tryon.anydoor.training.objective.configure_trainable`,
:class:`~tryon.anydoor.training.objective.Denoiser`, :func:`~tryon.anydoor.training.objective.denoising_loss`,
AdamW over the trainable parameters) on a random model and random batches; nothing is written.

    OMP_NUM_THREADS=1 .venv/bin/python bench/train_bench.py                # tiny, CPU, batch 1
    .venv/bin/python bench/train_bench.py --full --steps 1                 # full size, CPU
    .venv/bin/python bench/train_bench.py --device cuda                    # full, batch 4, bf16,
                                                                           # grad checkpointing

Peak memory: process peak RSS on CPU (includes building the model); on CUDA
``torch.cuda.max_memory_allocated`` over the measured steps (model, optimiser state,
activations). The first step (allocator warm-up, lazy init) is not timed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import resource
import time

import torch

from tryon.anydoor.config import AnyDoorConfig
from tryon.anydoor.models import build_components, randomize_parameters
from tryon.anydoor.training import objective as L


def random_batch(config: AnyDoorConfig, batch: int, gen: torch.Generator) -> dict[str, torch.Tensor]:
    s, t = config.reference_size, config.image_size
    return {
        "ref": torch.rand(batch, 3, s, s, generator=gen),
        "hint": torch.rand(batch, 4, t, t, generator=gen) * 2 - 1,
        "jpg": torch.rand(batch, 3, t, t, generator=gen) * 2 - 1,
        "time_steps": torch.randint(0, config.num_train_timesteps, (batch,), generator=gen),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="official sizes (2.45 B parameters)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--batch", type=int, default=None, help="default 1 on CPU, 4 on CUDA")
    parser.add_argument("--steps", type=int, default=None, help="timed steps (default 3 CPU, 10 CUDA)")
    parser.add_argument("--precision", default=None, choices=["no", "fp16", "bf16"],
                        help="default no on CPU, bf16 on CUDA")
    parser.add_argument("--dino-standin", action="store_true",
                        help="replace the frozen DINOv2-g (1.14 B params, 4.5 GB fp32) by random "
                             "hidden states: it runs under no_grad and only feeds the projector, "
                             "so this keeps the step's trainable work and fits full size in 24 GB RAM")
    parser.add_argument("--checkpointing", action="store_true",
                        help="CPU: enable gradient checkpointing (always on for CUDA)")
    parser.add_argument("--no-checkpointing", action="store_true",
                        help="CUDA: disable gradient checkpointing (on by default there)")
    args = parser.parse_args()

    cuda = args.device == "cuda"
    full = args.full or cuda
    batch = args.batch or (4 if cuda else 1)
    steps = args.steps or (10 if cuda else 3)
    precision = args.precision or ("bf16" if cuda else "no")
    checkpointing = (cuda or args.checkpointing) and not args.no_checkpointing
    device = torch.device(args.device)
    config = AnyDoorConfig() if full else AnyDoorConfig.tiny()

    t0 = time.perf_counter()
    with torch.device(device):
        components = build_components(config)
    if not full:
        randomize_parameters(components, seed=0)
    build_s = time.perf_counter() - t0
    if args.dino_standin:
        hidden = config.projector_in
        del components.id_extractor.dino
        components.id_extractor.dino = torch.nn.Identity()

        def standin(_extractor: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
            return torch.randn(images.shape[0], config.num_tokens, hidden, device=images.device)

        L.dino_hidden_states = standin  # type: ignore[assignment]
    L.configure_trainable(components)
    if checkpointing:
        components.unet.enable_gradient_checkpointing()
        components.controlnet.enable_gradient_checkpointing()
    denoiser = L.Denoiser(components).to(device)
    denoiser.unet.train()
    denoiser.controlnet.train()
    params = [p for p in denoiser.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-5)
    scheduler = L.noise_schedule(config)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)

    def autocast() -> contextlib.AbstractContextManager[object]:
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device.type, dtype=dtype)

    scaler = torch.amp.GradScaler(device.type) if precision == "fp16" else None
    gen = torch.Generator().manual_seed(0)
    batches = [random_batch(config, batch, gen) for _ in range(2)]

    def step(i: int) -> float:
        g = L.step_generator(0, i, 0, 0, device)
        loss = L.denoising_loss(denoiser, components, batches[i % 2], scheduler, g, device=device,
                                autocast=autocast)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return float(loss.detach())

    step(0)  # warm-up, untimed
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    losses = [step(i + 1) for i in range(steps)]
    if cuda:
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - t0
    peak = (torch.cuda.max_memory_allocated() if cuda
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    result = {
        "model": "full" if full else "tiny",
        "device": str(device) + (f" ({torch.cuda.get_device_name()})" if cuda else ""),
        "batch": batch,
        "precision": precision,
        "gradient_checkpointing": checkpointing,
        "trainable_params_M": round(sum(p.numel() for p in params) / 1e6, 1),
        "total_params_M": round(sum(sum(p.numel() for p in m.parameters())
                                    for m in components.modules().values()) / 1e6, 1),
        "build_s": round(build_s, 1),
        "timed_steps": steps,
        "steps_per_s": round(steps / elapsed, 4),
        "s_per_step": round(elapsed / steps, 3),
        "samples_per_s": round(steps * batch / elapsed, 3),
        "peak_memory_GiB": round(peak / 2**30, 3),
        "peak_memory_kind": "cuda max_memory_allocated" if cuda else "process peak RSS",
        "losses_finite": all(v == v and abs(v) != float("inf") for v in losses),
        "torch_threads": torch.get_num_threads(),
        "dino_standin": args.dino_standin,
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
