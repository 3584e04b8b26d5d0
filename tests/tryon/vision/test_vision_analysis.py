"""Pre-flight verdicts per category, the typed errors they become, JSON round trips, and the
preview overlay."""

from __future__ import annotations

import io
import json

import cv2
import numpy as np
import pytest
from PIL import Image
from vision_helpers import make_pose

from tryon.errors import (
    InvalidImageError,
    InvalidMaskError,
    MultiplePeopleError,
    NoPersonError,
    PersonTooSmallError,
    PoseNotUsableError,
)
from tryon.types import Box, Category
from tryon.vision.analysis import PhotoAnalysis, analyze_photo, analyze_photo_json, check_photo
from tryon.vision.masks import target_mask
from tryon.vision.overlay import render_overlay
from tryon.vision.placement import compute_placement


class StubEstimator:
    """Finds a fixed pose (with no silhouette) in any image of the pose's size and nobody in
    a half of the photo: lets the verdict logic be tested on hand-made landmarks (finding the
    same person again counts once)."""

    def __init__(self, pose):
        self.pose = pose

    def detect(self, image):
        w, h = self.pose.image_size
        ih, iw = image.shape[:2]
        factor = iw / w
        if abs(ih - h * factor) > 1:  # another aspect ratio: a half of the photo
            return None
        return self.pose.mapped(factor, (0.0, 0.0), (iw, ih)), None


def test_astronaut_verdicts(astronaut, pose_estimator):
    a = analyze_photo(astronaut, pose_estimator=pose_estimator)
    assert a.image_size == (512, 512) and a.people == 1
    assert 0.3 < a.person_mask_coverage < 0.8
    assert a.verdicts == {
        "upper_body": None,
        "lower_body": "pose_not_usable",
        "dress": "pose_not_usable",
        "outerwear": None,
    }
    assert set(a.placements) == {"upper_body", "outerwear"}
    assert check_photo(a, "upper_body") == a.placements["upper_body"]
    with pytest.raises(PoseNotUsableError) as err:
        check_photo(a, Category.DRESS)
    assert "left_knee" in err.value.details["missing"]
    assert "left knee" in err.value.message
    # an explicit box overrides a pose that cannot place the garment
    pl = check_photo(a, "dress", explicit_box=Box(100, 200, 400, 512))
    assert pl.rule == "explicit" and pl.box == Box(100, 200, 400, 512)
    # other lengths are recomputed from the stored pose
    assert check_photo(a, "upper_body", length="cropped").box.y2 < 512


def test_no_person_for_every_category(pose_estimator):
    from skimage import data

    a = analyze_photo(np.ascontiguousarray(data.coffee()), pose_estimator=pose_estimator)
    assert a.pose is None and a.placements == {}
    assert set(a.verdicts.values()) == {"no_person"}
    for cat in Category:
        with pytest.raises(NoPersonError):
            check_photo(a, cat)
    with pytest.raises(NoPersonError):  # an explicit box does not conjure a person
        check_photo(a, "dress", explicit_box=Box(0, 0, 10, 10))


@pytest.mark.parametrize("gap", [0, 200])
def test_two_people_side_by_side(astronaut, pose_estimator, gap):
    # touching (gap 0) or apart: counted by the person detector, not by mask blobs
    space = np.full((512, gap, 3), 255, np.uint8)
    two = np.ascontiguousarray(np.concatenate([astronaut, space, astronaut], axis=1))
    a = analyze_photo(two, pose_estimator=pose_estimator)
    assert a.pose is not None and a.people == 2 and len(a.people_boxes) == 2
    assert set(a.verdicts.values()) == {"multiple_people"}
    with pytest.raises(MultiplePeopleError) as err:
        check_photo(a, "upper_body")
    assert err.value.details["people"] == 2
    assert sorted(b[0] < 512 for b in err.value.details["boxes"]) == [False, True]
    # an explicit box does not make a second person go away
    with pytest.raises(MultiplePeopleError):
        check_photo(a, "upper_body", explicit_box=Box(0, 0, 100, 100))


def test_person_too_small_says_too_far_or_photo_too_small():
    # a small person in a large photo: too far away
    image = np.full((1500, 1000, 3), 7, np.uint8)
    small = make_pose((1000, 1500), scale=0.3)  # torso 84 px, 247 px tall in 1500
    a = analyze_photo(image, pose_estimator=StubEstimator(small), categories=["upper_body"])
    assert a.verdicts == {"upper_body": "person_too_small"} and a.people == 1
    assert a.details["upper_body"]["reason"] == "person_too_far"
    assert "too far" in a.details["upper_body"]["message"]
    assert np.isnan(a.person_mask_coverage)
    with pytest.raises(PersonTooSmallError) as err:
        check_photo(a, "upper_body")
    assert err.value.details["reason"] == "person_too_far"
    # the same person filling a small photo: the photo is too small
    tiny = np.full((250, 150, 3), 7, np.uint8)
    filling = make_pose((150, 250), scale=0.25)
    b = analyze_photo(tiny, pose_estimator=StubEstimator(filling), categories=["dress"])
    assert b.verdicts == {"dress": "person_too_small"}
    assert b.details["dress"]["reason"] == "photo_too_small"
    assert "photo is too small" in b.details["dress"]["message"]
    # large enough
    big = make_pose((1000, 1500), scale=1.5)
    full = analyze_photo(image, pose_estimator=StubEstimator(big))
    assert set(full.verdicts.values()) == {None}
    # a person under 15 % of the photo's height is not taken as one (detector noise size)
    speck = make_pose((1000, 1500), scale=0.2)
    none = analyze_photo(image, pose_estimator=StubEstimator(speck), categories=["dress"])
    assert none.verdicts == {"dress": "no_person"}
    assert "filling most of its height" in none.details["dress"]["message"]


def test_posture_problems_become_pose_not_usable_with_a_reason():
    image = np.full((1000, 600, 3), 7, np.uint8)
    bent = make_pose(moved={11: (100, 430), 12: (100, 470)})  # shoulders beside the hips
    a = analyze_photo(image, pose_estimator=StubEstimator(bent))
    assert set(a.verdicts.values()) == {"pose_not_usable"}
    for cat in Category:
        d = a.details[cat.value]
        assert d["reason"] == "torso_not_upright" and d["missing"] == []
        assert "upright" in d["message"]
    with pytest.raises(PoseNotUsableError) as err:
        check_photo(a, "lower_body", length="long")
    assert err.value.details["reason"] == "torso_not_upright"


def test_missing_landmarks_message_names_the_category_and_parts():
    image = np.full((1000, 600, 3), 7, np.uint8)
    waist_up = make_pose(hidden=(25, 26, 27, 28))
    a = analyze_photo(image, pose_estimator=StubEstimator(waist_up))
    assert a.verdicts["upper_body"] is None
    d = a.details["lower_body"]
    assert d["reason"] == "missing_landmarks" and d["missing"] == ["left_knee", "right_knee"]
    assert d["message"].startswith("A lower body garment") and "shoulder" not in d["message"]


def test_analysis_json_round_trip(astronaut, pose_estimator):
    a = analyze_photo(astronaut, pose_estimator=pose_estimator)
    data = json.loads(json.dumps(a.to_dict()))
    b = PhotoAnalysis.from_dict(data)
    assert b.verdicts == a.verdicts and b.placements == a.placements and b.people == a.people
    assert b.details == a.details and b.spans == a.spans and b.on_body == a.on_body
    assert b.people_boxes == a.people_boxes
    with pytest.raises(PoseNotUsableError) as err:
        check_photo(b, "lower_body")
    assert {"right_hip", "left_knee", "right_knee"} <= set(err.value.details["missing"])
    # recomputing a length from the stored analysis widens to the same silhouette
    assert check_photo(b, "upper_body", length="regular", offsets={"left": 0}).box == (
        a.placements["upper_body"].box
    )


def test_analyze_photo_json_from_png_bytes(astronaut):
    buf = io.BytesIO()
    Image.fromarray(astronaut).save(buf, format="PNG")
    out = analyze_photo_json(buf.getvalue(), categories=["upper_body", "lower_body"])
    json.dumps(out)  # JSON-able as is
    assert out["verdicts"] == {"upper_body": None, "lower_body": "pose_not_usable"}
    assert out["people"] == 1 and len(out["pose"]["landmarks"]) == 33
    with pytest.raises(InvalidImageError):
        analyze_photo_json(b"not an image")


# --- overlay ------------------------------------------------------------------------------


def test_overlay_is_a_png_of_the_photo_size(astronaut, astronaut_pose):
    pl = compute_placement(astronaut_pose, "upper_body")
    tm = target_mask(pl.box, (512, 512))
    png = render_overlay(astronaut, pose=astronaut_pose, placement=pl, target_mask=tm)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    out = cv2.cvtColor(
        cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB
    )
    assert out.shape == astronaut.shape
    inside = tm
    assert np.abs(out[inside].astype(int) - astronaut[inside]).mean() > 10  # tinted
    far = np.zeros_like(tm)
    far[:60, :40] = True  # top-left corner: outside box, skeleton and label
    assert (out[far] == astronaut[far]).all()
    # the box edge is drawn in the box colour
    assert tuple(out[pl.box.y1 + 20, pl.box.x1]) == (255, 210, 0)


def test_overlay_plain_and_with_bad_mask(astronaut):
    plain = render_overlay(astronaut)
    out = cv2.imdecode(np.frombuffer(plain, np.uint8), cv2.IMREAD_COLOR)
    assert (cv2.cvtColor(out, cv2.COLOR_BGR2RGB) == astronaut).all()
    with pytest.raises(InvalidMaskError):
        render_overlay(astronaut, garment_mask=np.ones((10, 10), bool))


def test_sitting_person_is_refused_for_trousers_and_dresses_only():
    image = np.full((1000, 600, 3), 7, np.uint8)
    sitting = make_pose(moved={25: (345, 560), 26: (255, 560)})  # knees towards the camera
    a = analyze_photo(image, pose_estimator=StubEstimator(sitting))
    assert a.verdicts["upper_body"] is None and a.verdicts["outerwear"] is None
    for cat in ("lower_body", "dress"):
        assert a.verdicts[cat] == "pose_not_usable"
        assert a.details[cat]["reason"] == "legs_not_upright"
