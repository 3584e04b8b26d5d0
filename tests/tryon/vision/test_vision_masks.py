"""Person segmentation, target masks, people counting and garment cut-outs.

Garments are drawn here (a T-shirt polygon), so the true mask is known exactly.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from tryon.errors import GarmentNotSeparableError, InvalidMaskError
from tryon.types import Box
from tryon.vision.masks import garment_mask, target_mask

SHIRT = np.array(
    [[90, 40], [115, 55], [145, 55], [170, 40], [240, 90], [215, 130], [190, 110],
     [190, 280], [70, 280], [70, 110], [45, 130], [20, 90]],
    np.float32,
)  # fmt: skip


def shirt_mask(h: int = 300, w: int = 260, dx: int = 0, dy: int = 0) -> np.ndarray:
    m = np.zeros((h, w), np.uint8)
    cv2.fillPoly(m, [np.round(SHIRT + [dx, dy]).astype(np.int32)], 1)
    return m.astype(bool)


def paint(
    mask: np.ndarray, bg, fg, *, noise: float = 3.0, seed: int = 0, collar: bool = True
) -> np.ndarray:
    """Garment photo: flat colours with a little sensor noise; a darker collar band for texture."""
    rng = np.random.default_rng(seed)
    img = np.empty(mask.shape + (3,), np.float32)
    img[:] = bg
    img[mask] = fg
    band = mask & (np.arange(mask.shape[0])[:, None] < 70)
    if collar:
        img[band] *= 0.8
    img += rng.normal(0.0, noise, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


# --- person segmentation -------------------------------------------------------------------


def test_segmenter_on_astronaut(segmenter, astronaut):
    m = segmenter.segment(astronaut)
    assert m.shape == (512, 512) and m.dtype == np.float32
    assert 0.0 <= m.min() and m.max() <= 1.0
    assert m[350, 220] > 0.5  # her chest
    assert m[20, 20] < 0.5  # the backdrop top-left
    assert 0.3 < (m >= 0.5).mean() < 0.8


# --- target mask ---------------------------------------------------------------------------


def test_target_mask_plain_box_is_clipped():
    m = target_mask(Box(-5, 10, 30, 500), (40, 50))
    assert m.shape == (50, 40) and m.dtype == np.bool_
    assert m.sum() == 30 * 40 and m[10:, :30].all()


def test_target_mask_follows_the_person_inside_the_box():
    person = np.zeros((100, 100), np.float32)
    person[20:90, 40:60] = 1.0
    box = Box(10, 30, 90, 80)
    m = target_mask(box, (100, 100), person_mask=person, dilate_px=5)
    assert m[30:80, 40:60].all()  # the person inside the box
    assert m[50, 36] and m[50, 64]  # dilated by 5 px
    assert not m[50, 30] and not m[50, 70]  # but not further
    assert not m[:30].any() and not m[80:].any()  # never outside the box
    undilated = target_mask(box, (100, 100), person_mask=person > 0.5, dilate_px=0)
    assert undilated.sum() == 50 * 20


def test_target_mask_falls_back_to_box_without_person():
    person = np.zeros((100, 100), np.float32)
    person[0:10, 0:10] = 1.0
    m = target_mask(Box(50, 50, 70, 70), (100, 100), person_mask=person)
    assert m.sum() == 400


def test_target_mask_rejects_wrong_shape():
    with pytest.raises(InvalidMaskError, match="shape"):
        target_mask(Box(0, 0, 5, 5), (100, 100), person_mask=np.ones((50, 100)))


# --- garment masks -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "bg", "fg", "dy"),
    [
        ("on white", (255, 255, 255), (30, 60, 160), 0),
        ("on coloured backdrop", (200, 180, 60), (160, 30, 40), 0),
        ("dark on light grey", (225, 225, 225), (40, 40, 40), 0),
        ("touching the border", (250, 250, 250), (30, 120, 30), 30),
    ],
)
def test_background_removal_recovers_drawn_shirt(name, bg, fg, dy):
    truth = shirt_mask(dy=dy)
    if dy:
        assert truth[-1].any()  # really touches the bottom edge
    gm = garment_mask(paint(truth, bg, fg))
    assert gm.source == "background_removal"
    assert gm.mask.shape == truth.shape and gm.mask.dtype == np.bool_
    assert 0.5 <= gm.score <= 1.0
    assert iou(gm.mask, truth) > 0.9, name


def test_background_removal_on_a_large_photo_is_scaled_back():
    truth = (
        cv2.resize(shirt_mask().astype(np.uint8), (780, 900), interpolation=cv2.INTER_NEAREST) > 0
    )
    gm = garment_mask(paint(truth, (255, 255, 255), (200, 40, 40)))
    assert gm.mask.shape == (900, 780)
    assert iou(gm.mask, truth) > 0.9


def test_alpha_channel_is_the_mask():
    truth = shirt_mask()
    alpha = truth.astype(np.uint8) * 255
    # colours under the transparent area are noise: only alpha may decide
    img = np.random.default_rng(1).integers(0, 256, truth.shape + (3,), dtype=np.uint8)
    gm = garment_mask(img, alpha=alpha)
    assert gm.source == "alpha" and gm.score == 1.0
    assert iou(gm.mask, truth) == 1.0


def test_opaque_alpha_falls_back_to_background_removal():
    truth = shirt_mask()
    gm = garment_mask(
        paint(truth, (255, 255, 255), (30, 60, 160)), alpha=np.full(truth.shape, 255, np.uint8)
    )
    assert gm.source == "background_removal"
    assert iou(gm.mask, truth) > 0.9


def test_uploaded_mask_overrides_everything():
    truth = shirt_mask()
    up = np.zeros_like(truth)
    up[10:20, 10:20] = True
    gm = garment_mask(
        paint(truth, (255, 255, 255), (30, 60, 160)),
        alpha=truth.astype(np.uint8) * 255,
        uploaded=up,
    )
    assert gm.source == "uploaded" and (gm.mask == up).all()
    assert gm.bbox() == Box(10, 10, 20, 20)
    with pytest.raises(InvalidMaskError, match="empty"):
        garment_mask(paint(truth, (255, 255, 255), (0, 0, 0)), uploaded=np.zeros_like(truth))
    with pytest.raises(InvalidMaskError, match="shape"):
        garment_mask(paint(truth, (255, 255, 255), (0, 0, 0)), uploaded=up[:10])


def test_noise_is_not_separable():
    noise = np.random.default_rng(2).integers(0, 256, (300, 260, 3), dtype=np.uint8)
    with pytest.raises(GarmentNotSeparableError) as err:
        garment_mask(noise)
    assert err.value.code == "garment_not_separable"


def test_cluttered_photo_is_not_separable(astronaut):
    with pytest.raises(GarmentNotSeparableError):
        garment_mask(astronaut)


def test_garment_the_colour_of_the_backdrop_is_not_separable():
    truth = shirt_mask()
    with pytest.raises(GarmentNotSeparableError):
        garment_mask(paint(truth, (128, 128, 128), (122, 124, 126), collar=False))


# --- backdrops with a pattern, tight crops (issue 10) ----------------------------------------


def _on_brick(with_shirt: bool) -> np.ndarray:
    from skimage import data

    img = np.stack([data.brick()] * 3, axis=-1)[:300, :260].astype(np.float32)
    if with_shirt:
        img[shirt_mask()] = (30, 60, 160)
    return img.astype(np.uint8)


@pytest.mark.parametrize("with_shirt", [False, True])
def test_brick_backdrop_is_not_separable(with_shirt):
    # without the texture rule this scored ~0.65 with spikes along the mortar lines
    with pytest.raises(GarmentNotSeparableError):
        garment_mask(_on_brick(with_shirt))


def test_tiles_with_a_clean_cut_are_accepted():
    img = np.full((300, 260, 3), 235, np.float32)
    img[::30, :] = 150
    img[:, ::30] = 150  # grout lines every 30 px
    truth = shirt_mask()
    img[truth] = (30, 60, 160)
    gm = garment_mask(img.astype(np.uint8))
    assert iou(gm.mask, truth) > 0.97


def test_tight_crop_touching_a_third_of_the_border_is_accepted():
    big = np.zeros((600, 520), np.uint8)
    cv2.fillPoly(big, [np.round(SHIRT * 2).astype(np.int32)], 1)
    truth = big[100:520, 80:440].astype(bool)
    touching = np.concatenate([truth[0], truth[-1], truth[:, 0], truth[:, -1]]).mean()
    assert touching > 0.33
    gm = garment_mask(paint(truth, (245, 245, 245), (30, 60, 160)))
    assert gm.score > 0.9 and iou(gm.mask, truth) > 0.97
