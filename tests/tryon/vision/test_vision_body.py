"""Posture checks, measured body widths and on-body landmarks, on hand-made landmark sets and
silhouettes (tryon.vision.body), and the silhouette widening of placement boxes."""

from __future__ import annotations

import numpy as np
import pytest
from vision_helpers import make_pose

from tryon.vision.body import (
    MAX_TORSO_TILT_DEG,
    landmarks_on_body,
    legs_problem,
    posture_problem,
    silhouette_spans,
    torso_length,
    torso_tilt_deg,
)
from tryon.vision.placement import compute_placement, missing_landmarks
from tryon.vision.pose import PoseLandmark as L


def test_upright_person_has_no_problem():
    pose = make_pose()
    assert torso_tilt_deg(pose) == pytest.approx(0.0)
    assert posture_problem(pose) is None
    assert torso_length(pose) == pytest.approx(280.0)


def test_waist_up_uses_shoulder_width_for_scale_and_skips_the_tilt():
    pose = make_pose(hidden=(L.LEFT_HIP, L.RIGHT_HIP))
    assert torso_tilt_deg(pose) is None and posture_problem(pose) is None
    assert torso_length(pose) == pytest.approx(1.4 * 140)


@pytest.mark.parametrize(("dx", "expected"), [(100, None), (170, "torso_not_upright")])
def test_tilt_threshold(dx, expected):
    # shoulders shifted sideways by dx over a 280 px torso: 19.7 and 31.3 degrees
    moved = {L.LEFT_SHOULDER: (370 + dx, 220), L.RIGHT_SHOULDER: (230 + dx, 220)}
    pose = make_pose(moved=moved)
    problem = posture_problem(pose)
    assert (problem.reason if problem else None) == expected
    if problem:
        assert problem.tilt_deg > MAX_TORSO_TILT_DEG and "leaning" in problem.message


def test_hips_above_shoulders():
    moved = {L.LEFT_HIP: (345, 100), L.RIGHT_HIP: (255, 100)}
    problem = posture_problem(make_pose(moved=moved))
    assert problem is not None and problem.reason == "hips_above_shoulders"


def test_hip_on_an_elbow_is_inconsistent():
    # the right elbow held across the body, right where the left hip is reported
    problem = posture_problem(make_pose(moved={L.RIGHT_ELBOW: (340, 490)}))
    assert problem is not None and problem.reason == "landmarks_inconsistent"
    # ... unless that elbow is not visible
    assert posture_problem(
        make_pose(moved={L.RIGHT_ELBOW: (340, 490)}, hidden=(L.RIGHT_ELBOW,))
    ) is None


def test_crossed_shoulder_and_hip_lines_are_inconsistent():
    moved = {L.LEFT_HIP: (255, 500), L.RIGHT_HIP: (345, 500)}  # hips swapped, shoulders not
    problem = posture_problem(make_pose(moved=moved))
    assert problem is not None and problem.reason == "landmarks_inconsistent"


def _side_view():
    """A person turned sideways: shoulders and hips 20 px apart, body 160 px deep."""
    moved = {
        L.LEFT_SHOULDER: (310, 220), L.RIGHT_SHOULDER: (290, 220),
        L.LEFT_HIP: (310, 500), L.RIGHT_HIP: (290, 500),
        L.LEFT_ELBOW: (305, 360), L.RIGHT_ELBOW: (295, 360),
        L.LEFT_KNEE: (305, 700), L.RIGHT_KNEE: (295, 700),
        L.LEFT_ANKLE: (305, 900), L.RIGHT_ANKLE: (295, 900),
    }  # fmt: skip
    pose = make_pose(moved=moved)
    silhouette = np.zeros((1000, 600), bool)
    silhouette[200:520, 220:380] = True  # torso, 160 px deep
    silhouette[520:920, 250:350] = True  # legs
    return pose, silhouette


def test_spans_measure_the_silhouette_where_the_landmarks_collapse():
    pose, silhouette = _side_view()
    spans = silhouette_spans(pose, silhouette)
    assert spans["torso"] == [220, 380]
    assert spans["legs"][0] <= 250 and spans["legs"][1] >= 350
    assert silhouette_spans(pose, None) == {}
    assert silhouette_spans(pose, np.zeros_like(silhouette)) == {}


def test_side_view_box_covers_the_whole_torso_depth():
    pose, silhouette = _side_view()
    narrow = compute_placement(pose, "upper_body").box
    wide = compute_placement(pose, "upper_body", spans=silhouette_spans(pose, silhouette)).box
    assert narrow.width < 100  # landmarks alone: a sliver
    assert wide.x1 <= 220 and wide.x2 >= 380  # the measured body, plus the side margin
    assert (wide.y1, wide.y2) == (narrow.y1, narrow.y2)  # widths only


def test_on_body_landmarks_count_as_in_view():
    pose = make_pose(hidden=(L.LEFT_KNEE,))  # MediaPipe: knee occluded
    assert missing_landmarks(pose, "lower_body") == ["left_knee"]
    silhouette = np.zeros((1000, 600), bool)
    silhouette[650:750, 320:370] = True  # ... but it lies on the person's own legs
    on_body = landmarks_on_body(pose, silhouette)
    assert int(L.LEFT_KNEE) in on_body and int(L.NOSE) not in on_body
    assert missing_landmarks(pose, "lower_body", on_body=on_body) == []
    # a landmark outside the image never counts, on the body or not
    out = make_pose(moved={L.LEFT_KNEE: (345, 1200)}, hidden=(L.LEFT_KNEE,))
    assert missing_landmarks(out, "lower_body", on_body=[int(L.LEFT_KNEE)]) == ["left_knee"]


def test_sitting_legs_are_refused_for_lower_body_garments_only():
    assert legs_problem(make_pose()) is None
    # sitting facing the camera: the knees come towards it, the thighs look short
    facing = make_pose(moved={L.LEFT_KNEE: (345, 560), L.RIGHT_KNEE: (255, 560)})
    # sitting sideways: the thighs are horizontal
    sideways = make_pose(moved={L.LEFT_KNEE: (545, 520), L.RIGHT_KNEE: (455, 520)})
    for pose in (facing, sideways):
        problem = legs_problem(pose)
        assert problem is not None and problem.reason == "legs_not_upright"
        assert posture_problem(pose) is None  # the torso is fine: tops still work
    # a walking stride (one knee forward, 30 degrees) is standing
    stride = make_pose(moved={L.LEFT_KNEE: (465, 680)})
    assert legs_problem(stride) is None
