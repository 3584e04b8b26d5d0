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
    """Returns a fixed pose: lets the verdict logic be tested on hand-made landmarks."""

    def __init__(self, pose):
        self.pose = pose

    def estimate(self, image):
        return self.pose


def test_astronaut_verdicts(astronaut, pose_estimator, segmenter):
    a = analyze_photo(astronaut, pose_estimator=pose_estimator, segmenter=segmenter)
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


def test_no_person_for_every_category(pose_estimator, segmenter):
    from skimage import data

    a = analyze_photo(
        np.ascontiguousarray(data.coffee()), pose_estimator=pose_estimator, segmenter=segmenter
    )
    assert a.pose is None and a.placements == {}
    assert set(a.verdicts.values()) == {"no_person"}
    for cat in Category:
        with pytest.raises(NoPersonError):
            check_photo(a, cat)
    with pytest.raises(NoPersonError):  # an explicit box does not conjure a person
        check_photo(a, "dress", explicit_box=Box(0, 0, 10, 10))


def test_two_people_side_by_side(astronaut, pose_estimator, segmenter):
    gap = np.full((512, 200, 3), 255, np.uint8)
    two = np.ascontiguousarray(np.concatenate([astronaut, gap, astronaut], axis=1))
    a = analyze_photo(two, pose_estimator=pose_estimator, segmenter=segmenter)
    assert a.pose is not None and a.people == 2
    assert set(a.verdicts.values()) == {"multiple_people"}
    with pytest.raises(MultiplePeopleError) as err:
        check_photo(a, "upper_body")
    assert err.value.details["people"] == 2


def test_person_too_small():
    image = np.zeros((2000, 1200, 3), np.uint8)
    small = make_pose((1200, 2000), scale=0.15)  # upper-body box about 35 x 55 px
    a = analyze_photo(image, pose_estimator=StubEstimator(small), categories=["upper_body"])
    assert a.verdicts == {"upper_body": "person_too_small"} and a.people == 1
    assert np.isnan(a.person_mask_coverage)
    with pytest.raises(PersonTooSmallError):
        check_photo(a, "upper_body")
    full = analyze_photo(image, pose_estimator=StubEstimator(make_pose((1200, 2000), scale=2.0)))
    assert set(full.verdicts.values()) == {None}


def test_analysis_json_round_trip(camera_rgb, pose_estimator, segmenter):
    a = analyze_photo(camera_rgb, pose_estimator=pose_estimator, segmenter=segmenter)
    data = json.loads(json.dumps(a.to_dict()))
    b = PhotoAnalysis.from_dict(data)
    assert b.verdicts == a.verdicts and b.placements == a.placements and b.people == a.people
    assert b.details == a.details
    with pytest.raises(PoseNotUsableError) as err:
        check_photo(b, "lower_body")
    assert err.value.details["missing"] == ["left_knee"]


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
