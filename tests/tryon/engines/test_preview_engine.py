"""The preview engine: pixel-exact outside the mask, typed pose errors, determinism."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from tryon.engines.base import RenderParams, RenderRequest
from tryon.engines.preview import PreviewEngine, fit_to_landmarks
from tryon.errors import CanceledError, InvalidInputError, InvalidMaskError, PoseNotUsableError
from tryon.types import Box, Category
from tryon.vision.pose import LANDMARK_NAMES

H, W = 320, 240


def _landmarks(visibility: float = 0.95) -> np.ndarray:
    """A frontal standing pose: person's left is image right."""
    lm = np.zeros((33, 4), dtype=np.float32)
    lm[:, 3] = visibility
    pts = {
        0: (120, 40), 11: (150, 80), 12: (90, 80), 23: (140, 170), 24: (100, 170),
        25: (142, 235), 26: (98, 235), 27: (143, 300), 28: (97, 300),
    }  # fmt: skip
    for i, (x, y) in pts.items():
        lm[i, :2] = (x, y)
    return lm


def _request(category: Category = Category.UPPER_BODY, **changes: object) -> RenderRequest:
    rng = np.random.default_rng(0)
    person = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    garment = np.zeros((120, 100, 3), dtype=np.uint8)
    garment[..., 0] = 200
    garment[::4, :, 2] = 90  # stripes, so a warp shows
    gmask = np.zeros((120, 100), dtype=bool)
    gmask[10:110, 15:85] = True
    box = Box(70, 65, 170, 190)
    target = np.zeros((H, W), dtype=bool)
    target[65:190, 70:170] = True
    target[100:120, 70:80] = False  # a hole, e.g. a hand in front of the body
    req = RenderRequest(
        person=person, garment=garment, garment_mask=gmask, box=box, target_mask=target,
        category=category, landmarks=_landmarks(),
    )
    return dataclasses.replace(req, **changes)  # type: ignore[arg-type]


@pytest.mark.parametrize("use_landmarks", [True, False])
@pytest.mark.parametrize("category", list(Category))
def test_pixels_outside_target_mask_are_bit_exact(category: Category, use_landmarks: bool) -> None:
    req = _request(category)
    if category is Category.LOWER_BODY:
        box = Box(80, 150, 160, 300)
        target = np.zeros((H, W), dtype=bool)
        target[150:300, 80:160] = True
        req = dataclasses.replace(req, box=box, target_mask=target)
    if not use_landmarks:
        req = dataclasses.replace(req, landmarks=None)
    out = PreviewEngine().render(req)
    img = out.images[0]
    assert img.shape == req.person.shape and img.dtype == np.uint8
    outside = ~req.target_mask
    assert np.array_equal(img[outside], req.person[outside])
    changed = (img != req.person).any(axis=-1)
    # the garment covers a large share of the mask
    assert changed[req.target_mask].mean() > 0.3
    assert out.record["engine"] == "preview"
    assert out.record["fit"] == ("landmarks" if use_landmarks else "box")


def test_garment_colour_dominates_inside_the_mask() -> None:
    req = _request()
    img = PreviewEngine().render(req).images[0].astype(int)
    core = img[110:170, 100:140]
    # red garment over a uniform-noise person: red clearly above the other channels
    assert core[..., 0].mean() > core[..., 1].mean() + 60


@pytest.mark.parametrize(
    ("category", "hidden"),
    [(Category.UPPER_BODY, 11), (Category.DRESS, 12), (Category.OUTERWEAR, 11),
     (Category.LOWER_BODY, 23)],
)
def test_unusable_pose_raises_typed_error(category: Category, hidden: int) -> None:
    lm = _landmarks()
    lm[hidden, 3] = 0.1
    with pytest.raises(PoseNotUsableError) as info:
        PreviewEngine().render(_request(category, landmarks=lm))
    assert info.value.code == "pose_not_usable"
    assert LANDMARK_NAMES[hidden] in info.value.details["missing"]


def test_landmark_outside_image_is_not_usable() -> None:
    lm = _landmarks()
    lm[12, 0] = -5.0
    with pytest.raises(PoseNotUsableError):
        PreviewEngine().render(_request(landmarks=lm))


def test_upper_body_needs_no_hips_but_bottoms_do() -> None:
    lm = _landmarks()
    lm[23:33, 3] = 0.0  # waist-up photo
    PreviewEngine().render(_request(Category.UPPER_BODY, landmarks=lm))
    with pytest.raises(PoseNotUsableError):
        PreviewEngine().render(_request(Category.LOWER_BODY, landmarks=lm))


def test_deterministic_and_one_image_per_seed() -> None:
    params = RenderParams(num_samples=2, seeds=(3, 4))
    a = PreviewEngine().render(_request(params=params))
    b = PreviewEngine().render(_request(params=params))
    assert a.seeds == [3, 4] and len(a.images) == 2
    for x, y in zip(a.images, b.images, strict=True):
        assert np.array_equal(x, y)


def test_progress_and_cancel() -> None:
    seen: list[tuple[int, int]] = []
    PreviewEngine().render(_request(), callback=lambda i, n: seen.append((i, n)))
    assert seen == [(i, 5) for i in range(1, 6)]
    calls = iter([False, False, True])
    with pytest.raises(CanceledError):
        PreviewEngine().render(_request(), should_cancel=lambda: next(calls))


def test_fit_maps_garment_top_outside_the_shoulders() -> None:
    lm = _landmarks()
    gmask = np.zeros((120, 100), dtype=bool)
    gmask[10:110, 15:85] = True
    fit = fit_to_landmarks(Category.UPPER_BODY, lm, Box(70, 65, 170, 190), gmask, (W, H))
    tl = fit.matrix @ np.array([15.0, 10.0, 1.0])
    tr = fit.matrix @ np.array([85.0, 10.0, 1.0])
    hem = fit.matrix @ np.array([50.0, 110.0, 1.0])
    assert tl[0] < 90 and tr[0] > 150  # wider than the shoulder joints
    assert tl[1] < 80 and tr[1] < 80  # collar above them
    assert hem[1] == pytest.approx(190.0)  # length follows the box


@pytest.mark.parametrize(
    ("changes", "error"),
    [
        ({"garment_mask": np.zeros((120, 100), dtype=bool)}, InvalidMaskError),
        ({"target_mask": np.ones((10, 10), dtype=bool)}, InvalidMaskError),
        ({"person": np.zeros((H, W), dtype=np.uint8)}, InvalidInputError),
        ({"params": RenderParams(num_samples=2, seeds=(1,))}, InvalidInputError),
    ],
)
def test_bad_inputs_raise_typed_errors(changes: dict[str, object], error: type[Exception]) -> None:
    with pytest.raises(error):
        PreviewEngine().render(_request(**changes))
