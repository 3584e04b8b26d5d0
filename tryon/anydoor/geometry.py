"""Array contracts and box/padding geometry shared by AnyDoor's preprocessing, paste-back
and its training filters.

The reference's ``get_bbox_from_mask`` / ``expand_bbox`` / ``box2squre`` / ``box_in_box`` /
``expand_image_mask`` / ``pad_to_square``, quirks included. Boxes are ``(y1, y2, x1, x2)``
tuples of Python ints; :func:`bbox_from_mask` returns an *inclusive* ``y2``/``x2`` (the
reference's quirk), every other box here is end-exclusive. Pure numpy + OpenCV.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

from tryon.errors import InvalidInputError, InvalidMaskError

#: the reference treats masks with fewer pixels than this as "no mask" (whole-image box)
MIN_MASK_PIXELS = 10

YYXX = tuple[int, int, int, int]


# ---------------------------------------------------------------------------------------------
# Input contracts (each names the argument and what it received)
# ---------------------------------------------------------------------------------------------


def check_image(name: str, image: Any) -> NDArray[np.uint8]:
    if not isinstance(image, np.ndarray):
        raise InvalidInputError(f"{name} must be a numpy array, got {type(image).__name__}.")
    if image.dtype != np.uint8:
        raise InvalidInputError(f"{name} must be uint8 RGB, got dtype {image.dtype}.")
    if image.ndim != 3 or image.shape[2] != 3:
        raise InvalidInputError(f"{name} must have shape (H, W, 3), got {image.shape}.")
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise InvalidInputError(f"{name} is empty: shape {image.shape}.")
    return image


def check_binary_mask(name: str, mask: Any, shape: tuple[int, int]) -> NDArray[np.uint8]:
    """Return ``mask`` as uint8 {0, 1}; raise if it is not a binary (H, W) mask of ``shape``."""
    if not isinstance(mask, np.ndarray):
        raise InvalidInputError(f"{name} must be a numpy array, got {type(mask).__name__}.")
    if mask.ndim != 2:
        raise InvalidInputError(f"{name} must have shape (H, W), got {mask.shape}.")
    if mask.shape != shape:
        raise InvalidMaskError(
            f"{name} has shape {mask.shape} but the image is {shape}: they must match."
        )
    if mask.dtype != np.bool_:
        if not (np.issubdtype(mask.dtype, np.integer) or np.issubdtype(mask.dtype, np.floating)):
            raise InvalidInputError(f"{name} must be bool or numeric, got dtype {mask.dtype}.")
        if not bool(((mask == 0) | (mask == 1)).all()):
            raise InvalidMaskError(
                f"{name} must be binary (bool or values in {{0, 1}}), got values in "
                f"[{mask.min()}, {mask.max()}]; threshold it (e.g. mask > 127) first."
            )
    return mask.astype(np.uint8)


def check_enough_pixels(name: str, mask: NDArray[np.uint8]) -> None:
    n = int(mask.sum())
    if n == 0:
        raise InvalidMaskError(f"{name} is empty (no pixel set).")
    if n < MIN_MASK_PIXELS:
        raise InvalidMaskError(
            f"{name} has only {n} pixels; at least {MIN_MASK_PIXELS} are needed "
            "(the reference would fall back to the whole image)."
        )


def check_ratio(name: str, value: float, low: float) -> float:
    if not np.isfinite(value) or value < low:
        raise InvalidInputError(f"{name} must be a finite number >= {low}, got {value!r}.")
    return float(value)


# ---------------------------------------------------------------------------------------------
# Boxes and padding
# ---------------------------------------------------------------------------------------------


def bbox_from_mask(mask: NDArray[Any]) -> YYXX:
    """First/last non-zero row and column of ``mask`` as ``(y1, y2, x1, x2)``.

    Args:
        mask: ``(H, W)`` array, any numeric or bool dtype.

    Returns:
        ``y2`` and ``x2`` are *inclusive* indices (the reference's quirk: slicing with them
        drops the last row/column). If ``mask.sum() < 10`` (the reference's rule, on the raw
        values) the whole image ``(0, H, 0, W)`` is returned instead.
    """
    if not isinstance(mask, np.ndarray) or mask.ndim != 2:
        shape = getattr(mask, "shape", None)
        raise InvalidInputError(f"mask must be a 2-D numpy array, got shape {shape}.")
    h, w = mask.shape
    if float(mask.sum(dtype=np.float64)) < MIN_MASK_PIXELS:
        return 0, h, 0, w
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    return int(rows[0]), int(rows[-1]), int(cols[0]), int(cols[-1])


def expand_box(box: YYXX, ratio: float, shape: tuple[int, int]) -> YYXX:
    """Scale ``box`` around its centre by ``ratio`` and clip to ``shape`` (reference expand_bbox).

    Like the reference, the size is taken as ``y2 - y1 + 1`` whatever convention ``box`` uses,
    and the new edges are truncated with ``int()``.
    """
    y1, y2, x1, x2 = box
    height, width = shape
    yc, xc = 0.5 * (y1 + y2), 0.5 * (x1 + x2)
    h = ratio * (y2 - y1 + 1)
    w = ratio * (x2 - x1 + 1)
    ny1, ny2 = int(yc - h * 0.5), int(yc + h * 0.5)
    nx1, nx2 = int(xc - w * 0.5), int(xc + w * 0.5)
    return max(0, ny1), min(height, ny2), max(0, nx1), min(width, nx2)


def square_box(box: YYXX, shape: tuple[int, int]) -> YYXX:
    """Make ``box`` square around its centre (side = longer side), clipped (reference box2squre).

    Clipping at the image border can leave the box non-square.
    """
    y1, y2, x1, x2 = box
    height, width = shape
    cy, cx = (y1 + y2) // 2, (x1 + x2) // 2
    h, w = y2 - y1, x2 - x1
    if h >= w:
        x1, x2 = cx - h // 2, cx + h // 2
    else:
        y1, y2 = cy - w // 2, cy + w // 2
    return max(0, y1), min(height, y2), max(0, x1), min(width, x2)


def box_in_box(small: YYXX, big: YYXX) -> YYXX:
    y1, y2, x1, x2 = small
    return y1 - big[0], y2 - big[0], x1 - big[2], x2 - big[2]


def resize(array: NDArray[Any], dsize: tuple[int, int], *, interpolation: int) -> NDArray[Any]:
    """``cv2.resize`` to ``dsize = (width, height)`` (typed loosely: OpenCV keeps the dtype)."""
    return np.asarray(cv2.resize(array, dsize, interpolation=interpolation))


def pad_centred(array: NDArray[Any], new_h: int, new_w: int, value: float) -> NDArray[Any]:
    """Pad the first two axes to ``(new_h, new_w)``; the smaller half goes first."""
    h, w = array.shape[:2]
    top, left = (new_h - h) // 2, (new_w - w) // 2
    pad = [(top, new_h - h - top), (left, new_w - w - left)] + [(0, 0)] * (array.ndim - 2)
    return np.pad(array, pad, mode="constant", constant_values=value)


def pad_to_square(array: NDArray[Any], value: float) -> NDArray[Any]:
    h, w = array.shape[:2]
    side = max(h, w)
    return pad_centred(array, side, side, value)


__all__ = [
    "MIN_MASK_PIXELS",
    "check_binary_mask",
    "check_enough_pixels",
    "check_image",
    "check_ratio",
    "YYXX",
    "bbox_from_mask",
    "box_in_box",
    "expand_box",
    "pad_centred",
    "pad_to_square",
    "resize",
    "square_box",
]
