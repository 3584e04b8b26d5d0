"""Pre-flight analysis of a shopper photo: one pass, a verdict per garment category.

Run once when a photo is uploaded and store :meth:`PhotoAnalysis.to_dict` on the photo row;
every later try-on reuses it (no GPU time is spent on a photo that cannot work).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from tryon.errors import (
    InvalidImageError,
    MultiplePeopleError,
    NoPersonError,
    PersonTooSmallError,
    PoseNotUsableError,
    PreflightError,
)
from tryon.types import Box, Category, GarmentLength
from tryon.vision.masks import PersonSegmenter, count_people
from tryon.vision.placement import Placement, compute_placement
from tryon.vision.pose import PoseEstimator, PoseResult, check_rgb_image

log = logging.getLogger(__name__)

#: placement boxes with a shorter side below this many pixels are too small to repaint well
MIN_BOX_SIDE = 96
#: ... or covering less than this fraction of the photo
MIN_BOX_FRACTION = 0.01

_ERRORS: Mapping[str, type[PreflightError]] = {
    cls.code: cls
    for cls in (NoPersonError, PoseNotUsableError, PersonTooSmallError, MultiplePeopleError)
}


@dataclass(frozen=True)
class PhotoAnalysis:
    """Result of :func:`analyze_photo`.

    ``person_mask_coverage``: fraction of pixels the segmenter calls person (NaN when no
    segmenter ran). ``people``: separate large person regions (from the segmenter; without
    one, 1 when a pose was found, else 0). ``placements``: category -> default-length
    placement, for categories whose verdict is None. ``verdicts``: category -> error code or
    None when the photo is usable for it. ``details``: category -> the error's message and
    details, for rebuilding the typed error.
    """

    pose: PoseResult | None
    person_mask_coverage: float
    people: int
    placements: dict[str, Placement]
    verdicts: dict[str, str | None]
    image_size: tuple[int, int]
    details: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: the segmenter's person probability, float32 ``(H, W)`` in [0, 1] (None without a
    #: segmenter); not part of :meth:`to_dict` (see :func:`encode_person_mask`)
    person_mask: NDArray[np.float32] | None = field(default=None, repr=False, compare=False)

    def usable(self, category: Category | str) -> bool:
        return self.verdicts.get(Category(category).value, "unknown") is None

    def to_dict(self) -> dict[str, Any]:
        cov = self.person_mask_coverage
        return {
            "image_size": list(self.image_size),
            "pose": self.pose.to_dict() if self.pose is not None else None,
            "person_mask_coverage": None if math.isnan(cov) else round(cov, 4),
            "people": self.people,
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
        )


def _too_small(box: Box, image_size: tuple[int, int], min_side: int, min_fraction: float) -> bool:
    w, h = image_size
    return min(box.width, box.height) < min_side or box.area < min_fraction * w * h


def analyze_photo(
    image: NDArray[np.uint8],
    *,
    pose_estimator: PoseEstimator,
    segmenter: PersonSegmenter | None = None,
    categories: Iterable[Category | str] = tuple(Category),
    min_box_side: int = MIN_BOX_SIDE,
    min_box_fraction: float = MIN_BOX_FRACTION,
) -> PhotoAnalysis:
    """Pose, person mask and a verdict per category for one uint8 ``(H, W, 3)`` RGB photo.

    Never raises for pre-flight failures: each category's verdict holds the error code
    (``no_person``, ``multiple_people``, ``pose_not_usable``, ``person_too_small``) or None.
    Raises InvalidInputError only for a malformed array.
    """
    # 1. Check inputs
    arr = check_rgb_image(image)
    h, w = arr.shape[:2]
    cats = [Category(c) for c in categories]

    # 2. Pose and person mask
    pose = pose_estimator.estimate(arr)
    coverage = float("nan")
    person = None
    if segmenter is not None:
        person = segmenter.segment(arr)
        coverage = float((person >= 0.5).mean())
        people = count_people(person)
    else:
        people = 1 if pose is not None else 0

    # 3. Verdict per category, most fundamental failure first
    placements: dict[str, Placement] = {}
    verdicts: dict[str, str | None] = {}
    details: dict[str, dict[str, Any]] = {}
    for cat in cats:
        try:
            if pose is None:
                raise NoPersonError()
            if people > 1:
                raise MultiplePeopleError(people=people)
            placement = compute_placement(pose, cat)
            if _too_small(placement.box, (w, h), min_box_side, min_box_fraction):
                raise PersonTooSmallError(box=placement.box.as_list())
        except PreflightError as exc:
            verdicts[cat.value] = exc.code
            details[cat.value] = {"message": exc.message, **exc.details}
            continue
        verdicts[cat.value] = None
        placements[cat.value] = placement
    log.info(
        "photo analysed size=%dx%d pose=%s people=%d verdicts=%s",
        w, h, pose is not None, people, verdicts,
    )  # fmt: skip
    return PhotoAnalysis(pose, coverage, people, placements, verdicts, (w, h), details, person)


def check_photo(
    analysis: PhotoAnalysis,
    category: Category | str,
    *,
    length: GarmentLength | str | float = "regular",
    offsets: Mapping[str, int] | None = None,
    explicit_box: Box | None = None,
    min_box_side: int = MIN_BOX_SIDE,
    min_box_fraction: float = MIN_BOX_FRACTION,
) -> Placement:
    """The placement for ``category`` on an analysed photo, or the typed pre-flight error.

    With the default ``length`` and no ``offsets``/``explicit_box`` this returns the stored
    placement; otherwise it recomputes from the stored pose (a category that was not analysed
    is computed too). An ``explicit_box`` skips the pose checks except no_person and
    multiple_people.
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
    if analysis.pose is None:
        raise NoPersonError()
    if analysis.people > 1:
        raise MultiplePeopleError(people=analysis.people)
    placement = compute_placement(
        analysis.pose, cat, length=length, offsets=offsets, explicit_box=explicit_box
    )
    if explicit_box is None and _too_small(
        placement.box, analysis.image_size, min_box_side, min_box_fraction
    ):
        raise PersonTooSmallError(box=placement.box.as_list())
    return placement


# --- process-pool entry point ------------------------------------------------------------

_CACHE: dict[str, Any] = {}


def _process_models() -> tuple[PoseEstimator, PersonSegmenter]:
    """This process's estimator and segmenter, built on first use (a forked child builds its
    own: MediaPipe graphs are not shared across fork)."""
    pid = os.getpid()
    if _CACHE.get("pid") != pid:
        _CACHE.clear()
        _CACHE.update(pid=pid, pose=PoseEstimator(), segmenter=PersonSegmenter())
    return _CACHE["pose"], _CACHE["segmenter"]


def decode_rgb(image_bytes: bytes) -> NDArray[np.uint8]:
    """Decode PNG/JPEG bytes to uint8 ``(H, W, 3)`` RGB (no orientation or size handling)."""
    import io

    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(image_bytes)) as img:
            return np.asarray(img.convert("RGB"), dtype=np.uint8)
    except (UnidentifiedImageError, OSError) as exc:
        raise InvalidImageError(f"The photo could not be decoded: {exc}") from exc


def encode_person_mask(person_mask: NDArray[Any]) -> bytes:
    """A person mask (float ``(H, W)`` in [0, 1], or bool) -> grayscale 8-bit PNG bytes,
    ``round(p * 255)``: 255 = person. Read back with ``> 127`` for the 0.5 threshold."""
    import io

    from PIL import Image

    arr = np.asarray(person_mask)
    if arr.ndim != 2:
        raise ValueError(f"person_mask must be (H, W), got {arr.shape}")
    plane = np.clip(np.rint(arr.astype(np.float32) * 255.0), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(plane, mode="L").save(buf, format="PNG")
    return buf.getvalue()


def analyze_photo_json(
    image_bytes: bytes,
    categories: Iterable[Category | str] | None = None,
    *,
    with_person_mask: bool = False,
) -> dict[str, Any]:
    """:func:`analyze_photo` on encoded, already normalised photo bytes; returns
    :meth:`PhotoAnalysis.to_dict`.

    Meant to run in a worker or process pool so the calling process never imports MediaPipe;
    each process builds its models once. Raises InvalidImageError for undecodable bytes; all
    pre-flight failures are in the returned verdicts. ``with_person_mask`` adds
    ``"person_mask_png"``: :func:`encode_person_mask` bytes of the segmentation (None when no
    pixel is person), computed in the same pass (the dict is then no longer pure JSON).
    """
    image = decode_rgb(image_bytes)
    pose_estimator, segmenter = _process_models()
    analysis = analyze_photo(
        image,
        pose_estimator=pose_estimator,
        segmenter=segmenter,
        categories=tuple(Category) if categories is None else categories,
    )
    out = analysis.to_dict()
    if with_person_mask:
        mask = analysis.person_mask
        usable = mask is not None and bool((mask >= 0.5).any())
        out["person_mask_png"] = encode_person_mask(mask) if mask is not None and usable else None
    return out


__all__ = [
    "PhotoAnalysis",
    "analyze_photo",
    "analyze_photo_json",
    "check_photo",
    "decode_rgb",
    "encode_person_mask",
]
