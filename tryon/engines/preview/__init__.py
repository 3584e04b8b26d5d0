"""The preview engine: the garment cut out and warped onto the body, on the CPU, with no weights.

It is a geometric warp, not a generative model: it never invents cloth, skin or light. Steps:

1. Cut out: the garment's colour premultiplied by its mask.
2. Fit: keypoints of the flat garment, found from its mask (:mod:`.garment`: neckline, shoulder
   corners, armpits, cuffs, hem; waistband, crotch, leg openings), are paired with points on the
   body from the pose landmarks and the placement box (:mod:`.fit`): sleeves follow the arms,
   trouser legs follow hips, knees and ankles, the hem sits on the box's bottom edge.
3. Warp: a thin-plate spline through those pairs (:mod:`.warp`), evaluated on a coarse grid.
4. Light: the person's own shading (lightness folds and shadows) is carried onto the garment.
5. Composite: the garment's edge is feathered; hands, forearms beyond the sleeves and the head
   stay in front (pose landmarks, refined by ``request.person_mask`` when given); pixels change
   **only inside** ``request.target_mask``: every other pixel is returned bit-exact.

How the request chooses the fit: with ``request.landmarks`` and ``explicit_box`` false, the
keypoint fit above (PoseNotUsableError when the shoulders, or for bottoms the hips, are not
usable); with ``explicit_box`` true, or no landmarks, the box is authoritative: the garment's
mask bounding box is stretched onto it (one affine map, no re-fit to the pose). That box-fit
path is also how it renders compositions (:mod:`tryon.compose`: any reference object into any
scene, explicit box, no landmarks, the region's mask as target mask), so compose, move, swap,
replace and batches all run on the CPU.

Each sample's seed draws a small fit variation (:class:`.fit.FitVariation`: looser or tighter,
a slightly longer or shorter hem and sleeves), so samples with different seeds differ and the
same seed gives the same image.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

from tryon.config import Settings
from tryon.engines.base import CancelCheck, ProgressCallback, RenderOutput, RenderRequest
from tryon.engines.preview.composite import adapt_lighting, front_mask
from tryon.engines.preview.fit import FitVariation, bottom_parts, top_parts
from tryon.engines.preview.garment import bottom_keypoints, top_keypoints
from tryon.engines.preview.warp import Warp, affine_box_warp, tps_warp
from tryon.errors import CanceledError, InvalidInputError, InvalidMaskError
from tryon.types import Category

__all__ = ["PREVIEW_VERSION", "STAGES", "PreviewEngine", "FitVariation"]

log = logging.getLogger(__name__)

#: bump when the output for the same inputs changes
PREVIEW_VERSION = "2"
STAGES = ("cutout", "fit", "warp", "light", "composite")


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
    pm = request.person_mask
    if pm is not None and (not isinstance(pm, np.ndarray) or pm.shape != person.shape[:2]):
        raise InvalidMaskError(
            f"person_mask must be an array of shape {person.shape[:2]}, got "
            f"{getattr(pm, 'shape', type(pm))}"
        )
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


def fit_warp(request: RenderRequest, variation: FitVariation) -> Warp:
    """The garment-to-photo warp for ``request`` (see the module docstring)."""
    h, w = request.person.shape[:2]
    if request.landmarks is None or request.explicit_box:
        return affine_box_warp(request.box.clip(w, h), request.garment_mask,
                               ease=variation.ease, length=variation.length)
    category = Category(request.category)
    landmarks = np.asarray(request.landmarks, dtype=np.float32)
    gw = request.garment_mask.shape[1]
    if category is Category.LOWER_BODY:
        parts = bottom_parts(bottom_keypoints(request.garment_mask), landmarks, request.box,
                             (w, h), variation, gw)
    else:
        kp = top_keypoints(request.garment_mask, dress=category is Category.DRESS)
        parts = top_parts(kp, landmarks, request.box, (w, h), variation, gw)
    return tps_warp(parts)


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
        """Render ``request``: one image per seed, each with its seed's fit variation.

        Raises :class:`InvalidInputError`/:class:`InvalidMaskError` for malformed inputs,
        :class:`PoseNotUsableError` when the landmarks the category needs are not usable, and
        :class:`CanceledError` when ``should_cancel()`` turns True between stages.
        """
        if should_cancel is not None and should_cancel():
            raise CanceledError()
        # 1. Check inputs
        _check_request(request)
        p = request.params
        total = len(STAGES) * p.num_samples
        done = 0

        def stage_done() -> None:
            nonlocal done
            done += 1
            if callback is not None:
                callback(done, total)
            if should_cancel is not None and should_cancel():
                raise CanceledError()

        images: list[NDArray[np.uint8]] = []
        timings: dict[str, float] = {}
        fit_source = "box" if request.landmarks is None or request.explicit_box else "landmarks"
        for seed in p.seeds:
            images.append(self._render_one(request, FitVariation.from_seed(seed), stage_done,
                                           timings))
        record: dict[str, Any] = {
            "engine": self.name,
            "engine_version": self.version,
            "weights_checksum": None,
            "preprocess_version": None,
            "params": {"num_samples": p.num_samples, "seeds": list(p.seeds)},
            "fit": fit_source,
            "category": str(Category(request.category)),
            "box": request.box.as_list(),
            "timings_s": {k: round(v, 4) for k, v in timings.items()},
        }
        log.debug("engine=preview fit=%s box=%s", fit_source, request.box.as_list())
        return RenderOutput(images=images, seeds=list(p.seeds), record=record)

    def _render_one(self, request: RenderRequest, variation: FitVariation,
                    stage_done: Any, timings: dict[str, float]) -> NDArray[np.uint8]:
        person = request.person
        clock = time.perf_counter()

        def lap(stage: str) -> None:
            nonlocal clock
            now = time.perf_counter()
            timings[stage] = timings.get(stage, 0.0) + now - clock
            clock = now
            stage_done()

        # 2. Cut out: premultiplied colour, so the background never bleeds into edges when warped
        alpha_g = request.garment_mask.astype(np.float32)
        rgba = np.dstack([request.garment.astype(np.float32) / 255.0 * alpha_g[..., None],
                          alpha_g])
        lap("cutout")

        # 3. Fit
        warp = fit_warp(request, variation)
        lap("fit")

        # 4. Warp into the target mask's bounding rectangle only (the rest is never touched)
        ys, xs = np.nonzero(request.target_mask)
        x1, y1, x2, y2 = int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1
        warped = warp.apply(rgba, (x1, y1, x2, y2))
        alpha = np.ascontiguousarray(warped[..., 3])
        colour = np.clip(warped[..., :3] / np.maximum(alpha, 1e-4)[..., None], 0.0, 1.0)
        colour = colour.astype(np.float32)
        lap("warp")

        # 5. Light like the person
        region = request.target_mask[y1:y2, x1:x2]
        person_roi = person[y1:y2, x1:x2].astype(np.float32) / 255.0
        colour = adapt_lighting(colour, alpha, person_roi, region)
        lap("light")

        # 6. Composite: feathered edge, body parts in front, only inside the target mask
        rw, rh = x2 - x1, y2 - y1
        feather = max(1.0, 0.006 * float(np.hypot(rw, rh)))
        alpha = np.asarray(cv2.GaussianBlur(alpha, (0, 0), feather / 2.0), dtype=np.float32)
        inside = cv2.distanceTransform(np.pad(region, 1).astype(np.uint8), cv2.DIST_L2, 3)
        alpha = alpha * np.clip(inside[1:-1, 1:-1] / feather, 0.0, 1.0)
        if request.landmarks is not None:
            pm = None if request.person_mask is None else request.person_mask[y1:y2, x1:x2]
            front = front_mask(np.asarray(request.landmarks, dtype=np.float32), warp,
                               (x1, y1, x2, y2), pm, Category(request.category))
            alpha = alpha * (1.0 - front)
        a = alpha[..., None]
        blended = a * colour + (1.0 - a) * person_roi
        blended_u8 = np.clip(np.rint(blended * 255.0), 0, 255).astype(np.uint8)
        out = person.copy()
        roi = out[y1:y2, x1:x2]
        roi[region] = blended_u8[region]
        lap("composite")
        return out
