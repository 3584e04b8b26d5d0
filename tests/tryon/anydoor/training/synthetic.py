"""Synthetic AnyDoor training pairs for the training-loop tests (tiny sizes, no files)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from tryon.anydoor.config import AnyDoorConfig


def smooth_image(rng: np.random.Generator, size: int) -> np.ndarray:
    """float32 (size, size, 3) in [-1, 1]: a colour gradient plus one coloured square."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    a, b, c = rng.uniform(-1, 1, 3), rng.uniform(-1, 1, 3), rng.uniform(-1, 1, 3)
    img = a[None, None] * yy[..., None] + b[None, None] * xx[..., None]
    y, x = rng.integers(0, size // 2, 2)
    img[y : y + size // 3, x : x + size // 3] = c
    return np.clip(img, -1, 1).astype(np.float32)


def make_pairs(config: AnyDoorConfig, n: int, seed: int = 0) -> list[dict[str, Any]]:
    """``n`` pairs: target = smooth image; hint = target with its centre box greyed out and
    the reference's colours there, mask channel 1 in the box; ref = the target box resized."""
    rng = np.random.default_rng(seed)
    t, s = config.image_size, config.reference_size
    out = []
    for _ in range(n):
        target = smooth_image(rng, t)
        lo, hi = t // 4, 3 * t // 4
        hint = np.zeros((t, t, 4), np.float32)
        hint[..., :3] = target
        hint[lo:hi, lo:hi, :3] = target[lo:hi, lo:hi].mean(axis=(0, 1))
        hint[lo:hi, lo:hi, 3] = 1.0
        box = torch.from_numpy(target[lo:hi, lo:hi]).permute(2, 0, 1)[None]
        ref = torch.nn.functional.interpolate(box, size=(s, s), mode="bilinear")[0]
        out.append(dict(ref=((ref.permute(1, 2, 0).numpy() + 1) / 2).astype(np.float32),
                        hint=hint, target=target))
    return out


class PairsWithATS(torch.utils.data.Dataset):
    """Fixed pairs with a timestep drawn per (seed, epoch, index), uniform over [0, 1000)."""

    def __init__(self, pairs: list[dict[str, Any]], seed: int = 0) -> None:
        self.pairs = pairs
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i: int) -> dict[str, Any]:
        t = int(np.random.default_rng([self.seed, self.epoch, i]).integers(1000))
        return {**self.pairs[i], "timestep": t}
