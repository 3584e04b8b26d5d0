"""Inspectable placement preview: the photo with pose, box and masks drawn on it (PNG)."""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

from tryon.errors import InvalidMaskError
from tryon.vision.placement import Placement
from tryon.vision.pose import NUM_LANDMARKS, SKELETON, PoseResult, check_rgb_image

# RGB colours
_TARGET_TINT = (255, 64, 64)
_GARMENT_TINT = (64, 200, 64)
_BOX = (255, 210, 0)
_BONE = (0, 200, 255)
_JOINT = (255, 255, 255)
_HIDDEN = (128, 128, 128)


def _tint(canvas: NDArray[np.uint8], mask: Any, colour: tuple[int, int, int], name: str) -> None:
    arr = np.asarray(mask)
    if arr.shape != canvas.shape[:2]:
        raise InvalidMaskError(
            f"{name} must have the image's shape {canvas.shape[:2]}, got {arr.shape}", field=name
        )
    sel = arr if arr.dtype == np.bool_ else arr >= 0.5
    blended = 0.55 * canvas[sel].astype(np.float32) + 0.45 * np.array(colour, np.float32)
    canvas[sel] = blended.astype(np.uint8)


def render_overlay(
    image: NDArray[np.uint8],
    *,
    pose: PoseResult | None = None,
    placement: Placement | None = None,
    target_mask: NDArray[Any] | None = None,
    garment_mask: NDArray[Any] | None = None,
    min_visibility: float = 0.5,
) -> bytes:
    """PNG bytes of ``image`` (uint8 ``(H, W, 3)`` RGB, same size out) with the masks tinted
    (target red, garment green; each ``(H, W)`` bool or [0, 1] float), the skeleton (landmarks
    below ``min_visibility`` in grey) and the placement box labelled with its rule."""
    canvas = check_rgb_image(image).copy()
    h, w = canvas.shape[:2]
    thick = max(1, round(max(h, w) / 400))
    if target_mask is not None:
        _tint(canvas, target_mask, _TARGET_TINT, "target_mask")
    if garment_mask is not None:
        _tint(canvas, garment_mask, _GARMENT_TINT, "garment_mask")
    if pose is not None:
        sx, sy = w / pose.image_size[0], h / pose.image_size[1]
        pts = [
            (round(float(pose.landmarks[i, 0]) * sx), round(float(pose.landmarks[i, 1]) * sy))
            for i in range(NUM_LANDMARKS)
        ]
        seen = [float(pose.landmarks[i, 3]) >= min_visibility for i in range(NUM_LANDMARKS)]
        for i, j in SKELETON:
            colour = _BONE if seen[i] and seen[j] else _HIDDEN
            cv2.line(canvas, pts[i], pts[j], colour, thick, cv2.LINE_AA)
        for p, ok in zip(pts, seen, strict=True):
            cv2.circle(canvas, p, thick + 2, _JOINT if ok else _HIDDEN, -1, cv2.LINE_AA)
    if placement is not None:
        b = placement.box
        cv2.rectangle(canvas, (b.x1, b.y1), (b.x2 - 1, b.y2 - 1), _BOX, thick + 1)
        label = f"{placement.category.value} {placement.length}"
        label += " (explicit)" if placement.rule == "explicit" else ""
        label += " clipped" if placement.clipped else ""
        scale = max(0.4, max(h, w) / 1200)
        (tw, th), base = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
        ty = b.y1 - 4 if b.y1 - th - base - 4 >= 0 else min(b.y1 + th + 4, h - base)
        cv2.rectangle(canvas, (b.x1, ty - th - 2), (b.x1 + tw + 4, ty + base), (0, 0, 0), -1)
        cv2.putText(
            canvas, label, (b.x1 + 2, ty), cv2.FONT_HERSHEY_SIMPLEX, scale, _BOX, 1, cv2.LINE_AA
        )
    ok, buf = cv2.imencode(".png", cv2.cvtColor(canvas, cv2.COLOR_RGB2BGR))
    if not ok:
        raise RuntimeError("PNG encoding failed")
    return buf.tobytes()
