"""The reference's training-only image operations: pair filters and augmentations.

Inference never calls these. :func:`~tryon.anydoor.training.samples.build_sample` applies them
through the hooks of :func:`~tryon.anydoor.preprocess.prepare_reference` (``augment``) and
:func:`~tryon.anydoor.preprocess.prepare_target` (``mask_channel``), so the engine's
preprocessing stays one deterministic code path. Reference: ``datasets/base.py``
(``check_mask_area``, ``check_region_size``, ``aug_data_mask``, ``perturb_mask``) and
``datasets/data_utils.py`` (``mask_score``). Pure numpy + OpenCV; randomness only from an
explicit ``numpy.random.Generator``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

from tryon.anydoor.geometry import MIN_MASK_PIXELS, bbox_from_mask, expand_box
from tryon.errors import InvalidInputError

UInt8 = NDArray[np.uint8]


def mask_score(mask: NDArray[Any]) -> float:
    """Area of the largest outer contour over the area of all outer contours.

    Args:
        mask: ``(H, W)`` bool or {0, 1}.

    Returns:
        A float in ``[0, 1]``; 1.0 for one blob. 0.0 for masks with fewer than 10 pixels (the
        reference's rule) and for masks whose contours all have zero area (isolated pixels or
        1-px lines, where the reference divides 0 by 0).
    """
    if not isinstance(mask, np.ndarray) or mask.ndim != 2:
        raise InvalidInputError(f"mask must be a 2-D array, got {getattr(mask, 'shape', mask)}.")
    m = (mask != 0).astype(np.uint8)
    if int(m.sum()) < MIN_MASK_PIXELS:
        return 0.0
    contours, _ = cv2.findContours(m, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    areas = [cv2.contourArea(c) for c in contours]
    total = float(sum(areas))
    if total <= 0:
        return 0.0
    return float(max(areas) / total)


def _iou(a: NDArray[np.uint8], b: NDArray[np.uint8]) -> float:
    union = int(np.count_nonzero(a | b))
    return 1.0 if union == 0 else int(np.count_nonzero(a & b)) / union


def _largest_component(mask: NDArray[np.uint8]) -> NDArray[np.uint8]:
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    if n <= 1:
        return mask
    best = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    return (labels == best).astype(np.uint8)


def _random_kernel(rng: np.random.Generator, size: int) -> NDArray[np.uint8]:
    """One of the reference's four structuring elements: a size x size rectangle or ellipse,
    or an ellipse squashed to half its height or half its width."""
    half = max(size // 2, 1)
    shape, ksize = [
        (cv2.MORPH_RECT, (size, size)),
        (cv2.MORPH_ELLIPSE, (size, size)),
        (cv2.MORPH_ELLIPSE, (size, half)),
        (cv2.MORPH_ELLIPSE, (half, size)),
    ][int(rng.integers(4))]
    return np.asarray(cv2.getStructuringElement(shape, ksize), dtype=np.uint8)


def perturb_mask(
    mask: NDArray[Any],
    rng: np.random.Generator,
    *,
    min_iou: float = 0.3,
    max_iou: float = 0.99,
    max_rounds: int = 250,
) -> NDArray[np.uint8]:
    """Roughen a mask the way the reference's training does: it only ever grows.

    Draws an IoU goal ``U(min_iou, max_iou)``; then, for up to ``max_rounds`` rounds, makes 4
    local edits, each on a random sub-rectangle: with p=0.1 its centre pixel is set to 0 or 1
    (seeds for islands and notches), then it is dilated or eroded (p=0.5 each) with a random
    kernel of size 3..9 (rectangle, ellipse, or an ellipse of half height or half width), and
    the result is OR-ed with the input mask, so the object itself is always covered. Stops
    once the IoU with the input drops below the goal, then keeps the largest 8-connected
    component.

    Args:
        mask: ``(H, W)`` bool or {0, 1}.
        rng: source of randomness.

    Returns:
        uint8 ``(H, W)`` in {0, 1}, a superset of the input's largest component. Masks with a
        side <= 2 px are returned unchanged (as a copy).
    """
    if not isinstance(mask, np.ndarray) or mask.ndim != 2:
        raise InvalidInputError(f"mask must be a 2-D array, got {getattr(mask, 'shape', mask)}.")
    gt = (mask != 0).astype(np.uint8)
    h, w = gt.shape
    if h <= 2 or w <= 2:
        return gt.copy()
    goal = rng.uniform(min_iou, max_iou)
    seg = gt.copy()
    for _ in range(max_rounds):
        for _ in range(4):
            lx, ly = int(rng.integers(w)), int(rng.integers(h))
            rx, ry = int(rng.integers(lx + 1, w + 1)), int(rng.integers(ly + 1, h + 1))
            if rng.random() < 0.1:
                seg[(ly + ry) // 2, (lx + rx) // 2] = int(rng.integers(2))
            kernel = _random_kernel(rng, int(rng.integers(3, 10)))
            op = cv2.dilate if rng.random() < 0.5 else cv2.erode
            seg[ly:ry, lx:rx] = op(np.ascontiguousarray(seg[ly:ry, lx:rx]), kernel)
            seg |= gt
        if _iou(seg, gt) < goal:
            break
    return _largest_component(seg)


def check_pair(
    ref_mask: NDArray[Any],
    tar_mask: NDArray[Any],
    *,
    min_mask_score: float = 0.9,
    min_area_ratio: float = 0.1 * 0.1,
    max_area_ratio: float = 0.8 * 0.8,
    min_ref_box_ratio: float = 0.10,
    max_ratio: float = 0.8,
    box_expand: float = 1.1,
) -> str | None:
    """The reference's training filters; returns why a pair is rejected, or ``None``.

    Checked in the reference's order:

    1. ``mask_score(ref_mask) > min_mask_score`` (one dominant blob);
    2. mask area / image area within ``[min_area_ratio, max_area_ratio]`` for ref then target
       (the defaults are computed as ``0.1*0.1`` and ``0.8*0.8``, like the reference, so an area
       of exactly 1 % fails by a float rounding hair, as it does there);
    3. the ref box (inclusive-end box, size ``y2 - y1``) at least ``min_ref_box_ratio`` of the
       image height *and* width;
    4. the ``box_expand``-expanded target box at most ``max_ratio`` of the image height and
       width (reference: 0.8, try-on 1.0).

    Args:
        ref_mask, tar_mask: ``(H, W)`` bool or {0, 1} (each against its own image size).

    Returns:
        ``None`` if the pair passes, else a short reason such as ``"ref_mask_score"``,
        ``"ref_area"``, ``"tar_area"``, ``"ref_box_small"`` or ``"tar_box_large"``.
    """
    for name, mk in (("ref_mask", ref_mask), ("tar_mask", tar_mask)):
        if not isinstance(mk, np.ndarray) or mk.ndim != 2:
            raise InvalidInputError(f"{name} must be a 2-D array, got {getattr(mk, 'shape', mk)}.")
    if not mask_score(ref_mask) > min_mask_score:
        return "ref_mask_score"
    for name, mk in (("ref_area", ref_mask), ("tar_area", tar_mask)):
        area = float(np.count_nonzero(mk)) / (mk.shape[0] * mk.shape[1])
        if area > max_area_ratio or area < min_area_ratio:
            return name
    h, w = ref_mask.shape
    y1, y2, x1, x2 = bbox_from_mask(ref_mask)
    if (y2 - y1) < h * min_ref_box_ratio or (x2 - x1) < w * min_ref_box_ratio:
        return "ref_box_small"
    th, tw = tar_mask.shape
    ty1, ty2, tx1, tx2 = expand_box(bbox_from_mask(tar_mask), box_expand, (th, tw))
    if (ty2 - ty1) > th * max_ratio or (tx2 - tx1) > tw * max_ratio:
        return "tar_box_large"
    return None


# ---------------------------------------------------------------------------------------------
# Hooks for prepare_reference / prepare_target
# ---------------------------------------------------------------------------------------------


def brightness_contrast(image: NDArray[np.uint8], alpha: float, beta: float) -> NDArray[np.uint8]:
    """``clip(v * alpha + beta * 255)`` through a lookup table (albumentations' uint8 path)."""
    lut = np.arange(256, dtype=np.float32) * np.float32(alpha) + np.float32(beta * 255)
    return np.asarray(cv2.LUT(image, np.clip(lut, 0, 255).astype(np.uint8)), dtype=np.uint8)



def reference_augmentation(
    rng: np.random.Generator, *, brightness_limit: float = 0.2, contrast_limit: float = 0.2
) -> Callable[[UInt8, UInt8], tuple[UInt8, UInt8]]:
    """The reference's DINO-input augmentation, as a ``prepare_reference(augment=...)`` hook.

    The hook takes the resized reference (uint8 ``(S, S, 3)``) and its soft mask (uint8
    ``(S, S)``) and returns them after a horizontal flip (p=0.5, image and mask) then
    brightness/contrast (p=0.5, alpha = 1 + U(-c, c), beta = U(-b, b) * 255; image only).
    """

    def augment(image: UInt8, mask: UInt8) -> tuple[UInt8, UInt8]:
        if rng.random() < 0.5:
            image, mask = image[:, ::-1].copy(), mask[:, ::-1].copy()
        if rng.random() < 0.5:
            alpha = 1.0 + rng.uniform(-contrast_limit, contrast_limit)
            beta = rng.uniform(-brightness_limit, brightness_limit)
            image = brightness_contrast(image, alpha, beta)
        return image, mask

    return augment


def perturbed_mask_channel(
    rng: np.random.Generator, p: float = 0.7
) -> Callable[[UInt8, UInt8], UInt8]:
    """The reference's collage-mask perturbation, as a ``prepare_target(mask_channel=...)``
    hook: with probability ``p`` the box mask is replaced by :func:`perturb_mask` of the
    cropped target mask (both uint8 ``(h, w)`` {0, 1})."""
    if not 0.0 <= p <= 1.0:
        raise InvalidInputError(f"perturb_mask_p must be in [0, 1], got {p!r}.")

    def channel(cropped_mask: UInt8, box_mask: UInt8) -> UInt8:
        return perturb_mask(cropped_mask, rng) if rng.random() < p else box_mask

    return channel


__all__ = [
    "brightness_contrast",
    "check_pair",
    "mask_score",
    "perturb_mask",
    "perturbed_mask_channel",
    "reference_augmentation",
]
