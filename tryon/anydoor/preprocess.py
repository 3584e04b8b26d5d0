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
  default ratios everything is deterministic. The training-only filters and augmentations
  live in :mod:`tryon.anydoor.training.augment` and plug in through the ``augment`` and
  ``mask_channel`` hooks; box and padding geometry lives in :mod:`tryon.anydoor.geometry`.

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

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

from tryon.anydoor.geometry import (
    YYXX,
    bbox_from_mask,
    box_in_box,
    check_binary_mask,
    check_enough_pixels,
    check_image,
    check_ratio,
    expand_box,
    pad_centred,
    pad_to_square,
    resize,
    square_box,
)
from tryon.errors import InvalidInputError, InvalidMaskError

PREPROCESS_VERSION: str = "anydoor-pre-1"

#: value of the collage-mask channel in the square padding (demo / training variant)
PAD_MASK_VALUE = -1.0
#: ratios the reference draws from: randint(11, 15) / 10 and randint(13, 30) / 10
REFERENCE_EXPAND_CHOICES = (1.1, 1.2, 1.3, 1.4)
CROP_RATIO_CHOICES = tuple(k / 10 for k in range(13, 30))


#: training hooks (see :mod:`tryon.anydoor.training.augment`); inference passes None
ReferenceAugment = Callable[
    [NDArray[np.uint8], NDArray[np.uint8]], tuple[NDArray[np.uint8], NDArray[np.uint8]]
]
MaskChannelHook = Callable[[NDArray[np.uint8], NDArray[np.uint8]], NDArray[np.uint8]]


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
    image = check_image("image", image)
    if not isinstance(mask, np.ndarray) or mask.ndim != 2:
        raise InvalidInputError(f"mask must be a (H, W) array, got {getattr(mask, 'shape', mask)}.")
    if mask.shape != image.shape[:2]:
        raise InvalidMaskError(
            f"mask has shape {mask.shape} but image is {image.shape[:2]}: they must match."
        )
    h, w = image.shape[:2]
    size = (work_size, work_size)
    img = resize(image, size, interpolation=cv2.INTER_LINEAR)
    soft = resize(mask.astype(np.float64), size, interpolation=cv2.INTER_LINEAR)
    keep = cv2.erode((soft > 0.5).astype(np.uint8), np.ones((5, 5), np.uint8), iterations=2)
    gx = cv2.convertScaleAbs(cv2.Sobel(img, cv2.CV_64F, 1, 0, ksize=3))
    gy = cv2.convertScaleAbs(cv2.Sobel(img, cv2.CV_64F, 0, 1, ksize=3))
    edge = cv2.addWeighted(gx, 0.5, gy, 0.5, 0).max(axis=-1) * keep
    edge[edge < thresh] = 0
    weighted = edge[..., None].astype(np.float32) / 255 * img.astype(np.float32)
    return resize(weighted.astype(np.uint8), (w, h), interpolation=cv2.INTER_LINEAR)


# ---------------------------------------------------------------------------------------------
# Reference branch
# ---------------------------------------------------------------------------------------------


def prepare_reference(
    image: NDArray[np.uint8],
    mask: NDArray[Any],
    *,
    expand_ratio: float | None = 1.2,
    size: int = 224,
    rng: np.random.Generator | None = None,
    augment: ReferenceAugment | None = None,
) -> ReferenceInputs:
    """Cut the object out on white, pad, resize to ``size`` and compute its HF map.

    1. Box = :func:`bbox_from_mask` (the last row/column of the box is dropped, as in the
       reference). 2. Outside the mask the image becomes white (255); crop to the box.
    3. Centred padding to ``int(h * r), int(w * r)`` (image with 255, mask with 0).
    4. Centred pad to a square, bilinear resize to ``size``; the mask is handled as 0/255.
    5. ``augment`` (training only, e.g.
       :func:`~tryon.anydoor.training.augment.reference_augmentation`): maps the resized
       image and mask to new ones before the HF map, so both the DINO input and the HF
       source see it.
    6. HF map of the result with the mask / 255.

    Args:
        image: uint8 ``(H, W, 3)`` RGB.
        mask: ``(H, W)`` bool or {0, 1}; at least 10 pixels, box at least 2 px in each direction.
        expand_ratio: ``r``. ``None`` draws from U{1.1, 1.2, 1.3, 1.4} with ``rng`` (training).
        size: output side ``S`` (224 for DINOv2).
        rng: source of randomness; required when ``expand_ratio`` is None.
        augment: training hook ``(image uint8 (S, S, 3), mask uint8 (S, S)) -> (image, mask)``.

    Returns:
        :class:`ReferenceInputs` with ``image`` float32 (S, S, 3) in [0, 1], ``mask`` uint8
        (S, S) in 0..255 and ``hf_map`` uint8 (S, S, 3).

    Raises:
        InvalidInputError: non-uint8/non-RGB image, bad ratio/size, missing ``rng``.
        InvalidMaskError: mask not binary, wrong shape, fewer than 10 pixels or a box that the
            reference's slicing would make empty (a single row or column).
    """
    image = check_image("image", image)
    m = check_binary_mask("mask", mask, (image.shape[0], image.shape[1]))
    check_enough_pixels("mask", m)
    if size < 1:
        raise InvalidInputError(f"size must be >= 1, got {size}.")
    if expand_ratio is None:
        if rng is None:
            raise InvalidInputError("rng is required when expand_ratio is None.")
        ratio = REFERENCE_EXPAND_CHOICES[int(rng.integers(len(REFERENCE_EXPAND_CHOICES)))]
    else:
        ratio = check_ratio("expand_ratio", expand_ratio, 1.0)

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
    masked = pad_centred(masked, new_h, new_w, 255)
    crop_mask = pad_centred(crop_mask, new_h, new_w, 0)

    # 4. square + resize
    dsize = (size, size)
    ref = resize(pad_to_square(masked, 255), dsize, interpolation=cv2.INTER_LINEAR)
    soft = resize(
        pad_to_square(crop_mask * np.uint8(255), 0), dsize, interpolation=cv2.INTER_LINEAR
    )

    # 5. training augmentation
    if augment is not None:
        ref, soft = augment(ref, soft)

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
    mask_channel: MaskChannelHook | None = None,
) -> TargetInputs:
    """Crop around the target region, paste the HF map into it and build the 4-channel hint.

    1. ``box`` = :func:`bbox_from_mask` expanded by ``box_expand`` (reference: always 1.1).
    2. ``crop`` = ``box`` expanded by ``crop_ratio``, then made square around its centre; both
       are clipped to the image, so at borders the crop can be non-square.
    3. Collage = the crop with the box region replaced by the HF map stretched (bilinear) to the
       box size. Mask channel = 1 in the box, 0 elsewhere in the crop; with ``shape_mask`` it
       is the cropped target mask instead; a ``mask_channel`` hook (training's perturbation,
       :func:`~tryon.anydoor.training.augment.perturbed_mask_channel`) may replace it.
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
        rng: source of randomness; required for ``crop_ratio=None``.
        shape_mask: mask channel from the target mask (demo "shape control").
        mask_channel: training hook ``(cropped target mask, mask channel) -> mask channel``,
            uint8 ``(h, w)`` {0, 1} arrays of the crop's size.

    Returns:
        :class:`TargetInputs` (hint float32 (T, T, 4), target float32 (T, T, 3), boxes).

    Raises:
        InvalidInputError: bad image/HF map, ratios, size or a missing ``rng``.
        InvalidMaskError: mask not binary, wrong shape, fewer than 10 pixels, or an expanded box
            that is empty.
    """
    image = check_image("image", image)
    m = check_binary_mask("mask", mask, (image.shape[0], image.shape[1]))
    check_enough_pixels("mask", m)
    hf = check_image("hf_map", hf_map)
    if hf.shape[0] != hf.shape[1]:
        raise InvalidInputError(f"hf_map must be square (S, S, 3), got {hf.shape}.")
    if size < 1:
        raise InvalidInputError(f"size must be >= 1, got {size}.")
    box_expand = check_ratio("box_expand", box_expand, 1.0)
    if crop_ratio is None:
        if rng is None:
            raise InvalidInputError("rng is required when crop_ratio is None.")
        ratio = CROP_RATIO_CHOICES[int(rng.integers(len(CROP_RATIO_CHOICES)))]
    else:
        ratio = check_ratio("crop_ratio", crop_ratio, 1.0)

    shape = (image.shape[0], image.shape[1])
    # 1. target box (full-image coordinates, end-exclusive from here on)
    box = expand_box(bbox_from_mask(m), box_expand, shape)
    if box[1] <= box[0] or box[3] <= box[2]:
        raise InvalidMaskError(f"mask gives an empty target box {box}; it is too thin.")

    # 2. crop
    crop = square_box(expand_box(box, ratio, shape), shape)
    cy1, cy2, cx1, cx2 = crop
    # The reference assumes the box lies inside the crop; squaring an odd-sided box can shave
    # one pixel, so clip to keep the collage well-formed (the reference would fail there).
    by1, by2, bx1, bx2 = box_in_box(box, crop)
    by1, bx1 = max(by1, 0), max(bx1, 0)
    by2, bx2 = min(by2, cy2 - cy1), min(bx2, cx2 - cx1)
    box_in_crop = (by1, by2, bx1, bx2)
    box = (by1 + cy1, by2 + cy1, bx1 + cx1, bx2 + cx1)
    cropped = image[cy1:cy2, cx1:cx2]
    cropped_mask = m[cy1:cy2, cx1:cx2]

    # 3. collage and its mask
    collage = cropped.copy()
    collage[by1:by2, bx1:bx2] = resize(hf, (bx2 - bx1, by2 - by1), interpolation=cv2.INTER_LINEAR)
    if shape_mask:
        collage_mask = cropped_mask.copy()
    else:
        collage_mask = np.zeros(cropped_mask.shape, np.uint8)
        collage_mask[by1:by2, bx1:bx2] = 1
    if mask_channel is not None:
        collage_mask = mask_channel(cropped_mask, collage_mask)

    # 4. pad to square, resize, normalise
    h1, w1 = cropped.shape[:2]
    padded_target = pad_to_square(cropped, 0)
    padded_collage = pad_to_square(collage, 0)
    # 2 marks padding in uint8 so nearest-neighbour resize keeps it distinct; it becomes -1
    padded_mask = pad_to_square(collage_mask, 2)
    h2, w2 = padded_collage.shape[:2]
    dsize = (size, size)
    target = resize(padded_target, dsize, interpolation=cv2.INTER_LINEAR).astype(np.float32)
    coll = resize(padded_collage, dsize, interpolation=cv2.INTER_LINEAR).astype(np.float32)
    mask_ch = resize(padded_mask, dsize, interpolation=cv2.INTER_NEAREST).astype(np.float32)
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
    target_image = check_image("target_image", target_image)
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
    pred = resize(pred[1:], (w2, h2), interpolation=cv2.INTER_LINEAR)
    top, left = (h2 - h1) // 2, (w2 - w1) // 2
    pred = pred[top : top + h1, left : left + w1]

    pasted = target_image.copy()
    m = margin
    pasted[y1 + m : y2 - m, x1 + m : x2 - m] = pred[m : h1 - m, m : w1 - m]
    out = target_image.copy()
    out[by1:by2, bx1:bx2] = pasted[by1:by2, bx1:bx2]
    return out


__all__ = [
    "PREPROCESS_VERSION",
    "ReferenceInputs",
    "TargetInputs",
    "bbox_from_mask",
    "hf_map",
    "paste_back",
    "prepare_reference",
    "prepare_target",
]
