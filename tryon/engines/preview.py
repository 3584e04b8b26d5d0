"""The preview engine: a garment cut-out warped onto the person, on the CPU, with no weights.

It gives an instant, honest approximation (no diffusion): the garment is cut out by its mask,
fitted to the body with one affine transform, shaded by the person's own lighting, feathered and
composited **only inside** ``request.target_mask``; every pixel outside that mask is returned
bit-exact.

How the request chooses the fit:

* ``request.explicit_box`` false and ``request.landmarks`` given (a pose was estimated): the garment is fitted to the landmarks the
  category needs. Tops, outerwear and dresses need both shoulders; bottoms need both hips. If
  those are missing, outside the image or below visibility 0.5 the render fails with
  :class:`~tryon.errors.PoseNotUsableError`. The garment's length always follows
  ``request.box`` (the placement rule already sized it from the pose and the garment length).
* ``request.explicit_box`` true, or no landmarks: the box is authoritative; the garment's mask
  bounding box is stretched onto ``request.box``.

Callers say "explicit box" with the request's flag, never by dropping the landmarks.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

from tryon.config import Settings
from tryon.engines.base import CancelCheck, ProgressCallback, RenderOutput, RenderRequest
from tryon.errors import CanceledError, InvalidInputError, InvalidMaskError, PoseNotUsableError
from tryon.types import Box, Category
from tryon.vision.pose import LANDMARK_NAMES

log = logging.getLogger(__name__)

#: bump when the output for the same inputs changes
PREVIEW_VERSION = "1"

#: MediaPipe Pose indices (see tryon.vision.pose.LANDMARK_NAMES)
L_SHOULDER, R_SHOULDER = 11, 12
L_HIP, R_HIP = 23, 24
L_KNEE, R_KNEE = 25, 26
L_ANKLE, R_ANKLE = 27, 28

MIN_VISIBILITY = 0.5
STAGES = ("cutout", "fit", "warp", "light", "composite")

#: how far the garment's shoulder line reaches past the shoulder joints (fraction of the
#: joint distance); joints sit inside the body outline, a worn garment covers the deltoids
SHOULDER_REACH = 0.15
#: the collar sits a little above the shoulder joints
COLLAR_LIFT = 0.08
#: the pelvis is wider than the hip joints, and the waistband sits above them
WAIST_REACH = 0.5
WAIST_LIFT = 0.3
#: share of the person-region luminance statistics the garment takes on (1.0 would make every
#: garment as bright as what the person wears; the garment's own lightness must survive)
GLOBAL_LIGHT_WEIGHT = 0.3
#: the person's local shading (folds, shadows) is multiplied into the garment within these
#: bounds; tighter bounds keep prints and logos on the old clothes from showing through
LOCAL_SHADING_RANGE = (0.88, 1.12)


@dataclass(frozen=True)
class GarmentFit:
    """An affine map from garment pixels to person pixels. ``matrix``: float64 ``(2, 3)``;
    ``source``: ``"landmarks"`` or ``"box"``."""

    matrix: NDArray[np.float64]
    source: str


# --- input checks ----------------------------------------------------------------------------


def _check_request(request: RenderRequest) -> None:
    person, garment = request.person, request.garment
    for name, img in (("person", person), ("garment", garment)):
        if not (isinstance(img, np.ndarray) and img.dtype == np.uint8 and img.ndim == 3
                and img.shape[2] == 3 and img.shape[0] > 0 and img.shape[1] > 0):
            raise InvalidInputError(
                f"{name} must be a uint8 RGB array (H, W, 3), got "
                f"{getattr(img, 'dtype', type(img))} {getattr(img, 'shape', '')}"
            )
    for name, mask, ref in (
        ("garment_mask", request.garment_mask, garment),
        ("target_mask", request.target_mask, person),
    ):
        if not isinstance(mask, np.ndarray) or mask.dtype != np.bool_ or mask.shape != ref.shape[:2]:
            raise InvalidMaskError(
                f"{name} must be a bool array of shape {ref.shape[:2]}, got "
                f"{getattr(mask, 'dtype', type(mask))} {getattr(mask, 'shape', '')}"
            )
        if not mask.any():
            raise InvalidMaskError(f"{name} is empty")
    h, w = person.shape[:2]
    if request.box.clip(w, h).is_empty():
        raise InvalidInputError(f"box {request.box.as_list()} does not overlap the {w}x{h} image")
    if request.landmarks is not None and np.asarray(request.landmarks).shape != (33, 4):
        raise InvalidInputError(
            f"landmarks must have shape (33, 4), got {np.asarray(request.landmarks).shape}"
        )
    p = request.params
    if p.num_samples < 1 or len(p.seeds) != p.num_samples:
        raise InvalidInputError(
            f"params.seeds must hold one seed per sample: num_samples={p.num_samples}, "
            f"seeds={list(p.seeds)}"
        )


# --- geometry ---------------------------------------------------------------------------------


def _row_spans(mask: NDArray[np.bool_]) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Per row, the first and last True column (-1 where the row is empty)."""
    any_row = mask.any(axis=1)
    first = np.where(any_row, mask.argmax(axis=1), -1)
    last = np.where(any_row, mask.shape[1] - 1 - mask[:, ::-1].argmax(axis=1), -1)
    return first.astype(np.int64), last.astype(np.int64)


def _span_at(first: NDArray[np.int64], last: NDArray[np.int64], y0: int, y1: int,
             pick: str) -> tuple[float, float]:
    """(left, right) edges over rows ``[y0, y1)``: the narrowest row (``pick="min"``) or the
    median row (``"median"``)."""
    rows = [(int(first[y]), int(last[y])) for y in range(y0, max(y1, y0 + 1)) if first[y] >= 0]
    if not rows:
        raise InvalidMaskError("garment_mask has no pixels where the garment's body should be")
    if pick == "min":
        left, right = min(rows, key=lambda r: r[1] - r[0])
    else:
        rows.sort(key=lambda r: r[1] - r[0])
        left, right = rows[len(rows) // 2]
    return float(left), float(right + 1)


def _visible(landmarks: NDArray[np.float32], idx: int, size: tuple[int, int]) -> bool:
    x, y, _, vis = (float(v) for v in landmarks[idx])
    w, h = size
    return vis >= MIN_VISIBILITY and 0.0 <= x < w and 0.0 <= y < h


def _pair(landmarks: NDArray[np.float32], a: int, b: int, size: tuple[int, int],
          what: str) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Two landmarks as (image-left, image-right) points; PoseNotUsableError if not usable."""
    missing = [i for i in (a, b) if not _visible(landmarks, i, size)]
    if missing:
        raise PoseNotUsableError(
            f"The {what} are not clearly visible in the photo: stand facing the camera with "
            f"your {what} in view, or give an explicit box.",
            missing=[LANDMARK_NAMES[i] for i in missing],
        )
    p, q = landmarks[a, :2].astype(np.float64), landmarks[b, :2].astype(np.float64)
    # sort by x so a photo taken from behind does not mirror the garment
    return (p, q) if p[0] <= q[0] else (q, p)


def _mid_x(landmarks: NDArray[np.float32], a: int, b: int, size: tuple[int, int]) -> float | None:
    if _visible(landmarks, a, size) and _visible(landmarks, b, size):
        return float((landmarks[a, 0] + landmarks[b, 0]) / 2.0)
    return None


def fit_to_landmarks(
    category: Category,
    landmarks: NDArray[np.float32],
    box: Box,
    garment_mask: NDArray[np.bool_],
    image_size: tuple[int, int],
) -> GarmentFit:
    """Affine fit of the garment to the pose (contract in the module docstring).

    Three correspondences make the transform: the garment's two top corners of its body (the
    torso width for tops and dresses, the waistband for bottoms) go to points just outside the
    shoulder (or hip) joints, and the garment's hem centre goes to the box's bottom edge below
    the hip (bottoms: ankle, else knee, else hip) midpoint.
    """
    ys, xs = np.nonzero(garment_mask)
    gy1, gy2 = int(ys.min()), int(ys.max()) + 1
    gh = gy2 - gy1
    first, last = _row_spans(garment_mask)
    lower = category is Category.LOWER_BODY
    if lower:
        # the waistband: the median width of the top 5% of rows
        left, right = _span_at(first, last, gy1, gy1 + max(1, gh // 20), "median")
        a, b = _pair(landmarks, L_HIP, R_HIP, image_size, "hips")
        reach, lift = WAIST_REACH, WAIST_LIFT
        hem_x = (_mid_x(landmarks, L_ANKLE, R_ANKLE, image_size)
                 or _mid_x(landmarks, L_KNEE, R_KNEE, image_size))
    else:
        # the torso: the narrowest row between 40% and 90% of the height (below the sleeves of
        # a T-shirt, the waist of a dress)
        left, right = _span_at(first, last, gy1 + int(0.4 * gh), gy1 + int(0.9 * gh), "min")
        a, b = _pair(landmarks, L_SHOULDER, R_SHOULDER, image_size, "shoulders")
        reach, lift = SHOULDER_REACH, COLLAR_LIFT
        hem_x = _mid_x(landmarks, L_HIP, R_HIP, image_size)
    dist = float(np.hypot(*(b - a)))
    if dist < 4.0:
        raise PoseNotUsableError("The body is too small or seen side-on in the photo.")
    u = (b - a) / dist
    n = np.array([-u[1], u[0]])  # perpendicular, pointing down the body
    top_left = a - reach * dist * u - lift * dist * n
    top_right = b + reach * dist * u - lift * dist * n
    if hem_x is None:
        hem_x = float((a[0] + b[0]) / 2.0)
    hem = np.array([hem_x, float(box.y2)])
    top_y = float(min(top_left[1], top_right[1]))
    if hem[1] - top_y < 0.25 * dist:
        raise InvalidInputError(
            f"box {box.as_list()} ends above or at the garment's top edge (y={top_y:.0f})"
        )
    cx = (left + right) / 2.0
    src = np.array([[left, gy1], [right, gy1], [cx, gy2]], dtype=np.float32)
    dst = np.array([top_left, top_right, hem], dtype=np.float32)
    matrix = cv2.getAffineTransform(src, dst).astype(np.float64)
    return GarmentFit(matrix=matrix, source="landmarks")


def fit_to_box(box: Box, garment_mask: NDArray[np.bool_]) -> GarmentFit:
    """Stretch the garment's mask bounding box onto ``box``."""
    ys, xs = np.nonzero(garment_mask)
    gx1, gy1, gx2, gy2 = int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1
    sx, sy = box.width / (gx2 - gx1), box.height / (gy2 - gy1)
    matrix = np.array([[sx, 0.0, box.x1 - sx * gx1], [0.0, sy, box.y1 - sy * gy1]])
    return GarmentFit(matrix=matrix, source="box")


# --- pixels ------------------------------------------------------------------------------------


def _feather_px(roi_w: int, roi_h: int) -> float:
    return max(1.0, 0.012 * float(np.hypot(roi_w, roi_h)))


def _blur(img: NDArray[np.float32], sigma: float) -> NDArray[np.float32]:
    """Gaussian blur; wide ones run on a downscaled copy (same result to the eye, 20x faster
    at 2048 px, which keeps the engine under a second on full-size photos)."""
    factor = int(sigma // 8)
    h, w = img.shape[:2]
    if factor < 2 or min(h, w) < 4 * factor:
        return np.asarray(cv2.GaussianBlur(img, (0, 0), sigma), dtype=np.float32)
    small = cv2.resize(img, (w // factor, h // factor), interpolation=cv2.INTER_AREA)
    small = cv2.GaussianBlur(small, (0, 0), sigma / factor)
    return np.asarray(cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR), dtype=np.float32)


def _luminance(rgb01: NDArray[np.float32]) -> NDArray[np.float32]:
    lab = cv2.cvtColor(rgb01, cv2.COLOR_RGB2LAB)
    return np.asarray(lab[..., 0], dtype=np.float32)


def adapt_lighting(
    garment01: NDArray[np.float32],
    alpha: NDArray[np.float32],
    person01: NDArray[np.float32],
    region: NDArray[np.bool_],
) -> NDArray[np.float32]:
    """Shade the warped garment (float32 RGB in [0, 1]) like the person region.

    Works on CIELAB lightness only, so the garment's hue and chroma are kept: the lightness mean
    and spread move :data:`GLOBAL_LIGHT_WEIGHT` of the way to the person region's (``region``,
    bool), and the person's mid-frequency shading (lightness blurred a little over lightness
    blurred a lot: folds and shadows, not print edges) is multiplied in, within
    :data:`LOCAL_SHADING_RANGE`.
    """
    lab = cv2.cvtColor(garment01, cv2.COLOR_RGB2LAB)
    lum_p = _luminance(person01)
    on = (alpha > 0.5) & region
    if not on.any():
        return garment01
    mean_g, std_g = float(lab[..., 0][on].mean()), float(lab[..., 0][on].std()) + 1e-3
    mean_p, std_p = float(lum_p[region].mean()), float(lum_p[region].std()) + 1e-3
    w = GLOBAL_LIGHT_WEIGHT
    gain = 1.0 + w * (std_p / std_g - 1.0)
    lum = (lab[..., 0] - mean_g) * gain + mean_g + w * (mean_p - mean_g)
    diag = float(np.hypot(lum_p.shape[0], lum_p.shape[1]))
    detail = _blur(lum_p, max(1.0, 0.01 * diag)) + 1.0
    base = _blur(lum_p, max(2.0, 0.08 * diag)) + 1.0
    shading = np.clip(detail / base, LOCAL_SHADING_RANGE[0], LOCAL_SHADING_RANGE[1])
    lab[..., 0] = np.clip(lum * shading, 0.0, 100.0)
    return np.clip(cv2.cvtColor(lab, cv2.COLOR_LAB2RGB), 0.0, 1.0).astype(np.float32)


class PreviewEngine:
    """CPU engine, no weights; see the module docstring. Thread-safe (no mutable state)."""

    name = "preview"
    version = PREVIEW_VERSION

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings

    def render(
        self,
        request: RenderRequest,
        *,
        callback: ProgressCallback | None = None,
        should_cancel: CancelCheck | None = None,
    ) -> RenderOutput:
        """Render ``request``; one (identical: the preview is deterministic) image per seed.

        Raises :class:`InvalidInputError`/:class:`InvalidMaskError` for malformed inputs,
        :class:`PoseNotUsableError` when the landmarks the category needs are not usable, and
        :class:`CanceledError` when ``should_cancel()`` turns True between stages.
        """
        total = len(STAGES)

        def stage_done(i: int) -> None:
            if callback is not None:
                callback(i, total)
            if should_cancel is not None and should_cancel():
                raise CanceledError()

        if should_cancel is not None and should_cancel():
            raise CanceledError()
        _check_request(request)
        person, garment = request.person, request.garment
        h, w = person.shape[:2]
        category = Category(request.category)

        # 1. Cut out: premultiplied colour, so the background never bleeds into edges when warped
        alpha_g = request.garment_mask.astype(np.float32)
        premul = garment.astype(np.float32) / 255.0 * alpha_g[..., None]
        stage_done(1)

        # 2. Fit
        if request.landmarks is not None and not request.explicit_box:
            fit = fit_to_landmarks(
                category, np.asarray(request.landmarks, dtype=np.float32), request.box,
                request.garment_mask, (w, h),
            )
        else:
            fit = fit_to_box(request.box.clip(w, h), request.garment_mask)
        stage_done(2)

        # 3. Warp into the target mask's bounding rectangle only (the rest is never touched)
        ys, xs = np.nonzero(request.target_mask)
        x1, y1, x2, y2 = int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1
        rw, rh = x2 - x1, y2 - y1
        m = fit.matrix.copy()
        m[:, 2] -= (x1, y1)
        warped = cv2.warpAffine(premul, m, (rw, rh), flags=cv2.INTER_LINEAR,
                                borderMode=cv2.BORDER_CONSTANT, borderValue=(0.0, 0.0, 0.0, 0.0))
        alpha = np.asarray(cv2.warpAffine(
            alpha_g, m, (rw, rh), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
            borderValue=(0.0, 0.0, 0.0, 0.0),
        ), dtype=np.float32)
        colour = warped / np.maximum(alpha, 1e-4)[..., None]
        colour = np.clip(colour, 0.0, 1.0).astype(np.float32)
        stage_done(3)

        # 4. Light like the person
        region = request.target_mask[y1:y2, x1:x2]
        person_roi = person[y1:y2, x1:x2].astype(np.float32) / 255.0
        colour = adapt_lighting(colour, alpha, person_roi, region)
        stage_done(4)

        # 5. Feather the garment edge and the target mask edge, then composite inside the mask
        feather = _feather_px(rw, rh)
        alpha = np.asarray(cv2.GaussianBlur(alpha, (0, 0), feather / 2.0), dtype=np.float32)
        inside = cv2.distanceTransform(
            np.pad(region, 1).astype(np.uint8), cv2.DIST_L2, 3
        )[1:-1, 1:-1]
        alpha = alpha * np.clip(inside / feather, 0.0, 1.0)
        a = alpha[..., None]
        blended = a * colour + (1.0 - a) * person_roi
        blended_u8 = np.clip(np.rint(blended * 255.0), 0, 255).astype(np.uint8)
        out = person.copy()
        roi = out[y1:y2, x1:x2]
        roi[region] = blended_u8[region]
        stage_done(5)

        p = request.params
        record: dict[str, Any] = {
            "engine": self.name,
            "engine_version": self.version,
            "weights_checksum": None,
            "preprocess_version": None,
            "params": {"num_samples": p.num_samples, "seeds": list(p.seeds)},
            "fit": fit.source,
            "category": str(category),
            "box": request.box.as_list(),
        }
        log.debug("engine=preview fit=%s box=%s", fit.source, request.box.as_list())
        return RenderOutput(
            images=[out] + [out.copy() for _ in range(p.num_samples - 1)],
            seeds=list(p.seeds),
            record=record,
        )
