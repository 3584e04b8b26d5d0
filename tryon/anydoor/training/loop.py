"""The AnyDoor training loop (reference §5), on Hugging Face ``accelerate``.

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
dropout (pitfall 7). Randomness of a step (posterior sample, noise) comes from a generator
seeded with ``(seed, step, micro-batch, process)``, and data order from ``(seed, epoch)``, so a
resumed run repeats the uninterrupted one.

Checkpoints (``output_dir/checkpoints/step_XXXXXXX``): ``accelerate``'s ``save_state``
(optimiser, lr scheduler, grad scaler, python/numpy/torch RNG states) with the model part
replaced by ``trainable.safetensors`` (trainable tensors only; the frozen ones come from the
initialisation), plus ``trainer_state.json`` (step, data position).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import shutil
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Sampler

from tryon.anydoor.config import AnyDoorConfig
from tryon.anydoor.models import AnyDoorComponents
from tryon.anydoor.training.trainconfig import TrainConfig
from tryon.errors import ConfigError, WeightsError

log = logging.getLogger(__name__)

TRAINABLE_FILENAME = "trainable.safetensors"
STATE_FILENAME = "trainer_state.json"
CHECKPOINT_PREFIX = "step_"
UNET_DECODER = ("up_blocks", "conv_norm_out", "conv_out")

#: ``progress(step, total_steps, loss)`` after each optimiser step (the CLI's tqdm bar)
ProgressFn = Callable[[int, int, float], None]


# ---------------------------------------------------------------------------------------------
# What trains
# ---------------------------------------------------------------------------------------------


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
    :func:`collate_training`). Scalar float32 tensor, mean over batch and all latent elements.

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


# ---------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------


def _field(sample: Any, *names: str) -> Any:
    for name in names:
        if isinstance(sample, Mapping) and name in sample:
            return sample[name]
        if hasattr(sample, name):
            return getattr(sample, name)
    raise ConfigError(f"training sample has none of {names}")


def collate_training(samples: Sequence[Any]) -> dict[str, Any]:
    """Stack :class:`~tryon.anydoor.training.data.TrainingSample` objects (or mappings with
    ``ref`` (S,S,3) [0,1], ``hint`` (T,T,4), ``target`` (T,T,3) [-1,1], ``timestep``) into
    ``ref`` (B,3,S,S), ``hint`` (B,4,T,T), ``jpg`` (B,3,T,T) float32 and ``time_steps`` int64.
    """

    def stack(*names: str) -> Tensor:
        arr = np.stack([np.asarray(_field(s, *names), dtype=np.float32) for s in samples])
        return torch.from_numpy(np.ascontiguousarray(arr.transpose(0, 3, 1, 2)))

    return {
        "ref": stack("ref"),
        "hint": stack("hint"),
        "jpg": stack("target", "jpg"),
        "time_steps": torch.tensor(
            [int(_field(s, "timestep", "time_steps")) for s in samples], dtype=torch.int64
        ),
    }


class EpochShuffleSampler(Sampler[int]):
    """A permutation of ``range(n)`` drawn from ``(seed, epoch)``: the same order on resume."""

    def __init__(self, n: int, seed: int = 0) -> None:
        self.n = n
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[int]:
        order = np.random.default_rng([self.seed, self.epoch]).permutation(self.n)
        return iter(order.tolist())


# ---------------------------------------------------------------------------------------------
# Checkpoints
# ---------------------------------------------------------------------------------------------


def trainable_state_dict(module: nn.Module) -> dict[str, Tensor]:
    return {
        name: p.detach().to("cpu").contiguous()
        for name, p in module.named_parameters()
        if p.requires_grad
    }


def load_trainable_state_dict(module: nn.Module, state: Mapping[str, Tensor]) -> None:
    """Copy ``state`` into ``module``'s trainable parameters; every one must be present."""
    params = dict(module.named_parameters())
    want = {n for n, p in params.items() if p.requires_grad}
    missing, unexpected = want - set(state), set(state) - want
    if missing or unexpected:
        raise WeightsError(
            f"checkpoint does not match the trainable parameters: missing {sorted(missing)[:5]}, "
            f"unexpected {sorted(unexpected)[:5]}"
        )
    with torch.no_grad():
        for name, value in state.items():
            if params[name].shape != value.shape:
                raise WeightsError(f"checkpoint tensor {name} has shape {tuple(value.shape)}, "
                                   f"expected {tuple(params[name].shape)}")
            params[name].copy_(value)


def list_checkpoints(output_dir: str | Path) -> list[Path]:
    """Checkpoint folders under ``output_dir/checkpoints``, oldest first (complete ones only)."""
    root = Path(output_dir) / "checkpoints"
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.name.startswith(CHECKPOINT_PREFIX) and (p / STATE_FILENAME).is_file()]
    return sorted(found, key=lambda p: int(p.name[len(CHECKPOINT_PREFIX):]))


def resolve_resume(resume: str | None, output_dir: str | Path) -> Path | None:
    if resume is None:
        return None
    if resume == "latest":
        found = list_checkpoints(output_dir)
        return found[-1] if found else None
    path = Path(resume)
    if not (path / STATE_FILENAME).is_file():
        raise ConfigError(f"resume: {path} is not a checkpoint folder (no {STATE_FILENAME}).")
    return path


# ---------------------------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------
# The loop
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainResult:
    """``losses``: ``(step, loss)`` for each optimiser step run in this call (loss averaged
    over micro-batches and processes); ``checkpoint``: the last checkpoint folder written;
    ``export_dir``: the exported engine folder, or None."""

    step: int
    losses: tuple[tuple[int, float], ...]
    checkpoint: Path | None
    export_dir: Path | None
    resumed_from: Path | None


class _JsonlLog:
    def __init__(self, path: Path, tensorboard_dir: Path | None) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self.writer = None
        if tensorboard_dir is not None:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(tensorboard_dir))

    def write(self, step: int, metrics: Mapping[str, float]) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps({"step": step, **metrics}) + "\n")
        if self.writer is not None:
            for key, value in metrics.items():
                self.writer.add_scalar(key, value, step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


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
    ``config.model``; ``dataset`` to :func:`~tryon.anydoor.training.data.build_mix` of
    ``config.data``; ``validation_samples`` to the first ``config.validation.num_samples``
    items of ``config.validation.data`` (a data mapping) or of ``dataset``. On resume the
    components must be initialised as in the first run (the checkpoint holds only the
    trainable tensors). Run under ``accelerate launch`` for several GPUs or nodes.
    """
    from accelerate import Accelerator
    from accelerate.utils import ProjectConfiguration, set_seed
    from diffusers.optimization import get_scheduler
    from safetensors.torch import load_file, save_file

    tc = config.train
    out = Path(config.output_dir)
    accelerator = Accelerator(
        mixed_precision=tc.precision,
        # accumulation is done by hand (no_sync + one optimiser step per `grad_accum`
        # micro-batches) so that step counting never depends on dataloader boundaries
        gradient_accumulation_steps=1,
        project_config=ProjectConfiguration(project_dir=str(out)),
    )
    device = accelerator.device
    set_seed(config.seed)

    # 1. Model
    if components is None:
        from tryon.anydoor.training.init import init_components

        components = init_components(config.model)
    configure_trainable(components)
    if tc.gradient_checkpointing:
        components.unet.enable_gradient_checkpointing()
        components.controlnet.enable_gradient_checkpointing()
    components.vae.to(device).eval()
    components.id_extractor.to(device).eval()
    denoiser = Denoiser(components).to(device)
    denoiser.unet.train()
    denoiser.controlnet.train()
    params = [p for p in denoiser.parameters() if p.requires_grad]
    log.info(
        "trainable parameters: %.1f M of %.1f M",
        sum(p.numel() for p in params) / 1e6,
        sum(sum(p.numel() for p in m.parameters()) for m in components.modules().values()) / 1e6,
    )

    # 2. Optimiser and lr schedule (the prepared scheduler steps once per process per step)
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
        num_warmup_steps=tc.lr_warmup_steps * accelerator.num_processes,
        num_training_steps=tc.steps * accelerator.num_processes,
    )

    # 3. Data
    if dataset is None:
        from tryon.anydoor.training.data import build_mix

        dataset = build_mix(config.data)
    n_items = len(dataset)  # type: ignore[arg-type]
    if n_items < tc.batch_size * accelerator.num_processes:
        raise ConfigError(
            f"the dataset has {n_items} items, fewer than one batch on every process "
            f"({tc.batch_size} x {accelerator.num_processes})."
        )
    sampler = EpochShuffleSampler(n_items, seed=config.seed)
    loader = DataLoader(
        dataset,
        batch_size=tc.batch_size,
        sampler=sampler,
        collate_fn=collate_training,
        num_workers=tc.num_workers,
        drop_last=True,
        pin_memory=device.type == "cuda",
    )
    denoiser, optimizer, loader, lr_scheduler = accelerator.prepare(
        denoiser, optimizer, loader, lr_scheduler
    )
    batches_per_epoch = len(loader)

    # 4. Checkpoint hooks: only trainable tensors go to disk
    def save_hook(models: list[nn.Module], weights: list[Any], output_dir: str) -> None:
        for model in models:
            if accelerator.is_main_process:
                save_file(trainable_state_dict(accelerator.unwrap_model(model)),
                          str(Path(output_dir) / TRAINABLE_FILENAME))
            if weights:
                weights.pop()

    def load_hook(models: list[nn.Module], input_dir: str) -> None:
        while models:
            model = models.pop()
            state = load_file(str(Path(input_dir) / TRAINABLE_FILENAME))
            load_trainable_state_dict(accelerator.unwrap_model(model), state)

    hooks = [
        accelerator.register_save_state_pre_hook(save_hook),
        accelerator.register_load_state_pre_hook(load_hook),
    ]

    # 5. Resume
    step = 0
    resumed_from = resolve_resume(config.resume, out)
    if resumed_from is not None:
        state = json.loads((resumed_from / STATE_FILENAME).read_text())
        saved_config = state.get("anydoor_config")
        if saved_config is not None and AnyDoorConfig.from_dict(saved_config) != components.config:
            raise ConfigError(f"{resumed_from} was trained with another model config.")
        accelerator.load_state(str(resumed_from))
        step = int(state["step"])
        if state.get("world_size") != accelerator.num_processes or state.get("batch_size") != tc.batch_size:
            log.warning("resuming with another batch size or process count: data order differs")
        log.info("resumed from %s at step %d", resumed_from, step)

    # 6. Validation samples (fixed)
    val_batch = None
    if config.validation.every > 0 and accelerator.is_main_process:
        if validation_samples is None:
            source: Any = dataset
            if config.validation.data is not None:
                from tryon.anydoor.training.data import build_mix

                source = build_mix(config.validation.data)
            count = min(config.validation.num_samples, len(source))
            validation_samples = [source[i] for i in range(count)]
        if validation_samples:
            val_batch = collate_training(list(validation_samples))

    logger = _JsonlLog(out / "train_log.jsonl", out / "tensorboard" if config.log.tensorboard else None) \
        if accelerator.is_main_process else None
    scheduler = noise_schedule(components.config)
    rank = accelerator.process_index

    def batches(start: int) -> Iterator[dict[str, Any]]:
        epoch, offset = divmod(start, batches_per_epoch)
        while True:
            sampler.set_epoch(epoch)
            if hasattr(dataset, "set_epoch"):
                dataset.set_epoch(epoch)
            it = accelerator.skip_first_batches(loader, offset) if offset else loader
            if hasattr(it, "set_epoch"):
                # accelerate's loaders re-seed the sampler with their own epoch counter on
                # every __iter__; keep it equal to ours (a resumed loader starts at 0)
                it.set_epoch(epoch)
            yield from it
            epoch, offset = epoch + 1, 0

    def checkpoint(at: int) -> Path:
        folder = out / "checkpoints" / f"{CHECKPOINT_PREFIX}{at:07d}"
        accelerator.save_state(str(folder))
        if accelerator.is_main_process:
            (folder / STATE_FILENAME).write_text(json.dumps({
                "step": at,
                "micro_batches": at * tc.grad_accum,
                "batches_per_epoch": batches_per_epoch,
                "batch_size": tc.batch_size,
                "world_size": accelerator.num_processes,
                "seed": config.seed,
                "anydoor_config": components.config.to_dict(),
            }, indent=2))
            keep = config.checkpoint.keep_last
            if keep > 0:
                for old in list_checkpoints(out)[:-keep]:
                    shutil.rmtree(old, ignore_errors=True)
        accelerator.wait_for_everyone()
        return folder

    def validate(at: int) -> None:
        if val_batch is None or logger is None:
            return
        vc = config.validation
        unwrapped = accelerator.unwrap_model(denoiser)
        with torch.no_grad():
            probe = dict(val_batch)
            g = torch.Generator().manual_seed(vc.seed)
            probe["time_steps"] = torch.randint(0, components.config.num_train_timesteps,
                                                (val_batch["ref"].shape[0],), generator=g)
            val_loss = denoising_loss(
                unwrapped, components, probe, scheduler,
                torch.Generator(device=device).manual_seed(vc.seed), device=device,
                autocast=accelerator.autocast, sample_posterior=False,
            )
        grid, _ = render_samples(
            components, val_batch, device=device, num_inference_steps=vc.num_inference_steps,
            guidance_scale=vc.guidance_scale, seed=vc.seed,
        )
        configure_trainable(components)  # the pipeline froze everything
        unwrapped.unet.train()
        unwrapped.controlnet.train()
        from PIL import Image

        folder = out / "validation"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(grid).save(folder / f"step_{at:07d}.png")
        logger.write(at, {"val/loss": float(val_loss)})

    # 7. Train
    losses: list[tuple[int, float]] = []
    last_checkpoint: Path | None = None
    data = batches(step * tc.grad_accum)
    t0 = time.perf_counter()
    try:
        while step < tc.steps:
            total = torch.zeros((), device=device)
            for micro in range(tc.grad_accum):
                batch = next(data)
                gen = step_generator(config.seed, step, micro, rank, device)
                sync = micro == tc.grad_accum - 1
                ctx = contextlib.nullcontext() if sync else accelerator.no_sync(denoiser)
                with ctx:
                    loss = denoising_loss(
                        denoiser, components, batch, scheduler, gen, device=device,
                        autocast=accelerator.autocast, sample_posterior=tc.sample_posterior,
                    )
                    accelerator.backward(loss / tc.grad_accum)
                total += loss.detach() / tc.grad_accum
            if tc.max_grad_norm > 0:
                accelerator.clip_grad_norm_(params, tc.max_grad_norm)
            optimizer.step()
            lr_scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            mean_loss = float(accelerator.reduce(total, reduction="mean"))
            if not math.isfinite(mean_loss):
                log.warning("non-finite loss at step %d", step)
            losses.append((step, mean_loss))
            if logger is not None and (step % config.log.every == 0 or step == tc.steps):
                elapsed = time.perf_counter() - t0
                logger.write(step, {
                    "train/loss": mean_loss,
                    "train/lr": float(lr_scheduler.get_last_lr()[0]),
                    "train/steps_per_s": len(losses) / elapsed if elapsed > 0 else 0.0,
                })
            if progress is not None and accelerator.is_main_process:
                progress(step, tc.steps, mean_loss)
            if config.checkpoint.every > 0 and step % config.checkpoint.every == 0:
                last_checkpoint = checkpoint(step)
            if config.validation.every > 0 and step % config.validation.every == 0:
                if accelerator.is_main_process:
                    validate(step)
                accelerator.wait_for_everyone()
        if last_checkpoint is None or not last_checkpoint.name.endswith(f"{step:07d}"):
            last_checkpoint = checkpoint(step)

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
        step=step,
        losses=tuple(losses),
        checkpoint=last_checkpoint,
        export_dir=export_dir,
        resumed_from=resumed_from,
    )
