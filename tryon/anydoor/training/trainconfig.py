"""The ``tryon train`` YAML schema: one frozen dataclass per section, unknown keys rejected.

Example (all keys shown with their defaults unless marked)::

    output_dir: runs/viton            # required: checkpoints/, model/, logs, validation/
    seed: 0
    model:
      init: sd                        # sd | anydoor | tiny-random
      sd: /models/sd-2-1-base         # init=sd: diffusers folder with unet/ and vae/
      dinov2: /models/dinov2-giant    # init=sd: transformers folder or Meta's .pth
      weights: null                   # init=anydoor: our folder or the released .ckpt
      config: official                # official | tiny | {AnyDoorConfig fields}
    data:                             # passed to tryon.anydoor.training.mix.build_mix
      length: 20000
      pair: {}                        # PairConfig fields (ref_size, size, filters, ...)
      datasets:
        - {type: viton_hd, root: /data/viton/train, weight: 1.0}
    train:
      steps: 10000
      batch_size: 4                   # per process
      lr: 1.0e-5
      ...                             # see TrainSection
    checkpoint: {every: 1000, keep_last: 3}
    validation: {every: 1000, num_samples: 4, num_inference_steps: 30, guidance_scale: 4.5}
    log: {every: 10, tensorboard: true}
    resume: null                      # null | latest | a checkpoint folder
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tryon.anydoor.config import AnyDoorConfig
from tryon.errors import ConfigError

INITS = ("sd", "anydoor", "tiny-random")
PRECISIONS = ("no", "fp16", "bf16")


def _from_mapping(cls: type, data: Any, where: str) -> Any:
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"`{where}` must be a mapping, got {type(data).__name__}.")
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - known
    if unknown:
        raise ConfigError(f"unknown keys in `{where}`: {sorted(unknown)}; known: {sorted(known)}.")
    try:
        return cls(**dict(data))
    except TypeError as exc:
        raise ConfigError(f"`{where}`: {exc}") from exc


@dataclass(frozen=True)
class ModelSection:
    """Where the weights start from.

    ``init``: ``sd`` (SD-2.1-base ``unet/`` + ``vae/`` under ``sd``, DINOv2 from ``dinov2``;
    the detail extractor is copied from the UNet encoder), ``anydoor`` (fine-tune ``weights``:
    our folder or the released ``.ckpt``, ``dinov2`` optionally overriding its DINOv2) or
    ``tiny-random`` (seeded random model, smoke tests). ``config``: model sizes, ``official``,
    ``tiny`` or a mapping of :class:`AnyDoorConfig` fields (ignored when ``weights`` is a
    folder with its own config).
    """

    init: str = "sd"
    sd: str | None = None
    dinov2: str | None = None
    weights: str | None = None
    config: Any = "official"
    random_seed: int = 0

    def __post_init__(self) -> None:
        if self.init not in INITS:
            raise ConfigError(f"model.init must be one of {INITS}, got {self.init!r}.")

    def check_sources(self) -> None:
        """Raise :class:`ConfigError` when the chosen ``init`` lacks its paths."""
        if self.init == "sd" and (not self.sd or not self.dinov2):
            raise ConfigError("model.init=sd needs `model.sd` (SD-2.1-base folder) and `model.dinov2`.")
        if self.init == "anydoor" and not self.weights:
            raise ConfigError("model.init=anydoor needs `model.weights`.")

    def anydoor_config(self) -> AnyDoorConfig:
        if self.config in (None, "official"):
            return AnyDoorConfig()
        if self.config == "tiny":
            return AnyDoorConfig.tiny()
        if isinstance(self.config, Mapping):
            try:
                return AnyDoorConfig.from_dict(dict(self.config))
            except (TypeError, ValueError) as exc:
                raise ConfigError(f"model.config: {exc}") from exc
        raise ConfigError(f"model.config must be official, tiny or a mapping, got {self.config!r}.")


@dataclass(frozen=True)
class TrainSection:
    """Optimisation. ``batch_size`` is per process; the effective batch is
    ``batch_size * grad_accum * processes``. ``lr_scheduler`` is a diffusers scheduler name
    (constant, constant_with_warmup, cosine, linear, ...). ``max_grad_norm`` 0 disables
    clipping (the reference does not clip)."""

    steps: int = 1000
    batch_size: int = 4
    lr: float = 1e-5
    weight_decay: float = 1e-2
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_epsilon: float = 1e-8
    lr_scheduler: str = "constant"
    lr_warmup_steps: int = 0
    max_grad_norm: float = 0.0
    precision: str = "no"
    grad_accum: int = 1
    gradient_checkpointing: bool = False
    num_workers: int = 0
    #: draw the latent from the VAE posterior (reference) rather than taking its mean
    sample_posterior: bool = True

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ConfigError(f"train.precision must be one of {PRECISIONS}, got {self.precision!r}.")
        for name in ("steps", "batch_size", "grad_accum"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"train.{name} must be >= 1, got {getattr(self, name)}.")
        if not float(self.lr) > 0:
            raise ConfigError(f"train.lr must be > 0, got {self.lr}.")
        if self.num_workers < 0 or self.lr_warmup_steps < 0 or self.max_grad_norm < 0:
            raise ConfigError("train.num_workers, lr_warmup_steps and max_grad_norm must be >= 0.")


@dataclass(frozen=True)
class CheckpointSection:
    """``every`` optimiser steps (0: only at the end); older ones beyond ``keep_last`` deleted."""

    every: int = 1000
    keep_last: int = 3


@dataclass(frozen=True)
class ValidationSection:
    """Every ``every`` steps (0: never) render ``num_samples`` fixed samples (the first items of
    the validation data, default the training data with augmentation as configured) to
    ``validation/step_XXXXXXX.png`` (rows: hint collage | result | target) and log the loss on
    fixed (noise, t) probes of those samples."""

    every: int = 1000
    num_samples: int = 4
    num_inference_steps: int = 30
    guidance_scale: float = 4.5
    seed: int = 0
    data: Any = None


@dataclass(frozen=True)
class LogSection:
    every: int = 10
    tensorboard: bool = True


@dataclass(frozen=True)
class TrainConfig:
    """A whole ``tryon train`` run. ``resume``: None, ``latest`` (the newest checkpoint under
    ``output_dir/checkpoints``, or a fresh start when none exists) or a checkpoint folder."""

    output_dir: str
    data: Mapping[str, Any]
    model: ModelSection = field(default_factory=ModelSection)
    train: TrainSection = field(default_factory=TrainSection)
    checkpoint: CheckpointSection = field(default_factory=CheckpointSection)
    validation: ValidationSection = field(default_factory=ValidationSection)
    log: LogSection = field(default_factory=LogSection)
    seed: int = 0
    resume: str | None = None
    export: bool = True

    @classmethod
    def from_mapping(cls, data: Any) -> TrainConfig:
        if not isinstance(data, Mapping):
            raise ConfigError("the training config must be a YAML mapping.")
        raw = dict(data)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(raw) - known
        if unknown:
            raise ConfigError(f"unknown top-level keys {sorted(unknown)}; known: {sorted(known)}.")
        if not raw.get("output_dir"):
            raise ConfigError("the training config needs `output_dir`.")
        if not isinstance(raw.get("data"), Mapping):
            raise ConfigError("the training config needs a `data` mapping (datasets, weights, length).")
        sections = {
            "model": ModelSection,
            "train": TrainSection,
            "checkpoint": CheckpointSection,
            "validation": ValidationSection,
            "log": LogSection,
        }
        for name, section in sections.items():
            raw[name] = _from_mapping(section, raw.get(name), name)
        raw["output_dir"] = str(raw["output_dir"])
        return cls(**raw)

    @classmethod
    def from_yaml(cls, path: str | Path) -> TrainConfig:
        path = Path(path)
        try:
            data = yaml.safe_load(path.read_text())
        except OSError as exc:
            raise ConfigError(f"cannot read training config {path}: {exc}") from exc
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path} is not valid YAML: {exc}") from exc
        return cls.from_mapping(data)

    def with_overrides(self, **changes: Any) -> TrainConfig:
        """A copy with top-level fields replaced (e.g. ``resume``, ``output_dir``)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
