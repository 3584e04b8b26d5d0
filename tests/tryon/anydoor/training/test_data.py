"""Training datasets on tiny synthetic fixtures, and ATS frequencies."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from tryon.anydoor.training import data as D
from tryon.anydoor.training import mix as M
from tryon.anydoor.training import samples as S
from tryon.errors import ConfigError, TrainingDataError

SMALL = S.PairConfig(ref_size=28, size=64)


def _write_rgb(path: Path, rgb: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), rgb[:, :, ::-1])


def _write_palette(path: Path, ids: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(ids.astype(np.uint8), mode="P")
    im.putpalette([v for i in range(256) for v in (i * 7 % 256, i * 13 % 256, i * 29 % 256)])
    im.save(path)


def _textured(h: int, w: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _rect(h: int, w: int, y: int, x: int, rh: int, rw: int, value: int = 1) -> np.ndarray:
    m = np.zeros((h, w), np.uint8)
    m[y : y + rh, x : x + rw] = value
    return m


@pytest.fixture
def image_root(tmp_path: Path) -> Path:
    root = tmp_path / "images_ds"
    _write_rgb(root / "images" / "good.png", _textured(64, 64, 1))
    _write_palette(root / "masks" / "good.png", _rect(64, 64, 20, 18, 22, 26))
    _write_rgb(root / "images" / "empty.png", _textured(64, 64, 2))
    _write_palette(root / "masks" / "empty.png", np.zeros((64, 64), np.uint8))
    return root


# --- ATS ------------------------------------------------------------------------------------


def test_sample_timestep_frequencies() -> None:
    rng = np.random.default_rng(0)
    n = 20000
    for kind, p_low in (("video", 0.15), ("image", 0.85), ("multiview", 0.5), ("tryon", 0.5)):
        ts = np.array([S.sample_timestep(kind, rng) for _ in range(n)])
        assert ts.min() >= 0 and ts.max() < 1000
        # video: only the 30 % uniform branch reaches t < 500 -> 0.3 * 0.5
        assert abs((ts < 500).mean() - p_low) < 0.02, kind
    ts = np.array([S.sample_timestep("video", rng, p_uniform=0.0) for _ in range(2000)])
    assert ts.min() >= 500
    ts = np.array([S.sample_timestep("image", rng, p_uniform=0.0) for _ in range(2000)])
    assert ts.max() < 500
    with pytest.raises(ConfigError, match="kind"):
        S.sample_timestep("audio", rng)


def test_sample_timestep_seeded() -> None:
    a = [S.sample_timestep("video", np.random.default_rng(5)) for _ in range(3)]
    assert len(set(a)) == 1


# --- image / mask dataset, rejection counting -------------------------------------------------


def test_image_mask_dataset_builds_samples(image_root: Path) -> None:
    ds = D.ImageMaskDataset(image_root, SMALL, seed=3)
    assert len(ds) == 2 and ds.kind == "image"
    good = [p.stem for p in ds.items].index("good")
    s = ds[good]
    assert s.ref.shape == (28, 28, 3) and s.ref.dtype == np.float32
    assert s.hint.shape == (64, 64, 4) and s.target.shape == (64, 64, 3)
    assert s.hint.dtype == np.float32 and s.target.dtype == np.float32
    assert set(np.unique(s.hint[..., 3])) <= {-1.0, 0.0, 1.0}
    assert s.kind == "image" and 0 <= s.timestep < 1000 and s.source == "image_mask:good"
    again = ds[good]
    np.testing.assert_array_equal(s.hint, again.hint)
    assert s.timestep == again.timestep
    ds.set_epoch(1)
    other = ds[good]
    assert other.timestep != s.timestep or not np.array_equal(other.hint, s.hint)


def test_bad_sample_is_skipped_and_counted(image_root: Path) -> None:
    ds = D.ImageMaskDataset(image_root, SMALL)
    empty = [p.stem for p in ds.items].index("empty")
    s = ds[empty]  # falls through to the good item
    assert s.source == "image_mask:good"
    assert ds.skipped["ref_mask_score"] >= 1
    unfiltered = D.ImageMaskDataset(image_root, S.PairConfig(ref_size=28, size=64, filters=False))
    assert unfiltered[empty].source == "image_mask:good"
    assert unfiltered.skipped["invalid_mask"] >= 1


def test_all_rejected_raises(tmp_path: Path) -> None:
    root = tmp_path / "bad"
    _write_rgb(root / "images" / "a.png", _textured(32, 32, 0))
    _write_palette(root / "masks" / "a.png", np.zeros((32, 32), np.uint8))
    ds = D.ImageMaskDataset(root, S.PairConfig(ref_size=28, size=64, max_tries=3))
    with pytest.raises(TrainingDataError, match=r"3 pairs in a row were rejected \(ref_mask_score: 3\)") as info:
        ds[0]
    assert info.value.code == "training_data_rejected"
    assert isinstance(info.value, ConfigError)  # the CLI maps it like any config problem
    assert ds.skipped["ref_mask_score"] == 3


def test_a_sample_lists_the_pairs_rejected_before_it(image_root: Path) -> None:
    ds = D.ImageMaskDataset(image_root, SMALL)
    empty = [p.stem for p in ds.items].index("empty")
    good = 1 - empty
    assert ds[good].skipped == ()
    s = ds[empty]
    assert s.source == "image_mask:good" and s.skipped and set(s.skipped) == {"ref_mask_score"}
    assert S.collate_samples([s, ds[good]])["skipped"] == list(s.skipped)


def test_filters_and_augment_switchable(image_root: Path) -> None:
    det = S.PairConfig(ref_size=28, size=64, augment=False, random_ratios=False)
    ds = D.ImageMaskDataset(image_root, det)
    good = [p.stem for p in ds.items].index("good")
    a, b = ds[good], D.ImageMaskDataset(image_root, det, seed=99)[good]
    # without augmentation and random ratios the images do not depend on the seed
    np.testing.assert_array_equal(a.hint, b.hint)
    np.testing.assert_array_equal(a.ref, b.ref)
    # the collage mask is then exactly the box (values 0/1, plus -1 padding)
    assert (a.hint[..., 3] == 1).sum() > 0


# --- VITON-HD, DressCode ----------------------------------------------------------------------


def test_viton_hd_layout_uses_label_5(tmp_path: Path) -> None:
    root = tmp_path / "viton"
    _write_rgb(root / "image" / "00001_00.jpg", _textured(64, 48, 3))
    cloth = np.full((64, 48, 3), 255, np.uint8)
    cloth[10:54, 8:40] = (200, 30, 30)
    _write_rgb(root / "cloth" / "00001_00.jpg", cloth)
    _write_rgb(
        root / "cloth-mask" / "00001_00.jpg",
        np.repeat(_rect(64, 48, 10, 8, 44, 32, 255)[..., None], 3, 2),
    )
    parse = _rect(64, 48, 20, 10, 20, 24, 5) + _rect(64, 48, 2, 2, 6, 6, 2)
    _write_palette(root / "image-parse-v3" / "00001_00.png", parse)
    ds = D.VitonHDDataset(root, SMALL)
    pair = ds.load_pair(0, np.random.default_rng(0))
    np.testing.assert_array_equal(pair.tar_mask, (parse == 5).astype(np.uint8))
    np.testing.assert_array_equal(pair.ref_mask, _rect(64, 48, 10, 8, 44, 32))
    assert pair.ref_image[30, 20, 0] > 150 and pair.ref_image[0, 0].min() > 240
    s = ds[0]
    assert s.kind == "tryon" and s.hint.shape == (64, 64, 4)


def test_dresscode_layout(tmp_path: Path) -> None:
    root = tmp_path / "dc"
    _write_rgb(root / "upper_body" / "images" / "048392_0.jpg", _textured(64, 48, 4))
    garment = np.full((64, 48, 3), 255, np.uint8)
    garment[8:56, 6:42] = 60
    _write_rgb(root / "upper_body" / "images" / "048392_1.jpg", garment)
    label = _rect(64, 48, 18, 10, 22, 26, 4) + _rect(64, 48, 44, 10, 10, 26, 6)
    lm = root / "upper_body" / "label_maps" / "048392_4.png"
    lm.parent.mkdir(parents=True)
    Image.fromarray(label, mode="L").save(lm)
    ds = D.DressCodeDataset(root, SMALL)
    assert len(ds) == 1
    pair = ds.load_pair(0, np.random.default_rng(0))
    np.testing.assert_array_equal(pair.tar_mask, (label == 4).astype(np.uint8))
    np.testing.assert_array_equal(pair.ref_mask, _rect(64, 48, 8, 6, 48, 36))
    assert ds[0].kind == "tryon"
    with pytest.raises(ConfigError, match="category"):
        D.DressCodeDataset(root, SMALL, categories=["hats"])


# --- video ----------------------------------------------------------------------------------


@pytest.fixture
def video_root(tmp_path: Path) -> Path:
    root = tmp_path / "ytvos"
    for f in range(20):
        name = f"{f * 5:05d}"
        _write_rgb(root / "JPEGImages" / "vid1" / f"{name}.jpg", _textured(64, 64, f))
        ids = _rect(64, 64, 10 + f // 2, 8 + f, 20, 22, 1) + _rect(64, 64, 44, 40, 12, 16, 3)
        _write_palette(root / "Annotations" / "vid1" / f"{name}.png", ids)
    return root


def test_video_frames_far_enough_apart(video_root: Path) -> None:
    ds = D.VideoDataset(video_root, SMALL, interval_divisor=4)  # gap = 20 // 4 = 5
    for seed in range(200):
        s, e = ds.frame_pair(20, np.random.default_rng(seed))
        assert 0 <= s < e < 20 and e - s >= 5
    assert ds.frame_pair(1, np.random.default_rng(0)) == (0, 0)


def test_video_pair_uses_palette_ids(video_root: Path) -> None:
    ds = D.VideoDataset(video_root, SMALL)
    seen = set()
    for seed in range(12):
        pair = ds.load_pair(0, np.random.default_rng(seed))
        obj = int(pair.source.rsplit("#", 1)[1])
        seen.add(obj)
        assert obj in (1, 3)
        assert pair.ref_mask.dtype == np.uint8 and set(np.unique(pair.ref_mask)) == {0, 1}
        assert pair.tar_mask.sum() in (20 * 22, 12 * 16)
    assert seen == {1, 3}
    s = ds[0]
    assert s.kind == "video" and s.timestep >= 0
    mv = D.VideoDataset(video_root, SMALL, kind="multiview")
    assert mv[0].kind == "multiview"


# --- mix, config, collate -------------------------------------------------------------------


def test_mix_weights_and_collate(image_root: Path, video_root: Path) -> None:
    cfg = S.PairConfig(ref_size=28, size=32, augment=False)
    mix = M.MixDataset(
        [D.ImageMaskDataset(image_root, cfg), D.VideoDataset(video_root, cfg)], [3, 1], 200
    )
    kinds = [mix[i].kind for i in range(200)]
    frac = kinds.count("image") / 200
    assert 0.62 < frac < 0.88
    np.testing.assert_array_equal(mix[7].hint, mix[7].hint)
    batch = S.collate_samples([mix[0], mix[1]])
    assert tuple(batch["ref"].shape) == (2, 3, 28, 28)
    assert tuple(batch["hint"].shape) == (2, 4, 32, 32)
    assert tuple(batch["jpg"].shape) == (2, 3, 32, 32)
    assert batch["time_steps"].dtype.is_floating_point is False
    np.testing.assert_array_equal(batch["hint"][0, 3].numpy(), mix[0].hint[..., 3])


def test_build_mix_from_mapping(image_root: Path, video_root: Path) -> None:
    mix = M.build_mix(
        {
            "seed": 1,
            "length": 10,
            "pair": {"ref_size": 28, "size": 32},
            "datasets": [
                {"type": "image_mask", "root": str(image_root), "weight": 2},
                {"type": "video", "root": str(video_root), "interval_divisor": 5},
            ],
        }
    )
    assert len(mix) == 10 and mix.probs.tolist() == pytest.approx([2 / 3, 1 / 3])
    assert mix.datasets[1].interval_divisor == 5
    assert mix[0].hint.shape == (32, 32, 4)
    with pytest.raises(ConfigError, match="unknown pair config"):
        M.build_mix({"pair": {"sise": 1}, "datasets": [{"type": "video", "root": "x"}]})
    with pytest.raises(ConfigError, match="type"):
        M.build_mix({"datasets": [{"type": "coco", "root": "x"}]})
    with pytest.raises(ConfigError, match="not found"):
        M.build_mix({"datasets": [{"type": "image_mask", "root": str(image_root / "nope")}]})
    with pytest.raises(ConfigError, match="datasets\\[0\\]"):
        M.build_mix({"datasets": [{"type": "video", "root": str(video_root), "bogus": 1}]})


# --- D1: repeated draws are fresh, and a pure function of their position ----------------------


def test_mix_repeats_of_one_item_are_not_copies(image_root: Path) -> None:
    """With 1 good pair and length 12, the good pair is drawn many times per epoch; each draw
    gets its own crop, augmentation, perturbation and timestep (issue 9, D1)."""
    good_only = image_root.parent / "good_only"
    for sub in ("images", "masks"):
        (good_only / sub).mkdir(parents=True)
        (good_only / sub / "good.png").write_bytes((image_root / sub / "good.png").read_bytes())
    mix = M.MixDataset([D.ImageMaskDataset(good_only, SMALL)], [1.0], 12, seed=4)
    samples = [mix[i] for i in range(12)]
    assert {s.source for s in samples} == {"image_mask:good"}
    distinct = {(s.timestep, s.hint.tobytes(), s.ref.tobytes()) for s in samples}
    assert len(distinct) == 12
    assert len({s.hint.tobytes() for s in samples}) >= 10  # crops differ, not only timesteps


def test_mix_draws_are_a_pure_function_of_seed_epoch_position(image_root: Path, video_root: Path) -> None:
    def fresh() -> M.MixDataset:
        return M.MixDataset(
            [D.ImageMaskDataset(image_root, SMALL), D.VideoDataset(video_root, SMALL)],
            [1, 1], 16, seed=2,
        )

    a, b = fresh(), fresh()
    for _ in range(3):  # history of earlier reads does not matter
        a[5], a[9]
    a.set_epoch(2)
    b.set_epoch(2)
    for i in (9, 3, 5):  # nor the order of reads (what a resume or a worker sees)
        x, y = a[i], b[i]
        assert (x.source, x.timestep) == (y.source, y.timestep)
        np.testing.assert_array_equal(x.hint, y.hint)
        np.testing.assert_array_equal(x.ref, y.ref)
    b.set_epoch(3)
    assert any(a[i].timestep != b[i].timestep or not np.array_equal(a[i].hint, b[i].hint)
               for i in range(4))
