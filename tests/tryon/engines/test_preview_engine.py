"""The preview engine: pixel-exact outside the mask, typed pose errors, seeds, the fit."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tryon.engines.base import RenderParams, RenderRequest
from tryon.engines.preview import PreviewEngine, fit_warp
from tryon.engines.preview.fit import FitVariation, top_parts
from tryon.engines.preview.garment import bottom_keypoints, top_keypoints
from tryon.errors import (
    CanceledError,
    InvalidInputError,
    InvalidMaskError,
    PoseNotUsableError,
    TryOnError,
)
from tryon.types import Box, Category
from tryon.vision.pose import LANDMARK_NAMES

H, W = 320, 240


def _landmarks(visibility: float = 0.95) -> np.ndarray:
    """A frontal standing pose: person's left is image right."""
    lm = np.zeros((33, 4), dtype=np.float32)
    lm[:, 3] = visibility
    pts = {
        0: (120, 40), 11: (150, 80), 12: (90, 80), 13: (160, 125), 14: (80, 125),
        15: (164, 165), 16: (76, 165), 23: (140, 170), 24: (100, 170),
        25: (142, 235), 26: (98, 235), 27: (143, 300), 28: (97, 300),
    }  # fmt: skip
    for i, (x, y) in pts.items():
        lm[i, :2] = (x, y)
    return lm


def _tee_mask() -> np.ndarray:
    """A 120x100 T-shirt silhouette: a body with two sleeves sloping down and out."""
    import cv2

    m = np.zeros((120, 100), dtype=np.uint8)
    poly = np.array([[40, 10], [25, 14], [4, 40], [16, 50], [26, 38], [26, 110], [74, 110],
                     [74, 38], [84, 50], [96, 40], [75, 14], [60, 10], [50, 18]], np.int32)
    cv2.fillPoly(m, [poly], (1,))
    return m.astype(bool)


def _request(category: Category = Category.UPPER_BODY, **changes: object) -> RenderRequest:
    rng = np.random.default_rng(0)
    person = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    garment = np.zeros((120, 100, 3), dtype=np.uint8)
    garment[..., 0] = 200
    garment[::4, :, 2] = 90  # stripes, so a warp shows
    gmask = _tee_mask()
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


def test_same_seed_same_image_different_seeds_differ() -> None:
    params = RenderParams(num_samples=3, seeds=(3, 4, 3))
    a = PreviewEngine().render(_request(params=params))
    b = PreviewEngine().render(_request(params=params))
    assert a.seeds == [3, 4, 3] and len(a.images) == 3
    for x, y in zip(a.images, b.images, strict=True):
        assert np.array_equal(x, y)
    assert np.array_equal(a.images[0], a.images[2])
    assert not np.array_equal(a.images[0], a.images[1])  # never copies: a fit variation


@pytest.mark.parametrize("category", list(Category))
def test_seeds_differ_in_every_category_and_with_an_explicit_box(category: Category) -> None:
    params = RenderParams(num_samples=2, seeds=(0, 1))
    for req in (_request(category, params=params),
                _request(category, params=params, explicit_box=True)):
        out = PreviewEngine().render(req)
        assert out.record["fit"] == ("box" if req.explicit_box else "landmarks")
        assert not np.array_equal(out.images[0], out.images[1])
        outside = ~req.target_mask
        for img in out.images:
            assert np.array_equal(img[outside], req.person[outside])


def test_progress_and_cancel() -> None:
    seen: list[tuple[int, int]] = []
    PreviewEngine().render(_request(), callback=lambda i, n: seen.append((i, n)))
    assert seen == [(i, 5) for i in range(1, 6)]
    seen.clear()
    two = RenderParams(num_samples=2, seeds=(0, 1))
    PreviewEngine().render(_request(params=two), callback=lambda i, n: seen.append((i, n)))
    assert seen == [(i, 10) for i in range(1, 11)]
    calls = iter([False, False, True])
    with pytest.raises(CanceledError):
        PreviewEngine().render(_request(), should_cancel=lambda: next(calls))


def test_garment_keypoints_of_a_tee_and_of_trousers() -> None:
    kp = top_keypoints(_tee_mask())
    assert kp.sleeves[0] is not None and kp.sleeves[1] is not None
    assert kp.torso == pytest.approx((26, 75), abs=1.5)
    assert kp.sleeves[0].cuff[0] < 20 and kp.sleeves[1].cuff[0] > 80  # cuffs out at the sides
    assert kp.neck[0] == pytest.approx(50, abs=1.5) and kp.neck[1] > 12  # the neckline dips
    pants = np.zeros((120, 100), dtype=bool)
    pants[5:115, 20:80] = True
    pants[50:115, 47:53] = False  # the gap between the legs
    bk = bottom_keypoints(pants)
    assert bk.crotch is not None and bk.crotch[1] == pytest.approx(50, abs=1)
    assert bk.legs is not None and bk.legs[0][0][0] == 20 and bk.legs[1][0][0] == 80


def test_long_sleeves_hanging_beside_the_body_are_sleeves() -> None:
    import cv2

    m = np.zeros((460, 400), np.uint8)
    poly = np.array([[160, 30], [96, 44], [60, 70], [20, 400], [70, 410], [100, 150],
                     [100, 440], [300, 440], [300, 150], [330, 410], [380, 400], [340, 70],
                     [304, 44], [240, 30], [200, 60]], np.int32)
    cv2.fillPoly(m, [poly], (1,))
    kp = top_keypoints(m.astype(bool))
    assert kp.torso == pytest.approx((100, 301), abs=2)
    left, right = kp.sleeves
    assert left is not None and right is not None
    assert left.armpit[1] == pytest.approx(150, abs=15)  # where the sleeve leaves the body
    assert left.cuff[1] > 380 and right.cuff[1] > 380  # cuffs at the bottom, not the hem
    assert left.cuff_a[0] < left.cuff_b[0]  # the top edge's end is the outer one


def test_fit_puts_shoulders_outside_the_joints_sleeves_on_the_arms_hem_on_the_box() -> None:
    req = _request(params=RenderParams())
    kp = top_keypoints(req.garment_mask)
    sleeve_a, sleeve_b, body = top_parts(kp, req.landmarks, req.box, (W, H), FitVariation(), 100)
    assert sleeve_a.cols[1] <= body.cols[0] and body.cols[1] <= sleeve_b.cols[0]
    photo = {tuple(g): d for g, d in zip(body.src, body.dst, strict=True)}
    left, right = photo[kp.shoulders[0]], photo[kp.shoulders[1]]
    assert left[0] < 90 < 150 < right[0]  # outside the shoulder joints
    assert left[1] < 80 and right[1] < 80  # and above them
    hem_c = body.dst[-1]
    assert hem_c[1] == pytest.approx(req.box.y2, abs=1.0)  # length follows the box
    # the image-left sleeve's cuff lies on the image-left upper arm (shoulder 12 -> elbow 14),
    # the image-right one on the other
    cuff_a = dict(zip(map(tuple, sleeve_a.src), sleeve_a.dst, strict=True))[kp.sleeves[0].cuff]
    cuff_b = dict(zip(map(tuple, sleeve_b.src), sleeve_b.dst, strict=True))[kp.sleeves[1].cuff]
    assert 65 < cuff_a[0] < 95 and 90 < cuff_a[1] < 135
    assert 145 < cuff_b[0] < 175 and 90 < cuff_b[1] < 135
    # a warp renders sleeves first, the body in front of their roots
    warp = fit_warp(req, FitVariation())
    assert [layer.cols for layer in warp.layers] == [sleeve_a.cols, sleeve_b.cols, body.cols]


def test_trouser_legs_follow_the_legs() -> None:
    pants = np.zeros((120, 100), dtype=bool)
    pants[5:115, 20:80] = True
    pants[50:115, 47:53] = False
    lm = _landmarks()
    lm[25, :2], lm[27, :2] = (170, 235), (200, 300)  # the left leg steps out to image right
    req = _request(Category.LOWER_BODY, garment_mask=pants, landmarks=lm, box=Box(60, 150, 220, 310))
    warp = fit_warp(req, FitVariation())
    assert len(warp.layers) == 2
    openings = [d for d in warp.dst_points if d[1] > 290]
    assert max(p[0] for p in openings) > 190  # one opening follows the stepping ankle
    assert min(p[0] for p in openings) < 110


def test_person_mask_keeps_the_hands_in_front() -> None:
    lm = _landmarks()
    lm[16, :2] = (110, 150)  # the image-left hand on the belly
    lm[14, :2] = (95, 120)
    for i in (18, 20, 22):
        lm[i, :2] = (118, 158)
    req = _request(landmarks=lm)
    pm = np.ones((H, W), dtype=np.float32)
    with_front = PreviewEngine().render(dataclasses.replace(req, person_mask=pm)).images[0]
    assert np.array_equal(with_front[156:160, 114:118], req.person[156:160, 114:118])


@pytest.mark.parametrize(
    ("changes", "error"),
    [
        ({"garment_mask": np.zeros((120, 100), dtype=bool)}, InvalidMaskError),
        ({"target_mask": np.ones((10, 10), dtype=bool)}, InvalidMaskError),
        ({"person": np.zeros((H, W), dtype=np.uint8)}, InvalidInputError),
        ({"params": RenderParams(num_samples=2, seeds=(1,))}, InvalidInputError),
        ({"person_mask": np.ones((3, 3), dtype=np.float32)}, InvalidMaskError),
    ],
)
def test_bad_inputs_raise_typed_errors(changes: dict[str, object], error: type[Exception]) -> None:
    with pytest.raises(error):
        PreviewEngine().render(_request(**changes))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    category=st.sampled_from(list(Category)),
    shapes=st.lists(
        st.tuples(st.integers(0, 99), st.integers(0, 119), st.integers(1, 60), st.integers(1, 60)),
        min_size=1, max_size=4,
    ),
    seed=st.integers(0, 2**31 - 1),
)
def test_any_garment_shape_renders_or_fails_typed(category: Category,
                                                   shapes: list[tuple[int, int, int, int]],
                                                   seed: int) -> None:
    """Odd flat-lay shapes (blobs, strips, pieces) never crash the keypoint fit, and the photo
    outside the target mask stays bit-exact whatever the fit makes of them."""
    gmask = np.zeros((120, 100), dtype=bool)
    for x, y, w, h in shapes:
        gmask[y : y + h, x : x + w] = True
    req = _request(category, garment_mask=gmask,
                   params=RenderParams(num_samples=1, seeds=(seed,)))
    try:
        out = PreviewEngine().render(req)
    except TryOnError:
        return
    outside = ~req.target_mask
    assert np.array_equal(out.images[0][outside], req.person[outside])


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    category=st.sampled_from(list(Category)),
    joints=st.lists(st.tuples(st.floats(0, W - 1), st.floats(0, H - 1)), min_size=12,
                    max_size=12),
)
def test_any_pose_renders_or_fails_typed(category: Category,
                                         joints: list[tuple[float, float]]) -> None:
    """Raised, crossed or collapsed limbs (two joints on one pixel) never crash the fit."""
    lm = _landmarks()
    for idx, xy in zip((11, 12, 13, 14, 15, 16, 23, 24, 25, 26, 27, 28), joints, strict=True):
        lm[idx, :2] = xy
    req = _request(category, landmarks=lm)
    try:
        out = PreviewEngine().render(req)
    except TryOnError:
        return
    outside = ~req.target_mask
    assert np.array_equal(out.images[0][outside], req.person[outside])


@pytest.mark.parametrize("category", list(Category))
def test_explicit_box_is_not_refitted_to_the_pose(category: Category) -> None:
    moved = _landmarks()
    moved[23:29, 0] += 12.0  # hips, knees and ankles elsewhere
    moved[23:29, 1] -= 8.0
    a = PreviewEngine().render(_request(category, explicit_box=True)).images[0]
    b = PreviewEngine().render(_request(category, explicit_box=True, landmarks=moved)).images[0]
    assert np.array_equal(a, b)
    if category in (Category.LOWER_BODY, Category.DRESS):
        fitted = PreviewEngine().render(_request(category, landmarks=moved)).images[0]
        assert not np.array_equal(fitted, PreviewEngine().render(_request(category)).images[0])


def test_person_mask_keeps_hair_and_chin_above_the_neckline_in_front() -> None:
    lm = _landmarks()
    face = {2: (113, 30), 5: (127, 30), 7: (106, 34), 8: (134, 34), 9: (115, 46), 10: (125, 46)}
    for i, xy in face.items():
        lm[i, :2] = xy
    req = _request(landmarks=lm)
    hair = (slice(65, 71), slice(100, 140))  # beside the neck, above the neckline (y = 74)
    without = PreviewEngine().render(req).images[0]
    assert (without[hair] != req.person[hair]).any()  # the collar would cover it
    pm = np.zeros((H, W), dtype=np.float32)
    pm[55:80, 95:145] = 1.0
    kept = PreviewEngine().render(dataclasses.replace(req, person_mask=pm)).images[0]
    assert np.array_equal(kept[hair], req.person[hair])
