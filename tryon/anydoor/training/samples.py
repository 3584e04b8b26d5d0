"""Training samples: how one raw pair becomes a model input (reference ``process_pairs``).

A :class:`Pair` (reference image + mask, target image + mask) becomes a
:class:`TrainingSample` through :func:`build_sample`: the reference's filters
(:func:`~tryon.anydoor.training.augment.check_pair`), the engine's own preprocessing
(:mod:`tryon.anydoor.preprocess`, with the training hooks of
:mod:`tryon.anydoor.training.augment`) and an adaptive timestep (:func:`sample_timestep`).
Every random choice comes from the one ``numpy.random.Generator`` passed in, so a sample is
a pure function of the pair and that generator's seed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any, Literal

import numpy as np
import torch
from numpy.typing import NDArray

from tryon.anydoor.preprocess import prepare_reference, prepare_target
from tryon.anydoor.training.augment import (
    check_pair,
    perturbed_mask_channel,
    reference_augmentation,
)
from tryon.errors import ConfigError, TryOnError

Kind = Literal["video", "image", "multiview", "tryon"]
KINDS: tuple[str, ...] = ("video", "image", "multiview", "tryon")
#: ATS ranges [low, high) per kind when the uniform branch is not taken (reference
#: ``BaseDataset.sample_timestep``: dynamic 1 -> video, 0 -> image, 2 -> multi-view / try-on)
TIMESTEP_RANGES: dict[str, tuple[int, int]] = {
    "video": (500, 1000),
    "image": (0, 500),
    "multiview": (0, 1000),
    "tryon": (0, 1000),
}


def check_kind(kind: str) -> str:
    if kind not in TIMESTEP_RANGES:
        raise ConfigError(f"kind must be one of {KINDS}, got {kind!r}.")
    return kind


def sample_timestep(
    kind: str, rng: np.random.Generator, p_uniform: float = 0.3, num_train_timesteps: int = 1000
) -> int:
    """Adaptive timestep sampling (ATS).

    With probability ``p_uniform`` draw ``t ~ U[0, N)``; otherwise draw from the kind's range:
    video ``[N/2, N)``, image ``[0, N/2)``, multiview / tryon ``[0, N)`` (N = 1000 in the
    reference; the ranges scale with ``num_train_timesteps``).

    Returns:
        An int in ``[0, num_train_timesteps)``.
    """
    low, high = TIMESTEP_RANGES[check_kind(kind)]
    if rng.random() < p_uniform:
        low, high = 0, 1000
    scale = num_train_timesteps / 1000
    return int(rng.integers(int(low * scale), int(high * scale)))


# ---------------------------------------------------------------------------------------------
# Samples
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainingSample:
    """One training example.

    Attributes:
        ref: float32 ``(S, S, 3)`` in ``[0, 1]`` (S = 224): DINOv2 input, white background.
        hint: float32 ``(T, T, 4)`` (T = 512): collage RGB in ``[-1, 1]`` + mask in {-1, 0, 1}.
        target: float32 ``(T, T, 3)`` in ``[-1, 1]``: the crop to reconstruct ("jpg").
        kind: one of :data:`KINDS`.
        timestep: ATS timestep in ``[0, 1000)``.
        source: name of the dataset and item, for debugging.
        skipped: why each pair tried before this one was rejected (filter reasons such as
            ``tar_box_large``, or ``load_error``), so the loop can report rejections from
            every DataLoader worker.
    """

    ref: NDArray[np.float32]
    hint: NDArray[np.float32]
    target: NDArray[np.float32]
    kind: str
    timestep: int
    source: str = ""
    skipped: tuple[str, ...] = ()


def collate_samples(samples: Sequence[TrainingSample]) -> dict[str, Any]:
    """Stack samples into channel-first tensors for a ``DataLoader`` (``collate_fn``).

    Returns:
        ``ref`` float32 ``(B, 3, S, S)``, ``hint`` float32 ``(B, 4, T, T)``, ``jpg`` float32
        ``(B, 3, T, T)``, ``time_steps`` int64 ``(B,)``, ``kind`` and ``source`` lists and
        ``skipped``, the rejection reasons of the whole batch in one list.
    """

    def stack(name: str) -> torch.Tensor:
        arr = np.stack([getattr(s, name) for s in samples])
        return torch.from_numpy(np.ascontiguousarray(arr.transpose(0, 3, 1, 2)))

    return {
        "ref": stack("ref"),
        "hint": stack("hint"),
        "jpg": stack("target"),
        "time_steps": torch.tensor([s.timestep for s in samples], dtype=torch.int64),
        "kind": [s.kind for s in samples],
        "source": [s.source for s in samples],
        "skipped": [reason for s in samples for reason in s.skipped],
    }


@dataclass(frozen=True)
class Pair:
    """Raw inputs of one sample: RGB uint8 ``(H, W, 3)`` images and ``(H, W)`` {0,1} masks."""

    ref_image: NDArray[np.uint8]
    ref_mask: NDArray[np.uint8]
    tar_image: NDArray[np.uint8]
    tar_mask: NDArray[np.uint8]
    source: str = ""


class SampleRejected(Exception):
    """A pair failed a filter or could not be built; ``reason`` is a short stable string."""

    def __init__(self, reason: str, detail: str = "") -> None:
        self.reason = reason
        super().__init__(f"{reason}: {detail}" if detail else reason)


@dataclass(frozen=True)
class PairConfig:
    """How pairs become samples (config key ``pair`` of :func:`build_mix`).

    Attributes:
        ref_size: reference side (224).
        size: target side (512).
        filters: apply the reference's training filters (:func:`check_pair`).
        augment: reference HFlip + brightness/contrast and the collage-mask perturbation.
        random_ratios: draw expand ratio U{1.1..1.4} and crop ratio U{1.3..2.9}; if False use
            the deterministic inference defaults (1.2, 2.0).
        perturb_mask_p: probability of the collage-mask perturbation when ``augment`` (0.7).
        max_ratio: largest expanded target box / image side (0.8); try-on kinds use
            ``max_ratio_tryon`` (1.0).
        max_ratio_tryon: see ``max_ratio``.
        p_uniform: ATS probability of a uniform timestep (0.3).
        max_tries: how many pairs to try before giving up on an index.
    """

    ref_size: int = 224
    size: int = 512
    filters: bool = True
    augment: bool = True
    random_ratios: bool = True
    perturb_mask_p: float = 0.7
    max_ratio: float = 0.8
    max_ratio_tryon: float = 1.0
    p_uniform: float = 0.3
    max_tries: int = 20

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> PairConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ConfigError(
                f"unknown pair config keys {sorted(unknown)}; known: {sorted(known)}."
            )
        return cls(**dict(data))


def build_sample(
    pair: Pair, kind: str, rng: np.random.Generator, config: PairConfig | None = None
) -> TrainingSample:
    """Turn a :class:`Pair` into a :class:`TrainingSample` (reference ``process_pairs``).

    Raises:
        SampleRejected: a filter failed (reason from :func:`check_pair`) or preprocessing
            refused the masks (reason = the error's ``code``, e.g. ``invalid_mask``).
    """
    cfg = config or PairConfig()
    check_kind(kind)
    if cfg.filters:
        max_ratio = cfg.max_ratio_tryon if kind == "tryon" else cfg.max_ratio
        reason = check_pair(pair.ref_mask, pair.tar_mask, max_ratio=max_ratio)
        if reason is not None:
            raise SampleRejected(reason, pair.source)
    try:
        ref = prepare_reference(
            pair.ref_image,
            pair.ref_mask,
            expand_ratio=None if cfg.random_ratios else 1.2,
            size=cfg.ref_size,
            rng=rng,
            augment=reference_augmentation(rng) if cfg.augment else None,
        )
        tar = prepare_target(
            pair.tar_image,
            pair.tar_mask,
            ref.hf_map,
            crop_ratio=None if cfg.random_ratios else 2.0,
            size=cfg.size,
            rng=rng,
            mask_channel=perturbed_mask_channel(rng, cfg.perturb_mask_p)
            if cfg.augment and cfg.perturb_mask_p > 0
            else None,
        )
    except TryOnError as exc:
        raise SampleRejected(exc.code, f"{pair.source}: {exc.message}") from exc
    return TrainingSample(
        ref=ref.image,
        hint=tar.hint,
        target=tar.target,
        kind=kind,
        timestep=sample_timestep(kind, rng, cfg.p_uniform),
        source=pair.source,
    )


__all__ = [
    "KINDS",
    "TIMESTEP_RANGES",
    "Pair",
    "PairConfig",
    "SampleRejected",
    "TrainingSample",
    "build_sample",
    "check_kind",
    "collate_samples",
    "sample_timestep",
]
