"""PoseEstimator on real photos and PoseResult's contract."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from vision_helpers import make_pose

from tryon.errors import InvalidInputError
from tryon.vision.pose import LANDMARK_NAMES, NUM_LANDMARKS, PoseLandmark, PoseResult

L = PoseLandmark


def test_landmark_names_follow_mediapipe_order():
    assert len(LANDMARK_NAMES) == NUM_LANDMARKS == 33
    assert LANDMARK_NAMES[0] == "nose"
    assert L.LEFT_SHOULDER == 11 and L.RIGHT_HIP == 24 and L.RIGHT_FOOT_INDEX == 32
    assert L(27).name == "LEFT_ANKLE"


def test_astronaut_landmarks_are_where_the_body_is(astronaut_pose):
    p = astronaut_pose
    assert p.image_size == (512, 512)
    assert p.landmarks.shape == (33, 4) and p.landmarks.dtype == np.float32
    assert p.world.shape == (33, 4) and p.world.dtype == np.float32
    for idx in (L.NOSE, L.LEFT_SHOULDER, L.RIGHT_SHOULDER):
        assert p.visible(idx)
    lx, ly = p.xy(L.LEFT_SHOULDER)
    rx, ry = p.xy(L.RIGHT_SHOULDER)
    # facing the camera: her left shoulder is on the image's right
    assert 250 < lx < 360 and 200 < ly < 310
    assert 60 < rx < 170 and 190 < ry < 290
    nx, ny = p.xy(L.NOSE)
    assert ny < min(ly, ry) - 50 and rx < nx < lx
    # waist-up portrait: hips and below are not visible
    assert not p.visible(L.LEFT_HIP) and not p.visible(L.LEFT_KNEE)


def test_camera_man_thighs_up(camera_pose):
    p = camera_pose
    for idx in (L.LEFT_SHOULDER, L.RIGHT_SHOULDER, L.LEFT_HIP, L.RIGHT_HIP):
        assert p.visible(idx)
    assert max(p.xy(L.LEFT_SHOULDER)[1], p.xy(L.RIGHT_SHOULDER)[1]) < min(
        p.xy(L.LEFT_HIP)[1], p.xy(L.RIGHT_HIP)[1]
    )
    assert p.xy(L.NOSE)[1] < p.xy(L.LEFT_SHOULDER)[1] + 10
    assert not p.visible(L.LEFT_KNEE)
    assert 20 <= p.visible_count() <= 33


@pytest.mark.parametrize("name", ["coffee", "rocket", "chelsea"])
def test_scenes_without_people_give_no_pose(pose_estimator, name):
    from skimage import data

    assert pose_estimator.estimate(np.ascontiguousarray(getattr(data, name)())) is None


def test_estimate_rejects_wrong_arrays(pose_estimator):
    with pytest.raises(InvalidInputError, match="uint8 RGB"):
        pose_estimator.estimate(np.zeros((10, 10), np.uint8))
    with pytest.raises(InvalidInputError, match="uint8 RGB"):
        pose_estimator.estimate(np.zeros((10, 10, 3), np.float32))


def test_visible_needs_visibility_and_being_in_the_image():
    p = make_pose((600, 1000), hidden=(L.LEFT_KNEE,), moved={L.RIGHT_KNEE: (255, 1000)})
    assert p.visible(L.LEFT_HIP)
    assert not p.visible(L.LEFT_KNEE)
    assert p.visible(L.LEFT_KNEE, min_visibility=0.05)
    assert not p.visible(L.RIGHT_KNEE)  # y == height is outside


def test_pose_result_json_round_trip(astronaut_pose):
    data = json.loads(json.dumps(astronaut_pose.to_dict()))
    back = PoseResult.from_dict(data)
    assert back.image_size == astronaut_pose.image_size
    np.testing.assert_allclose(back.landmarks, astronaut_pose.landmarks, atol=1e-3)
    np.testing.assert_allclose(back.world, astronaut_pose.world, atol=1e-4)


def test_pose_result_validates_shape():
    with pytest.raises(InvalidInputError, match=r"\(33, 4\)"):
        PoseResult(np.zeros((17, 4)), np.zeros((33, 4)), (10, 10))
    with pytest.raises(InvalidInputError):
        PoseResult.from_dict({"landmarks": []})


def test_importing_vision_loads_no_mediapipe():
    code = (
        "import sys, tryon.vision.analysis, tryon.vision.overlay, tryon.vision.masks;"
        "assert 'mediapipe' not in sys.modules, 'mediapipe imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
