"""Where a garment goes: the target box for one garment category, computed from a pose.

The box is what AnyDoor repaints, so its extent decides garment length and width. The rules
are fixed fractions of body measures taken from the landmarks (shoulder width, torso length,
hip width, thigh length), listed in :data:`PLACEMENT_TABLE` (rendered into docs/vision.md by
:func:`placement_table_markdown`); the table and its constants live in
:mod:`tryon.vision.placement_rules` (re-exported here), this module applies them to a pose.
Boxes assume an upright person facing or turned partly towards the camera.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from tryon.errors import InvalidInputError, PoseNotUsableError
from tryon.types import Box, Category, GarmentLength
from tryon.vision.placement_rules import (
    ANKLES,
    ARM_PER_SHOULDER,
    CHIN_FLOOR,
    DRESS_BOTTOM,
    DRESS_SIDE,
    ELBOWS,
    HIPS,
    KNEES,
    LOWER_BOTTOM,
    LOWER_SIDE,
    LOWER_WAIST,
    OUTER,
    PLACEMENT_TABLE,
    SHIN_PER_THIGH,
    SHOULDERS,
    TORSO_PER_SHOULDER,
    UPPER,
    PlacementRule,
    TorsoRule,
    placement_table_markdown,
)
from tryon.vision.pose import LANDMARK_NAMES, PoseResult

__all__ = [
    "OFFSET_KEYS",
    "PLACEMENT_TABLE",
    "Placement",
    "PlacementRule",
    "compute_placement",
    "in_view",
    "missing_landmarks",
    "placement_table_markdown",
    "required_landmarks",
]

OFFSET_KEYS = ("left", "top", "right", "bottom")


@dataclass(frozen=True)
class Placement:
    """Target box for one garment on one photo.

    ``box``: pixel box in the photo, already clipped to it. ``rule``: which rule and landmarks
    produced it (``"explicit"`` for a caller's box). ``length``: the garment length used (a
    :class:`GarmentLength` value or a float ratio). ``clipped``: the rule's box reached past the
    image edge and was cut (e.g. hips below the frame).
    """

    box: Box
    category: Category
    rule: str
    length: str | float
    clipped: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "box": self.box.as_list(),
            "category": str(self.category),
            "rule": self.rule,
            "length": self.length,
            "clipped": self.clipped,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Placement:
        try:
            x1, y1, x2, y2 = (int(v) for v in data["box"])
            length = data.get("length", "regular")
            return cls(
                box=Box(x1, y1, x2, y2),
                category=Category(data["category"]),
                rule=str(data["rule"]),
                length=float(length) if isinstance(length, int | float) else str(length),
                clipped=bool(data.get("clipped", False)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidInputError(f"not a placement dict: {exc}") from exc


def _category(category: Category | str) -> Category:
    try:
        return Category(category)
    except ValueError:
        raise InvalidInputError(
            f"category must be one of {[c.value for c in Category]}, got {category!r}",
            field="category",
        ) from None


def _length(length: GarmentLength | str | float) -> str | float:
    if isinstance(length, bool):
        raise InvalidInputError(f"length must be a GarmentLength or a ratio, got {length!r}")
    if isinstance(length, int | float):
        ratio = float(length)
        if not (math.isfinite(ratio) and 0.2 <= ratio <= 3.0):
            raise InvalidInputError(
                f"length ratio must be between 0.2 and 3.0, got {length!r}", field="length"
            )
        return ratio
    try:
        return GarmentLength(length).value
    except ValueError:
        raise InvalidInputError(
            f"length must be one of {[g.value for g in GarmentLength]} or a ratio, got {length!r}",
            field="length",
        ) from None


def required_landmarks(category: Category | str) -> tuple[int, ...]:
    """Landmark indices that must be visible for ``category``'s rule."""
    return PLACEMENT_TABLE[_category(category)].required


def _dist(a: tuple[float, float], b: tuple[float, float]) -> float:
    return math.hypot(a[0] - b[0], a[1] - b[1])


def _mid(a: tuple[float, float], b: tuple[float, float]) -> tuple[float, float]:
    return ((a[0] + b[0]) / 2, (a[1] + b[1]) / 2)


class _Geometry:
    """Body measures from one pose; records which landmarks were used or estimated."""

    def __init__(
        self, pose: PoseResult, min_visibility: float, on_body: Collection[int] = ()
    ) -> None:
        self.pose = pose
        self.min_visibility = min_visibility
        self.on_body = on_body
        self.used: list[int] = []
        self.estimated: list[str] = []

    def vis(self, idx: int) -> bool:
        return in_view(self.pose, idx, self.min_visibility, self.on_body)

    def pt(self, idx: int) -> tuple[float, float]:
        if idx not in self.used:
            self.used.append(idx)
        return self.pose.xy(idx)

    # upper body ----------------------------------------------------------------------
    def torso(self) -> tuple[float, float, float, list[tuple[float, float]]]:
        """(shoulder line y, highest shoulder y, torso length T, side points)."""
        ls, rs = self.pt(SHOULDERS[0]), self.pt(SHOULDERS[1])
        sw = max(_dist(ls, rs), 1.0)
        smid = _mid(ls, rs)
        points = [ls, rs]
        if all(self.vis(i) for i in HIPS):
            lh, rh = self.pt(HIPS[0]), self.pt(HIPS[1])
            torso = max(_dist(smid, _mid(lh, rh)), 0.5 * sw)
            points += [lh, rh]
        else:
            torso = TORSO_PER_SHOULDER * sw
            self.estimated.append("hips (from shoulder width)")
        for elbow, shoulder in zip(ELBOWS, (ls, rs), strict=True):
            if self.vis(elbow):
                points.append(self.pt(elbow))
            else:
                outward = 1.0 if shoulder[0] >= smid[0] else -1.0
                points.append((shoulder[0] + outward * ARM_PER_SHOULDER * sw, shoulder[1]))
                self.estimated.append(f"{LANDMARK_NAMES[elbow]} (beside its shoulder)")
        return smid[1], min(ls[1], rs[1]), torso, points

    def top_edge(self, highest_shoulder: float, torso: float, frac: float) -> float:
        top = highest_shoulder - frac * torso
        floor = [self.pt(i)[1] for i in CHIN_FLOOR if self.vis(i)]
        if floor:
            top = max(top, max(floor))
        return min(top, highest_shoulder)

    # lower body ----------------------------------------------------------------------
    def legs(
        self, with_ankles: bool
    ) -> tuple[float, float, float, float, float, list[tuple[float, float]]]:
        """(highest hip y, lowest knee y, lowest ankle y, thigh length, hip width, side points)."""
        lh, rh = self.pt(HIPS[0]), self.pt(HIPS[1])
        lk, rk = self.pt(KNEES[0]), self.pt(KNEES[1])
        hw = max(_dist(lh, rh), 1.0)
        thigh = max(_dist(_mid(lh, rh), _mid(lk, rk)), hw)
        points = [lh, rh, lk, rk]
        ankles: list[tuple[float, float]] = []
        for ankle, knee, hip in zip(ANKLES, (lk, rk), (lh, rh), strict=True):
            if self.vis(ankle):
                ankles.append(self.pose.xy(ankle))
                if with_ankles:
                    self.pt(ankle)
            else:
                ankles.append(
                    (
                        knee[0] + SHIN_PER_THIGH * (knee[0] - hip[0]),
                        knee[1] + SHIN_PER_THIGH * (knee[1] - hip[1]),
                    )
                )
                if with_ankles:
                    self.estimated.append(f"{LANDMARK_NAMES[ankle]} (from knee and hip)")
        if with_ankles:
            points += ankles
        return (
            min(lh[1], rh[1]),
            max(lk[1], rk[1]),
            max(a[1] for a in ankles),
            thigh,
            hw,
            points,
        )

    def rule(self, category: Category, length: str | float) -> str:
        label = length if isinstance(length, str) else f"ratio {length:g}"
        names = ",".join(LANDMARK_NAMES[i] for i in sorted(self.used))
        text = f"{category.value}/{label} from {names}"
        if self.estimated:
            text += "; estimated " + ", ".join(self.estimated)
        return text


def _ratio_bottom(anchor: float, regular: float, length: str | float) -> float:
    return anchor + float(length) * (regular - anchor)


def _upper(g: _Geometry, rule: TorsoRule, length: str | float) -> tuple[float, float, float, float]:
    shoulder_y, highest, torso, points = g.torso()
    sw = max(_dist(g.pose.xy(SHOULDERS[0]), g.pose.xy(SHOULDERS[1])), 1.0)
    top = g.top_edge(highest, torso, rule.top)
    if isinstance(length, str):
        bottom = shoulder_y + rule.bottom[length] * torso
    else:
        bottom = _ratio_bottom(shoulder_y, shoulder_y + rule.bottom["regular"] * torso, length)
    xs = [p[0] for p in points]
    return min(xs) - rule.side * sw, top, max(xs) + rule.side * sw, bottom


def _leg_bottom(
    table: Mapping[str, tuple[str, float]], key: str, knee: float, ankle: float, thigh: float
) -> float:
    ref, frac = table[key]
    return (knee if ref == "knees" else ankle) + frac * thigh


def _lower(g: _Geometry, length: str | float) -> tuple[float, float, float, float]:
    key = length if isinstance(length, str) else "regular"
    with_ankles = LOWER_BOTTOM[key][0] == "ankles"
    hip_y, knee_y, ankle_y, thigh, hw, points = g.legs(with_ankles)
    top = hip_y - LOWER_WAIST * thigh
    bottom = _leg_bottom(LOWER_BOTTOM, key, knee_y, ankle_y, thigh)
    if not isinstance(length, str):
        bottom = _ratio_bottom(top, bottom, length)
    xs = [p[0] for p in points]
    return min(xs) - LOWER_SIDE * hw, top, max(xs) + LOWER_SIDE * hw, bottom


def _dress(g: _Geometry, length: str | float) -> tuple[float, float, float, float]:
    x1, top, x2, _ = _upper(g, UPPER, "regular")
    shoulder_y = (g.pose.xy(SHOULDERS[0])[1] + g.pose.xy(SHOULDERS[1])[1]) / 2
    key = length if isinstance(length, str) else "regular"
    with_ankles = DRESS_BOTTOM[key][0] == "ankles"
    _, knee_y, ankle_y, thigh, hw, points = g.legs(with_ankles)
    bottom = _leg_bottom(DRESS_BOTTOM, key, knee_y, ankle_y, thigh)
    if not isinstance(length, str):
        bottom = _ratio_bottom(shoulder_y, bottom, length)
    xs = [p[0] for p in points]
    return min(x1, min(xs) - DRESS_SIDE * hw), top, max(x2, max(xs) + DRESS_SIDE * hw), bottom


def _apply_offsets(
    edges: tuple[float, float, float, float], offsets: Mapping[str, int] | None
) -> tuple[float, float, float, float]:
    if not offsets:
        return edges
    unknown = set(offsets) - set(OFFSET_KEYS)
    if unknown:
        raise InvalidInputError(
            f"offsets keys must be among {list(OFFSET_KEYS)}, got {sorted(unknown)}",
            field="offsets",
        )
    o = {k: int(offsets.get(k, 0)) for k in OFFSET_KEYS}
    x1, y1, x2, y2 = edges
    return x1 - o["left"], y1 - o["top"], x2 + o["right"], y2 + o["bottom"]


def _finish(
    edges: tuple[float, float, float, float], image_size: tuple[int, int]
) -> tuple[Box, bool]:
    w, h = image_size
    raw = Box(math.floor(edges[0]), math.floor(edges[1]), math.ceil(edges[2]), math.ceil(edges[3]))
    clipped = raw.x1 < 0 or raw.y1 < 0 or raw.x2 > w or raw.y2 > h
    return raw.clip(w, h), clipped


#: which measured span widens which category, and the side margin (a fraction of the span)
_SPAN_RULES: Mapping[Category, tuple[tuple[str, float], ...]] = {
    Category.UPPER_BODY: (("torso", UPPER.side),),
    Category.OUTERWEAR: (("torso", OUTER.side),),
    Category.LOWER_BODY: (("legs", LOWER_SIDE / 4),),
    Category.DRESS: (("torso", UPPER.side), ("legs", DRESS_SIDE / 4)),
}


def _widen_to_spans(
    edges: tuple[float, float, float, float], cat: Category, spans: Mapping[str, Any] | None
) -> tuple[float, float, float, float]:
    if not spans:
        return edges
    x1, y1, x2, y2 = edges
    for key, margin in _SPAN_RULES[cat]:
        span = spans.get(key)
        if not span:
            continue
        a, b = float(span[0]), float(span[1])
        pad = margin * (b - a)
        x1, x2 = min(x1, a - pad), max(x2, b + pad)
    return x1, y1, x2, y2


def in_view(
    pose: PoseResult, idx: int, min_visibility: float = 0.5, on_body: Collection[int] = ()
) -> bool:
    """Landmark ``idx`` is in the image and either visible (``min_visibility``) or listed in
    ``on_body``: lying on the person's own silhouette, i.e. hidden only by their own body
    (a knee behind the other leg), which MediaPipe scores as barely visible."""
    if pose.visible(idx, min_visibility):
        return True
    if idx not in on_body:
        return False
    x, y = pose.xy(idx)
    w, h = pose.image_size
    return 0.0 <= x < w and 0.0 <= y < h


def missing_landmarks(
    pose: PoseResult,
    category: Category | str,
    min_visibility: float = 0.5,
    on_body: Collection[int] = (),
) -> list[str]:
    """Names of ``category``'s required landmarks that are not in view (see :func:`in_view`)."""
    return [
        LANDMARK_NAMES[i]
        for i in required_landmarks(category)
        if not in_view(pose, i, min_visibility, on_body)
    ]


def compute_placement(
    pose: PoseResult,
    category: Category | str,
    *,
    length: GarmentLength | str | float = "regular",
    offsets: Mapping[str, int] | None = None,
    explicit_box: Box | None = None,
    min_visibility: float = 0.5,
    spans: Mapping[str, Any] | None = None,
    on_body: Collection[int] = (),
) -> Placement:
    """Target box for a ``category`` garment on the person in ``pose``.

    ``length``: ``cropped``/``regular``/``long``, or a float ratio ``r`` in [0.2, 3] that moves
    the lower edge to ``anchor + r·(regular lower edge − anchor)`` (see :data:`PLACEMENT_TABLE`).
    ``offsets``: pixels to grow each edge (``left``/``top``/``right``/``bottom``; negative
    shrinks). ``explicit_box``: use this box instead of the rule (offsets still apply); the pose
    then only supplies the image size. ``spans``: measured body widths in the pose's pixels
    (:func:`tryon.vision.body.silhouette_spans`); the box's sides then cover at least the
    silhouette's torso (upper body, outerwear, dress) or legs (lower body, dress), plus the
    category's side margin, so a person turned sideways keeps a box as deep as their body.
    The result is clipped to the image. ``on_body``: landmark indices that lie on the
    person's silhouette; they count as in view even when MediaPipe scores them as occluded.

    Raises PoseNotUsableError (``details["missing"]`` names the landmarks) when a required
    landmark has visibility below ``min_visibility`` or lies outside the image, or when the box
    is empty after clipping; InvalidInputError for a bad category, length, offset or box.
    """
    # 1. Check inputs
    cat = _category(category)
    length_value = _length(length)
    w, h = pose.image_size

    # 2. Explicit box: the caller decided
    if explicit_box is not None:
        edges = _apply_offsets(
            (explicit_box.x1, explicit_box.y1, explicit_box.x2, explicit_box.y2), offsets
        )
        box, clipped = _finish(edges, (w, h))
        if box.is_empty():
            raise InvalidInputError(
                f"explicit_box {explicit_box.as_list()} does not overlap the {w}x{h} image",
                field="box",
            )
        return Placement(box, cat, "explicit", length_value, clipped)

    # 3. Required landmarks
    missing = missing_landmarks(pose, cat, min_visibility, on_body)
    if missing:
        pretty = ", ".join(m.replace("_", " ") for m in missing)
        raise PoseNotUsableError(
            f"A {cat.value.replace('_', ' ')} garment needs these body parts clearly in view, "
            f"and they are not: {pretty}. Take a photo facing the camera with them visible.",
            missing=missing,
            category=cat.value,
            reason="missing_landmarks",
        )

    # 4. Rule
    g = _Geometry(pose, min_visibility, on_body)
    if cat is Category.UPPER_BODY:
        edges = _upper(g, UPPER, length_value)
    elif cat is Category.OUTERWEAR:
        edges = _upper(g, OUTER, length_value)
    elif cat is Category.LOWER_BODY:
        edges = _lower(g, length_value)
    else:
        edges = _dress(g, length_value)
    edges = _widen_to_spans(edges, cat, spans)

    # 5. Offsets, clip
    box, clipped = _finish(_apply_offsets(edges, offsets), (w, h))
    if box.is_empty():
        raise PoseNotUsableError(
            "The garment area falls outside the photo: take a photo with your body in view.",
            missing=[],
            category=cat.value,
            reason="outside_photo",
        )
    return Placement(box, cat, g.rule(cat, length_value), length_value, clipped)
