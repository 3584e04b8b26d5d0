"""Checks on one person's body before placing a garment: is the torso upright and do the
landmarks agree with each other, and how wide is the body at the torso and the legs.

Pure functions over a :class:`~tryon.vision.pose.PoseResult` and a bool silhouette.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
from numpy.typing import NDArray

from tryon.vision.pose import PoseLandmark, PoseResult

L = PoseLandmark

#: a torso (shoulder mid to hip mid) further than this from vertical is not upright
MAX_TORSO_TILT_DEG = 25.0
#: a hip closer than this many torso lengths to an elbow sits on an arm: the model has taken a
#: forearm held across the body for the hip line (arms by the sides keep the elbows well
#: above and outside the hips)
_HIP_ON_ARM = 0.25
#: shoulder and hip lines are both compared only when each is at least this many torso lengths
#: wide (in a side view both collapse and their order means nothing)
_MIN_LINE_FOR_ORDER = 0.3


@dataclass(frozen=True)
class PostureProblem:
    """Why a pose cannot carry a garment: ``reason`` is a stable code for
    ``details.reason``, ``message`` tells the user what to change."""

    reason: str
    message: str
    tilt_deg: float | None = None


def _mid(pose: PoseResult, a: int, b: int) -> tuple[float, float]:
    (ax, ay), (bx, by) = pose.xy(a), pose.xy(b)
    return (ax + bx) / 2, (ay + by) / 2


def torso_tilt_deg(pose: PoseResult) -> float | None:
    """Angle in degrees between the torso (shoulder mid → hip mid) and straight down; None
    when a shoulder or hip is not visible. 0 = upright, 90 = lying, 180 = upside down."""
    needed = (L.LEFT_SHOULDER, L.RIGHT_SHOULDER, L.LEFT_HIP, L.RIGHT_HIP)
    if not all(pose.visible(int(i)) for i in needed):
        return None
    sx, sy = _mid(pose, L.LEFT_SHOULDER, L.RIGHT_SHOULDER)
    hx, hy = _mid(pose, L.LEFT_HIP, L.RIGHT_HIP)
    return math.degrees(math.atan2(abs(hx - sx), hy - sy))


def torso_length(pose: PoseResult) -> float:
    """Shoulder mid to hip mid in pixels: the person's scale, unchanged when they turn.

    With a hip out of view, 1.4 shoulder widths (the placement rules' fallback)."""
    sx, sy = _mid(pose, L.LEFT_SHOULDER, L.RIGHT_SHOULDER)
    if pose.visible(L.LEFT_HIP) and pose.visible(L.RIGHT_HIP):
        hx, hy = _mid(pose, L.LEFT_HIP, L.RIGHT_HIP)
        return math.hypot(hx - sx, hy - sy)
    (ax, ay), (bx, by) = pose.xy(L.LEFT_SHOULDER), pose.xy(L.RIGHT_SHOULDER)
    return 1.4 * math.hypot(ax - bx, ay - by)


#: thighs (hip mid -> knee mid) shorter than this many torso lengths in the photo point at the
#: camera (sitting facing it); standing people measured 0.49-0.8 on the real photos
MIN_THIGH_PER_TORSO = 0.4
#: ... or further than this from vertical (sitting sideways, kneeling); walking reached 48°
MAX_THIGH_TILT_DEG = 60.0


def legs_problem(pose: PoseResult) -> PostureProblem | None:
    """Why the legs cannot carry trousers or a dress (sitting, kneeling), or None.

    Checked only when both hips and both knees are visible; reason ``legs_not_upright``.
    """
    needed = (L.LEFT_HIP, L.RIGHT_HIP, L.LEFT_KNEE, L.RIGHT_KNEE)
    if not all(pose.visible(int(i)) for i in needed):
        return None
    hx, hy = _mid(pose, L.LEFT_HIP, L.RIGHT_HIP)
    kx, ky = _mid(pose, L.LEFT_KNEE, L.RIGHT_KNEE)
    thigh = math.hypot(kx - hx, ky - hy)
    tilt = math.degrees(math.atan2(abs(kx - hx), ky - hy))
    if thigh < MIN_THIGH_PER_TORSO * torso_length(pose) or tilt > MAX_THIGH_TILT_DEG:
        return PostureProblem(
            "legs_not_upright",
            "Trousers, skirts and dresses need you standing with your legs straight down: "
            "take a photo standing, not sitting or kneeling.",
            round(tilt, 1),
        )
    return None


def posture_problem(pose: PoseResult) -> PostureProblem | None:
    """The first reason ``pose`` is not an upright, coherent body, or None.

    Reasons: ``hips_above_shoulders`` (upside down or a confused pose), ``torso_not_upright``
    (the torso more than :data:`MAX_TORSO_TILT_DEG` from vertical: crouching, bending,
    lying), ``landmarks_inconsistent`` (the shoulder line and the hip line point opposite
    ways while both are wide, or a hip lies on an elbow: the model mixed up left and right
    or took a forearm for the hips).
    Poses without both hips visible are checked only for what is visible.
    """
    tilt = torso_tilt_deg(pose)
    if tilt is None:
        return None
    sx, sy = _mid(pose, L.LEFT_SHOULDER, L.RIGHT_SHOULDER)
    hx, hy = _mid(pose, L.LEFT_HIP, L.RIGHT_HIP)
    torso = max(math.hypot(hx - sx, hy - sy), 1.0)
    if hy <= sy:
        return PostureProblem(
            "hips_above_shoulders",
            "The body looks upside down or lying: take a photo standing upright.",
            round(tilt, 1),
        )
    if tilt > MAX_TORSO_TILT_DEG:
        return PostureProblem(
            "torso_not_upright",
            f"The body is bent or leaning ({tilt:.0f}° from upright): take a photo standing "
            "straight, facing or turned a little towards the camera.",
            round(tilt, 1),
        )
    for hip in (L.LEFT_HIP, L.RIGHT_HIP):
        for elbow in (L.LEFT_ELBOW, L.RIGHT_ELBOW):
            if not pose.visible(elbow):
                continue
            (ax, ay), (bx, by) = pose.xy(hip), pose.xy(elbow)
            if math.hypot(ax - bx, ay - by) < _HIP_ON_ARM * torso:
                return PostureProblem(
                    "landmarks_inconsistent",
                    "The body's outline is unclear (arms across the body or a twisted pose): "
                    "stand with your arms away from your body.",
                    round(tilt, 1),
                )
    shoulder_dx = pose.xy(L.LEFT_SHOULDER)[0] - pose.xy(L.RIGHT_SHOULDER)[0]
    hip_dx = pose.xy(L.LEFT_HIP)[0] - pose.xy(L.RIGHT_HIP)[0]
    wide = min(abs(shoulder_dx), abs(hip_dx)) >= _MIN_LINE_FOR_ORDER * torso
    if wide and shoulder_dx * hip_dx < 0:
        return PostureProblem(
            "landmarks_inconsistent",
            "The body's outline is unclear (arms across the body or a twisted pose): stand "
            "with your arms away from your body.",
            round(tilt, 1),
        )
    return None


def _span(
    silhouette: NDArray[np.bool_], y1: float, y2: float, x_centre: float
) -> tuple[int, int] | None:
    """Left and right edge of the silhouette piece around ``x_centre`` in rows ``y1..y2``
    (10th percentile of left edges, 90th of right edges, so a stray arm row does not count)."""
    h, w = silhouette.shape
    r1, r2 = max(0, int(y1)), min(h, int(math.ceil(y2)))
    if r2 - r1 < 2:
        return None
    band = silhouette[r1:r2].astype(np.uint8)
    n, labels = cv2.connectedComponents(band, connectivity=8)
    if n <= 1:
        return None
    xc = int(min(max(x_centre, 0), w - 1))
    column = labels[:, xc]
    ids = column[column > 0]
    if ids.size == 0:
        return None
    piece = labels == np.bincount(ids).argmax()
    rows = np.flatnonzero(piece.any(axis=1))
    if rows.size < 2:
        return None
    lefts = piece[rows].argmax(axis=1)
    rights = w - 1 - piece[rows][:, ::-1].argmax(axis=1)
    return int(np.percentile(lefts, 10)), int(np.percentile(rights, 90)) + 1


def landmarks_on_body(
    pose: PoseResult, silhouette: NDArray[np.bool_] | None, grow: float = 0.03
) -> list[int]:
    """Indices of landmarks inside the image that lie on ``silhouette`` grown by ``grow`` of
    its long side (so a landmark on the outline does not flicker in and out)."""
    if silhouette is None or not silhouette.any():
        return []
    h, w = silhouette.shape
    k = max(3, int(grow * max(h, w)) | 1)
    grown = cv2.dilate(
        silhouette.astype(np.uint8), cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))
    )
    out = []
    for i, (x, y) in enumerate(pose.landmarks[:, :2]):
        if 0 <= x < w and 0 <= y < h and grown[int(y), int(x)]:
            out.append(i)
    return out


def silhouette_spans(
    pose: PoseResult, silhouette: NDArray[np.bool_] | None
) -> dict[str, list[int]]:
    """Measured body widths, ``{"torso": [x1, x2], "legs": [x1, x2]}`` in ``pose``'s pixels.

    ``torso``: the silhouette between a little below the shoulder line and the hips (or 1.4
    shoulder widths down when the hips are hidden); ``legs``: between the hips and the knees.
    A part that is not visible or not in the silhouette is left out. These widths let
    placement cover a person turned sideways, whose shoulder and hip landmarks collapse.
    """
    if silhouette is None or not silhouette.any():
        return {}
    out: dict[str, list[int]] = {}
    if not (pose.visible(L.LEFT_SHOULDER) and pose.visible(L.RIGHT_SHOULDER)):
        return out
    sx, sy = _mid(pose, L.LEFT_SHOULDER, L.RIGHT_SHOULDER)
    sw = math.hypot(*(np.subtract(pose.xy(L.LEFT_SHOULDER), pose.xy(L.RIGHT_SHOULDER))))
    hips = pose.visible(L.LEFT_HIP) and pose.visible(L.RIGHT_HIP)
    if hips:
        hx, hy = _mid(pose, L.LEFT_HIP, L.RIGHT_HIP)
    else:
        hx, hy = sx, sy + 1.4 * max(sw, 1.0)
    torso = max(hy - sy, 1.0)
    span = _span(silhouette, sy + 0.15 * torso, hy, (sx + hx) / 2)
    if span is not None:
        out["torso"] = list(span)
    if hips and pose.visible(L.LEFT_KNEE) and pose.visible(L.RIGHT_KNEE):
        kx, ky = _mid(pose, L.LEFT_KNEE, L.RIGHT_KNEE)
        span = _span(silhouette, hy, ky, (hx + kx) / 2)
        if span is not None:
            out["legs"] = list(span)
    return out


__all__ = [
    "MAX_THIGH_TILT_DEG",
    "MAX_TORSO_TILT_DEG",
    "MIN_THIGH_PER_TORSO",
    "legs_problem",
    "landmarks_on_body",
    "PostureProblem",
    "posture_problem",
    "silhouette_spans",
    "torso_length",
    "torso_tilt_deg",
]
