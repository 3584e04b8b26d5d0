"""The training-only image operations (filters, augmentations) and their preprocessing hooks."""

from __future__ import annotations

import numpy as np
import pytest

from tryon.anydoor import preprocess as P
from tryon.anydoor.training import augment as A
from tryon.errors import InvalidInputError


def _img(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _mask(h: int, w: int, ys: slice, xs: slice, dtype=np.uint8) -> np.ndarray:
    m = np.zeros((h, w), dtype)
    m[ys, xs] = 1
    return m


def test_reference_augmentation_flip_and_brightness() -> None:
    img, m = _img(30, 30, seed=5), _mask(30, 30, slice(3, 25), slice(6, 20))
    m[3:10, 6:9] = 0  # asymmetric so a flip is visible
    plain = P.prepare_reference(img, m, size=16)
    seen = set()
    for seed in range(40):
        draws = np.random.default_rng(seed)
        flip, bc = draws.random() < 0.5, draws.random() < 0.5
        out = P.prepare_reference(
            img, m, size=16, augment=A.reference_augmentation(np.random.default_rng(seed))
        )
        exp = (plain.image * 255).round().astype(np.uint8)
        exp_mask = plain.mask
        if flip:
            exp, exp_mask = exp[:, ::-1], exp_mask[:, ::-1]
        if bc:
            alpha = 1 + draws.uniform(-0.2, 0.2)
            beta = draws.uniform(-0.2, 0.2)
            exp = np.clip(exp.astype(np.float64) * alpha + beta * 255, 0, 255).astype(np.uint8)
        got = (out.image * 255).round().astype(np.int16)
        assert np.abs(got - exp.astype(np.int16)).max() <= 1
        np.testing.assert_array_equal(out.mask, exp_mask)
        np.testing.assert_array_equal(
            out.hf_map, P.hf_map((out.image * 255).round().astype(np.uint8), out.mask / 255)
        )
        seen.add((flip, bc))
    assert len(seen) == 4  # all four combinations were exercised


def test_random_crop_ratio_and_perturbation_are_seeded() -> None:
    img = _img(64, 64)
    m = _mask(64, 64, slice(20, 40), slice(22, 44))
    hf = _img(16, 16)

    def run(seed: int) -> P.TargetInputs:
        rng = np.random.default_rng(seed)
        return P.prepare_target(img, m, hf, crop_ratio=None, size=32, rng=rng,
                                mask_channel=A.perturbed_mask_channel(rng, 1.0))

    a, b = run(3), run(3)
    np.testing.assert_array_equal(a.hint, b.hint)
    assert a.crop == b.crop
    # the crop ratio is drawn first, so the same seed without the hook gives the same crop
    # with the plain box channel, which the perturbation replaced
    plain = P.prepare_target(img, m, hf, crop_ratio=None, size=32, rng=np.random.default_rng(3))
    assert plain.crop == a.crop
    assert not np.array_equal(plain.hint[..., 3], a.hint[..., 3])
    np.testing.assert_array_equal(plain.hint[..., :3], a.hint[..., :3])
    assert set(np.unique(a.hint[..., 3])) <= {-1.0, 0.0, 1.0}


def test_mask_score() -> None:
    m = np.zeros((20, 20), np.uint8)
    m[2:8, 2:8] = 1  # 6x6 -> contour area 25
    assert A.mask_score(m) == 1.0
    m[12:16, 12:16] = 1  # 4x4 -> contour area 9
    assert A.mask_score(m) == pytest.approx(25 / 34)
    assert A.mask_score(_mask(20, 20, slice(0, 3), slice(0, 3))) == 0.0  # 9 px
    lines = np.zeros((20, 20), np.uint8)
    lines[0, :] = 1  # a 1-px line: zero contour area
    assert A.mask_score(lines) == 0.0


def test_perturb_mask_seeded_binary_single_component() -> None:
    m = _mask(40, 40, slice(8, 30), slice(10, 32))
    a = A.perturb_mask(m, np.random.default_rng(0))
    b = A.perturb_mask(m, np.random.default_rng(0))
    np.testing.assert_array_equal(a, b)
    assert a.dtype == np.uint8 and set(np.unique(a)) <= {0, 1}
    import cv2

    assert cv2.connectedComponents(a, connectivity=8)[0] == 2
    changed = [not np.array_equal(A.perturb_mask(m, np.random.default_rng(s)), m) for s in range(5)]
    assert any(changed)
    tiny = _mask(2, 5, slice(0, 2), slice(0, 3))
    np.testing.assert_array_equal(A.perturb_mask(tiny, np.random.default_rng(0)), tiny)


def test_check_pair_reasons() -> None:
    good_ref = _mask(20, 20, slice(4, 14), slice(4, 14))
    good_tar = _mask(20, 20, slice(5, 12), slice(5, 12))
    assert A.check_pair(good_ref, good_tar) is None
    two = good_ref.copy()
    two[16:20, 16:20] = 1
    assert A.check_pair(two, good_tar) == "ref_mask_score"
    assert A.check_pair(_mask(20, 20, slice(1, 19), slice(1, 19)), good_tar) == "ref_area"  # .81
    assert A.check_pair(good_ref, _mask(20, 20, slice(0, 1), slice(0, 3))) == "tar_area"  # .0075
    # 9 px (2.25 %) passes the area test, but < 10 px means a whole-image box -> too large
    assert A.check_pair(good_ref, _mask(20, 20, slice(0, 3), slice(0, 3))) == "tar_box_large"
    # exactly 1 % fails, as in the reference (0.1*0.1 == 0.010000000000000002)
    one_pct = _mask(100, 100, slice(40, 50), slice(40, 50))
    assert A.check_pair(good_ref, one_pct) == "tar_area"
    assert A.check_pair(good_ref, one_pct, min_area_ratio=0.01) is None
    # ref box height y2-y1 = 9 < 10 (10 % of 100)
    assert A.check_pair(_mask(100, 100, slice(10, 20), slice(10, 61)), good_tar) == "ref_box_small"
    # target rows 2..17: x1.1 -> (0, 18), 18 > 0.8 * 20
    tall = _mask(20, 20, slice(2, 18), slice(5, 15))
    assert A.check_pair(good_ref, tall) == "tar_box_large"
    assert A.check_pair(good_ref, tall, max_ratio=1.0) is None


def test_perturb_mask_only_grows_like_the_reference() -> None:
    """The reference ORs every local dilate/erode with the ground truth: the collage mask may
    spill past the object but never cuts into it."""
    gt = np.zeros((64, 64), np.uint8)
    gt[16:48, 20:44] = 1
    grew = 0
    for seed in range(20):
        out = A.perturb_mask(gt, np.random.default_rng(seed))
        assert not np.any(gt & (1 - out)), f"seed {seed} dropped object pixels"
        grew += int(out.sum() > gt.sum())
    assert grew >= 15  # it does perturb: the IoU goal is below 0.99


def test_perturbation_probability_is_checked() -> None:
    with pytest.raises(InvalidInputError, match="perturb_mask_p"):
        A.perturbed_mask_channel(np.random.default_rng(0), 1.5)
