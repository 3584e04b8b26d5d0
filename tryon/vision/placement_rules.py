"""The placement rules as data: which landmarks each garment category needs and the body-measure
fractions that place its box edges, with their human-readable statement.

:data:`PLACEMENT_TABLE` states every rule; :func:`placement_table_markdown` renders it into
docs/vision.md. The computation that applies these numbers to a pose is
:mod:`tryon.vision.placement`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from tryon.types import Category
from tryon.vision.pose import LANDMARK_NAMES, PoseLandmark

L = PoseLandmark
SHOULDERS = (int(L.LEFT_SHOULDER), int(L.RIGHT_SHOULDER))
ELBOWS = (int(L.LEFT_ELBOW), int(L.RIGHT_ELBOW))
HIPS = (int(L.LEFT_HIP), int(L.RIGHT_HIP))
KNEES = (int(L.LEFT_KNEE), int(L.RIGHT_KNEE))
ANKLES = (int(L.LEFT_ANKLE), int(L.RIGHT_ANKLE))
CHIN_FLOOR = (int(L.MOUTH_LEFT), int(L.MOUTH_RIGHT), int(L.LEFT_EAR), int(L.RIGHT_EAR))

# --- rule constants (all fractions of a body measure; see PLACEMENT_TABLE) -----------------
#: torso length (shoulder mid to hip mid) per shoulder width, used when hips are out of view
TORSO_PER_SHOULDER = 1.4
#: a missing elbow is replaced by a point this many shoulder widths outside its shoulder
ARM_PER_SHOULDER = 0.25
#: shin length per thigh length, used when an ankle is out of view
SHIN_PER_THIGH = 1.0


@dataclass(frozen=True)
class TorsoRule:
    top: float  # torso lengths above the highest shoulder
    side: float  # shoulder widths beyond the outermost shoulder/elbow/hip
    bottom: Mapping[str, float]  # torso lengths below the shoulder line, per length


UPPER = TorsoRule(top=0.15, side=0.10, bottom={"cropped": 0.75, "regular": 1.12, "long": 1.40})
OUTER = TorsoRule(top=0.20, side=0.22, bottom={"cropped": 1.12, "regular": 1.45, "long": 2.20})
#: lower body: waist this many thigh lengths above the highest hip
LOWER_WAIST = 0.30
#: lower body: sides this many hip widths beyond the outermost hip/knee/ankle
LOWER_SIDE = 0.45
#: lower body: (reference, thigh lengths below it) per length
LOWER_BOTTOM: Mapping[str, tuple[str, float]] = {
    "cropped": ("knees", 0.10),
    "regular": ("ankles", 0.10),
    "long": ("ankles", 0.25),
}
#: dress: sides of the skirt this many hip widths beyond the outermost hip/knee/ankle
DRESS_SIDE = 0.60
DRESS_BOTTOM: Mapping[str, tuple[str, float]] = {
    "cropped": ("knees", -0.15),
    "regular": ("knees", 0.20),
    "long": ("ankles", 0.10),
}


@dataclass(frozen=True)
class PlacementRule:
    """Human-readable statement of one category's rule (the numbers are the constants above)."""

    category: Category
    required: tuple[int, ...]
    top: str
    bottom: Mapping[str, str]
    sides: str
    float_length: str


def _pct(v: float) -> str:
    return f"{v:g}"


PLACEMENT_TABLE: Mapping[Category, PlacementRule] = {
    Category.UPPER_BODY: PlacementRule(
        category=Category.UPPER_BODY,
        required=SHOULDERS,
        top=(
            f"highest shoulder − {_pct(UPPER.top)}·T, but not above the mouth corners or ears "
            "(T = torso length, shoulder mid to hip mid; "
            f"{_pct(TORSO_PER_SHOULDER)}·shoulder width when the hips are out of view)"
        ),
        bottom={k: f"shoulder line + {_pct(v)}·T" for k, v in UPPER.bottom.items()},
        sides=(
            f"outermost of shoulders, elbows and hips ± {_pct(UPPER.side)}·shoulder width; a "
            f"hidden elbow counts as a point {_pct(ARM_PER_SHOULDER)}·shoulder width outside "
            "its shoulder"
        ),
        float_length="shoulder line + r·(regular bottom − shoulder line)",
    ),
    Category.OUTERWEAR: PlacementRule(
        category=Category.OUTERWEAR,
        required=SHOULDERS,
        top=f"as upper_body with {_pct(OUTER.top)}·T above the highest shoulder",
        bottom={k: f"shoulder line + {_pct(v)}·T" for k, v in OUTER.bottom.items()},
        sides=f"as upper_body with ± {_pct(OUTER.side)}·shoulder width",
        float_length="shoulder line + r·(regular bottom − shoulder line)",
    ),
    Category.LOWER_BODY: PlacementRule(
        category=Category.LOWER_BODY,
        required=HIPS + KNEES,
        top=f"waist: highest hip − {_pct(LOWER_WAIST)}·thigh (thigh = hip mid to knee mid)",
        bottom={k: f"lowest {ref} + {_pct(v)}·thigh" for k, (ref, v) in LOWER_BOTTOM.items()},
        sides=(
            f"outermost of hips, knees and ankles ± {_pct(LOWER_SIDE)}·hip width; a hidden "
            f"ankle is its knee + {_pct(SHIN_PER_THIGH)}·(knee − hip)"
        ),
        float_length="waist + r·(regular bottom − waist)",
    ),
    Category.DRESS: PlacementRule(
        category=Category.DRESS,
        required=SHOULDERS + HIPS + KNEES,
        top="as upper_body",
        bottom={
            k: f"lowest {ref} {'+' if v >= 0 else '−'} {_pct(abs(v))}·thigh"
            for k, (ref, v) in DRESS_BOTTOM.items()
        },
        sides=(
            "union of the upper_body sides and the outermost of hips, knees (and ankles when "
            f"long) ± {_pct(DRESS_SIDE)}·hip width"
        ),
        float_length="shoulder line + r·(regular bottom − shoulder line)",
    ),
}


def placement_table_markdown() -> str:
    """The placement rules as a markdown table (for docs/vision.md)."""
    lines = [
        "| category | required landmarks | top edge | bottom edge (cropped / regular / long) "
        "| sides | float length r |",
        "|---|---|---|---|---|---|",
    ]
    for cat, rule in PLACEMENT_TABLE.items():
        req = ", ".join(LANDMARK_NAMES[i] for i in rule.required)
        bottom = " / ".join(rule.bottom[k] for k in ("cropped", "regular", "long"))
        lines.append(
            f"| {cat.value} | {req} | {rule.top} | {bottom} | {rule.sides} | {rule.float_length} |"
        )
    return "\n".join(lines)
