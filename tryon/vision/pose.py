"""Body pose from one RGB photo (MediaPipe Pose, 33 landmarks).

This is the only module that talks to MediaPipe's pose graph: swapping the pose model means
rewriting :class:`PoseEstimator` and keeping :class:`PoseResult`.
"""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

import numpy as np
from numpy.typing import NDArray

from tryon.errors import InvalidInputError

log = logging.getLogger(__name__)

#: The 33 MediaPipe Pose landmarks, in MediaPipe's order ("left" is the person's left).
LANDMARK_NAMES: tuple[str, ...] = (
    "nose",
    "left_eye_inner",
    "left_eye",
    "left_eye_outer",
    "right_eye_inner",
    "right_eye",
    "right_eye_outer",
    "left_ear",
    "right_ear",
    "mouth_left",
    "mouth_right",
    "left_shoulder",
    "right_shoulder",
    "left_elbow",
    "right_elbow",
    "left_wrist",
    "right_wrist",
    "left_pinky",
    "right_pinky",
    "left_index",
    "right_index",
    "left_thumb",
    "right_thumb",
    "left_hip",
    "right_hip",
    "left_knee",
    "right_knee",
    "left_ankle",
    "right_ankle",
    "left_heel",
    "right_heel",
    "left_foot_index",
    "right_foot_index",
)

NUM_LANDMARKS = len(LANDMARK_NAMES)


class PoseLandmark(enum.IntEnum):
    """Landmark indices by name, e.g. ``PoseLandmark.LEFT_SHOULDER == 11``."""

    NOSE = 0
    LEFT_EYE_INNER = 1
    LEFT_EYE = 2
    LEFT_EYE_OUTER = 3
    RIGHT_EYE_INNER = 4
    RIGHT_EYE = 5
    RIGHT_EYE_OUTER = 6
    LEFT_EAR = 7
    RIGHT_EAR = 8
    MOUTH_LEFT = 9
    MOUTH_RIGHT = 10
    LEFT_SHOULDER = 11
    RIGHT_SHOULDER = 12
    LEFT_ELBOW = 13
    RIGHT_ELBOW = 14
    LEFT_WRIST = 15
    RIGHT_WRIST = 16
    LEFT_PINKY = 17
    RIGHT_PINKY = 18
    LEFT_INDEX = 19
    RIGHT_INDEX = 20
    LEFT_THUMB = 21
    RIGHT_THUMB = 22
    LEFT_HIP = 23
    RIGHT_HIP = 24
    LEFT_KNEE = 25
    RIGHT_KNEE = 26
    LEFT_ANKLE = 27
    RIGHT_ANKLE = 28
    LEFT_HEEL = 29
    RIGHT_HEEL = 30
    LEFT_FOOT_INDEX = 31
    RIGHT_FOOT_INDEX = 32


#: Bones drawn by the overlay (pairs of landmark indices).
SKELETON: tuple[tuple[int, int], ...] = (
    (11, 12), (11, 13), (13, 15), (12, 14), (14, 16),
    (11, 23), (12, 24), (23, 24),
    (23, 25), (25, 27), (24, 26), (26, 28),
    (27, 29), (29, 31), (28, 30), (30, 32),
    (0, 7), (0, 8), (9, 10),
)  # fmt: skip


def landmark_name(idx: int) -> str:
    return LANDMARK_NAMES[idx]


@dataclass(frozen=True)
class PoseResult:
    """One person's pose.

    ``landmarks``: float32 ``(33, 4)`` rows ``[x_px, y_px, z, visibility]`` in the analysed
    image's pixel coordinates (x right, y down; may lie outside the image when MediaPipe
    extrapolates a body part out of frame); ``z`` is MediaPipe's relative depth as it reports it
    (in units of the image width, origin at the hips, smaller is nearer the camera); visibility in ``[0, 1]``.
    ``world``: float32 ``(33, 4)`` rows ``[x_m, y_m, z_m, visibility]``, metres, origin between
    the hips. ``image_size``: ``(width, height)`` of the analysed image.
    """

    landmarks: NDArray[np.float32]
    world: NDArray[np.float32]
    image_size: tuple[int, int]

    def __post_init__(self) -> None:
        for name in ("landmarks", "world"):
            arr = np.asarray(getattr(self, name), dtype=np.float32)
            if arr.shape != (NUM_LANDMARKS, 4):
                raise InvalidInputError(
                    f"PoseResult.{name} must have shape (33, 4), got {arr.shape}"
                )
            arr = arr.copy()
            arr.setflags(write=False)
            object.__setattr__(self, name, arr)
        w, h = (int(v) for v in self.image_size)
        if w <= 0 or h <= 0:
            raise InvalidInputError(
                f"PoseResult.image_size must be positive, got {self.image_size}"
            )
        object.__setattr__(self, "image_size", (w, h))

    def visible(self, idx: int, min_visibility: float = 0.5) -> bool:
        """True if landmark ``idx`` has visibility >= ``min_visibility`` and lies in the image."""
        x, y, _, vis = (float(v) for v in self.landmarks[int(idx)])
        w, h = self.image_size
        return vis >= min_visibility and 0.0 <= x < w and 0.0 <= y < h

    def xy(self, idx: int) -> tuple[float, float]:
        """Pixel position of landmark ``idx``."""
        return float(self.landmarks[idx, 0]), float(self.landmarks[idx, 1])

    def mapped(
        self, scale: float, offset: tuple[float, float], image_size: tuple[int, int]
    ) -> PoseResult:
        """The same pose in another image's pixels: ``x' = (x + dx) * scale`` (likewise y).

        For a pose found in a tile (``offset`` = the tile's corner) or in a downscaled copy
        (``scale`` = full size / analysed size). ``z`` is in units of the analysed width, so
        it is kept as is."""
        lms = self.landmarks.copy()
        lms[:, 0] = (lms[:, 0] + offset[0]) * scale
        lms[:, 1] = (lms[:, 1] + offset[1]) * scale
        return PoseResult(landmarks=lms, world=self.world, image_size=image_size)

    def visible_box(self, min_visibility: float = 0.5) -> tuple[float, float, float, float]:
        """``(x1, y1, x2, y2)`` around the visible landmarks (all landmarks if none is)."""
        vis = self.landmarks[self.landmarks[:, 3] >= min_visibility]
        pts = vis if len(vis) else self.landmarks
        w, h = self.image_size
        xs = np.clip(pts[:, 0], 0, w)
        ys = np.clip(pts[:, 1], 0, h)
        return float(xs.min()), float(ys.min()), float(xs.max()), float(ys.max())

    def visible_count(self, min_visibility: float = 0.5) -> int:
        return sum(self.visible(i, min_visibility) for i in range(NUM_LANDMARKS))

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (lists of floats rounded to 1/1000 px or 1/10000 of the unit)."""
        return {
            "image_size": list(self.image_size),
            "landmarks": np.round(self.landmarks.astype(np.float64), 3).tolist(),
            "world": np.round(self.world.astype(np.float64), 4).tolist(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PoseResult:
        try:
            w, h = data["image_size"]
            return cls(
                landmarks=np.asarray(data["landmarks"], dtype=np.float32),
                world=np.asarray(data["world"], dtype=np.float32),
                image_size=(int(w), int(h)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidInputError(f"not a pose dict: {exc}") from exc


def check_rgb_image(image: Any, name: str = "image") -> NDArray[np.uint8]:
    """Validate an ``(H, W, 3)`` uint8 RGB array and return it C-contiguous."""
    arr = np.asarray(image)
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3:
        raise InvalidInputError(
            f"{name} must be a uint8 RGB array of shape (H, W, 3), got dtype={arr.dtype} "
            f"shape={arr.shape}"
        )
    if arr.shape[0] < 1 or arr.shape[1] < 1:
        raise InvalidInputError(f"{name} is empty: shape={arr.shape}")
    return np.ascontiguousarray(arr)


class GraphOwner:
    """Owns one MediaPipe graph, built lazily by the subclass; a context manager that closes it.

    Not thread-safe: MediaPipe graphs must not be used from two threads at once.
    """

    _graph: Any = None

    def close(self) -> None:
        if self._graph is not None:
            self._graph.close()
            self._graph = None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class PoseEstimator(GraphOwner):
    """Owns one MediaPipe Pose graph (``static_image_mode=True``, ``model_complexity=1``).

    The graph is built on the first :meth:`estimate` call (importing this module loads no
    model) and released by :meth:`close` or on leaving a ``with`` block. Not thread-safe: use
    one estimator per thread or process. ``model_complexity=1`` is the only model bundled in
    the MediaPipe wheel; 0 and 2 would try to download weights.
    """

    def __init__(
        self, *, min_detection_confidence: float = 0.5, enable_segmentation: bool = True
    ) -> None:
        self.min_detection_confidence = min_detection_confidence
        self.enable_segmentation = enable_segmentation
        self._graph: Any = None

    def _ensure_graph(self) -> Any:
        if self._graph is None:
            import mediapipe as mp  # heavy: imported only when a graph is needed

            self._graph = mp.solutions.pose.Pose(
                static_image_mode=True,
                model_complexity=1,
                enable_segmentation=self.enable_segmentation,
                min_detection_confidence=self.min_detection_confidence,
            )
            log.debug("mediapipe pose graph created")
        return self._graph

    def estimate(self, image: NDArray[np.uint8]) -> PoseResult | None:
        """Return the most prominent person's pose in ``image`` (uint8 ``(H, W, 3)`` RGB),
        or None when MediaPipe finds no person."""
        found = self.detect(image)
        return None if found is None else found[0]

    def detect(
        self, image: NDArray[np.uint8]
    ) -> tuple[PoseResult, NDArray[np.float32] | None] | None:
        """The most prominent person's pose and that person's own silhouette.

        The silhouette is the pose graph's segmentation: float32 ``(H, W)`` in [0, 1], computed
        in the person's region of interest only (other people and clutter stay 0, unlike the
        selfie segmenter's scene-wide mask); None when segmentation is disabled. Returns None
        when MediaPipe's person detector finds nobody.
        """
        arr = check_rgb_image(image)
        h, w = arr.shape[:2]
        result = self._ensure_graph().process(arr)
        if result.pose_landmarks is None:
            return None
        lms = np.array(
            [[p.x * w, p.y * h, p.z, p.visibility] for p in result.pose_landmarks.landmark],
            dtype=np.float32,
        )
        if result.pose_world_landmarks is not None:
            world = np.array(
                [[p.x, p.y, p.z, p.visibility] for p in result.pose_world_landmarks.landmark],
                dtype=np.float32,
            )
        else:
            world = np.zeros((NUM_LANDMARKS, 4), dtype=np.float32)
        mask = getattr(result, "segmentation_mask", None)
        silhouette = None if mask is None else np.asarray(mask, dtype=np.float32)
        return PoseResult(landmarks=lms, world=world, image_size=(w, h)), silhouette
