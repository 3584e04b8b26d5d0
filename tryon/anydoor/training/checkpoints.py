"""Training checkpoints: what goes to disk, and how a run picks up from one.

A checkpoint is ``output_dir/checkpoints/step_XXXXXXX``: ``accelerate``'s ``save_state``
(optimiser, lr scheduler, grad scaler, python/numpy/torch RNG states) with the model part
replaced by ``trainable.safetensors`` (trainable tensors only; the frozen ones come from the
initialisation), plus ``trainer_state.json`` (step, data position, model config). It is
complete once ``trainer_state.json`` exists (written last).
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from tryon.anydoor.config import AnyDoorConfig
from tryon.errors import ConfigError, WeightsError

log = logging.getLogger(__name__)

TRAINABLE_FILENAME = "trainable.safetensors"
STATE_FILENAME = "trainer_state.json"
CHECKPOINT_PREFIX = "step_"


def trainable_state_dict(module: nn.Module) -> dict[str, Tensor]:
    """The trainable parameters of ``module``, on the CPU."""
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
                raise WeightsError(
                    f"checkpoint tensor {name} has shape {tuple(value.shape)}, "
                    f"expected {tuple(params[name].shape)}"
                )
            params[name].copy_(value)


def list_checkpoints(output_dir: str | Path) -> list[Path]:
    """Checkpoint folders under ``output_dir/checkpoints``, oldest first (complete ones only)."""
    root = Path(output_dir) / "checkpoints"
    if not root.is_dir():
        return []
    found = [
        p
        for p in root.iterdir()
        if p.name.startswith(CHECKPOINT_PREFIX) and (p / STATE_FILENAME).is_file()
    ]
    return sorted(found, key=lambda p: int(p.name[len(CHECKPOINT_PREFIX) :]))


def resolve_resume(resume: str | None, output_dir: str | Path) -> Path | None:
    """The checkpoint folder to resume from: None, ``latest`` (None if there is none yet) or
    a folder, which must be a complete checkpoint."""
    if resume is None:
        return None
    if resume == "latest":
        found = list_checkpoints(output_dir)
        return found[-1] if found else None
    path = Path(resume)
    if not (path / STATE_FILENAME).is_file():
        raise ConfigError(f"resume: {path} is not a checkpoint folder (no {STATE_FILENAME}).")
    return path


def register_hooks(accelerator: Any) -> list[Any]:
    """Make ``accelerator.save_state`` / ``load_state`` store only the trainable tensors.

    Returns the hook handles (call ``.remove()`` on each when the run ends).
    """
    from safetensors.torch import load_file, save_file

    def save_hook(models: list[nn.Module], weights: list[Any], output_dir: str) -> None:
        for model in models:
            if accelerator.is_main_process:
                save_file(
                    trainable_state_dict(accelerator.unwrap_model(model)),
                    str(Path(output_dir) / TRAINABLE_FILENAME),
                )
            if weights:
                weights.pop()

    def load_hook(models: list[nn.Module], input_dir: str) -> None:
        while models:
            model = models.pop()
            state = load_file(str(Path(input_dir) / TRAINABLE_FILENAME))
            load_trainable_state_dict(accelerator.unwrap_model(model), state)

    return [
        accelerator.register_save_state_pre_hook(save_hook),
        accelerator.register_load_state_pre_hook(load_hook),
    ]


def save_checkpoint(
    accelerator: Any,
    output_dir: Path,
    step: int,
    *,
    keep_last: int,
    state: Mapping[str, Any],
) -> Path:
    """Write ``checkpoints/step_<step>`` (``state`` goes into ``trainer_state.json`` with the
    step) and keep only the newest ``keep_last`` (0 = all). Every process must call it."""
    folder = output_dir / "checkpoints" / f"{CHECKPOINT_PREFIX}{step:07d}"
    accelerator.save_state(str(folder))
    if accelerator.is_main_process:
        (folder / STATE_FILENAME).write_text(json.dumps({"step": step, **state}, indent=2))
        if keep_last > 0:
            for old in list_checkpoints(output_dir)[:-keep_last]:
                shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return folder


def load_checkpoint(
    accelerator: Any, folder: Path, model: AnyDoorConfig, *, batch_size: int
) -> int:
    """Restore the run state saved in ``folder``; returns its step.

    Raises:
        ConfigError: the checkpoint was trained with another model config.
    """
    state = json.loads((folder / STATE_FILENAME).read_text())
    saved = state.get("anydoor_config")
    if saved is not None and AnyDoorConfig.from_dict(saved) != model:
        raise ConfigError(f"{folder} was trained with another model config.")
    accelerator.load_state(str(folder))
    if (
        state.get("world_size") != accelerator.num_processes
        or state.get("batch_size") != batch_size
    ):
        log.warning("resuming with another batch size or process count: data order differs")
    log.info("resumed from %s at step %d", folder, int(state["step"]))
    return int(state["step"])


__all__ = [
    "CHECKPOINT_PREFIX",
    "STATE_FILENAME",
    "TRAINABLE_FILENAME",
    "list_checkpoints",
    "load_checkpoint",
    "load_trainable_state_dict",
    "register_hooks",
    "resolve_resume",
    "save_checkpoint",
    "trainable_state_dict",
]
