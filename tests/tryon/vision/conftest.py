"""Shared fixtures for the vision tests: one MediaPipe graph of each kind per session, and
real photos shipped with scikit-image (astronaut and camera are public domain)."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
from vision_helpers import make_pose

from tryon.vision.pose import PoseResult


@pytest.fixture
def standing() -> PoseResult:
    return make_pose()


@pytest.fixture(scope="session")
def astronaut() -> np.ndarray:
    from skimage import data

    return np.ascontiguousarray(data.astronaut())


@pytest.fixture(scope="session")
def camera_rgb() -> np.ndarray:
    from skimage import data

    return np.ascontiguousarray(np.stack([data.camera()] * 3, axis=-1))


@pytest.fixture(scope="session")
def pose_estimator() -> Iterator[object]:
    from tryon.vision.pose import PoseEstimator

    with PoseEstimator() as est:
        yield est


@pytest.fixture(scope="session")
def segmenter() -> Iterator[object]:
    from tryon.vision.masks import PersonSegmenter

    with PersonSegmenter() as seg:
        yield seg


@pytest.fixture(scope="session")
def astronaut_pose(pose_estimator, astronaut) -> PoseResult:
    pose = pose_estimator.estimate(astronaut)
    assert pose is not None
    return pose


@pytest.fixture(scope="session")
def camera_pose(pose_estimator, camera_rgb) -> PoseResult:
    pose = pose_estimator.estimate(camera_rgb)
    assert pose is not None
    return pose
