"""Pre-flight analysis of a shopper photo: one pass, a verdict per garment category.

Run once when a photo is uploaded and store :meth:`PhotoAnalysis.to_dict` on the photo row;
every later try-on reuses it (no GPU time is spent on a photo that cannot work).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

from tryon.errors import (
    MultiplePeopleError,
    NoPersonError,
    PersonTooSmallError,
    PoseNotUsableError,
    PreflightError,
)
from tryon.types import Box, Category, GarmentLength
from tryon.vision.analysis_input import (
    ANALYSIS_SIDE,
    AnalysisInput,
    analysis_input_from_bytes,
    decode_rgb,
    reduce_for_analysis,
)
from tryon.vision.body import (
    landmarks_on_body,
    legs_problem,
    posture_problem,
    silhouette_spans,
    torso_length,
)
from tryon.vision.people import find_people, people_that_matter
from tryon.vision.placement import Placement, compute_placement
from tryon.vision.pose import PoseEstimator, PoseResult, check_rgb_image

log = logging.getLogger(__name__)

#: a torso (shoulder mid to hip mid) shorter than this many pixels of the stored photo is too
#: small to repaint well (about a 300 px tall person; the garment area is then ~120 px)
MIN_TORSO_PX = 90
#: a person at least this tall a fraction of the photo "fills" it: if they are still too
#: small, the photo has too few pixels (rather than the person being too far away)
FILLS_PHOTO = 0.5

#: no_person from the analysis also covers someone too small to be detected
NO_PERSON_MESSAGE = (
    "No person was found in the photo: upload a photo of yourself, facing the camera and "
    "filling most of its height."
)

_ERRORS: Mapping[str, type[PreflightError]] = {
    cls.code: cls
    for cls in (NoPersonError, PoseNotUsableError, PersonTooSmallError, MultiplePeopleError)
}


@dataclass(frozen=True)
class PhotoAnalysis:
    """Result of :func:`analyze_photo`; every coordinate is in the photo's own pixels.

    ``person_mask_coverage``: fraction of the photo covered by the main person's silhouette
    (NaN when there is none). ``people``: people large enough to matter (see
    :mod:`tryon.vision.people`); ``people_boxes``: their boxes, largest first.
    ``placements``: category -> default-length placement, for categories whose verdict is
    None. ``verdicts``: category -> error code or None when the photo is usable for it.
    ``details``: category -> the error's message and details, for rebuilding the typed
    error. ``spans``: the main person's measured torso and leg widths; ``on_body``: landmarks
    lying on their silhouette (both placement inputs, see :func:`compute_placement`).
    """

    pose: PoseResult | None
    person_mask_coverage: float
    people: int
    placements: dict[str, Placement]
    verdicts: dict[str, str | None]
    image_size: tuple[int, int]
    details: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: the main person's silhouette at analysis resolution, bool ``(h, w)`` (None without a
    #: person); not part of :meth:`to_dict` (see :meth:`person_mask_full`)
    person_mask: NDArray[np.bool_] | None = field(default=None, repr=False, compare=False)
    people_boxes: list[list[int]] = field(default_factory=list)
    spans: dict[str, list[int]] = field(default_factory=dict)
    on_body: list[int] = field(default_factory=list)

    def usable(self, category: Category | str) -> bool:
        return self.verdicts.get(Category(category).value, "unknown") is None

    def person_mask_full(self) -> NDArray[np.bool_] | None:
        """The main person's silhouette upsampled once to the photo's size, bool ``(H, W)``."""
        if self.person_mask is None:
            return None
        w, h = self.image_size
        if self.person_mask.shape == (h, w):
            return self.person_mask
        soft = cv2.resize(
            self.person_mask.astype(np.uint8) * 255, (w, h), interpolation=cv2.INTER_LINEAR
        )
        return np.asarray(soft > 127)

    def to_dict(self) -> dict[str, Any]:
        cov = self.person_mask_coverage
        return {
            "image_size": list(self.image_size),
            "pose": self.pose.to_dict() if self.pose is not None else None,
            "person_mask_coverage": None if math.isnan(cov) else round(cov, 4),
            "people": self.people,
            "people_boxes": [list(b) for b in self.people_boxes],
            "spans": {k: list(v) for k, v in self.spans.items()},
            "on_body": list(self.on_body),
            "placements": {k: v.to_dict() for k, v in self.placements.items()},
            "verdicts": dict(self.verdicts),
            "details": {k: dict(v) for k, v in self.details.items()},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PhotoAnalysis:
        cov = data.get("person_mask_coverage")
        w, h = data["image_size"]
        return cls(
            pose=PoseResult.from_dict(data["pose"]) if data.get("pose") else None,
            person_mask_coverage=float("nan") if cov is None else float(cov),
            people=int(data["people"]),
            placements={k: Placement.from_dict(v) for k, v in data["placements"].items()},
            verdicts={k: (None if v is None else str(v)) for k, v in data["verdicts"].items()},
            image_size=(int(w), int(h)),
            details={k: dict(v) for k, v in data.get("details", {}).items()},
            people_boxes=[[int(v) for v in b] for b in data.get("people_boxes", [])],
            spans={k: [int(v) for v in s] for k, s in data.get("spans", {}).items()},
            on_body=[int(i) for i in data.get("on_body", [])],
        )


def too_small_error(
    torso_px: float,
    person_height: float,
    image_size: tuple[int, int],
    min_torso: int = MIN_TORSO_PX,
) -> PersonTooSmallError | None:
    """``person_too_small`` when the torso (photo pixels) is shorter than ``min_torso``.

    The message says which fix applies: a person who fills :data:`FILLS_PHOTO` of the photo's
    height or more is in a photo with too few pixels; otherwise they are too far away.
    """
    if torso_px >= min_torso:
        return None
    w, h = image_size
    torso = round(torso_px)
    if person_height >= FILLS_PHOTO * h:
        return PersonTooSmallError(
            f"The photo is too small ({w}x{h} pixels) to repaint a garment: upload a larger "
            "photo.",
            reason="photo_too_small", torso_px=torso, min_torso_px=min_torso,
        )
    return PersonTooSmallError(
        "You are too far from the camera: step closer so that you fill most of the photo's "
        "height, or crop the photo around yourself.",
        reason="person_too_far", torso_px=torso, min_torso_px=min_torso,
    )


def _preflight(
    cat: Category,
    pose: PoseResult | None,
    people_boxes: list[list[int]],
    spans: Mapping[str, Any] | None,
    on_body: Collection[int],
    image_size: tuple[int, int],
    min_torso: int,
    *,
    length: GarmentLength | str | float = "regular",
    offsets: Mapping[str, int] | None = None,
) -> Placement:
    """One category's checks, most fundamental first; raises the typed pre-flight error."""
    if pose is None:
        raise NoPersonError(NO_PERSON_MESSAGE)
    if len(people_boxes) > 1:
        raise MultiplePeopleError(
            f"{len(people_boxes)} people are in the photo: upload a photo with only you in it.",
            people=len(people_boxes), boxes=[list(b) for b in people_boxes],
        )
    problem = posture_problem(pose)
    if problem is None and cat in (Category.LOWER_BODY, Category.DRESS):
        problem = legs_problem(pose)
    if problem is not None:
        raise PoseNotUsableError(
            problem.message, reason=problem.reason, missing=[], category=cat.value,
            tilt_deg=problem.tilt_deg,
        )
    height = people_boxes[0][3] - people_boxes[0][1] if people_boxes else image_size[1]
    err = too_small_error(torso_length(pose), height, image_size, min_torso)
    if err is not None:
        raise err
    return compute_placement(
        pose, cat, length=length, offsets=offsets, spans=spans, on_body=on_body
    )


def analyze_photo(
    image: NDArray[np.uint8],
    *,
    pose_estimator: PoseEstimator,
    categories: Iterable[Category | str] = tuple(Category),
    min_torso: int = MIN_TORSO_PX,
    analysis_side: int = ANALYSIS_SIDE,
    photo_size: tuple[int, int] | None = None,
) -> PhotoAnalysis:
    """People, pose, silhouette and a verdict per category for one uint8 ``(H, W, 3)`` RGB photo.

    ``photo_size``: ``(W, H)`` of the stored photo when ``image`` is a reduced copy of it
    (e.g. decoded at reduced scale); every box and landmark is returned in those pixels.

    Never raises for pre-flight failures: each category's verdict holds the error code
    (``no_person``, ``multiple_people``, ``pose_not_usable``, ``person_too_small``) or None.
    Raises InvalidInputError only for a malformed array.
    """
    # 1. Check inputs; work on a copy at analysis resolution
    arr = check_rgb_image(image)
    cats = [Category(c) for c in categories]
    small = reduce_for_analysis(arr, analysis_side)
    w, h = photo_size if photo_size is not None else (arr.shape[1], arr.shape[0])
    up = w / small.shape[1]

    # 2. People (MediaPipe's person detector, one person at a time), the main one's pose
    found = people_that_matter(find_people(small, pose_estimator))
    main = found[0] if found else None
    pose = main.pose.mapped(up, (0.0, 0.0), (w, h)) if main is not None else None
    boxes = [[round(v * up) for v in p.box.as_list()] for p in found]
    silhouette = main.silhouette if main is not None else None
    spans: dict[str, list[int]] = {}
    on_body: list[int] = []
    if main is not None:
        spans = {
            k: [round(v * up) for v in s]
            for k, s in silhouette_spans(main.pose, silhouette).items()
        }
        on_body = landmarks_on_body(main.pose, silhouette)
    coverage = float(silhouette.mean()) if silhouette is not None else float("nan")

    # 3. Verdict per category, most fundamental failure first
    placements: dict[str, Placement] = {}
    verdicts: dict[str, str | None] = {}
    details: dict[str, dict[str, Any]] = {}
    for cat in cats:
        try:
            placement = _preflight(cat, pose, boxes, spans, on_body, (w, h), min_torso)
        except PreflightError as exc:
            verdicts[cat.value] = exc.code
            details[cat.value] = {"message": exc.message, **exc.details}
            continue
        verdicts[cat.value] = None
        placements[cat.value] = placement
    log.info(
        "photo analysed size=%dx%d people=%d verdicts=%s", w, h, len(boxes), verdicts,
    )  # fmt: skip
    return PhotoAnalysis(
        pose, coverage, len(boxes), placements, verdicts, (w, h), details, silhouette,
        boxes, spans, on_body,
    )


def check_photo(
    analysis: PhotoAnalysis,
    category: Category | str,
    *,
    length: GarmentLength | str | float = "regular",
    offsets: Mapping[str, int] | None = None,
    explicit_box: Box | None = None,
    min_torso: int = MIN_TORSO_PX,
) -> Placement:
    """The placement for ``category`` on an analysed photo, or the typed pre-flight error.

    With the default ``length`` and no ``offsets``/``explicit_box`` this returns the stored
    placement; otherwise it recomputes from the stored pose, people and spans with the same
    checks as the analysis (a category that was not analysed is computed too). An
    ``explicit_box`` skips the pose checks except no_person and multiple_people.
    """
    cat = Category(category)
    code = analysis.verdicts.get(cat.value)
    stored = analysis.placements.get(cat.value)
    if code is not None:
        blocking = code in (NoPersonError.code, MultiplePeopleError.code)
        if blocking or explicit_box is None:
            info = dict(analysis.details.get(cat.value, {}))
            message = info.pop("message", None)
            raise _ERRORS.get(code, PreflightError)(message, code=code, **info)
    if stored is not None and length == "regular" and not offsets and explicit_box is None:
        return stored
    boxes = analysis.people_boxes
    if not boxes and analysis.pose is not None:  # stored before people boxes were recorded
        x1, y1, x2, y2 = analysis.pose.visible_box()
        boxes = [[int(x1), int(y1), int(x2), int(y2)]]
    if explicit_box is not None:
        if analysis.pose is None:
            raise NoPersonError(NO_PERSON_MESSAGE)
        if len(boxes) > 1:
            raise MultiplePeopleError(people=len(boxes), boxes=boxes)
        return compute_placement(
            analysis.pose, cat, length=length, offsets=offsets, explicit_box=explicit_box
        )
    return _preflight(
        cat, analysis.pose, boxes, analysis.spans, analysis.on_body, analysis.image_size,
        min_torso, length=length, offsets=offsets,
    )


# --- process-pool entry point ------------------------------------------------------------

_CACHE: dict[str, Any] = {}


def _process_models() -> PoseEstimator:
    """This process's estimator, built on first use (a forked child builds its own:
    MediaPipe graphs are not shared across fork)."""
    pid = os.getpid()
    if _CACHE.get("pid") != pid:
        _CACHE.clear()
        _CACHE.update(pid=pid, pose=PoseEstimator())
    estimator: PoseEstimator = _CACHE["pose"]
    return estimator


def encode_person_mask(person_mask: NDArray[Any]) -> bytes:
    """A person mask (float ``(H, W)`` in [0, 1], or bool) -> grayscale 8-bit PNG bytes,
    ``round(p * 255)``: 255 = person. Read back with ``> 127`` for the 0.5 threshold."""
    arr = np.asarray(person_mask)
    if arr.ndim != 2:
        raise ValueError(f"person_mask must be (H, W), got {arr.shape}")
    if arr.dtype == np.bool_:
        plane = arr.view(np.uint8) * np.uint8(255)
    else:
        plane = np.clip(np.rint(arr.astype(np.float32) * 255.0), 0, 255).astype(np.uint8)
    # run-length deflate: a mask is long runs of 0 and 255, ~3x faster than zlib's default
    ok, buf = cv2.imencode(".png", plane, [cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_RLE])
    if not ok:
        raise ValueError("PNG encoding of the person mask failed")
    return bytes(buf.tobytes())


def analyze_photo_input(
    photo: AnalysisInput,
    categories: Iterable[Category | str] | None = None,
    *,
    with_person_mask: bool = False,
) -> dict[str, Any]:
    """:func:`analyze_photo` on an :class:`AnalysisInput`; returns :meth:`PhotoAnalysis.to_dict`.

    The upload path's entry point (``web/analyzer.py``): the API process reduced the pixels it
    decoded at intake, so nothing is decoded here. Meant to run in a worker or process pool so
    the calling process never imports MediaPipe; each process builds its models once. All
    pre-flight failures are in the returned verdicts. ``with_person_mask`` adds
    ``"person_mask_png"``: :func:`encode_person_mask` bytes of the main person's silhouette,
    upsampled once to ``photo.photo_size`` (None when there is none); the dict is then no
    longer pure JSON.
    """
    analysis = analyze_photo(
        photo.image,
        pose_estimator=_process_models(),
        categories=tuple(Category) if categories is None else categories,
        photo_size=photo.photo_size,
    )
    out = analysis.to_dict()
    if with_person_mask:
        mask = analysis.person_mask_full()
        usable = mask is not None and bool(mask.any())
        out["person_mask_png"] = encode_person_mask(mask) if mask is not None and usable else None
    return out


def analyze_photo_json(
    image_bytes: bytes,
    categories: Iterable[Category | str] | None = None,
    *,
    with_person_mask: bool = False,
) -> dict[str, Any]:
    """:func:`analyze_photo_input` on encoded, already normalised photo bytes, decoded once at
    analysis resolution (a JPEG at reduced scale). For bytes nobody has decoded yet (the demo
    photo, tests); an upload hands over the intake's pixels instead. Raises
    InvalidImageError for undecodable bytes.
    """
    return analyze_photo_input(
        analysis_input_from_bytes(image_bytes), categories, with_person_mask=with_person_mask
    )


__all__ = [
    "ANALYSIS_SIDE",
    "AnalysisInput",
    "PhotoAnalysis",
    "analyze_photo",
    "analyze_photo_input",
    "analyze_photo_json",
    "check_photo",
    "decode_rgb",
    "encode_person_mask",
    "reduce_for_analysis",
    "too_small_error",
]
