"""Hand-computed checks of the AnyDoor preprocessing (demo/training variant).

Most cases are chosen so that every resize is the identity (output size == padded size), which
makes the expected boxes, paddings and mask-channel values exactly computable by hand. The box
numbers come from the reference formulas evaluated in plain Python floats (e.g. 1.1 * 10 ==
11.000000000000002, which matters for the int() truncation).
"""

from __future__ import annotations

import numpy as np
import pytest

from tryon.anydoor import preprocess as P
from tryon.errors import InvalidInputError, InvalidMaskError


def _img(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _mask(h: int, w: int, ys: slice, xs: slice, dtype=np.uint8) -> np.ndarray:
    m = np.zeros((h, w), dtype)
    m[ys, xs] = 1
    return m


# --- bbox_from_mask ------------------------------------------------------------------------


def test_bbox_inclusive_ends() -> None:
    m = _mask(6, 8, slice(1, 4), slice(2, 6))  # rows 1..3, cols 2..5 -> 12 px
    assert P.bbox_from_mask(m) == (1, 3, 2, 5)
    assert P.bbox_from_mask(m.astype(bool)) == (1, 3, 2, 5)


def test_bbox_touching_edges() -> None:
    m = _mask(6, 8, slice(0, 6), slice(6, 8))  # rows 0..5, last two columns
    assert P.bbox_from_mask(m) == (0, 5, 6, 7)


def test_bbox_fewer_than_ten_pixels_is_whole_image() -> None:
    m = _mask(6, 8, slice(0, 3), slice(0, 3))  # 9 px
    assert P.bbox_from_mask(m) == (0, 6, 0, 8)
    m[3, 3] = 1  # 10 px -> a real box
    assert P.bbox_from_mask(m) == (0, 3, 0, 3)


def test_bbox_uses_raw_sum_like_reference() -> None:
    m = _mask(6, 8, slice(1, 4), slice(2, 6)).astype(np.float32) * 0.5  # sum 6 < 10
    assert P.bbox_from_mask(m) == (0, 6, 0, 8)


# --- hf_map ---------------------------------------------------------------------------------


def _step_image(left: int, right: int, channel: int | None = None) -> np.ndarray:
    img = np.full((256, 256, 3), 0, np.uint8)
    img[..., :] = (200, 40, 10)
    chans = [0, 1, 2] if channel is None else [channel]
    for c in chans:
        img[:, :128, c] = left
        img[:, 128:, c] = right
    return img


def test_hf_map_vertical_step_exact() -> None:
    # Step 40 -> 70 in every channel at column 128: |Gx| = 4 * 30 = 120 at columns 127 and 128,
    # edge = 0.5 * 120 = 60 >= 50, HF = uint8(60 / 255 * value).
    img = _step_image(40, 70)
    out = P.hf_map(img, np.ones((256, 256), np.float32))
    expected = np.zeros_like(img)
    expected[:, 127] = 9  # 60/255*40 = 9.41
    expected[:, 128] = 16  # 60/255*70 = 16.47
    np.testing.assert_array_equal(out, expected)


def test_hf_map_max_over_channels_weights_all_colours() -> None:
    img = _step_image(40, 70, channel=1)  # only green steps; R=200, B=10 flat
    out = P.hf_map(img, np.ones((256, 256), bool))
    assert out[:, :127].max() == 0 and out[:, 129:].max() == 0
    np.testing.assert_array_equal(out[5, 127], [47, 9, 2])  # 60/255 * (200, 40, 10)
    np.testing.assert_array_equal(out[5, 128], [47, 16, 2])


def test_hf_map_threshold() -> None:
    img = _step_image(40, 64)  # |Gx| = 96 -> edge 48 < 50
    assert P.hf_map(img, np.ones((256, 256))).max() == 0


def test_hf_map_mask_is_eroded_twice_with_5x5() -> None:
    img = _step_image(40, 70)
    # Two 5x5 erosions remove 4 columns at the mask's left boundary.
    m = np.zeros((256, 256))
    m[:, 124:] = 1  # columns 124..127 eroded -> only column 128 survives
    out = P.hf_map(img, m)
    assert out[:, 127].max() == 0
    assert (out[:, 128] == 16).all()
    m[:, :126] = 0
    m[:, 126:] = 1  # columns 126..129 eroded -> nothing
    assert P.hf_map(img, m).max() == 0


def test_hf_map_resizes_back() -> None:
    img = _img(37, 53)
    out = P.hf_map(img, np.ones((37, 53)))
    assert out.shape == (37, 53, 3) and out.dtype == np.uint8


# --- prepare_reference ----------------------------------------------------------------------


def test_reference_white_background_crop_quirk_and_padding() -> None:
    img = _img(20, 20)
    m = _mask(20, 20, slice(5, 15), slice(4, 14))
    m[8, 8] = 0  # a hole -> white
    # bbox (5,14,4,13) -> crop [5:14, 4:13] = 9x9 (last row/col dropped);
    # expand 1.2 -> int(9*1.2) = 10 -> pad 0 before, 1 after; square 10x10; size 10 = identity.
    ref = P.prepare_reference(img, m, expand_ratio=1.2, size=10)
    exp = np.full((10, 10, 3), 255, np.uint8)
    exp[:9, :9] = img[5:14, 4:13]
    exp[3, 4] = 255
    np.testing.assert_array_equal(ref.image, exp.astype(np.float32) / 255)
    assert ref.image.dtype == np.float32
    exp_mask = np.zeros((10, 10), np.uint8)
    exp_mask[:9, :9] = 255
    exp_mask[3, 4] = 0
    np.testing.assert_array_equal(ref.mask, exp_mask)
    np.testing.assert_array_equal(ref.hf_map, P.hf_map(exp, exp_mask / 255))


def test_reference_non_square_box_is_centred_in_white_square() -> None:
    img = _img(12, 16, seed=3)
    m = _mask(12, 16, slice(2, 6), slice(1, 11))  # bbox (2,5,1,10) -> crop 3x9
    # expand 1.2: int(3.6)=3 rows (no pad), int(10.8)=10 cols (0 left, 1 right);
    # square 10: 7 rows of padding -> 3 on top, 4 below.
    ref = P.prepare_reference(img, m.astype(bool), expand_ratio=1.2, size=10)
    exp = np.full((10, 10, 3), 255, np.uint8)
    exp[3:6, :9] = img[2:5, 1:10]
    np.testing.assert_array_equal((ref.image * 255).round().astype(np.uint8), exp)
    assert (ref.mask[3:6, :9] == 255).all() and ref.mask.sum() == 27 * 255


def test_reference_mask_touching_image_edge() -> None:
    img = _img(10, 10, seed=4)
    m = _mask(10, 10, slice(0, 10), slice(0, 10))  # whole image
    ref = P.prepare_reference(img, m, expand_ratio=1.0, size=9)
    # bbox (0,9,0,9) -> 9x9 crop, ratio 1 -> no padding, size 9 -> identity
    np.testing.assert_array_equal((ref.image * 255).round().astype(np.uint8), img[:9, :9])


def test_reference_output_contract_default_size() -> None:
    ref = P.prepare_reference(_img(64, 48), _mask(64, 48, slice(10, 50), slice(5, 40)))
    assert ref.image.shape == (224, 224, 3) and ref.image.dtype == np.float32
    assert 0.0 <= ref.image.min() and ref.image.max() <= 1.0
    assert ref.mask.shape == (224, 224) and ref.mask.dtype == np.uint8
    assert ref.hf_map.shape == (224, 224, 3) and ref.hf_map.dtype == np.uint8


def test_reference_random_ratio_is_seeded() -> None:
    img, m = _img(40, 40), _mask(40, 40, slice(5, 30), slice(8, 33))
    a = P.prepare_reference(img, m, expand_ratio=None, rng=np.random.default_rng(7), size=32)
    b = P.prepare_reference(img, m, expand_ratio=None, rng=np.random.default_rng(7), size=32)
    np.testing.assert_array_equal(a.image, b.image)
    ratio = P.REFERENCE_EXPAND_CHOICES[int(np.random.default_rng(7).integers(4))]
    c = P.prepare_reference(img, m, expand_ratio=ratio, size=32)
    np.testing.assert_array_equal(a.image, c.image)


# --- prepare_target -------------------------------------------------------------------------


def test_target_square_crop_exact() -> None:
    img = _img(40, 40, seed=1)
    m = _mask(40, 40, slice(10, 20), slice(10, 20))
    hf = _img(11, 11, seed=2)
    # bbox (10,19,10,19); x1.1: centre 14.5, size 11.000000000000002 -> (9, 20);
    # x2.0 of (9,20): centre 14.5, size 24 -> (2, 26); square already.
    t = P.prepare_target(img, m, hf, size=24)
    assert t.box == (9, 20, 9, 20)
    assert t.crop == (2, 26, 2, 26)
    assert t.box_in_crop == (7, 18, 7, 18)
    assert t.extra_sizes == (24, 24, 24, 24)
    assert t.image_size == (40, 40) and t.size == 24
    collage = img[2:26, 2:26].copy()
    collage[7:18, 7:18] = hf  # 11x11 box, identity resize
    np.testing.assert_array_equal(t.hint[..., :3], collage.astype(np.float32) / 127.5 - 1)
    exp_mask = np.zeros((24, 24), np.float32)
    exp_mask[7:18, 7:18] = 1
    np.testing.assert_array_equal(t.hint[..., 3], exp_mask)
    np.testing.assert_array_equal(t.target, img[2:26, 2:26].astype(np.float32) / 127.5 - 1)
    assert t.hint.dtype == np.float32 and t.target.dtype == np.float32


def test_target_at_top_right_border_non_square_crop_and_minus_one_padding() -> None:
    img = _img(30, 50, seed=6)
    m = _mask(30, 50, slice(0, 10), slice(40, 50))  # touches top and right edges
    hf = np.full((8, 8, 3), 77, np.uint8)
    # box: y (-1 -> 0, 10), x (39, 50); crop x2: y (-6 -> 0, 16), x (32, 56 -> 50);
    # squaring (h 16 < w 18): y = 8 -/+ 9 -> (0, 17): a 17x18 crop, 1 row of padding below.
    t = P.prepare_target(img, m, hf, size=18)
    assert t.box == (0, 10, 39, 50)
    assert t.crop == (0, 17, 32, 50)
    assert t.box_in_crop == (0, 10, 7, 18)
    assert t.extra_sizes == (17, 18, 18, 18)
    exp_mask = np.zeros((18, 18), np.float32)
    exp_mask[:10, 7:18] = 1
    exp_mask[17, :] = -1
    np.testing.assert_array_equal(t.hint[..., 3], exp_mask)
    # padding is black in the RGB channels of hint and target
    assert (t.hint[17, :, :3] == -1).all() and (t.target[17] == -1).all()
    np.testing.assert_array_equal(t.target[:17], img[:17, 32:50].astype(np.float32) / 127.5 - 1)
    assert (
        t.hint[:10, 7:18, :3] == np.array(77, np.float32) / np.float32(127.5) - np.float32(1)
    ).all()


def test_target_tall_crop_pads_columns() -> None:
    img = _img(50, 30, seed=8)
    m = _mask(50, 30, slice(40, 50), slice(0, 10))  # bottom-left corner
    t = P.prepare_target(img, m, np.zeros((4, 4, 3), np.uint8), size=18)
    assert t.crop == (32, 50, 0, 17) and t.box == (39, 50, 0, 10)
    assert t.extra_sizes == (18, 17, 18, 18)
    # 1 column of padding: int(1/2) = 0 before, 1 after
    assert (t.hint[:, 17, 3] == -1).all() and (t.hint[:, :17, 3] >= 0).all()


def test_target_mask_resize_is_nearest() -> None:
    img = _img(30, 50, seed=6)
    m = _mask(30, 50, slice(0, 10), slice(40, 50))
    hf = np.zeros((8, 8, 3), np.uint8)
    small = P.prepare_target(img, m, hf, size=18).hint[..., 3]
    big = P.prepare_target(img, m, hf, size=36).hint[..., 3]  # exact 2x: dst i <- src i // 2
    assert set(np.unique(big)) == {-1.0, 0.0, 1.0}
    np.testing.assert_array_equal(big, np.repeat(np.repeat(small, 2, 0), 2, 1))
    odd = P.prepare_target(img, m, hf, size=29).hint[..., 3]
    assert set(np.unique(odd)) <= {-1.0, 0.0, 1.0}


def test_target_shape_mask_uses_cropped_target_mask() -> None:
    img = _img(40, 40, seed=1)
    m = _mask(40, 40, slice(10, 20), slice(10, 20))
    m[10:14, 10:14] = 0  # L-shape
    t = P.prepare_target(img, m, _img(11, 11), size=24, shape_mask=True)
    np.testing.assert_array_equal(t.hint[..., 3], m[2:26, 2:26].astype(np.float32))
    # the HF map still fills the whole box
    box = P.prepare_target(img, m, _img(11, 11), size=24)
    np.testing.assert_array_equal(t.hint[..., :3], box.hint[..., :3])


def test_target_random_crop_ratio_is_seeded() -> None:
    img = _img(64, 64)
    m = _mask(64, 64, slice(20, 40), slice(22, 44))
    hf = _img(16, 16)
    a = P.prepare_target(img, m, hf, crop_ratio=None, rng=np.random.default_rng(3), size=32)
    b = P.prepare_target(img, m, hf, crop_ratio=None, rng=np.random.default_rng(3), size=32)
    np.testing.assert_array_equal(a.hint, b.hint)
    assert a.crop == b.crop
    crops = {
        P.prepare_target(img, m, hf, crop_ratio=None, rng=np.random.default_rng(s), size=32).crop
        for s in range(20)
    }
    assert len(crops) > 3


def test_mask_channel_hook_replaces_the_box_channel() -> None:
    img = _img(40, 40, seed=1)
    m = _mask(40, 40, slice(10, 20), slice(10, 20))
    seen = {}

    def hook(cropped: np.ndarray, box: np.ndarray) -> np.ndarray:
        seen["cropped"], seen["box"] = cropped.copy(), box.copy()
        return cropped

    t = P.prepare_target(img, m, _img(11, 11, seed=2), size=24, mask_channel=hook)
    np.testing.assert_array_equal(seen["cropped"], m[2:26, 2:26])
    assert seen["box"][7:18, 7:18].all() and seen["box"].sum() == 121
    np.testing.assert_array_equal(t.hint[..., 3], m[2:26, 2:26].astype(np.float32))


# --- paste_back -----------------------------------------------------------------------------


def test_paste_back_drops_first_row_and_keeps_outside_box() -> None:
    img = _img(40, 40, seed=1)
    m = _mask(40, 40, slice(10, 20), slice(10, 20))
    t = P.prepare_target(img, m, _img(11, 11), size=24)
    gen = np.repeat((np.arange(24) * 8).astype(np.uint8)[:, None, None], 24, 1).repeat(3, 2)
    out = P.paste_back(gen, img, t)
    assert out.dtype == np.uint8 and out.shape == img.shape
    # rows 1..23 are stretched to 24 rows (bilinear, half-pixel centres)
    rows = np.arange(24)
    src = np.clip((rows + 0.5) * 23 / 24 - 0.5, 0, 22)
    expected_rows = 8 * (src + 1)  # generated row k+1 has value 8*(k+1)
    box_rows = expected_rows[7:18]  # box rows 9..19 = crop rows 7..17
    got = out[9:20, 9:20, 0].astype(np.float64)
    assert np.abs(got - box_rows[:, None]).max() <= 1
    # without the quirk crop row 7 would be 56; with it, 8*(7.5*23/24 - 0.5 + 1) = 61.5
    assert out[9, 9, 0] in (61, 62)
    outside = np.ones((40, 40), bool)
    outside[9:20, 9:20] = False
    np.testing.assert_array_equal(out[outside], img[outside])


def test_paste_back_margin_and_unpad_rows_at_border() -> None:
    img = _img(30, 50, seed=6)
    original = img.copy()
    m = _mask(30, 50, slice(0, 10), slice(40, 50))
    t = P.prepare_target(img, m, np.zeros((8, 8, 3), np.uint8), size=18)
    gen = np.full((18, 18, 3), 100, np.uint8)
    gen[0] = 0  # dropped by the quirk
    out = P.paste_back(gen, img, t)
    # crop (0,17,32,50) minus margin 3 -> rows 3..13, cols 35..46; box (0,10,39,50)
    expected = original.copy()
    expected[3:10, 39:47] = 100
    np.testing.assert_array_equal(out, expected)
    np.testing.assert_array_equal(img, original)  # input untouched


def test_paste_back_unpads_columns_and_keeps_column_order() -> None:
    img = _img(50, 30, seed=8)
    m = _mask(50, 30, slice(40, 50), slice(0, 10))
    t = P.prepare_target(img, m, np.zeros((4, 4, 3), np.uint8), size=18)
    gen = np.repeat((np.arange(18) * 10).astype(np.uint8)[None, :, None], 18, 0).repeat(3, 2)
    out = P.paste_back(gen, img, t, margin=3)
    # crop (32,50,0,17) pads 1 column on the right, so crop column j = generated column j;
    # margin region rows 35..46, cols 3..13; box (39,50,0,10)
    expected = img.copy()
    expected[39:47, 3:10] = (np.arange(3, 10) * 10)[None, :, None]
    np.testing.assert_array_equal(out, expected)


def test_paste_back_zero_margin_and_float_input() -> None:
    img = _img(40, 40, seed=1)
    m = _mask(40, 40, slice(10, 20), slice(10, 20))
    t = P.prepare_target(img, m, _img(11, 11), size=24)
    gen = np.full((24, 24, 3), 200.7, np.float32)
    out = P.paste_back(gen, img, t, margin=0)
    assert (out[9:20, 9:20] == 200).all()  # float -> uint8 truncation, like the reference


def test_paste_back_pixel_exact_outside_box_random() -> None:
    rng = np.random.default_rng(11)
    for _ in range(5):
        h, w = rng.integers(40, 90, 2)
        img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        y, x = rng.integers(0, h - 12), rng.integers(0, w - 12)
        m = _mask(h, w, slice(y, y + 12), slice(x, x + 10))
        t = P.prepare_target(img, m, _img(16, 16), crop_ratio=None, rng=rng, size=32)
        gen = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
        out = P.paste_back(gen, img, t)
        outside = np.ones((h, w), bool)
        y1, y2, x1, x2 = t.box
        outside[y1:y2, x1:x2] = False
        np.testing.assert_array_equal(out[outside], img[outside])
        assert not np.array_equal(out[y1:y2, x1:x2], img[y1:y2, x1:x2])


# --- errors ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "image, exc",
    [
        (np.zeros((10, 10, 3), np.float32), InvalidInputError),
        (np.zeros((10, 10), np.uint8), InvalidInputError),
        (np.zeros((10, 10, 4), np.uint8), InvalidInputError),
        ([[0]], InvalidInputError),
    ],
)
def test_bad_images(image, exc) -> None:
    m = _mask(10, 10, slice(2, 8), slice(2, 8))
    with pytest.raises(exc, match="image"):
        P.prepare_reference(image, m)
    with pytest.raises(exc, match="image"):
        P.prepare_target(image, m, np.zeros((4, 4, 3), np.uint8))


def test_bad_masks() -> None:
    img = _img(10, 10)
    with pytest.raises(InvalidMaskError, match="shape"):
        P.prepare_reference(img, np.ones((10, 11), np.uint8))
    with pytest.raises(InvalidMaskError, match="empty"):
        P.prepare_reference(img, np.zeros((10, 10), np.uint8))
    with pytest.raises(InvalidMaskError, match="only 9 pixels"):
        P.prepare_target(
            img, _mask(10, 10, slice(0, 3), slice(0, 3)), np.zeros((4, 4, 3), np.uint8)
        )
    with pytest.raises(InvalidMaskError, match="binary"):
        P.prepare_reference(img, _mask(10, 10, slice(2, 8), slice(2, 8)) * 255)
    with pytest.raises(InvalidMaskError, match="single row"):
        P.prepare_reference(img, _mask(10, 10, slice(3, 4), slice(0, 10)))
    assert issubclass(InvalidMaskError, InvalidInputError)


def test_bad_arguments() -> None:
    img, m = _img(20, 20), _mask(20, 20, slice(4, 14), slice(4, 14))
    with pytest.raises(InvalidInputError, match="rng"):
        P.prepare_reference(img, m, expand_ratio=None)
    with pytest.raises(InvalidInputError, match="rng"):
        P.prepare_target(img, m, np.zeros((4, 4, 3), np.uint8), crop_ratio=None)
    with pytest.raises(InvalidInputError, match="expand_ratio"):
        P.prepare_reference(img, m, expand_ratio=0.5)
    with pytest.raises(InvalidInputError, match="hf_map"):
        P.prepare_target(img, m, np.zeros((4, 5, 3), np.uint8))
    with pytest.raises(InvalidInputError, match="hf_map"):
        P.prepare_target(img, m, np.zeros((4, 4, 3), np.float32))


def test_paste_back_errors() -> None:
    img, m = _img(40, 40), _mask(40, 40, slice(10, 20), slice(10, 20))
    t = P.prepare_target(img, m, _img(11, 11), size=24)
    with pytest.raises(InvalidInputError, match="target_image"):
        P.paste_back(np.zeros((24, 24, 3), np.uint8), _img(41, 40), t)
    with pytest.raises(InvalidInputError, match="generated"):
        P.paste_back(np.zeros((25, 25, 3), np.uint8), img, t)
    with pytest.raises(InvalidInputError, match="generated"):
        P.paste_back(np.zeros((24, 24, 3), np.int32), img, t)
    from dataclasses import replace

    with pytest.raises(InvalidInputError, match="crop"):
        P.paste_back(np.zeros((24, 24, 3), np.uint8), img, replace(t, crop=(2, 26, 30, 54)))


def test_version_string() -> None:
    assert P.PREPROCESS_VERSION == "anydoor-pre-1"


def test_end_to_end_default_sizes() -> None:
    person, garment = _img(300, 200, seed=21), _img(180, 140, seed=22)
    ref = P.prepare_reference(garment, _mask(180, 140, slice(20, 160), slice(15, 120)))
    tar = P.prepare_target(person, _mask(300, 200, slice(60, 200), slice(40, 170)), ref.hf_map)
    assert tar.hint.shape == (512, 512, 4) and tar.target.shape == (512, 512, 3)
    assert -1.0 <= tar.hint[..., :3].min() and tar.hint[..., :3].max() <= 1.0
    out = P.paste_back(np.zeros((512, 512, 3), np.uint8), person, tar)
    y1, y2, x1, x2 = tar.box
    keep = np.ones((300, 200), bool)
    keep[y1:y2, x1:x2] = False
    np.testing.assert_array_equal(out[keep], person[keep])
