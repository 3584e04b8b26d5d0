"""The AnyDoor training loop (reference §5), on Hugging Face ``accelerate``.

:func:`train` is a sequence of named steps; each lives where its subject does:

1. :func:`check_launch`: refuse a multi-process launch that would run independent copies;
2. the model and what trains (:mod:`~tryon.anydoor.training.objective`);
3. the data (:mod:`~tryon.anydoor.training.mix`, :mod:`~tryon.anydoor.training.batches`),
   sized from the model and checked against it before the first step;
4. optimiser and lr schedule; 5. resume (:mod:`~tryon.anydoor.training.checkpoints`);
6. the fixed validation batch (:mod:`~tryon.anydoor.training.validation`);
7. the steps: loss, backward, optimiser step, then log / checkpoint / validate;
8. the final checkpoint and the exported engine folder.

Randomness of a step (posterior sample, noise) comes from a generator seeded with
``(seed, step, micro-batch, process)``, data order from ``(seed, epoch)`` and each sample
from its draw, so a resumed run repeats the uninterrupted one.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from tryon.anydoor.config import AnyDoorConfig
from tryon.anydoor.models import AnyDoorComponents
from tryon.anydoor.training.batches import (
    EpochShuffleSampler,
    SkipTally,
    check_sample_sizes,
    collate_training,
    iterate_batches,
)
from tryon.anydoor.training.checkpoints import (
    load_checkpoint,
    register_hooks,
    resolve_resume,
    save_checkpoint,
)
from tryon.anydoor.training.objective import (
    Denoiser,
    configure_trainable,
    denoising_loss,
    noise_schedule,
    step_generator,
)
from tryon.anydoor.training.runlog import RunLog
from tryon.anydoor.training.trainconfig import TrainConfig
from tryon.anydoor.training.validation import validate, validation_batch
from tryon.errors import ConfigError

log = logging.getLogger(__name__)

#: ``progress(step, total_steps, loss)`` after each optimiser step (the CLI's tqdm bar)
ProgressFn = Callable[[int, int, float], None]


@dataclass(frozen=True)
class TrainResult:
    """``losses``: ``(step, loss)`` for each optimiser step run in this call (loss averaged
    over micro-batches and processes); ``checkpoint``: the last checkpoint folder written;
    ``export_dir``: the exported engine folder, or None; ``skipped``: pairs the datasets
    rejected while building this call's batches, by reason (main process)."""

    step: int
    losses: tuple[tuple[int, float], ...]
    checkpoint: Path | None
    export_dir: Path | None
    resumed_from: Path | None
    skipped: dict[str, int] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------
# 1-4. Set-up steps
# ---------------------------------------------------------------------------------------------


def check_launch(env: Mapping[str, str] | None = None) -> None:
    """Refuse a multi-process launch without CUDA.

    ``torchrun --nproc_per_node N`` (or ``accelerate launch``) on a machine without CUDA
    starts N processes that each see a one-process world, so they would train N independent
    copies into the same output folder. Multi-process training needs CUDA here.

    Raises:
        ConfigError: ``WORLD_SIZE`` > 1 and CUDA is not available.
    """
    env = os.environ if env is None else env
    try:
        world = int(env.get("WORLD_SIZE", "1"))
    except ValueError:
        raise ConfigError(f"WORLD_SIZE must be an integer, got {env['WORLD_SIZE']!r}.") from None
    if world > 1 and not torch.cuda.is_available():
        raise ConfigError(
            f"launched as {world} processes (WORLD_SIZE={world}) but CUDA is not available: "
            "each process would train its own copy into the same output folder. Run one "
            "process (`tryon train ...`) on CPU, or launch on CUDA GPUs."
        )


def _check_world(accelerator: Any) -> None:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and accelerator.num_processes != world:
        raise ConfigError(
            f"launched as {world} processes but accelerate sees {accelerator.num_processes}: "
            "the processes would train independent copies into the same output folder."
        )


def _prepare_model(
    config: TrainConfig, components: AnyDoorComponents | None, device: torch.device
) -> tuple[AnyDoorComponents, Denoiser, list[nn.Parameter]]:
    """Load or take the components, mark what trains, move them; returns the trainable graph
    and its parameters."""
    if components is None:
        from tryon.anydoor.training.init import init_components

        components = init_components(config.model)
    configure_trainable(components)
    if config.train.gradient_checkpointing:
        components.unet.enable_gradient_checkpointing()
        components.controlnet.enable_gradient_checkpointing()
    frozen: list[Any] = [components.vae, components.id_extractor]
    for module in frozen:
        module.to(device).eval()
    denoiser = Denoiser(components).to(device)
    denoiser.unet.train()
    denoiser.controlnet.train()
    params = [p for p in denoiser.parameters() if p.requires_grad]
    log.info(
        "trainable parameters: %.1f M of %.1f M",
        sum(p.numel() for p in params) / 1e6,
        sum(sum(p.numel() for p in m.parameters()) for m in components.modules().values()) / 1e6,
    )
    return components, denoiser, params


def model_sizes(model: AnyDoorConfig) -> tuple[int, int]:
    """``(reference_size, image_size)``: the pair sizes a model of this config reads."""
    return model.reference_size, model.image_size


def _prepare_data(
    config: TrainConfig, model: AnyDoorConfig, dataset: Dataset[Any] | None, num_processes: int
) -> Dataset[Any]:
    """Build the training set at the model's sizes (or take ``dataset``) and check its first
    sample against the model, so a mismatch fails before the first step."""
    if dataset is None:
        from tryon.anydoor.training.mix import build_mix

        dataset = build_mix(config.data, sizes=model_sizes(model))
    n_items = len(dataset)  # type: ignore[arg-type]
    batch = config.train.batch_size
    if n_items < batch * num_processes:
        raise ConfigError(
            f"the dataset has {n_items} items, fewer than one batch on every process "
            f"({batch} x {num_processes})."
        )
    check_sample_sizes(dataset[0], model)
    return dataset


def _optimizer(config: TrainConfig, params: list[nn.Parameter], num_processes: int) -> Any:
    """AdamW and the lr schedule (the prepared scheduler steps once per process per step)."""
    from diffusers.optimization import get_scheduler

    tc = config.train
    optimizer = torch.optim.AdamW(
        params,
        lr=tc.lr,
        betas=(tc.adam_beta1, tc.adam_beta2),
        weight_decay=tc.weight_decay,
        eps=tc.adam_epsilon,
    )
    lr_scheduler = get_scheduler(
        tc.lr_scheduler,
        optimizer=optimizer,
        num_warmup_steps=tc.lr_warmup_steps * num_processes,
        num_training_steps=tc.steps * num_processes,
    )
    return optimizer, lr_scheduler


# ---------------------------------------------------------------------------------------------
# 7. One optimiser step
# ---------------------------------------------------------------------------------------------


@dataclass
class _Run:
    """The prepared objects of a run, passed between the steps of :func:`train`."""

    config: TrainConfig
    accelerator: Any
    components: AnyDoorComponents
    denoiser: Any
    params: list[nn.Parameter]
    optimizer: Any
    lr_scheduler: Any
    scheduler: Any
    batches_per_epoch: int
    skips: SkipTally = field(default_factory=SkipTally)

    def state(self) -> dict[str, Any]:
        """What ``trainer_state.json`` records besides the step."""
        tc = self.config.train
        return {
            "batches_per_epoch": self.batches_per_epoch,
            "batch_size": tc.batch_size,
            "world_size": self.accelerator.num_processes,
            "seed": self.config.seed,
            "anydoor_config": self.components.config.to_dict(),
        }


def _optimizer_step(run: _Run, step: int, data: Iterator[dict[str, Any]]) -> float:
    """Run ``grad_accum`` micro-batches and one optimiser step; returns the mean loss."""
    tc, acc = run.config.train, run.accelerator
    device = acc.device
    total = torch.zeros((), device=device)
    for micro in range(tc.grad_accum):
        batch = next(data)
        run.skips.add(batch)
        gen = step_generator(run.config.seed, step, micro, acc.process_index, device)
        sync = micro == tc.grad_accum - 1
        ctx = contextlib.nullcontext() if sync else acc.no_sync(run.denoiser)
        with ctx:
            loss = denoising_loss(
                run.denoiser, run.components, batch, run.scheduler, gen, device=device,
                autocast=acc.autocast, sample_posterior=tc.sample_posterior,
            )
            acc.backward(loss / tc.grad_accum)
        total += loss.detach() / tc.grad_accum
    if tc.max_grad_norm > 0:
        acc.clip_grad_norm_(run.params, tc.max_grad_norm)
    run.optimizer.step()
    run.lr_scheduler.step()
    run.optimizer.zero_grad(set_to_none=True)
    return float(acc.reduce(total, reduction="mean"))


def _log_step(run: _Run, logger: RunLog, step: int, loss: float, steps_per_s: float) -> None:
    logger.write(step, {
        "train/loss": loss,
        "train/lr": float(run.lr_scheduler.get_last_lr()[0]),
        "train/steps_per_s": steps_per_s,
        **run.skips.metrics(),
    })
    if run.skips.total:
        log.info("step %d: %s", step, run.skips.summary())


# ---------------------------------------------------------------------------------------------
# The loop
# ---------------------------------------------------------------------------------------------


def train(
    config: TrainConfig,
    *,
    components: AnyDoorComponents | None = None,
    dataset: Dataset[Any] | None = None,
    validation_samples: Sequence[Any] | None = None,
    progress: ProgressFn | None = None,
) -> TrainResult:
    """Run (or resume) a training run described by ``config``.

    ``components`` defaults to :func:`~tryon.anydoor.training.init.init_components` of
    ``config.model``; ``dataset`` to :func:`~tryon.anydoor.training.mix.build_mix` of
    ``config.data`` at the model's sizes; ``validation_samples`` to the first
    ``config.validation.num_samples`` items of ``config.validation.data`` (a data mapping) or
    of ``dataset``. On resume the components must be initialised as in the first run (the
    checkpoint holds only the trainable tensors). Run under ``accelerate launch`` for several
    GPUs or nodes.

    Raises:
        ConfigError: a multi-process launch without CUDA, samples of the wrong size for the
            model, too little data, or a checkpoint of another model.
        TrainingDataError: the datasets rejected every pair they tried.
    """
    from accelerate import Accelerator
    from accelerate.utils import ProjectConfiguration, set_seed

    tc, out = config.train, Path(config.output_dir)
    # 1. Launch
    check_launch()
    accelerator = Accelerator(
        mixed_precision=tc.precision,
        # accumulation is done by hand (no_sync + one optimiser step per `grad_accum`
        # micro-batches) so that step counting never depends on dataloader boundaries
        gradient_accumulation_steps=1,
        project_config=ProjectConfiguration(project_dir=str(out)),
    )
    _check_world(accelerator)
    device = accelerator.device
    set_seed(config.seed)

    # 2. Model
    components, denoiser, params = _prepare_model(config, components, device)
    # 3. Data (sized from the model, checked before the first step)
    try:
        dataset = _prepare_data(config, components.config, dataset, accelerator.num_processes)
    except BaseException:
        denoiser.remove_hooks()  # leave the caller's components as they came
        raise
    sampler = EpochShuffleSampler(len(dataset), seed=config.seed)  # type: ignore[arg-type]
    loader = DataLoader(
        dataset, batch_size=tc.batch_size, sampler=sampler, collate_fn=collate_training,
        num_workers=tc.num_workers, drop_last=True, pin_memory=device.type == "cuda",
    )
    # 4. Optimiser and lr schedule
    optimizer, lr_scheduler = _optimizer(config, params, accelerator.num_processes)
    denoiser, optimizer, loader, lr_scheduler = accelerator.prepare(
        denoiser, optimizer, loader, lr_scheduler
    )
    run = _Run(config, accelerator, components, denoiser, params, optimizer, lr_scheduler,
               noise_schedule(components.config), len(loader))
    hooks = register_hooks(accelerator)
    logger: RunLog | None = None
    try:
        # 5. Resume
        step = 0
        resumed_from = resolve_resume(config.resume, out)
        if resumed_from is not None:
            step = load_checkpoint(accelerator, resumed_from, components.config,
                                   batch_size=tc.batch_size)
        # 6. Validation batch (fixed) and the run log, cut back to the resumed step
        val_batch = None
        if accelerator.is_main_process:
            if config.validation.every > 0:
                val_batch = validation_batch(config, dataset, validation_samples,
                                             sizes=model_sizes(components.config))
            logger = RunLog(out, start_step=step, tensorboard=config.log.tensorboard)

        # 7. Train
        result = _train_steps(run, logger, val_batch, progress, step,
                              iterate_batches(accelerator, loader, sampler, dataset,
                                              step * tc.grad_accum))
        # 8. Export the engine folder
        export_dir = None
        if config.export and accelerator.is_main_process:
            from tryon.anydoor.training.init import export_model

            export_dir = export_model(components, out / "model")
        accelerator.wait_for_everyone()
    finally:
        for handle in hooks:
            handle.remove()
        accelerator.unwrap_model(denoiser).remove_hooks()
        if logger is not None:
            logger.close()
        accelerator.end_training()
    return TrainResult(
        step=result.step, losses=result.losses, checkpoint=result.checkpoint,
        export_dir=export_dir, resumed_from=resumed_from, skipped=dict(run.skips.reasons),
    )


def _train_steps(
    run: _Run,
    logger: RunLog | None,
    val_batch: dict[str, Any] | None,
    progress: ProgressFn | None,
    step: int,
    data: Iterator[dict[str, Any]],
) -> TrainResult:
    """Step 7: optimiser steps from ``step`` to ``train.steps``, each followed by logging,
    checkpointing and validation when due; ends with a checkpoint of the last step."""
    config, acc = run.config, run.accelerator
    tc, out = config.train, Path(config.output_dir)
    losses: list[tuple[int, float]] = []
    last_checkpoint: Path | None = None
    t0 = time.perf_counter()
    while step < tc.steps:
        mean_loss = _optimizer_step(run, step, data)
        step += 1
        if not math.isfinite(mean_loss):
            log.warning("non-finite loss at step %d", step)
        losses.append((step, mean_loss))
        if logger is not None and (step % config.log.every == 0 or step == tc.steps):
            elapsed = time.perf_counter() - t0
            _log_step(run, logger, step, mean_loss, len(losses) / elapsed if elapsed > 0 else 0.0)
        if progress is not None and acc.is_main_process:
            progress(step, tc.steps, mean_loss)
        if config.checkpoint.every > 0 and step % config.checkpoint.every == 0:
            last_checkpoint = save_checkpoint(acc, out, step, keep_last=config.checkpoint.keep_last,
                                              state=run.state())
        if config.validation.every > 0 and step % config.validation.every == 0:
            if acc.is_main_process and val_batch is not None and logger is not None:
                val_loss = validate(
                    step, config=config, components=run.components,
                    denoiser=acc.unwrap_model(run.denoiser), batch=val_batch,
                    scheduler=run.scheduler, device=acc.device, autocast=acc.autocast,
                )
                logger.write(step, {"val/loss": val_loss})
            acc.wait_for_everyone()
    if last_checkpoint is None or not last_checkpoint.name.endswith(f"{step:07d}"):
        last_checkpoint = save_checkpoint(acc, out, step, keep_last=config.checkpoint.keep_last,
                                          state=run.state())
    if run.skips.total:
        log.info("%s", run.skips.summary())
    return TrainResult(step=step, losses=tuple(losses), checkpoint=last_checkpoint,
                       export_dir=None, resumed_from=None)


__all__ = ["ProgressFn", "TrainResult", "check_launch", "model_sizes", "train"]
