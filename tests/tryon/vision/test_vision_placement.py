"""Placement rules: real photos for the upper body, hand-made landmark sets for the rest.

Expected boxes for the hand-made person (vision_helpers.STANDING) are worked out by hand from
the rule table: shoulder width sw=140, torso T=280 (shoulder mid (300,220) to hip mid
(300,500)), hip width hw=90, thigh=200.
"""

from __future__ import annotations

import json

import pytest
from vision_helpers import make_pose

from tryon.errors import InvalidInputError, PoseNotUsableError
from tryon.types import Box, Category, GarmentLength
from tryon.vision.placement import (
    PLACEMENT_TABLE,
    Placement,
    compute_placement,
    placement_table_markdown,
    required_landmarks,
)
from tryon.vision.pose import PoseLandmark

L = PoseLandmark


def _contains(box: Box, xy: tuple[float, float]) -> bool:
    return box.x1 <= xy[0] < box.x2 and box.y1 <= xy[1] < box.y2


def _inside_image(box: Box, size: tuple[int, int]) -> bool:
    return 0 <= box.x1 < box.x2 <= size[0] and 0 <= box.y1 < box.y2 <= size[1]


# --- real photos ---------------------------------------------------------------------------


def test_astronaut_upper_body(astronaut_pose):
    pl = compute_placement(astronaut_pose, "upper_body")
    assert pl.category is Category.UPPER_BODY and pl.length == "regular"
    assert _inside_image(pl.box, (512, 512))
    for idx in (L.LEFT_SHOULDER, L.RIGHT_SHOULDER):
        assert _contains(pl.box, astronaut_pose.xy(idx))
    # starts above the shoulders but below the mouth
    assert pl.box.y1 < min(
        astronaut_pose.xy(L.LEFT_SHOULDER)[1], astronaut_pose.xy(L.RIGHT_SHOULDER)[1]
    )
    assert pl.box.y1 >= astronaut_pose.xy(L.MOUTH_LEFT)[1]
    # hips are below the frame: the box runs to the bottom edge and says it was cut
    assert pl.clipped and pl.box.y2 == 512
    assert "hips (from shoulder width)" in pl.rule


def test_camera_man_upper_body_and_outerwear(camera_pose):
    up = compute_placement(camera_pose, Category.UPPER_BODY)
    assert _inside_image(up.box, (512, 512)) and not up.clipped
    for idx in (L.LEFT_SHOULDER, L.RIGHT_SHOULDER, L.LEFT_HIP, L.RIGHT_HIP, L.LEFT_ELBOW):
        assert _contains(up.box, camera_pose.xy(idx)), LANDMARK(idx)
    # below the hips
    assert up.box.y2 > max(camera_pose.xy(L.LEFT_HIP)[1], camera_pose.xy(L.RIGHT_HIP)[1])
    outer = compute_placement(camera_pose, Category.OUTERWEAR)
    assert outer.box.width > up.box.width and outer.box.y2 > up.box.y2


def LANDMARK(idx: int) -> str:
    return L(idx).name


def test_camera_man_lower_body_names_the_missing_knee(camera_pose):
    with pytest.raises(PoseNotUsableError) as err:
        compute_placement(camera_pose, "lower_body")
    assert err.value.code == "pose_not_usable"
    assert err.value.details["missing"] == ["left_knee"]
    assert "left knee" in err.value.message


# --- hand-made landmark sets ---------------------------------------------------------------


def test_upper_body_rule(standing):
    # top 220-0.15*280=178; bottom 220+1.12*280=533.6; sides 200-14 .. 400+14
    pl = compute_placement(standing, "upper_body")
    assert pl.box == Box(186, 178, 414, 534) and not pl.clipped
    assert compute_placement(standing, "upper_body", length="cropped").box.y2 == 430  # 220+0.75*280
    assert compute_placement(standing, "upper_body", length="long").box.y2 == 612  # 220+1.4*280


def test_upper_body_without_hips_or_elbows():
    pose = make_pose(hidden=(L.LEFT_HIP, L.RIGHT_HIP, L.LEFT_ELBOW, L.RIGHT_ELBOW))
    pl = compute_placement(pose, "upper_body")
    # T = 1.4*140 = 196; elbows replaced by shoulders -/+ 35; sides +/-14
    assert pl.box == Box(181, 190, 419, 440)  # top floor(220-0.15*196), bottom 220+1.12*196
    assert "left_elbow (beside its shoulder)" in pl.rule


def test_upper_body_top_never_above_the_mouth():
    pose = make_pose(moved={L.MOUTH_LEFT: (310, 200), L.MOUTH_RIGHT: (290, 200)})
    assert compute_placement(pose, "upper_body").box.y1 == 200


def test_outerwear_is_wider_and_longer_than_upper_body(standing):
    up = compute_placement(standing, "upper_body").box
    outer = compute_placement(standing, "outerwear").box
    assert outer == Box(169, 164, 431, 626)  # sides +/-0.22*140, top 220-56, bottom 220+1.45*280
    assert outer.x1 < up.x1 and outer.x2 > up.x2 and outer.y2 > up.y2


@pytest.mark.parametrize(
    ("length", "y2"),
    [("cropped", 720), ("regular", 920), (GarmentLength.LONG, 950), (0.5, 680), (1.0, 920)],
)
def test_lower_body_lengths(standing, length, y2):
    # waist 500-0.3*200=440; knees 700+20; ankles 900+20 / +50; ratio: 440+r*(920-440)
    pl = compute_placement(standing, "lower_body", length=length)
    assert pl.box == Box(214, 440, 386, y2)
    assert pl.length == (length if isinstance(length, float) else str(length))


def test_lower_body_estimates_hidden_ankles():
    pose = make_pose(hidden=(L.LEFT_ANKLE, L.RIGHT_ANKLE))
    pl = compute_placement(pose, "lower_body")
    assert pl.box == Box(214, 440, 386, 920)  # knee + (knee - hip) lands on the real ankles
    assert "left_ankle (from knee and hip)" in pl.rule
    assert "estimated" not in compute_placement(pose, "lower_body", length="cropped").rule


@pytest.mark.parametrize(
    ("length", "y2"), [("cropped", 670), ("regular", 740), ("long", 920), (0.5, 480)]
)
def test_dress_lengths(standing, length, y2):
    # knees -/+ thigh fractions, ankles+20; ratio 0.5: 220 + 0.5*(740-220)
    pl = compute_placement(standing, "dress", length=length)
    assert (pl.box.y1, pl.box.y2) == (178, y2)
    assert pl.box.x1 == 186 and pl.box.x2 == 414  # arms are wider than the skirt here


def test_dress_skirt_widens_the_box_for_wide_legs():
    pose = make_pose(moved={L.LEFT_KNEE: (420, 700), L.RIGHT_KNEE: (180, 700)})
    pl = compute_placement(pose, "dress")
    assert (pl.box.x1, pl.box.x2) == (126, 474)  # knees -/+ 0.6*90


def test_offsets_grow_and_shrink(standing):
    base = compute_placement(standing, "upper_body").box
    pl = compute_placement(
        standing, "upper_body", offsets={"left": 10, "top": 5, "right": -6, "bottom": 20}
    )
    assert pl.box == Box(base.x1 - 10, base.y1 - 5, base.x2 - 6, base.y2 + 20)
    with pytest.raises(InvalidInputError, match="offsets"):
        compute_placement(standing, "upper_body", offsets={"up": 3})


def test_explicit_box_is_used_and_clipped(standing):
    pose = make_pose(hidden=(L.LEFT_SHOULDER,))  # the rule would fail; an explicit box does not
    pl = compute_placement(pose, "upper_body", explicit_box=Box(-10, 50, 100, 2000))
    assert pl.rule == "explicit" and pl.clipped
    assert pl.box == Box(0, 50, 100, 1000)
    with pytest.raises(InvalidInputError, match="does not overlap"):
        compute_placement(standing, "dress", explicit_box=Box(700, 0, 800, 10))


def test_rule_box_is_clipped_to_the_image():
    pose = make_pose((600, 910))
    pl = compute_placement(pose, "lower_body", length="long")
    assert pl.clipped and pl.box.y2 == 910
    assert not compute_placement(pose, "lower_body", length="cropped").clipped


@pytest.mark.parametrize(
    ("category", "hidden", "missing"),
    [
        ("upper_body", (L.RIGHT_SHOULDER,), ["right_shoulder"]),
        ("lower_body", (L.LEFT_HIP, L.RIGHT_KNEE), ["left_hip", "right_knee"]),
        ("dress", (L.LEFT_KNEE,), ["left_knee"]),
        ("outerwear", (L.LEFT_SHOULDER,), ["left_shoulder"]),
    ],
)
def test_missing_landmarks_raise_pose_not_usable(category, hidden, missing):
    with pytest.raises(PoseNotUsableError) as err:
        compute_placement(make_pose(hidden=hidden), category)
    assert err.value.details["missing"] == missing
    assert err.value.details["category"] == category


def test_min_visibility_is_honoured():
    pose = make_pose(hidden=(L.LEFT_KNEE,))  # visibility 0.1
    compute_placement(pose, "lower_body", min_visibility=0.05)
    with pytest.raises(PoseNotUsableError):
        compute_placement(pose, "lower_body", min_visibility=0.5)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"category": "hat"}, "category"),
        ({"category": "dress", "length": "maxi"}, "length"),
        ({"category": "dress", "length": 5.0}, "ratio"),
        ({"category": "dress", "length": True}, "length"),
    ],
)
def test_bad_arguments(standing, kwargs, match):
    with pytest.raises(InvalidInputError, match=match):
        compute_placement(standing, **kwargs)


def test_required_landmarks_and_table_agree():
    assert required_landmarks("upper_body") == (11, 12)
    assert required_landmarks(Category.LOWER_BODY) == (23, 24, 25, 26)
    assert set(PLACEMENT_TABLE) == set(Category)
    md = placement_table_markdown()
    for cat in Category:
        assert f"| {cat.value} |" in md
    assert "1.12·T" in md  # the numbers in the table are the numbers the code uses


def test_placement_json_round_trip(standing):
    for length in ("long", 0.8):
        pl = compute_placement(standing, "dress", length=length)
        assert Placement.from_dict(json.loads(json.dumps(pl.to_dict()))) == pl
