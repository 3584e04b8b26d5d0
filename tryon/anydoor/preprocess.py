"""AnyDoor input preprocessing and paste-back (numpy + OpenCV only, no torch).

Behaviour follows ``/work/shared/docs/anydoor-reference.md`` §2 in its *demo / training*
variant (gradio demo and ``datasets/base.py``), which differ from ``run_inference.py``:

* the mask channel of the hint is ``-1`` in the square padding (not ``+1``),
* the mask channel is resized with ``INTER_NEAREST`` (not bilinear + threshold),
* paste-back uses a margin of 3 px, and only the 1.1-expanded target box is copied into an
  untouched copy of the original image (everything outside that box stays pixel-exact).

Conventions
-----------
* Images are RGB ``uint8`` arrays of shape ``(H, W, 3)``.
* Binary masks are ``(H, W)`` arrays of ``bool`` or numbers with values in ``{0, 1}``.
* Boxes are ``(y1, y2, x1, x2)`` tuples of Python ints, like the reference code. Boxes returned
  by :func:`bbox_from_mask` have an *inclusive* ``y2``/``x2`` (the reference's quirk: slicing
  with them later drops the last row/column); every other box here is end-exclusive.
* Randomness only comes from an explicit ``numpy.random.Generator``. With ``rng=None`` and the
  default ratios everything is deterministic.

Deterministic defaults: reference expand ratio 1.2 (``run_inference.py``; the demo and training
draw U{1.1, 1.2, 1.3, 1.4}) and crop ratio 2.0 (the reference draws U{1.3, 1.4, ..., 2.9}). Pass
``expand_ratio=None`` / ``crop_ratio=None`` together with ``rng`` to get the reference's
distributions.

Small masks: the reference silently falls back to the *whole image* as the box when a mask has
fewer than 10 pixels (:func:`bbox_from_mask` keeps that rule). :func:`prepare_reference` and
:func:`prepare_target` instead raise :class:`~tryon.errors.InvalidMaskError` for such masks,
because the fallback would send the whole picture to the model.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

from tryon.errors import InvalidInputError, InvalidMaskError

logger = logging.getLogger(__name__)

PREPROCESS_VERSION: str = "anydoor-pre-1"

#: the reference treats masks with fewer pixels than this as "no mask" (whole-image box)
MIN_MASK_PIXELS = 10
#: value of the collage-mask channel in the square padding (demo / training variant)
PAD_MASK_VALUE = -1.0
#: ratios the reference draws from: randint(11, 15) / 10 and randint(13, 30) / 10
REFERENCE_EXPAND_CHOICES = (1.1, 1.2, 1.3, 1.4)
CROP_RATIO_CHOICES = tuple(k / 10 for k in range(13, 30))

YYXX = tuple[int, int, int, int]


# ---------------------------------------------------------------------------------------------
# Results
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReferenceInputs:
    """The reference (garment) branch.

    Attributes:
        image: float32 ``(S, S, 3)`` RGB in ``[0, 1]``, white (1.0) outside the object: the
            DINOv2 input before ImageNet normalisation.
        mask: uint8 ``(S, S)`` in ``0..255``; soft at the edges (bilinear resize of a 0/255 mask).
        hf_map: uint8 ``(S, S, 3)`` RGB high-frequency map (see :func:`hf_map`).
    """

    image: NDArray[np.float32]
    mask: NDArray[np.uint8]
    hf_map: NDArray[np.uint8]


@dataclass(frozen=True)
class TargetInputs:
    """The target (person) branch and what :func:`paste_back` needs to undo the crop.

    Attributes:
        hint: float32 ``(T, T, 4)``: collage RGB in ``[-1, 1]`` plus the mask channel with values
            in ``{-1, 0, 1}`` (1 = region to generate, 0 = kept context, -1 = square padding).
        target: float32 ``(T, T, 3)`` RGB in ``[-1, 1]``: the padded crop (training "jpg").
        crop: ``(y1, y2, x1, x2)`` end-exclusive crop box in full-image coordinates.
        box: ``(y1, y2, x1, x2)`` end-exclusive 1.1-expanded target box, full-image coordinates.
        box_in_crop: ``box`` in crop coordinates.
        extra_sizes: ``(H1, W1, H2, W2)``: crop size before and after square padding.
        image_size: ``(H, W)`` of the full target image.
        size: ``T``.
    """

    hint: NDArray[np.float32]
    target: NDArray[np.float32]
    crop: YYXX
    box: YYXX
    box_in_crop: YYXX
    extra_sizes: tuple[int, int, int, int]
    image_size: tuple[int, int]
    size: int


# ---------------------------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------------------------


def _check_image(name: str, image: Any) -> NDArray[np.uint8]:
    if not isinstance(image, np.ndarray):
        raise InvalidInputError(f"{name} must be a numpy array, got {type(image).__name__}.")
    if image.dtype != np.uint8:
        raise InvalidInputError(f"{name} must be uint8 RGB, got dtype {image.dtype}.")
    if image.ndim != 3 or image.shape[2] != 3:
        raise InvalidInputError(f"{name} must have shape (H, W, 3), got {image.shape}.")
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise InvalidInputError(f"{name} is empty: shape {image.shape}.")
    return image


def _check_binary_mask(name: str, mask: Any, shape: tuple[int, int]) -> NDArray[np.uint8]:
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


def _check_enough_pixels(name: str, mask: NDArray[np.uint8]) -> None:
    n = int(mask.sum())
    if n == 0:
        raise InvalidMaskError(f"{name} is empty (no pixel set).")
    if n < MIN_MASK_PIXELS:
        raise InvalidMaskError(
            f"{name} has only {n} pixels; at least {MIN_MASK_PIXELS} are needed "
            "(the reference would fall back to the whole image)."
        )


def _check_ratio(name: str, value: float, low: float) -> float:
    if not np.isfinite(value) or value < low:
        raise InvalidInputError(f"{name} must be a finite number >= {low}, got {value!r}.")
    return float(value)


# ---------------------------------------------------------------------------------------------
# Box helpers (the reference's get_bbox_from_mask / expand_bbox / box2squre / box_in_box)
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


def _expand_box(box: YYXX, ratio: float, shape: tuple[int, int]) -> YYXX:
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


def _square_box(box: YYXX, shape: tuple[int, int]) -> YYXX:
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


def _box_in_box(small: YYXX, big: YYXX) -> YYXX:
    y1, y2, x1, x2 = small
    return y1 - big[0], y2 - big[0], x1 - big[2], x2 - big[2]


# ---------------------------------------------------------------------------------------------
# Padding helpers (the reference's expand_image_mask / pad_to_square)
# ---------------------------------------------------------------------------------------------


def _resize(array: NDArray[Any], dsize: tuple[int, int], *, interpolation: int) -> NDArray[Any]:
    """``cv2.resize`` to ``dsize = (width, height)`` (typed loosely: OpenCV keeps the dtype)."""
    return np.asarray(cv2.resize(array, dsize, interpolation=interpolation))


def _pad_centred(array: NDArray[Any], new_h: int, new_w: int, value: float) -> NDArray[Any]:
    """Pad the first two axes to ``(new_h, new_w)``; the smaller half goes first."""
    h, w = array.shape[:2]
    top, left = (new_h - h) // 2, (new_w - w) // 2
    pad = [(top, new_h - h - top), (left, new_w - w - left)] + [(0, 0)] * (array.ndim - 2)
    return np.pad(array, pad, mode="constant", constant_values=value)


def _pad_to_square(array: NDArray[Any], value: float) -> NDArray[Any]:
    h, w = array.shape[:2]
    side = max(h, w)
    return _pad_centred(array, side, side, value)


# ---------------------------------------------------------------------------------------------
# HF map
# ---------------------------------------------------------------------------------------------


def hf_map(
    image: NDArray[np.uint8], mask: NDArray[Any], *, thresh: int = 50, work_size: int = 256
) -> NDArray[np.uint8]:
    """High-frequency map of ``image`` inside the eroded ``mask`` (the reference's ``sobel``).

    Steps: resize image and mask to ``work_size`` (bilinear), mask ``> 0.5``, erode with a 5x5
    ones kernel twice, per-channel Sobel dx and dy (ksize 3, float64), ``convertScaleAbs``,
    ``0.5|Gx| + 0.5|Gy|``, maximum over the channels, times the eroded mask, values below
    ``thresh`` set to 0, then ``uint8(edge / 255 * image)`` and a bilinear resize back.

    Args:
        image: uint8 ``(H, W, 3)`` RGB.
        mask: ``(H, W)`` float in ``[0, 1]`` (soft) or bool.

    Returns:
        uint8 ``(H, W, 3)``: the image's colours weighted by edge strength; 0 where there is no
        edge of strength ``>= thresh`` or outside the eroded mask.
    """
    image = _check_image("image", image)
    if not isinstance(mask, np.ndarray) or mask.ndim != 2:
        raise InvalidInputError(f"mask must be a (H, W) array, got {getattr(mask, 'shape', mask)}.")
    if mask.shape != image.shape[:2]:
        raise InvalidMaskError(
            f"mask has shape {mask.shape} but image is {image.shape[:2]}: they must match."
        )
    h, w = image.shape[:2]
    size = (work_size, work_size)
    img = _resize(image, size, interpolation=cv2.INTER_LINEAR)
    soft = _resize(mask.astype(np.float64), size, interpolation=cv2.INTER_LINEAR)
    keep = cv2.erode((soft > 0.5).astype(np.uint8), np.ones((5, 5), np.uint8), iterations=2)
    gx = cv2.convertScaleAbs(cv2.Sobel(img, cv2.CV_64F, 1, 0, ksize=3))
    gy = cv2.convertScaleAbs(cv2.Sobel(img, cv2.CV_64F, 0, 1, ksize=3))
    edge = cv2.addWeighted(gx, 0.5, gy, 0.5, 0).max(axis=-1) * keep
    edge[edge < thresh] = 0
    weighted = edge[..., None].astype(np.float32) / 255 * img.astype(np.float32)
    return _resize(weighted.astype(np.uint8), (w, h), interpolation=cv2.INTER_LINEAR)


# ---------------------------------------------------------------------------------------------
# Reference branch
# ---------------------------------------------------------------------------------------------


def _brightness_contrast(image: NDArray[np.uint8], alpha: float, beta: float) -> NDArray[np.uint8]:
    """``clip(v * alpha + beta * 255)`` through a lookup table (albumentations' uint8 path)."""
    lut = np.arange(256, dtype=np.float32) * np.float32(alpha) + np.float32(beta * 255)
    return np.asarray(cv2.LUT(image, np.clip(lut, 0, 255).astype(np.uint8)), dtype=np.uint8)


def prepare_reference(
    image: NDArray[np.uint8],
    mask: NDArray[Any],
    *,
    expand_ratio: float | None = 1.2,
    size: int = 224,
    rng: np.random.Generator | None = None,
    augment: bool = False,
    brightness_limit: float = 0.2,
    contrast_limit: float = 0.2,
) -> ReferenceInputs:
    """Cut the object out on white, pad, resize to ``size`` and compute its HF map.

    1. Box = :func:`bbox_from_mask` (the last row/column of the box is dropped, as in the
       reference). 2. Outside the mask the image becomes white (255); crop to the box.
    3. Centred padding to ``int(h * r), int(w * r)`` (image with 255, mask with 0).
    4. Centred pad to a square, bilinear resize to ``size``; the mask is handled as 0/255.
    5. ``augment`` (training only): horizontal flip (p=0.5, image and mask) then
       brightness/contrast (p=0.5, alpha = 1 + U(-c, c), beta = U(-b, b) * 255), applied before
       the HF map so both the DINO input and the HF source see it.
    6. HF map of the result with the mask / 255.

    Args:
        image: uint8 ``(H, W, 3)`` RGB.
        mask: ``(H, W)`` bool or {0, 1}; at least 10 pixels, box at least 2 px in each direction.
        expand_ratio: ``r``. ``None`` draws from U{1.1, 1.2, 1.3, 1.4} with ``rng`` (training).
        size: output side ``S`` (224 for DINOv2).
        rng: source of randomness; required when ``expand_ratio`` is None or ``augment``.
        augment: apply the training augmentation.

    Returns:
        :class:`ReferenceInputs` with ``image`` float32 (S, S, 3) in [0, 1], ``mask`` uint8
        (S, S) in 0..255 and ``hf_map`` uint8 (S, S, 3).

    Raises:
        InvalidInputError: non-uint8/non-RGB image, bad ratio/size, missing ``rng``.
        InvalidMaskError: mask not binary, wrong shape, fewer than 10 pixels or a box that the
            reference's slicing would make empty (a single row or column).
    """
    image = _check_image("image", image)
    m = _check_binary_mask("mask", mask, (image.shape[0], image.shape[1]))
    _check_enough_pixels("mask", m)
    if size < 1:
        raise InvalidInputError(f"size must be >= 1, got {size}.")
    if (expand_ratio is None or augment) and rng is None:
        raise InvalidInputError("rng is required when expand_ratio is None or augment is True.")
    if expand_ratio is None:
        assert rng is not None
        ratio = REFERENCE_EXPAND_CHOICES[int(rng.integers(len(REFERENCE_EXPAND_CHOICES)))]
    else:
        ratio = _check_ratio("expand_ratio", expand_ratio, 1.0)

    # 1-2. white background, crop (the inclusive y2/x2 are used as exclusive ends on purpose)
    y1, y2, x1, x2 = bbox_from_mask(m)
    if y2 <= y1 or x2 <= x1:
        raise InvalidMaskError(
            f"mask spans a single row or column (box y={y1}..{y2}, x={x1}..{x2}); "
            "it must be at least 2 pixels high and wide."
        )
    masked = np.where(m[..., None] == 1, image, np.uint8(255))[y1:y2, x1:x2]
    crop_mask = m[y1:y2, x1:x2]

    # 3. centred expansion
    h, w = crop_mask.shape
    new_h, new_w = int(h * ratio), int(w * ratio)
    masked = _pad_centred(masked, new_h, new_w, 255)
    crop_mask = _pad_centred(crop_mask, new_h, new_w, 0)

    # 4. square + resize
    dsize = (size, size)
    ref = _resize(_pad_to_square(masked, 255), dsize, interpolation=cv2.INTER_LINEAR)
    soft = _resize(
        _pad_to_square(crop_mask * np.uint8(255), 0), dsize, interpolation=cv2.INTER_LINEAR
    )

    # 5. training augmentation
    if augment:
        assert rng is not None
        if rng.random() < 0.5:
            ref, soft = ref[:, ::-1].copy(), soft[:, ::-1].copy()
        if rng.random() < 0.5:
            alpha = 1.0 + rng.uniform(-contrast_limit, contrast_limit)
            beta = rng.uniform(-brightness_limit, brightness_limit)
            ref = _brightness_contrast(ref, alpha, beta)

    # 6. HF map
    hf = hf_map(ref, soft.astype(np.float64) / 255)
    return ReferenceInputs(
        image=(ref.astype(np.float32) / 255).astype(np.float32), mask=soft, hf_map=hf
    )


# ---------------------------------------------------------------------------------------------
# Target branch
# ---------------------------------------------------------------------------------------------


def prepare_target(
    image: NDArray[np.uint8],
    mask: NDArray[Any],
    hf_map: NDArray[np.uint8],
    *,
    box_expand: float = 1.1,
    crop_ratio: float | None = 2.0,
    size: int = 512,
    rng: np.random.Generator | None = None,
    shape_mask: bool = False,
    perturb_mask_p: float = 0.0,
) -> TargetInputs:
    """Crop around the target region, paste the HF map into it and build the 4-channel hint.

    1. ``box`` = :func:`bbox_from_mask` expanded by ``box_expand`` (reference: always 1.1).
    2. ``crop`` = ``box`` expanded by ``crop_ratio``, then made square around its centre; both
       are clipped to the image, so at borders the crop can be non-square.
    3. Collage = the crop with the box region replaced by the HF map stretched (bilinear) to the
       box size. Mask channel = 1 in the box, 0 elsewhere in the crop; with ``shape_mask`` it
       is the cropped target mask instead; with probability ``perturb_mask_p`` it is
       :func:`perturb_mask` of the cropped target mask (training: 0.7).
    4. Pad crop and collage to a square with 0 (black), the mask channel with -1, resize to
       ``size`` (RGB bilinear, mask nearest), RGB to ``v / 127.5 - 1``.

    Args:
        image: uint8 ``(H, W, 3)`` RGB.
        mask: ``(H, W)`` bool or {0, 1}; at least 10 pixels.
        hf_map: uint8 ``(S, S, 3)``, the reference's HF map (:attr:`ReferenceInputs.hf_map`).
        box_expand: target box expansion (>= 1).
        crop_ratio: crop expansion around the box (>= 1). ``None`` draws from U{1.3, ..., 2.9}
            with ``rng`` like the reference.
        size: output side ``T`` (512).
        rng: source of randomness; required for ``crop_ratio=None`` or ``perturb_mask_p > 0``.
        shape_mask: mask channel from the target mask (demo "shape control").
        perturb_mask_p: probability of the training mask perturbation.

    Returns:
        :class:`TargetInputs` (hint float32 (T, T, 4), target float32 (T, T, 3), boxes).

    Raises:
        InvalidInputError: bad image/HF map, ratios, size or a missing ``rng``.
        InvalidMaskError: mask not binary, wrong shape, fewer than 10 pixels, or an expanded box
            that is empty.
    """
    image = _check_image("image", image)
    m = _check_binary_mask("mask", mask, (image.shape[0], image.shape[1]))
    _check_enough_pixels("mask", m)
    hf = _check_image("hf_map", hf_map)
    if hf.shape[0] != hf.shape[1]:
        raise InvalidInputError(f"hf_map must be square (S, S, 3), got {hf.shape}.")
    if size < 1:
        raise InvalidInputError(f"size must be >= 1, got {size}.")
    box_expand = _check_ratio("box_expand", box_expand, 1.0)
    if not 0.0 <= perturb_mask_p <= 1.0:
        raise InvalidInputError(f"perturb_mask_p must be in [0, 1], got {perturb_mask_p!r}.")
    if (crop_ratio is None or perturb_mask_p > 0) and rng is None:
        raise InvalidInputError("rng is required when crop_ratio is None or perturb_mask_p > 0.")
    if crop_ratio is None:
        assert rng is not None
        ratio = CROP_RATIO_CHOICES[int(rng.integers(len(CROP_RATIO_CHOICES)))]
    else:
        ratio = _check_ratio("crop_ratio", crop_ratio, 1.0)

    shape = (image.shape[0], image.shape[1])
    # 1. target box (full-image coordinates, end-exclusive from here on)
    box = _expand_box(bbox_from_mask(m), box_expand, shape)
    if box[1] <= box[0] or box[3] <= box[2]:
        raise InvalidMaskError(f"mask gives an empty target box {box}; it is too thin.")

    # 2. crop
    crop = _square_box(_expand_box(box, ratio, shape), shape)
    cy1, cy2, cx1, cx2 = crop
    # The reference assumes the box lies inside the crop; squaring an odd-sided box can shave
    # one pixel, so clip to keep the collage well-formed (the reference would fail there).
    by1, by2, bx1, bx2 = _box_in_box(box, crop)
    by1, bx1 = max(by1, 0), max(bx1, 0)
    by2, bx2 = min(by2, cy2 - cy1), min(bx2, cx2 - cx1)
    box_in_crop = (by1, by2, bx1, bx2)
    box = (by1 + cy1, by2 + cy1, bx1 + cx1, bx2 + cx1)
    cropped = image[cy1:cy2, cx1:cx2]
    cropped_mask = m[cy1:cy2, cx1:cx2]

    # 3. collage and its mask
    collage = cropped.copy()
    collage[by1:by2, bx1:bx2] = _resize(hf, (bx2 - bx1, by2 - by1), interpolation=cv2.INTER_LINEAR)
    if shape_mask:
        collage_mask = cropped_mask.copy()
    else:
        collage_mask = np.zeros(cropped_mask.shape, np.uint8)
        collage_mask[by1:by2, bx1:bx2] = 1
    if perturb_mask_p > 0:
        assert rng is not None
        if rng.random() < perturb_mask_p:
            collage_mask = perturb_mask(cropped_mask, rng)

    # 4. pad to square, resize, normalise
    h1, w1 = cropped.shape[:2]
    padded_target = _pad_to_square(cropped, 0)
    padded_collage = _pad_to_square(collage, 0)
    # 2 marks padding in uint8 so nearest-neighbour resize keeps it distinct; it becomes -1
    padded_mask = _pad_to_square(collage_mask, 2)
    h2, w2 = padded_collage.shape[:2]
    dsize = (size, size)
    target = _resize(padded_target, dsize, interpolation=cv2.INTER_LINEAR).astype(np.float32)
    coll = _resize(padded_collage, dsize, interpolation=cv2.INTER_LINEAR).astype(np.float32)
    mask_ch = _resize(padded_mask, dsize, interpolation=cv2.INTER_NEAREST).astype(np.float32)
    mask_ch[mask_ch == 2] = PAD_MASK_VALUE
    hint = np.concatenate([coll / 127.5 - 1.0, mask_ch[..., None]], axis=-1).astype(np.float32)
    return TargetInputs(
        hint=hint,
        target=(target / 127.5 - 1.0).astype(np.float32),
        crop=crop,
        box=box,
        box_in_crop=box_in_crop,
        extra_sizes=(h1, w1, h2, w2),
        image_size=shape,
        size=size,
    )


# ---------------------------------------------------------------------------------------------
# Paste-back
# ---------------------------------------------------------------------------------------------


def paste_back(
    generated: NDArray[Any],
    target_image: NDArray[np.uint8],
    prepared: TargetInputs,
    *,
    margin: int = 3,
) -> NDArray[np.uint8]:
    """Put the generated crop back into the full image (the demo's ``crop_back`` + box copy).

    1. Drop the first row of ``generated`` (the reference's quirk: a 1/T vertical stretch).
    2. Bilinear resize to the padded size ``(H2, W2)``, remove the centred square padding.
    3. Paste it into a copy of ``target_image`` at the crop box, ``margin`` pixels in from each
       side (values cast to uint8 by truncation, like numpy assignment).
    4. Copy only the ``prepared.box`` region of that into another copy of ``target_image``:
       every pixel outside ``prepared.box`` is returned unchanged.

    Args:
        generated: ``(T, T, 3)`` RGB, uint8, or float in ``[0, 255]`` (the decoder output
            ``x * 127.5 + 127.5`` clipped; passing floats reproduces the reference's rounding).
        target_image: uint8 ``(H, W, 3)`` RGB, the image given to :func:`prepare_target`.
        prepared: the :class:`TargetInputs` returned for that image.
        margin: pixels left untouched along the crop's sides (demo: 3).

    Returns:
        uint8 ``(H, W, 3)``, a new array; ``target_image`` is not modified.
    """
    target_image = _check_image("target_image", target_image)
    if target_image.shape[:2] != tuple(prepared.image_size):
        raise InvalidInputError(
            f"target_image has size {target_image.shape[:2]} but was prepared at "
            f"{tuple(prepared.image_size)}."
        )
    t = prepared.size
    if not isinstance(generated, np.ndarray) or generated.shape != (t, t, 3):
        raise InvalidInputError(
            f"generated must have shape ({t}, {t}, 3), got {getattr(generated, 'shape', None)}."
        )
    if generated.dtype != np.uint8 and not np.issubdtype(generated.dtype, np.floating):
        raise InvalidInputError(f"generated must be uint8 or float, got dtype {generated.dtype}.")
    if margin < 0:
        raise InvalidInputError(f"margin must be >= 0, got {margin}.")
    h, w = prepared.image_size
    y1, y2, x1, x2 = prepared.crop
    by1, by2, bx1, bx2 = prepared.box
    if not (0 <= y1 < y2 <= h and 0 <= x1 < x2 <= w):
        raise InvalidInputError(f"prepared.crop {prepared.crop} lies outside the image {(h, w)}.")
    if not (0 <= by1 <= by2 <= h and 0 <= bx1 <= bx2 <= w):
        raise InvalidInputError(f"prepared.box {prepared.box} lies outside the image {(h, w)}.")
    h1, w1, h2, w2 = prepared.extra_sizes
    if (h1, w1) != (y2 - y1, x2 - x1) or max(h1, w1) != h2 or h2 != w2:
        raise InvalidInputError(
            f"prepared.extra_sizes {prepared.extra_sizes} do not match crop {prepared.crop}."
        )

    pred = generated
    if np.issubdtype(pred.dtype, np.floating):
        pred = np.clip(pred, 0, 255).astype(np.float32)
    pred = _resize(pred[1:], (w2, h2), interpolation=cv2.INTER_LINEAR)
    top, left = (h2 - h1) // 2, (w2 - w1) // 2
    pred = pred[top : top + h1, left : left + w1]

    pasted = target_image.copy()
    m = margin
    pasted[y1 + m : y2 - m, x1 + m : x2 - m] = pred[m : h1 - m, m : w1 - m]
    out = target_image.copy()
    out[by1:by2, bx1:bx2] = pasted[by1:by2, bx1:bx2]
    return out


# ---------------------------------------------------------------------------------------------
# Training filters and augmentation
# ---------------------------------------------------------------------------------------------


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
    ty1, ty2, tx1, tx2 = _expand_box(bbox_from_mask(tar_mask), box_expand, (th, tw))
    if (ty2 - ty1) > th * max_ratio or (tx2 - tx1) > tw * max_ratio:
        return "tar_box_large"
    return None


__all__ = [
    "PREPROCESS_VERSION",
    "ReferenceInputs",
    "TargetInputs",
    "bbox_from_mask",
    "check_pair",
    "hf_map",
    "mask_score",
    "paste_back",
    "perturb_mask",
    "prepare_reference",
    "prepare_target",
]
