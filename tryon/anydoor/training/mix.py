"""The training set as the loop sees it: a weighted mix of pair datasets, built from config.

Position ``i`` of a :class:`MixDataset` draws everything (which dataset, which item, the
sample's crop, augmentation, mask perturbation and timestep) from one generator seeded with
``(seed, epoch, i)``: repeated items differ, and a resumed run replays the same positions
and so the same samples.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from tryon.anydoor.training.data import DATASET_TYPES, PairDataset
from tryon.anydoor.training.samples import PairConfig, TrainingSample
from tryon.errors import ConfigError


class MixDataset(Dataset[TrainingSample]):
    """A weighted mix: position ``i`` picks a dataset with probability
    ``weight / sum(weights)``, a uniform item inside it, and builds the sample
    (:meth:`PairDataset.draw`), all from one generator seeded with ``(seed, epoch, i)``.

    (The reference concatenates datasets with fixed virtual lengths and ignores the index; a
    weight here plays the role of that virtual length.)
    """

    def __init__(
        self,
        datasets: Sequence[PairDataset],
        weights: Sequence[float],
        length: int,
        *,
        seed: int = 0,
    ) -> None:
        if not datasets or len(datasets) != len(weights):
            raise ConfigError("MixDataset needs one weight per dataset and at least one dataset.")
        w = np.asarray(weights, dtype=np.float64)
        if (w < 0).any() or w.sum() <= 0:
            raise ConfigError(f"mix weights must be >= 0 with a positive sum, got {list(weights)}.")
        if length < 1:
            raise ConfigError(f"mix length must be >= 1, got {length}.")
        self.datasets = list(datasets)
        self.probs = w / w.sum()
        self.length = length
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        for ds in self.datasets:
            ds.set_epoch(epoch)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> TrainingSample:
        if not 0 <= index < self.length:
            raise IndexError(f"index {index} out of range for a mix of length {self.length}")
        rng = np.random.default_rng([self.seed, self.epoch, index, 1])
        ds = self.datasets[int(rng.choice(len(self.datasets), p=self.probs))]
        return ds.draw(int(rng.integers(len(ds))), rng)

    @property
    def skipped(self) -> dict[str, Counter[str]]:
        """Rejection counts per dataset name (this process only)."""
        out: dict[str, Counter[str]] = {}
        for ds in self.datasets:
            out.setdefault(ds.name, Counter()).update(ds.skipped)
        return out


def build_mix(
    config: Mapping[str, Any], *, sizes: tuple[int, int] | None = None
) -> MixDataset:
    """Build a :class:`MixDataset` from a plain mapping (e.g. parsed YAML/JSON).

    Keys: ``length`` (int), ``seed`` (int, 0), ``pair`` (mapping of :class:`PairConfig`
    fields), ``datasets``: a list of mappings with ``type`` (one of ``image_mask``,
    ``viton_hd``, ``dresscode``, ``video``), ``root``, ``weight`` (1.0) and the type's own
    keyword arguments (``labels``, ``categories``, ``ref_threshold``, ``interval_divisor``,
    ``kind``).

    ``sizes``: the model's ``(reference_size, image_size)``. They fill ``pair.ref_size`` and
    ``pair.size`` when the mapping leaves them out; a mapping that sets another value raises
    :class:`~tryon.errors.ConfigError` (the model could not read such samples).
    """
    cfg = dict(config)
    pair = PairConfig.from_mapping(_pair_sizes(dict(cfg.pop("pair", {})), sizes))
    seed = int(cfg.pop("seed", 0))
    length = int(cfg.pop("length", 0))
    specs = cfg.pop("datasets", None)
    if cfg:
        raise ConfigError(f"unknown training data keys {sorted(cfg)}.")
    if not specs:
        raise ConfigError("training data config needs a non-empty `datasets` list.")
    datasets, weights = [], []
    for i, spec in enumerate(specs):
        spec = dict(spec)
        kind = spec.pop("type", None)
        if kind not in DATASET_TYPES:
            raise ConfigError(
                f"datasets[{i}].type must be one of {sorted(DATASET_TYPES)}, got {kind!r}."
            )
        if "root" not in spec:
            raise ConfigError(f"datasets[{i}] needs a `root`.")
        weights.append(float(spec.pop("weight", 1.0)))
        root = spec.pop("root")
        try:
            datasets.append(DATASET_TYPES[kind](root, pair, seed=seed + i, **spec))
        except TypeError as exc:
            raise ConfigError(f"datasets[{i}] ({kind}): {exc}") from exc
    return MixDataset(datasets, weights, length or sum(len(d) for d in datasets), seed=seed)


def _pair_sizes(pair: dict[str, Any], sizes: tuple[int, int] | None) -> dict[str, Any]:
    if sizes is None:
        return pair
    for key, want in zip(("ref_size", "size"), sizes, strict=True):
        if key in pair and int(pair[key]) != want:
            raise ConfigError(
                f"data.pair.{key} is {pair[key]} but the model needs {want} "
                f"(reference_size, image_size = {sizes}); remove the key to use the model's."
            )
        pair[key] = want
    return pair


def seed_worker(worker_id: int) -> None:
    """``DataLoader(worker_init_fn=...)``: keep stray ``random`` users deterministic too."""
    random.seed(torch.initial_seed() % 2**32)


__all__ = ["MixDataset", "build_mix", "seed_worker"]
