"""How the training loop receives its data: collation, epoch order, resumable batches.

Data order is a pure function of ``(seed, epoch)`` (:class:`EpochShuffleSampler`) and each
sample a pure function of its draw (see :mod:`tryon.anydoor.training.mix`), so
:func:`iterate_batches` started at micro-batch ``k`` yields exactly what an uninterrupted run
yields from ``k`` on: that is what makes a resume exact.

It also checks, before the first step, that the samples fit the model
(:func:`check_sample_sizes`), and tallies the pairs the datasets rejected
(:class:`SkipTally`) from the ``skipped`` reasons that travel inside the samples, so the
counts are right whatever the number of DataLoader workers.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Sampler

from tryon.anydoor.config import AnyDoorConfig
from tryon.errors import ConfigError


def _field(sample: Any, *names: str, default: Any = ConfigError) -> Any:
    for name in names:
        if isinstance(sample, Mapping) and name in sample:
            return sample[name]
        if hasattr(sample, name):
            return getattr(sample, name)
    if default is ConfigError:
        raise ConfigError(f"training sample has none of {names}")
    return default


def collate_training(samples: Sequence[Any]) -> dict[str, Any]:
    """Stack :class:`~tryon.anydoor.training.samples.TrainingSample` objects (or mappings
    with ``ref`` (S,S,3) [0,1], ``hint`` (T,T,4), ``target`` (T,T,3) [-1,1], ``timestep``)
    into ``ref`` (B,3,S,S), ``hint`` (B,4,T,T), ``jpg`` (B,3,T,T) float32, ``time_steps``
    int64 and ``skipped``: the rejection reasons carried by the samples, in one list.
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
        "skipped": [str(r) for s in samples for r in _field(s, "skipped", default=())],
    }


def check_sample_sizes(sample: Any, model: AnyDoorConfig) -> None:
    """Refuse a sample the model cannot read: ``ref`` must be ``(S, S, 3)`` with
    ``S = model.reference_size`` (which fixes the ID-token count) and ``hint`` / ``target``
    ``(T, T, 4)`` / ``(T, T, 3)`` with ``T = model.image_size``.

    Raises:
        ConfigError: naming the array, its shape and the model's sizes.
    """
    s, t = model.reference_size, model.image_size
    want = {("ref",): (s, s, 3), ("hint",): (t, t, 4), ("target", "jpg"): (t, t, 3)}
    for names, shape in want.items():
        got = tuple(np.shape(_field(sample, *names)))
        name = names[0]
        if got != shape:
            raise ConfigError(
                f"training samples have {name} of shape {got} but the model needs {shape} "
                f"(reference_size {s}, image_size {t}); set data.pair.ref_size / size to the "
                "model's sizes or leave them out."
            )


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


def iterate_batches(
    accelerator: Any,
    loader: Any,
    sampler: EpochShuffleSampler,
    dataset: Any,
    start: int,
) -> Iterator[dict[str, Any]]:
    """Endless micro-batches from micro-batch ``start`` on (epoch = start // len(loader)).

    ``loader`` is the accelerate-prepared DataLoader over ``sampler``; the sampler and the
    dataset (if it has ``set_epoch``) are told the epoch before each pass.
    """
    per_epoch = len(loader)
    epoch, offset = divmod(start, per_epoch)
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


class SkipTally:
    """Pairs rejected while building the samples of this run, by reason (this process)."""

    def __init__(self) -> None:
        self.reasons: Counter[str] = Counter()
        self.samples = 0

    def add(self, batch: Mapping[str, Any]) -> None:
        self.reasons.update(batch.get("skipped", ()))
        self.samples += int(batch["time_steps"].shape[0])

    @property
    def total(self) -> int:
        return sum(self.reasons.values())

    def metrics(self) -> dict[str, float]:
        """``data/skipped`` (count), ``data/skipped_share`` (of all pairs tried) and
        ``data/skipped/<reason>`` counts, cumulative over this run."""
        tried = self.total + self.samples
        out = {
            "data/skipped": float(self.total),
            "data/skipped_share": self.total / tried if tried else 0.0,
        }
        out.update({f"data/skipped/{r}": float(c) for r, c in sorted(self.reasons.items())})
        return out

    def summary(self) -> str:
        if not self.total:
            return "no pairs skipped"
        share = self.metrics()["data/skipped_share"]
        by_reason = ", ".join(f"{r} {c}" for r, c in self.reasons.most_common())
        return f"skipped {self.total} pairs ({share:.1%} of those tried): {by_reason}"


__all__ = [
    "EpochShuffleSampler",
    "SkipTally",
    "check_sample_sizes",
    "collate_training",
    "iterate_batches",
]
