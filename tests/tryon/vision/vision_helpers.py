"""Hand-made landmark sets for the vision tests (imported by name: tests have no packages)."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from tryon.vision.pose import NUM_LANDMARKS, PoseLandmark, PoseResult

L = PoseLandmark

#: A person standing upright facing the camera in a 600x1000 image (person's left = image right).
STANDING: Mapping[int, tuple[float, float]] = {
    L.NOSE: (300, 120),
    L.LEFT_EYE_INNER: (306, 108), L.LEFT_EYE: (312, 108), L.LEFT_EYE_OUTER: (318, 108),
    L.RIGHT_EYE_INNER: (294, 108), L.RIGHT_EYE: (288, 108), L.RIGHT_EYE_OUTER: (282, 108),
    L.LEFT_EAR: (330, 125), L.RIGHT_EAR: (270, 125),
    L.MOUTH_LEFT: (310, 150), L.MOUTH_RIGHT: (290, 150),
    L.LEFT_SHOULDER: (370, 220), L.RIGHT_SHOULDER: (230, 220),
    L.LEFT_ELBOW: (400, 360), L.RIGHT_ELBOW: (200, 360),
    L.LEFT_WRIST: (410, 480), L.RIGHT_WRIST: (190, 480),
    L.LEFT_PINKY: (412, 500), L.RIGHT_PINKY: (188, 500),
    L.LEFT_INDEX: (410, 505), L.RIGHT_INDEX: (190, 505),
    L.LEFT_THUMB: (405, 495), L.RIGHT_THUMB: (195, 495),
    L.LEFT_HIP: (345, 500), L.RIGHT_HIP: (255, 500),
    L.LEFT_KNEE: (345, 700), L.RIGHT_KNEE: (255, 700),
    L.LEFT_ANKLE: (345, 900), L.RIGHT_ANKLE: (255, 900),
    L.LEFT_HEEL: (340, 915), L.RIGHT_HEEL: (260, 915),
    L.LEFT_FOOT_INDEX: (360, 930), L.RIGHT_FOOT_INDEX: (240, 930),
}  # fmt: skip


def make_pose(
    image_size: tuple[int, int] = (600, 1000),
    *,
    hidden: tuple[int, ...] = (),
    moved: Mapping[int, tuple[float, float]] | None = None,
    scale: float = 1.0,
) -> PoseResult:
    """A 33x4 landmark set built from STANDING: ``hidden`` get visibility 0.1."""
    lms = np.zeros((NUM_LANDMARKS, 4), np.float32)
    for idx, (x, y) in STANDING.items():
        lms[idx] = (x * scale, y * scale, 0.0, 0.99)
    for idx, (x, y) in (moved or {}).items():
        lms[idx, :2] = (x, y)
    for idx in hidden:
        lms[idx, 3] = 0.1
    return PoseResult(landmarks=lms, world=np.zeros_like(lms), image_size=image_size)
