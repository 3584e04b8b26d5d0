"""Masks: the person's silhouette, the region to repaint, and the garment's cut-out.

Box convention: :class:`tryon.types.Box` (end-exclusive pixels). Masks are ``(H, W)`` arrays:
bool for decisions, float32 in ``[0, 1]`` for soft model outputs.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Literal

import cv2
import numpy as np
from numpy.typing import NDArray

from tryon.errors import GarmentNotSeparableError, InvalidMaskError
from tryon.types import Box
from tryon.vision.pose import GraphOwner, check_rgb_image

log = logging.getLogger(__name__)

GarmentMaskSource = Literal["uploaded", "alpha", "background_removal"]


class PersonSegmenter(GraphOwner):
    """Owns one MediaPipe SelfieSegmentation graph (``model_selection=0``, the general model).

    Built on the first :meth:`segment` call; released by :meth:`close` or a ``with`` block.
    Not thread-safe: one segmenter per thread or process.
    """

    def __init__(self) -> None:
        self._graph: Any = None

    def _ensure_graph(self) -> Any:
        if self._graph is None:
            import mediapipe as mp  # heavy: imported only when a graph is needed

            self._graph = mp.solutions.selfie_segmentation.SelfieSegmentation(model_selection=0)
        return self._graph

    def segment(self, image: NDArray[np.uint8]) -> NDArray[np.float32]:
        """Person probability, float32 ``(H, W)`` in ``[0, 1]``, for a uint8 ``(H, W, 3)`` RGB image.

        The model sees a square input; the image is padded to a square first, because squashing
        a wide photo merges or loses people.
        """
        arr = check_rgb_image(image)
        h, w = arr.shape[:2]
        side = max(h, w)
        top, left = (side - h) // 2, (side - w) // 2
        if side != h or side != w:
            square = np.zeros((side, side, 3), dtype=np.uint8)
            square[top : top + h, left : left + w] = arr
        else:
            square = arr
        mask = self._ensure_graph().process(square).segmentation_mask
        out = np.asarray(mask, dtype=np.float32)[top : top + h, left : left + w]
        return np.clip(out, 0.0, 1.0)



def _check_mask(mask: Any, shape: tuple[int, int] | None, name: str) -> NDArray[Any]:
    arr = np.asarray(mask)
    if arr.ndim != 2 or (shape is not None and arr.shape != shape):
        want = f"{shape}" if shape is not None else "(H, W)"
        raise InvalidMaskError(f"{name} must have shape {want}, got {arr.shape}", field=name)
    return arr


def box_mask(box: Box, image_size: tuple[int, int]) -> NDArray[np.bool_]:
    """bool ``(H, W)`` with True inside ``box`` (clipped to the image)."""
    w, h = image_size
    b = box.clip(w, h)
    out = np.zeros((h, w), dtype=bool)
    out[b.y1 : b.y2, b.x1 : b.x2] = True
    return out


def target_mask(
    box: Box,
    image_size: tuple[int, int],
    *,
    person_mask: NDArray[Any] | None = None,
    dilate_px: int = 15,
    threshold: float = 0.5,
) -> NDArray[np.bool_]:
    """Region to repaint, bool ``(H, W)`` for ``image_size == (W, H)``.

    Without ``person_mask``: the whole box. With it (float ``(H, W)`` in [0, 1] or bool): the
    person's pixels inside the box, dilated by ``dilate_px`` so the new garment may be a little
    wider than the old silhouette, then cut back to the box. Falls back to the whole box when
    the person does not reach into it.
    """
    plain = box_mask(box, image_size)
    if person_mask is None:
        return plain
    w, h = image_size
    arr = _check_mask(person_mask, (h, w), "person_mask")
    person = arr if arr.dtype == np.bool_ else arr >= threshold
    inside = person & plain
    if not inside.any():
        return plain
    if dilate_px > 0:
        k = 2 * int(dilate_px) + 1
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))
        inside = cv2.dilate(inside.astype(np.uint8), kernel).astype(bool)
    return inside & plain


@dataclass(frozen=True)
class GarmentMask:
    """Garment cut-out: bool ``(H, W)`` ``mask``; ``score`` in [0, 1] (confidence that the mask is
    the garment; 1.0 for uploaded and alpha masks); ``source`` says where it came from."""

    mask: NDArray[np.bool_]
    score: float
    source: GarmentMaskSource

    @property
    def coverage(self) -> float:
        return float(self.mask.mean())

    def bbox(self) -> Box:
        """Tight box around the mask."""
        ys, xs = np.nonzero(self.mask)
        return Box(int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)


# background removal parameters (Lab distances on OpenCV's 8-bit Lab scale)
_WORK_SIDE = 384  # analyse at most this long a side; the mask is scaled back up
_BORDER_FRACTION = 0.02
_INLIER_DISTANCE = 18.0
_MIN_AREA, _MAX_AREA = 0.02, 0.95
#: a backdrop whose border strip has more than this share of strong edges is textured
#: (brick, tiles, wood): its pattern lines look like garment edges to the colour model
_TEXTURED_EDGES = 0.12
_EDGE_STRENGTH = 60.0  # Sobel magnitude on the blurred 8-bit L channel
#: on a textured backdrop the cut must survive an opening almost unchanged (no spikes along
#: the pattern's lines) to be trusted
_CLEAN_ON_TEXTURE = 0.99


def _fill_holes(mask: NDArray[np.uint8]) -> NDArray[np.uint8]:
    """Fill regions not connected to the image border (logos or prints close to the backdrop)."""
    h, w = mask.shape
    padded = np.zeros((h + 2, w + 2), np.uint8)
    padded[1:-1, 1:-1] = mask
    flood: Any = padded.copy()
    flood_mask: Any = np.zeros((h + 4, w + 4), np.uint8)
    cv2.floodFill(flood, flood_mask, (0, 0), (1,))
    holes = (flood == 0)[1:-1, 1:-1]
    return (mask.astype(bool) | holes).astype(np.uint8)


def _largest_components(
    mask: NDArray[np.uint8], keep: float = 0.05
) -> tuple[NDArray[np.uint8], float]:
    """Keep components at least ``keep`` times the largest; also return the largest's share."""
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    if n <= 1:
        return mask, 0.0
    areas = stats[1:, cv2.CC_STAT_AREA].astype(np.float64)
    big = np.flatnonzero(areas >= keep * areas.max()) + 1
    out = np.isin(labels, big).astype(np.uint8)
    return out, float(areas.max() / areas.sum())


def _edge_share(lab: NDArray[np.float32], region: NDArray[np.bool_]) -> float:
    """Share of ``region``'s pixels on a strong lightness edge."""
    light = cv2.GaussianBlur(lab[..., 0], (3, 3), 0)
    mag = cv2.magnitude(cv2.Sobel(light, cv2.CV_32F, 1, 0), cv2.Sobel(light, cv2.CV_32F, 0, 1))
    return float((mag[region] > _EDGE_STRENGTH).mean())


def _cleanliness(cut: NDArray[np.uint8]) -> float:
    """IoU of the cut with its opening by a disc 3 % of the long side: 1.0 for a smooth
    outline, lower for spikes and threads."""
    k = max(3, int(0.03 * max(cut.shape)) | 1)
    opened = cv2.morphologyEx(cut, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k)))
    union = float(np.logical_or(cut, opened).sum())
    return float(np.logical_and(cut, opened).sum()) / union if union else 0.0


def _remove_background(image: NDArray[np.uint8]) -> tuple[NDArray[np.bool_], float]:
    """Garment mask and score for a product shot on a roughly uniform backdrop.

    1. Model the backdrop as the median Lab colour of a thin border strip (the garment may touch
       the border, so the median, not the mean). 2. Mark pixels far from it as probable garment,
       border pixels close to it as sure backdrop. 3. Refine with GrabCut. 4. Clean up and score:
       how uniform the border is, how well GrabCut agrees with the colour model, and how much of
       the garment is one piece.
    """
    h, w = image.shape[:2]
    scale = min(1.0, _WORK_SIDE / max(h, w))
    small: Any = (
        cv2.resize(
            image,
            (max(1, round(w * scale)), max(1, round(h * scale))),
            interpolation=cv2.INTER_AREA,
        )
        if scale < 1.0
        else image
    )
    sh, sw = small.shape[:2]
    lab = cv2.cvtColor(small, cv2.COLOR_RGB2LAB).astype(np.float32)

    # 1. Border colour model
    b = max(2, round(_BORDER_FRACTION * min(sh, sw)))
    border = np.zeros((sh, sw), dtype=bool)
    border[:b, :] = border[-b:, :] = True
    border[:, :b] = border[:, -b:] = True
    border_px = lab[border]
    bg = np.median(border_px, axis=0)
    d_border = np.linalg.norm(border_px - bg, axis=1)
    inliers = d_border < _INLIER_DISTANCE
    uniformity = float(inliers.mean())
    if uniformity < 0.4:
        return np.zeros((h, w), bool), 0.0
    bg = border_px[inliers].mean(axis=0)
    spread = float(np.median(np.linalg.norm(border_px[inliers] - bg, axis=1)))
    tau = float(np.clip(4.0 * spread + 6.0, 8.0, 30.0))

    # 2. Initial labels
    dist = np.linalg.norm(lab - bg, axis=2)
    colour_fg: Any = (dist > tau).astype(np.uint8)
    colour_fg = cv2.morphologyEx(colour_fg, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    if colour_fg.mean() < 0.005:
        return np.zeros((h, w), bool), 0.0
    gc: Any = np.where(colour_fg > 0, cv2.GC_PR_FGD, cv2.GC_PR_BGD).astype(np.uint8)
    gc[(dist < tau) & border] = cv2.GC_BGD

    # 3. GrabCut (deterministic given the same input)
    bgd_model = np.zeros((1, 65), np.float64)
    fgd_model = np.zeros((1, 65), np.float64)
    try:
        cv2.grabCut(small, gc, (0, 0, 0, 0), bgd_model, fgd_model, 3, cv2.GC_INIT_WITH_MASK)
    except cv2.error as exc:  # raised when one of the classes has too few pixels to model
        log.debug("grabcut failed: %s", exc)
        return np.zeros((h, w), bool), 0.0
    cut: Any = np.isin(gc, (cv2.GC_FGD, cv2.GC_PR_FGD)).astype(np.uint8)

    # 4. Clean up and score
    cut = cv2.morphologyEx(cut, cv2.MORPH_CLOSE, np.ones((5, 5), np.uint8))
    cut, largest_share = _largest_components(cut)
    cut = _fill_holes(cut)
    area = float(cut.mean())
    if not (_MIN_AREA <= area <= _MAX_AREA):
        return np.zeros((h, w), bool), 0.0
    clean_colour = _fill_holes(_largest_components(colour_fg)[0])
    inter = float(np.logical_and(cut, clean_colour).sum())
    union = float(np.logical_or(cut, clean_colour).sum())
    agreement = inter / union if union else 0.0
    # a tight product crop has the garment on up to ~half the border: full marks from 60 %
    border_term = float(np.clip((uniformity - 0.4) / 0.2, 0.0, 1.0))
    score = border_term * agreement * largest_share
    edges = _edge_share(lab, border)
    clean = _cleanliness(cut)
    if edges > _TEXTURED_EDGES and clean < _CLEAN_ON_TEXTURE:
        score = 0.0
    log.debug(
        "garment background removal: uniformity=%.3f agreement=%.3f largest=%.3f area=%.3f "
        "border_edges=%.3f clean=%.3f",
        uniformity, agreement, largest_share, area, edges, clean,
    )  # fmt: skip
    if scale < 1.0:
        up = cv2.resize(cut.astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR)
        return up >= 0.5, score
    return cut.astype(bool), score


def garment_mask(
    image: NDArray[np.uint8],
    *,
    alpha: NDArray[np.uint8] | None = None,
    uploaded: NDArray[np.bool_] | None = None,
    min_score: float = 0.5,
) -> GarmentMask:
    """Garment cut-out for a garment photo (uint8 ``(H, W, 3)`` RGB).

    Precedence: an ``uploaded`` bool ``(H, W)`` mask, else the ``alpha`` channel (uint8
    ``(H, W)``, garment where >= 128) when it actually cuts something out, else background
    removal (border colour model + GrabCut), which needs a plain backdrop. Raises
    InvalidMaskError for an empty or mis-shaped uploaded mask, GarmentNotSeparableError when
    background removal scores below ``min_score``.
    """
    arr = check_rgb_image(image, "garment image")
    h, w = arr.shape[:2]
    if uploaded is not None:
        up = _check_mask(uploaded, (h, w), "mask").astype(bool)
        if not up.any():
            raise InvalidMaskError("The uploaded garment mask is empty.", field="mask")
        return GarmentMask(up, 1.0, "uploaded")
    if alpha is not None:
        a = _check_mask(alpha, (h, w), "alpha")
        cutout = a >= 128
        coverage = float(cutout.mean())
        # an opaque PNG (or an all-transparent one) says nothing about the garment's shape
        if 0.005 <= coverage <= 0.995:
            return GarmentMask(cutout, 1.0, "alpha")
        log.debug("alpha channel covers %.3f of the image; ignoring it", coverage)
    mask, score = _remove_background(arr)
    if score < min_score or not mask.any():
        raise GarmentNotSeparableError(score=round(score, 3), min_score=min_score)
    return GarmentMask(mask, float(score), "background_removal")
