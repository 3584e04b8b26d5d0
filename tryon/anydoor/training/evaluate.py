"""Evaluate a model on a paired split (garment, person wearing it): SSIM, PSNR, L1, DINO score.

For each pair the engine's pipeline renders the garment into the person's garment region (the
ground-truth person image is also the target image, so the region is regenerated from the
collage), and the result is compared with the ground truth inside the **target box** (the
end-exclusive bounding box of the target mask), which is the only region the pipeline changes:

* ``ssim``: mean of the SSIM map (Gaussian window sigma 1.5, K1 0.01, K2 0.03, reflected
  borders, per channel; computed on the whole image) over the box;
* ``psnr``: over the box pixels, data range 255, capped at 100 dB (identical crops);
* ``l1``: mean absolute difference over the box pixels, in [0, 1] units;
* ``dino``: cosine similarity of DINOv2 CLS features (after the final LayerNorm) of the
  prepared garment (the engine's 224 reference input) and of the generated box, padded to a
  square with white and resized to the same size (the AnyDoor paper's DINO-score).
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import cv2
import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn

log = logging.getLogger(__name__)

SSIM_SIGMA = 1.5
SSIM_RADIUS = 5  # skimage's gaussian window: truncate 3.5 * sigma 1.5 -> 11 x 11
SSIM_K1, SSIM_K2 = 0.01, 0.03
PSNR_CAP = 100.0


def ssim_map(a: NDArray[Any], b: NDArray[Any], *, data_range: float = 255.0) -> NDArray[np.float64]:
    """Per-pixel SSIM of two images ``(H, W)`` or ``(H, W, C)``, averaged over channels.

    Gaussian weights (sigma 1.5, 11x11), population covariances, reflected borders: the
    estimator of Wang et al. 2004 as skimage computes it with ``gaussian_weights=True,
    use_sample_covariance=False``.
    """
    if a.shape != b.shape:
        raise ValueError(f"images differ in shape: {a.shape} vs {b.shape}")
    x = a.astype(np.float64)
    y = b.astype(np.float64)
    if x.ndim == 2:
        x, y = x[..., None], y[..., None]
    k = 2 * SSIM_RADIUS + 1

    def blur(img: NDArray[Any]) -> NDArray[np.float64]:
        out = cv2.GaussianBlur(img, (k, k), SSIM_SIGMA, borderType=cv2.BORDER_REFLECT)
        return np.asarray(out, dtype=np.float64).reshape(img.shape)

    c1 = (SSIM_K1 * data_range) ** 2
    c2 = (SSIM_K2 * data_range) ** 2
    maps = []
    for ch in range(x.shape[-1]):
        xc, yc = np.ascontiguousarray(x[..., ch]), np.ascontiguousarray(y[..., ch])
        mx, my = blur(xc), blur(yc)
        vx = blur(xc * xc) - mx * mx
        vy = blur(yc * yc) - my * my
        cxy = blur(xc * yc) - mx * my
        num = (2 * mx * my + c1) * (2 * cxy + c2)
        den = (mx * mx + my * my + c1) * (vx + vy + c2)
        maps.append(num / den)
    return np.asarray(np.mean(maps, axis=0), dtype=np.float64)


def ssim(a: NDArray[Any], b: NDArray[Any], *, data_range: float = 255.0) -> float:
    """Mean SSIM over the image, excluding a 5-pixel border (as skimage does)."""
    m = ssim_map(a, b, data_range=data_range)
    r = SSIM_RADIUS
    return float(m[r:-r, r:-r].mean())


def psnr(a: NDArray[Any], b: NDArray[Any], *, data_range: float = 255.0) -> float:
    """Peak signal-to-noise ratio in dB (``inf`` for identical images)."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10.0 * math.log10(data_range**2 / mse)


def mask_box(mask: NDArray[Any]) -> tuple[int, int, int, int]:
    """End-exclusive ``(y1, y2, x1, x2)`` of the non-zero pixels of ``mask``."""
    rows = np.flatnonzero(np.asarray(mask).any(axis=1))
    cols = np.flatnonzero(np.asarray(mask).any(axis=0))
    if rows.size == 0:
        raise ValueError("empty mask")
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


def box_metrics(result: NDArray[np.uint8], truth: NDArray[np.uint8], box: tuple[int, int, int, int]) -> dict[str, float]:
    """SSIM, PSNR and L1 of ``result`` vs ``truth`` (uint8 ``(H, W, 3)``) inside ``box``."""
    y1, y2, x1, x2 = box
    smap = ssim_map(result, truth)
    r = result[y1:y2, x1:x2].astype(np.float64)
    t = truth[y1:y2, x1:x2].astype(np.float64)
    return {
        "ssim": float(smap[y1:y2, x1:x2].mean()),
        "psnr": min(psnr(r, t), PSNR_CAP),
        "l1": float(np.abs(r - t).mean() / 255.0),
    }


def square_on_white(crop: NDArray[np.uint8], size: int) -> NDArray[np.float32]:
    """Pad ``crop`` (uint8 ``(h, w, 3)``) to a centred square with white, resize to ``size``;
    float32 ``(size, size, 3)`` in [0, 1]."""
    h, w = crop.shape[:2]
    side = max(h, w)
    canvas = np.full((side, side, 3), 255, np.uint8)
    top, left = (side - h) // 2, (side - w) // 2
    canvas[top : top + h, left : left + w] = crop
    out = cv2.resize(canvas, (size, size), interpolation=cv2.INTER_AREA)
    return out.astype(np.float32) / 255.0


class DinoScorer:
    """CLS features of a transformers ``Dinov2Model`` for images in [0, 1]."""

    def __init__(self, dino: nn.Module, size: int, device: torch.device | str = "cpu") -> None:
        from tryon.anydoor.models import IMAGENET_MEAN, IMAGENET_STD

        self.dino = dino
        self.size = size
        self.device = torch.device(device)
        self.mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        self.std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)

    @torch.no_grad()
    def features(self, images: NDArray[np.float32]) -> torch.Tensor:
        """``(B, S, S, 3)`` float in [0, 1] -> ``(B, D)`` float32 CLS features."""
        x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float()
        x = ((x - self.mean) / self.std).to(self.device)
        dtype = next(self.dino.parameters()).dtype
        out = self.dino(pixel_values=x.to(dtype))
        return out.pooler_output.float().cpu()

    def score(self, garment: NDArray[np.float32], generated: NDArray[np.float32]) -> float:
        f = self.features(np.stack([garment, generated]))
        return float(torch.nn.functional.cosine_similarity(f[0:1], f[1:2]).item())


@dataclass(frozen=True)
class PairScore:
    source: str
    ssim: float
    psnr: float
    l1: float
    dino: float | None


@dataclass(frozen=True)
class EvalReport:
    """Means over the evaluated pairs (``dino`` None when not computed) and every pair's scores."""

    num_pairs: int
    mean: dict[str, float | None]
    pairs: tuple[PairScore, ...]
    skipped: dict[str, int] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "num_pairs": self.num_pairs,
            "mean": self.mean,
            "skipped": self.skipped,
            "settings": self.settings,
            "pairs": [asdict(p) for p in self.pairs],
        }


def evaluate_pairs(
    pipeline: Any,
    pairs: Iterable[Any],
    *,
    num_inference_steps: int = 50,
    guidance_scale: float = 4.5,
    seed: int = 0,
    dino: DinoScorer | None = None,
    on_pair: Callable[[int], None] | None = None,
) -> EvalReport:
    """Render and score every pair (objects with ``ref_image``, ``ref_mask``, ``tar_image``,
    ``tar_mask``, ``source``, e.g. :class:`~tryon.anydoor.training.samples.Pair`).

    Each pair is rendered from ``torch.Generator().manual_seed(seed)``. A pair the pipeline
    refuses (a :class:`~tryon.errors.TryOnError`, e.g. an empty mask) is skipped and counted by
    its error code.
    """
    from tryon.anydoor.preprocess import prepare_reference
    from tryon.errors import TryOnError

    scores: list[PairScore] = []
    skipped: Counter[str] = Counter()
    for i, pair in enumerate(pairs):
        try:
            out = pipeline(
                pair.ref_image,
                pair.ref_mask,
                pair.tar_image,
                pair.tar_mask,
                num_inference_steps=num_inference_steps,
                guidance_scale=guidance_scale,
                generator=torch.Generator().manual_seed(seed),
            )
        except TryOnError as exc:
            skipped[exc.code] += 1
            log.warning("skipped %s: %s", pair.source, exc)
            continue
        box = mask_box(pair.tar_mask)
        m = box_metrics(out.image, pair.tar_image, box)
        dino_score = None
        if dino is not None:
            garment = prepare_reference(pair.ref_image, pair.ref_mask, size=dino.size).image
            y1, y2, x1, x2 = box
            generated = square_on_white(out.image[y1:y2, x1:x2], dino.size)
            dino_score = dino.score(garment, generated)
        scores.append(PairScore(pair.source, m["ssim"], m["psnr"], m["l1"], dino_score))
        if on_pair is not None:
            on_pair(i)

    def mean(name: str) -> float | None:
        values = [getattr(s, name) for s in scores if getattr(s, name) is not None]
        return float(np.mean(values)) if values else None

    return EvalReport(
        num_pairs=len(scores),
        mean={k: mean(k) for k in ("ssim", "psnr", "l1", "dino")},
        pairs=tuple(scores),
        skipped=dict(skipped),
        settings={
            "num_inference_steps": num_inference_steps,
            "guidance_scale": guidance_scale,
            "seed": seed,
            "box": "bounding box of the target mask",
        },
    )


def load_pairs(data: str, layout: str = "viton_hd", *, limit: int | None = None, seed: int = 0) -> Iterable[Any]:
    """Raw pairs of a dataset folder in one of the training layouts (no filters, no augmentation).

    A pair whose files cannot be read is skipped (logged).
    """
    from tryon.anydoor.training.data import (
        DressCodeDataset,
        ImageMaskDataset,
        SampleRejected,
        VideoDataset,
        VitonHDDataset,
    )
    from tryon.errors import ConfigError

    classes = {
        "viton_hd": VitonHDDataset,
        "dresscode": DressCodeDataset,
        "video": VideoDataset,
        "image_mask": ImageMaskDataset,
    }
    if layout not in classes:
        raise ConfigError(f"layout must be one of {sorted(classes)}, got {layout!r}.")
    dataset = classes[layout](data, seed=seed)
    n = dataset.num_items() if limit is None else min(limit, dataset.num_items())
    for i in range(n):
        try:
            yield dataset.load_pair(i, np.random.default_rng([seed, i]))
        except SampleRejected as exc:
            log.warning("cannot read pair %d: %s", i, exc)
