"""Evaluation metrics against skimage, and their box restriction."""

from __future__ import annotations

import numpy as np
import pytest
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from tryon.anydoor.training.evaluate import (
    PSNR_CAP,
    box_metrics,
    mask_box,
    psnr,
    square_on_white,
    ssim,
)


@pytest.mark.parametrize("seed", [0, 1])
def test_ssim_matches_skimage_on_random_rgb(seed: int) -> None:
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 256, (40, 52, 3), dtype=np.uint8)
    # a correlated second image so SSIM is far from 0 and from 1
    b = np.clip(a.astype(np.int16) + rng.integers(-90, 91, a.shape), 0, 255).astype(np.uint8)
    want = structural_similarity(a, b, channel_axis=-1, gaussian_weights=True, sigma=1.5,
                                 use_sample_covariance=False, data_range=255)
    assert 0.2 < want < 0.95
    assert ssim(a, b) == pytest.approx(want, abs=1e-6)


def test_ssim_matches_skimage_on_grey_float() -> None:
    rng = np.random.default_rng(3)
    a = rng.random((33, 29))
    b = np.clip(a + 0.1 * rng.standard_normal(a.shape), 0, 1)
    want = structural_similarity(a, b, gaussian_weights=True, sigma=1.5,
                                 use_sample_covariance=False, data_range=1.0)
    assert ssim(a, b, data_range=1.0) == pytest.approx(want, abs=1e-6)


def test_psnr_matches_skimage() -> None:
    rng = np.random.default_rng(4)
    a = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    b = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    assert psnr(a, b) == pytest.approx(peak_signal_noise_ratio(a, b, data_range=255), rel=1e-9)
    assert psnr(a, a) == float("inf")


def test_box_metrics_only_see_the_box() -> None:
    rng = np.random.default_rng(5)
    truth = rng.integers(0, 256, (48, 40, 3), dtype=np.uint8)
    mask = np.zeros((48, 40), np.uint8)
    mask[10:30, 8:20] = 1
    box = mask_box(mask)
    assert box == (10, 30, 8, 20)
    same = box_metrics(truth, truth, box)
    assert same["ssim"] == pytest.approx(1.0) and same["l1"] == 0 and same["psnr"] == PSNR_CAP
    outside = truth.copy()
    outside[35:, 25:] = 0  # far from the box (beyond the 5-pixel SSIM window)
    assert box_metrics(outside, truth, box) == same
    inside = truth.copy()
    inside[10:30, 8:20] = 255 - inside[10:30, 8:20]
    m = box_metrics(inside, truth, box)
    expected_l1 = np.abs(inside[10:30, 8:20].astype(float) - truth[10:30, 8:20]).mean() / 255
    assert m["l1"] == pytest.approx(expected_l1)
    assert m["ssim"] < 0.5 and m["psnr"] < 15


def test_square_on_white_pads_and_resizes() -> None:
    crop = np.zeros((10, 4, 3), np.uint8)
    out = square_on_white(crop, 20)
    assert out.shape == (20, 20, 3) and out.dtype == np.float32
    assert out[:, 0].min() == 1.0 and out[10, 10].max() == 0.0
