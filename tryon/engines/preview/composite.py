"""Light and layering: the person's shading on the garment, and what stays in front of it.

Pure functions on float32 images in [0, 1] (RGB ``(h, w, 3)``) and masks ``(h, w)`` of one
rectangle of the photo.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

from tryon.engines.preview.fit import (
    L_ELBOW,
    L_SHOULDER,
    L_WRIST,
    NECK_LIFT,
    R_ELBOW,
    R_SHOULDER,
    R_WRIST,
    Body,
)
from tryon.types import Category

#: share of the person-region luminance statistics the garment takes on (1.0 would make every
#: garment as bright as what the person wears; the garment's own lightness must survive)
GLOBAL_LIGHT_WEIGHT = 0.3
#: the person's local shading (folds, shadows) is multiplied into the garment within these
#: bounds; tighter bounds keep prints and logos on the old clothes from showing through
LOCAL_SHADING_RANGE = (0.9, 1.08)
#: hands: (wrist, pinky, index, thumb) per side
HANDS = ((15, 17, 19, 21), (16, 18, 20, 22))
#: forearm and hand radius as a share of the shoulder width
FOREARM_RADIUS, HAND_RADIUS = 0.12, 0.13
#: head: face landmarks (nose, eyes, ears, mouth)
FACE = (0, 2, 5, 7, 8, 9, 10)
#: hair: with a person mask, the person's pixels above the neckline within this many shoulder
#: widths of the face's centre stay in front (hair beside the neck, a chin, a beard)
HAIR_HALF_BAND = 0.45


def _blur(img: NDArray[np.float32], sigma: float) -> NDArray[np.float32]:
    """Gaussian blur; wide ones run on a downscaled copy (same to the eye, far cheaper)."""
    factor = int(sigma // 8)
    h, w = img.shape[:2]
    if factor < 2 or min(h, w) < 4 * factor:
        return np.asarray(cv2.GaussianBlur(img, (0, 0), sigma), dtype=np.float32)
    small = cv2.resize(img, (w // factor, h // factor), interpolation=cv2.INTER_AREA)
    small = cv2.GaussianBlur(small, (0, 0), sigma / factor)
    return np.asarray(cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR), dtype=np.float32)


def _luma(rgb01: NDArray[np.float32]) -> NDArray[np.float32]:
    """Rec. 709 luma of float RGB in [0, 1], scaled to [0, 100] like CIELAB's L."""
    weights = np.array([21.26, 71.52, 7.22], dtype=np.float32)
    return np.asarray(rgb01 @ weights, dtype=np.float32)


def adapt_lighting(
    garment01: NDArray[np.float32],
    alpha: NDArray[np.float32],
    person01: NDArray[np.float32],
    region: NDArray[np.bool_],
) -> NDArray[np.float32]:
    """Shade the warped garment (float32 RGB in [0, 1]) like the person region.

    Works on luma only and rescales R, G and B together, so the garment keeps its hue: the luma
    mean and spread move :data:`GLOBAL_LIGHT_WEIGHT` of the way to the person region's (where
    the garment lies inside ``region``), and the person's mid-frequency shading (luma blurred a
    little over luma blurred a lot: folds and shadows, not print edges) is multiplied in, within
    :data:`LOCAL_SHADING_RANGE`.
    """
    lum_g = _luma(garment01)
    lum_p = _luma(person01)
    on = (alpha > 0.5) & region
    if not on.any():
        return garment01
    mean_g, std_g = float(lum_g[on].mean()), float(lum_g[on].std()) + 1e-3
    mean_p, std_p = float(lum_p[on].mean()), float(lum_p[on].std()) + 1e-3
    w = GLOBAL_LIGHT_WEIGHT
    gain = 1.0 + w * (float(np.clip(std_p / std_g, 0.5, 1.6)) - 1.0)
    lum = (lum_g - mean_g) * gain + mean_g + w * (mean_p - mean_g)
    diag = float(np.hypot(lum_p.shape[0], lum_p.shape[1]))
    detail = _blur(lum_p, max(1.0, 0.012 * diag)) + 1.0
    base = _blur(lum_p, max(2.0, 0.06 * diag)) + 1.0
    shading = np.clip(detail / base, LOCAL_SHADING_RANGE[0], LOCAL_SHADING_RANGE[1])
    ratio = np.clip(lum * shading, 0.0, 100.0) / np.maximum(lum_g, 1e-3)
    return np.clip(garment01 * ratio[..., None], 0.0, 1.0).astype(np.float32)


def _capsule(canvas: NDArray[np.uint8], p: NDArray[np.float64], q: NDArray[np.float64],
             radius: float, origin: tuple[int, int]) -> None:
    ox, oy = origin
    a = (round(p[0] - ox), round(p[1] - oy))
    b = (round(q[0] - ox), round(q[1] - oy))
    cv2.line(canvas, a, b, (255,), max(1, round(2 * radius)), cv2.LINE_AA)


def front_mask(
    landmarks: NDArray[np.float32],
    warp: Any,
    rect: tuple[int, int, int, int],
    person_mask: NDArray[Any] | None,
    category: Category,
) -> NDArray[np.float32]:
    """float32 ``(h, w)`` in [0, 1] over ``rect``: where the person stays in front of the
    garment. Hands and forearms (beyond the sleeve's cuff for tops: the part of the arm not
    covered by the fitted garment) for every category; the head for tops and dresses. With a
    ``person_mask`` (of the rectangle) the arm and hand shapes are cut to the person's pixels,
    so their outline is the photo's, not a capsule's, and for tops and dresses the person's
    pixels above the neckline near the face (hair beside the neck, the chin) stay in front too.
    Hair that falls below the neckline is not told apart from clothes and gets covered."""
    x1, y1, x2, y2 = rect
    h, w = y2 - y1, x2 - x1
    body = Body(landmarks, (10**9, 10**9))  # visibility only; points may lie outside the rect
    canvas = np.zeros((h, w), dtype=np.uint8)
    if not (body.visible(L_SHOULDER) and body.visible(R_SHOULDER)):
        return canvas.astype(np.float32)
    sw = float(np.hypot(*(body.pt(L_SHOULDER) - body.pt(R_SHOULDER))))
    cuffs = getattr(warp, "dst_points", np.zeros((0, 2)))
    for elbow, wrist, hand in ((L_ELBOW, L_WRIST, HANDS[0]), (R_ELBOW, R_WRIST, HANDS[1])):
        if not body.visible(wrist):
            continue
        start = body.pt(elbow) if body.visible(elbow) else body.pt(wrist)
        if category is not Category.LOWER_BODY and len(cuffs) and body.visible(elbow):
            # the forearm is in front from the sleeve's end on: the fitted point nearest the
            # wrist along the forearm
            e, wr = body.pt(elbow), body.pt(wrist)
            d = wr - e
            t = np.clip(((cuffs - e) @ d) / max(float(d @ d), 1e-6), 0.0, 1.0)
            near = np.hypot(*(e + t[:, None] * d - cuffs).T) < 0.35 * sw
            start = e + d * (float(t[near].max()) if near.any() else 0.0)
        _capsule(canvas, start, body.pt(wrist), FOREARM_RADIUS * sw, (x1, y1))
        for tip in hand[1:]:
            if body.visible(tip):
                _capsule(canvas, body.pt(wrist), body.pt(tip), HAND_RADIUS * sw, (x1, y1))
    if person_mask is not None:
        person = person_mask >= 0.5 if person_mask.dtype != np.bool_ else person_mask
        grown = cv2.dilate(canvas, np.ones((3, 3), np.uint8), iterations=2)
        canvas = np.where(person, grown, 0).astype(np.uint8)
    if category is not Category.LOWER_BODY:
        face = [body.pt(i) for i in FACE if body.visible(i)]
        if len(face) >= 3:
            pts = np.array(face)
            centre = pts.mean(axis=0)
            rx = max(0.32 * sw, float(np.ptp(pts[:, 0])) * 0.75)
            ry = 1.25 * rx
            cv2.ellipse(canvas, (round(centre[0] - x1), round(centre[1] - y1 - 0.15 * ry)),
                        (round(rx), round(ry)), 0.0, 0.0, 360.0, (255,), -1, cv2.LINE_AA)
            if person_mask is not None:
                neck_y = 0.5 * float(body.pt(L_SHOULDER)[1] + body.pt(R_SHOULDER)[1]) \
                    - NECK_LIFT * sw
                rows = int(np.clip(round(neck_y) - y1, 0, h))
                c0 = int(np.clip(round(centre[0] - HAIR_HALF_BAND * sw) - x1, 0, w))
                c1 = int(np.clip(round(centre[0] + HAIR_HALF_BAND * sw) - x1, 0, w))
                person = person_mask >= 0.5 if person_mask.dtype != np.bool_ else person_mask
                band = canvas[:rows, c0:c1]
                band[person[:rows, c0:c1]] = 255
    soft = cv2.GaussianBlur(canvas.astype(np.float32) / 255.0, (0, 0), max(1.0, 0.01 * sw))
    return np.asarray(soft, dtype=np.float32)
