"""Who is in the photo: every person large enough to matter, found by MediaPipe's own person
detector (the first stage of the pose graph), one person at a time.

The pose graph returns one person per call. To find the others, each person found is painted
out (their own pose silhouette, dilated, filled with the photo's median colour) and the graph
runs again on what is left, up to ``max_people`` times. Because the detector sees the photo
letterboxed to 224 px, a person small in the frame gets a second look in a crop around them,
and when nobody is seen well the photo is searched again in overlapping tiles (two halves
along the long side, or four quadrants for a squarish photo). A person counts when their
visible-landmark box is at least :data:`MATTERS_FRACTION` of the largest person's height:
bystanders far behind are ignored. The rule and its limits are in docs/vision.md.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import cv2
import numpy as np
from numpy.typing import NDArray

from tryon.types import Box
from tryon.vision.pose import PoseEstimator, PoseResult

log = logging.getLogger(__name__)

#: a second person counts when at least this fraction of the largest person's height
MATTERS_FRACTION = 0.5
#: a detection with fewer visible landmarks than this is not taken as a person
MIN_VISIBLE_LANDMARKS = 8
#: nor one whose box is less than this fraction of the photo's height: too small to be the
#: subject or to matter, and the size of the detector's false alarms on textures
MIN_HEIGHT_FRACTION = 0.15
#: detections overlapping an earlier one by more than this (intersection over the smaller
#: box) are the same person again
SAME_PERSON_OVERLAP = 0.6
#: the silhouette is grown by this fraction of the photo's long side before painting out
_PAINT_DILATE = 0.02
#: each tile (half or quadrant) covers this fraction of a side (tiles overlap in the middle)
_HALF = 0.6
#: a person at least this fraction of the photo's height, with at least :data:`_SURE` of their
#: in-frame landmarks visible, is seen well enough by the whole-photo pass: they get no second
#: look, and when they are the tallest the tiles are skipped (anyone who matters next to
#: them is then large enough for the whole-photo pass)
_LARGE_ENOUGH = 0.6
_SURE = 0.8
#: ... counting landmarks in the top this fraction of the photo only: limbs cut by the bottom
#: edge (waist-up photos) are reported invisible without the pose being in doubt
_SURE_ZONE = 0.75


@dataclass(frozen=True)
class Person:
    """One person found in the analysed image.

    ``pose``: landmarks in the analysed image's pixels. ``silhouette``: bool ``(H, W)``, this
    person's own segmentation (None when the estimator has segmentation off). ``box``: the
    visible landmarks' box. ``source``: ``"full"`` or ``"tile"`` (found in a tile of the photo).
    """

    pose: PoseResult
    silhouette: NDArray[np.bool_] | None
    box: Box
    source: str

    @property
    def height(self) -> int:
        return self.box.height


def _overlap(a: Box, b: Box) -> float:
    ix = max(0, min(a.x2, b.x2) - max(a.x1, b.x1))
    iy = max(0, min(a.y2, b.y2) - max(a.y1, b.y1))
    smaller = max(1, min(a.area, b.area))
    return ix * iy / smaller


def _paint_out(work: NDArray[np.uint8], person: Person, fill: NDArray[np.uint8]) -> None:
    h, w = work.shape[:2]
    k = max(3, int(_PAINT_DILATE * max(h, w)) | 1)
    region = np.zeros((h, w), np.uint8)
    if person.silhouette is not None and person.silhouette.any():
        region[person.silhouette] = 1
    else:
        b = person.box.clip(w, h)
        region[b.y1 : b.y2, b.x1 : b.x2] = 1
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))
    region = np.asarray(cv2.dilate(region, kernel), dtype=np.uint8)
    work[region > 0] = fill


def _person(
    found: tuple[PoseResult, NDArray[np.float32] | None],
    offset: tuple[int, int],
    size: tuple[int, int],
    source: str,
) -> Person | None:
    pose, mask = found
    if pose.visible_count() < MIN_VISIBLE_LANDMARKS:
        return None
    w, h = size
    if offset != (0, 0):
        pose = pose.mapped(1.0, (float(offset[0]), float(offset[1])), size)
    x1, y1, x2, y2 = pose.visible_box()
    box = Box(int(x1), int(y1), int(np.ceil(x2)) + 1, int(np.ceil(y2)) + 1).clip(w, h)
    if box.height < MIN_HEIGHT_FRACTION * h:
        return None
    silhouette = None
    if mask is not None:
        silhouette = np.zeros((h, w), dtype=bool)
        mh, mw = mask.shape
        silhouette[offset[1] : offset[1] + mh, offset[0] : offset[0] + mw] = mask >= 0.5
    return Person(pose, silhouette, box, source)


def _tiles(w: int, h: int) -> list[tuple[int, int, int, int]]:
    """Two overlapping halves along the long side of an elongated photo (aspect ≥ 1.5), else
    four overlapping quadrants; each tile spans :data:`_HALF` of a side."""
    if max(w, h) >= 1.5 * min(w, h):
        if w >= h:
            span = int(round(_HALF * w))
            return [(0, 0, span, h), (w - span, 0, w, h)]
        span = int(round(_HALF * h))
        return [(0, 0, w, span), (0, h - span, w, h)]
    sw, sh = int(round(_HALF * w)), int(round(_HALF * h))
    return [(0, 0, sw, sh), (w - sw, 0, w, sh), (0, h - sh, sw, h), (w - sw, h - sh, w, h)]


def _seen_well(person: Person, height: int) -> bool:
    pose = person.pose
    w, h = pose.image_size
    xs, ys, vis = pose.landmarks[:, 0], pose.landmarks[:, 1], pose.landmarks[:, 3]
    zone = (xs >= 0) & (xs < w) & (ys >= 0) & (ys < _SURE_ZONE * h)
    sure = int((zone & (vis >= 0.5)).sum()) >= _SURE * max(int(zone.sum()), 1)
    return sure and person.height >= _LARGE_ENOUGH * height


def _refine(image: NDArray[np.uint8], person: Person, estimator: PoseEstimator) -> Person:
    """The same person seen again in a square crop around them (their box grown by half on
    every side): a person small in the photo fills more of the detector's 224 px input
    there, which corrects poses stretched onto the background. Keeps ``person`` when the
    crop finds nobody or someone else."""
    h, w = image.shape[:2]
    b = person.box
    side = max(b.width, b.height) * 2.0
    cx, cy = (b.x1 + b.x2) / 2, (b.y1 + b.y2) / 2
    x1, y1 = int(max(0, cx - side / 2)), int(max(0, cy - side / 2))
    x2, y2 = int(min(w, cx + side / 2)), int(min(h, cy + side / 2))
    found = estimator.detect(np.ascontiguousarray(image[y1:y2, x1:x2]))
    if found is None:
        return person
    again = _person(found, (x1, y1), (w, h), person.source)
    if again is None or _overlap(again.box, person.box) < 0.5:
        return person
    return again


def find_people(
    image: NDArray[np.uint8], estimator: PoseEstimator, *, max_people: int = 6
) -> list[Person]:
    """Every person found in uint8 ``(H, W, 3)`` RGB ``image``, largest first.

    Runs the estimator's graph once per person found plus once more (nobody left), once more
    per person not seen well (under :data:`_LARGE_ENOUGH` of the photo's height or with
    few visible landmarks: a crop around them), and, when that found fewer than two people
    and nobody seen well, once per tile (two halves, or four quadrants for a squarish photo).
    Returns at most
    ``max_people`` people; the caller decides who matters (see :func:`people_that_matter`).
    """
    h, w = image.shape[:2]
    work = np.array(image, dtype=np.uint8, copy=True)
    fill = np.median(image.reshape(-1, 3), axis=0).astype(np.uint8)
    people: list[Person] = []

    def add(person: Person | None) -> bool:
        if person is None or any(_overlap(person.box, p.box) > SAME_PERSON_OVERLAP for p in people):
            return False
        people.append(person)
        _paint_out(work, person, fill)
        return True

    # 1. whole photo, one person at a time
    while len(people) < max_people:
        found = estimator.detect(work)
        if found is None or not add(_person(found, (0, 0), (w, h), "full")):
            break
    # 2. a second look at people small in the photo, in a crop around each
    people = [p if _seen_well(p, h) else _refine(image, p, estimator) for p in people]
    # 3. tiles (halves or quadrants), for people small in the photo
    if len(people) < 2 and not any(_seen_well(p, h) for p in people):
        for x1, y1, x2, y2 in _tiles(w, h):
            if len(people) >= max_people:
                break
            found = estimator.detect(np.ascontiguousarray(work[y1:y2, x1:x2]))
            if found is not None:
                add(_person(found, (x1, y1), (w, h), "tile"))
    people.sort(key=lambda p: p.height, reverse=True)
    log.debug("people found: %s", [(p.box.as_list(), p.source) for p in people])
    return people


def people_that_matter(people: list[Person], fraction: float = MATTERS_FRACTION) -> list[Person]:
    """The people at least ``fraction`` of the tallest one's height (bystanders dropped)."""
    if not people:
        return []
    tallest = max(p.height for p in people)
    return [p for p in people if p.height >= fraction * tallest]


__all__ = ["MATTERS_FRACTION", "Person", "find_people", "people_that_matter"]
