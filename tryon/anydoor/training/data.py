"""Training data for AnyDoor: pair datasets, the reference's filters, adaptive timesteps.

Follows ``/work/shared/docs/anydoor-reference.md`` §5. Every dataset yields
:class:`TrainingSample` objects built by :func:`build_sample` from a :class:`Pair` (reference
image + mask, target image + mask) with the preprocessing of :mod:`tryon.anydoor.preprocess`
and a ``numpy.random.Generator`` seeded from ``(seed, epoch, index)``, so a sample is a pure
function of those three numbers and the files.

Like the reference, a pair that fails a filter (or whose files are unreadable) is not fatal:
the dataset draws another index and counts the reason in :attr:`PairDataset.skipped`.
"""

from __future__ import annotations

import logging
import random
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np
import torch
from numpy.typing import NDArray
from PIL import Image
from torch.utils.data import Dataset

from tryon.anydoor.preprocess import check_pair, prepare_reference, prepare_target
from tryon.errors import ConfigError, TryOnError

logger = logging.getLogger(__name__)

Kind = Literal["video", "image", "multiview", "tryon"]
KINDS: tuple[str, ...] = ("video", "image", "multiview", "tryon")
#: ATS ranges [low, high) per kind when the uniform branch is not taken (reference
#: ``BaseDataset.sample_timestep``: dynamic 1 -> video, 0 -> image, 2 -> multi-view / try-on)
TIMESTEP_RANGES: dict[str, tuple[int, int]] = {
    "video": (500, 1000),
    "image": (0, 500),
    "multiview": (0, 1000),
    "tryon": (0, 1000),
}
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")


def _check_kind(kind: str) -> str:
    if kind not in TIMESTEP_RANGES:
        raise ConfigError(f"kind must be one of {KINDS}, got {kind!r}.")
    return kind


def sample_timestep(
    kind: str, rng: np.random.Generator, p_uniform: float = 0.3, num_train_timesteps: int = 1000
) -> int:
    """Adaptive timestep sampling (ATS).

    With probability ``p_uniform`` draw ``t ~ U[0, N)``; otherwise draw from the kind's range:
    video ``[N/2, N)``, image ``[0, N/2)``, multiview / tryon ``[0, N)`` (N = 1000 in the
    reference; the ranges scale with ``num_train_timesteps``).

    Returns:
        An int in ``[0, num_train_timesteps)``.
    """
    low, high = TIMESTEP_RANGES[_check_kind(kind)]
    if rng.random() < p_uniform:
        low, high = 0, 1000
    scale = num_train_timesteps / 1000
    return int(rng.integers(int(low * scale), int(high * scale)))


# ---------------------------------------------------------------------------------------------
# Samples
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainingSample:
    """One training example.

    Attributes:
        ref: float32 ``(S, S, 3)`` in ``[0, 1]`` (S = 224): DINOv2 input, white background.
        hint: float32 ``(T, T, 4)`` (T = 512): collage RGB in ``[-1, 1]`` + mask in {-1, 0, 1}.
        target: float32 ``(T, T, 3)`` in ``[-1, 1]``: the crop to reconstruct ("jpg").
        kind: one of :data:`KINDS`.
        timestep: ATS timestep in ``[0, 1000)``.
        source: name of the dataset and item, for debugging.
    """

    ref: NDArray[np.float32]
    hint: NDArray[np.float32]
    target: NDArray[np.float32]
    kind: str
    timestep: int
    source: str = ""


def collate_samples(samples: Sequence[TrainingSample]) -> dict[str, Any]:
    """Stack samples into channel-first tensors for a ``DataLoader`` (``collate_fn``).

    Returns:
        ``ref`` float32 ``(B, 3, S, S)``, ``hint`` float32 ``(B, 4, T, T)``, ``jpg`` float32
        ``(B, 3, T, T)``, ``time_steps`` int64 ``(B,)``, ``kind`` and ``source`` lists.
    """

    def stack(name: str) -> torch.Tensor:
        arr = np.stack([getattr(s, name) for s in samples])
        return torch.from_numpy(np.ascontiguousarray(arr.transpose(0, 3, 1, 2)))

    return {
        "ref": stack("ref"),
        "hint": stack("hint"),
        "jpg": stack("target"),
        "time_steps": torch.tensor([s.timestep for s in samples], dtype=torch.int64),
        "kind": [s.kind for s in samples],
        "source": [s.source for s in samples],
    }


@dataclass(frozen=True)
class Pair:
    """Raw inputs of one sample: RGB uint8 ``(H, W, 3)`` images and ``(H, W)`` {0,1} masks."""

    ref_image: NDArray[np.uint8]
    ref_mask: NDArray[np.uint8]
    tar_image: NDArray[np.uint8]
    tar_mask: NDArray[np.uint8]
    source: str = ""


class SampleRejected(Exception):
    """A pair failed a filter or could not be built; ``reason`` is a short stable string."""

    def __init__(self, reason: str, detail: str = "") -> None:
        self.reason = reason
        super().__init__(f"{reason}: {detail}" if detail else reason)


@dataclass(frozen=True)
class PairConfig:
    """How pairs become samples (config key ``pair`` of :func:`build_mix`).

    Attributes:
        ref_size: reference side (224).
        size: target side (512).
        filters: apply the reference's training filters (:func:`check_pair`).
        augment: reference HFlip + brightness/contrast and the collage-mask perturbation.
        random_ratios: draw expand ratio U{1.1..1.4} and crop ratio U{1.3..2.9}; if False use
            the deterministic inference defaults (1.2, 2.0).
        perturb_mask_p: probability of the collage-mask perturbation when ``augment`` (0.7).
        max_ratio: largest expanded target box / image side (0.8); try-on kinds use
            ``max_ratio_tryon`` (1.0).
        max_ratio_tryon: see ``max_ratio``.
        p_uniform: ATS probability of a uniform timestep (0.3).
        max_tries: how many pairs to try before giving up on an index.
    """

    ref_size: int = 224
    size: int = 512
    filters: bool = True
    augment: bool = True
    random_ratios: bool = True
    perturb_mask_p: float = 0.7
    max_ratio: float = 0.8
    max_ratio_tryon: float = 1.0
    p_uniform: float = 0.3
    max_tries: int = 20

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> PairConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ConfigError(
                f"unknown pair config keys {sorted(unknown)}; known: {sorted(known)}."
            )
        return cls(**dict(data))


def build_sample(
    pair: Pair, kind: str, rng: np.random.Generator, config: PairConfig | None = None
) -> TrainingSample:
    """Turn a :class:`Pair` into a :class:`TrainingSample` (reference ``process_pairs``).

    Raises:
        SampleRejected: a filter failed (reason from :func:`check_pair`) or preprocessing
            refused the masks (reason = the error's ``code``, e.g. ``invalid_mask``).
    """
    cfg = config or PairConfig()
    _check_kind(kind)
    if cfg.filters:
        max_ratio = cfg.max_ratio_tryon if kind == "tryon" else cfg.max_ratio
        reason = check_pair(pair.ref_mask, pair.tar_mask, max_ratio=max_ratio)
        if reason is not None:
            raise SampleRejected(reason, pair.source)
    try:
        ref = prepare_reference(
            pair.ref_image,
            pair.ref_mask,
            expand_ratio=None if cfg.random_ratios else 1.2,
            size=cfg.ref_size,
            rng=rng,
            augment=cfg.augment,
        )
        tar = prepare_target(
            pair.tar_image,
            pair.tar_mask,
            ref.hf_map,
            crop_ratio=None if cfg.random_ratios else 2.0,
            size=cfg.size,
            rng=rng,
            perturb_mask_p=cfg.perturb_mask_p if cfg.augment else 0.0,
        )
    except TryOnError as exc:
        raise SampleRejected(exc.code, f"{pair.source}: {exc.message}") from exc
    return TrainingSample(
        ref=ref.image,
        hint=tar.hint,
        target=tar.target,
        kind=kind,
        timestep=sample_timestep(kind, rng, cfg.p_uniform),
        source=pair.source,
    )


# ---------------------------------------------------------------------------------------------
# File helpers
# ---------------------------------------------------------------------------------------------


def read_rgb(path: Path) -> NDArray[np.uint8]:
    """Read an image file as RGB uint8 ``(H, W, 3)``; raise ``SampleRejected('load_error')``."""
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise SampleRejected("load_error", str(path))
    return np.ascontiguousarray(bgr[:, :, ::-1])


def read_labels(path: Path) -> NDArray[Any]:
    """Read a label map as integer ids ``(H, W)`` (palette PNGs give their palette indices)."""
    try:
        with Image.open(path) as im:
            if im.mode in ("P", "L", "I", "I;16"):
                return np.asarray(im)
            return np.asarray(im.convert("L"))
    except (OSError, ValueError) as exc:
        raise SampleRejected("load_error", f"{path}: {exc}") from exc


def _images_in(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise ConfigError(f"dataset folder not found: {folder}")
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def _find_with_stem(folder: Path, stem: str) -> Path:
    for suffix in IMAGE_SUFFIXES:
        candidate = folder / f"{stem}{suffix}"
        if candidate.exists():
            return candidate
    raise SampleRejected("load_error", f"no image named {stem}.* in {folder}")


# ---------------------------------------------------------------------------------------------
# Datasets
# ---------------------------------------------------------------------------------------------


class PairDataset(Dataset[TrainingSample]):
    """Base class: subclasses list items and load a :class:`Pair` for one of them.

    ``__getitem__(i)`` seeds a generator with ``(seed, epoch, i)``, loads item ``i`` and builds
    the sample; if that fails it draws another item with the same generator, up to
    ``config.max_tries`` times, counting each failure's reason in :attr:`skipped` (per process:
    with DataLoader workers each worker has its own counter).
    """

    kind: str = "image"
    name: str = "pairs"

    def __init__(self, config: PairConfig | None = None, *, seed: int = 0) -> None:
        self.config = config or PairConfig()
        self.seed = seed
        self.epoch = 0
        self.skipped: Counter[str] = Counter()

    def set_epoch(self, epoch: int) -> None:
        """Change the per-epoch randomness (call from the training loop)."""
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_items()

    def num_items(self) -> int:
        raise NotImplementedError

    def load_pair(self, index: int, rng: np.random.Generator) -> Pair:
        raise NotImplementedError

    def __getitem__(self, index: int) -> TrainingSample:
        n = self.num_items()
        if not 0 <= index < n:
            raise IndexError(f"index {index} out of range for {self.name} of length {n}")
        rng = np.random.default_rng([self.seed, self.epoch, index])
        item = index
        for _ in range(self.config.max_tries):
            try:
                return build_sample(self.load_pair(item, rng), self.kind, rng, self.config)
            except SampleRejected as exc:
                self.skipped[exc.reason] += 1
                logger.debug("skipped %s item=%d reason=%s", self.name, item, exc)
            item = int(rng.integers(n))
        raise SampleRejected(
            "too_many_rejections",
            f"{self.name}: {self.config.max_tries} pairs in a row were rejected "
            f"({dict(self.skipped)})",
        )


class ImageMaskDataset(PairDataset):
    """Single images with object masks; reference = target (SAM/LVIS/saliency style).

    Layout::

        root/images/<name>.jpg|png      RGB image
        root/masks/<name>.png           mask, any non-zero pixel is the object
    """

    kind = "image"
    name = "image_mask"

    def __init__(self, root: str | Path, config: PairConfig | None = None, *, seed: int = 0):
        super().__init__(config, seed=seed)
        self.root = Path(root)
        self.items = _images_in(self.root / "images")
        self.mask_dir = self.root / "masks"

    def num_items(self) -> int:
        return len(self.items)

    def load_pair(self, index: int, rng: np.random.Generator) -> Pair:
        path = self.items[index]
        image = read_rgb(path)
        mask = (read_labels(_find_with_stem(self.mask_dir, path.stem)) > 0).astype(np.uint8)
        return Pair(image, mask, image, mask, source=f"{self.name}:{path.stem}")


class VitonHDDataset(PairDataset):
    """VITON-HD try-on pairs: garment -> the person's upper-clothes region.

    Layout (the official ``train``/``test`` folders)::

        root/image/<id>.jpg             person
        root/cloth/<id>.jpg             garment on white
        root/cloth-mask/<id>.jpg        garment mask (> 128)
        root/image-parse-v3/<id>.png    palette parsing; label 5 = upper clothes
    """

    kind = "tryon"
    name = "viton_hd"

    def __init__(
        self,
        root: str | Path,
        config: PairConfig | None = None,
        *,
        seed: int = 0,
        labels: Sequence[int] = (5,),
    ) -> None:
        super().__init__(config, seed=seed)
        self.root = Path(root)
        self.items = _images_in(self.root / "image")
        self.labels = tuple(labels)

    def num_items(self) -> int:
        return len(self.items)

    def load_pair(self, index: int, rng: np.random.Generator) -> Pair:
        stem = self.items[index].stem
        person = read_rgb(self.items[index])
        cloth = read_rgb(_find_with_stem(self.root / "cloth", stem))
        cloth_mask = (read_labels(_find_with_stem(self.root / "cloth-mask", stem)) > 128).astype(
            np.uint8
        )
        parse = read_labels(_find_with_stem(self.root / "image-parse-v3", stem))
        tar_mask = np.isin(parse, self.labels).astype(np.uint8)
        if parse.shape != person.shape[:2]:
            raise SampleRejected("size_mismatch", f"{stem}: parse {parse.shape} vs {person.shape}")
        return Pair(cloth, cloth_mask, person, tar_mask, source=f"{self.name}:{stem}")


#: DressCode label-map ids per category (``label_maps/<id>_4.png``); the reference uses 4 for
#: upper body; the others follow DressCode's published label list.
DRESSCODE_LABELS: dict[str, tuple[int, ...]] = {
    "upper_body": (4,),
    "lower_body": (5, 6),
    "dresses": (7,),
}


class DressCodeDataset(PairDataset):
    """DressCode try-on pairs (not used by the released reference training, §5).

    Layout::

        root/<category>/images/<id>_0.jpg      person
        root/<category>/images/<id>_1.jpg      garment on white; mask = grey < 240
        root/<category>/label_maps/<id>_4.png  person parsing (ids in DRESSCODE_LABELS)

    ``categories`` picks the sub-folders (default: all of those present).
    """

    kind = "tryon"
    name = "dresscode"

    def __init__(
        self,
        root: str | Path,
        config: PairConfig | None = None,
        *,
        seed: int = 0,
        categories: Sequence[str] | None = None,
        ref_threshold: int = 240,
    ) -> None:
        super().__init__(config, seed=seed)
        self.root = Path(root)
        cats = list(categories) if categories is not None else list(DRESSCODE_LABELS)
        self.ref_threshold = ref_threshold
        self.items: list[tuple[str, Path]] = []
        for cat in cats:
            if cat not in DRESSCODE_LABELS:
                raise ConfigError(
                    f"unknown DressCode category {cat!r}; use {list(DRESSCODE_LABELS)}."
                )
            folder = self.root / cat / "images"
            if not folder.is_dir():
                if categories is not None:
                    raise ConfigError(f"dataset folder not found: {folder}")
                continue
            self.items += [(cat, p) for p in _images_in(folder) if p.stem.endswith("_0")]
        if not self.items:
            raise ConfigError(f"no DressCode person images (<id>_0.jpg) under {self.root}.")

    def num_items(self) -> int:
        return len(self.items)

    def load_pair(self, index: int, rng: np.random.Generator) -> Pair:
        cat, person_path = self.items[index]
        key = person_path.stem[: -len("_0")]
        folder = self.root / cat
        person = read_rgb(person_path)
        garment = read_rgb(_find_with_stem(folder / "images", f"{key}_1"))
        grey = cv2.cvtColor(garment, cv2.COLOR_RGB2GRAY)
        ref_mask = (grey < self.ref_threshold).astype(np.uint8)
        parse = read_labels(_find_with_stem(folder / "label_maps", f"{key}_4"))
        if parse.shape != person.shape[:2]:
            raise SampleRejected("size_mismatch", f"{key}: parse {parse.shape} vs {person.shape}")
        tar_mask = np.isin(parse, DRESSCODE_LABELS[cat]).astype(np.uint8)
        return Pair(garment, ref_mask, person, tar_mask, source=f"{self.name}:{cat}/{key}")


class VideoDataset(PairDataset):
    """Object pairs from two frames of a video (YouTube-VOS layout); also multi-view sets.

    Layout::

        root/JPEGImages/<video>/<frame>.jpg
        root/Annotations/<video>/<frame>.png    palette PNG, pixel = object id (0 = background)

    For item ``i`` (a video with ``n`` annotated frames): ``gap = n // interval_divisor``
    (reference: 10; VIPSeg 100, MVImgNet 8, UVO-val 5), ref frame ``s ~ U[0, n - gap)``,
    target frame ``e ~ U[s + gap, n)``, object = a random id present in the ref frame.
    ``kind`` is "video" (default) or "multiview" (changes only the ATS range).
    """

    name = "video"

    def __init__(
        self,
        root: str | Path,
        config: PairConfig | None = None,
        *,
        seed: int = 0,
        interval_divisor: int = 10,
        kind: str = "video",
    ) -> None:
        super().__init__(config, seed=seed)
        if interval_divisor < 1:
            raise ConfigError(f"interval_divisor must be >= 1, got {interval_divisor}.")
        self.kind = _check_kind(kind)
        self.root = Path(root)
        self.interval_divisor = interval_divisor
        ann_root = self.root / "Annotations"
        if not ann_root.is_dir():
            raise ConfigError(f"dataset folder not found: {ann_root}")
        self.videos: list[tuple[str, list[str]]] = []
        for video in sorted(p for p in ann_root.iterdir() if p.is_dir()):
            frames = sorted(p.stem for p in video.glob("*.png"))
            if frames:
                self.videos.append((video.name, frames))
        if not self.videos:
            raise ConfigError(f"no annotated videos under {ann_root}.")

    def num_items(self) -> int:
        return len(self.videos)

    def frame_pair(self, n: int, rng: np.random.Generator) -> tuple[int, int]:
        """Ref and target frame indices at least ``n // interval_divisor`` apart."""
        gap = n // self.interval_divisor
        start = int(rng.integers(0, max(n - gap, 1)))
        end = int(rng.integers(min(start + gap, n - 1), n))
        return start, end

    def load_pair(self, index: int, rng: np.random.Generator) -> Pair:
        video, frames = self.videos[index]
        s, e = self.frame_pair(len(frames), rng)
        ann = self.root / "Annotations" / video
        ref_ids = read_labels(ann / f"{frames[s]}.png")
        tar_ids = read_labels(ann / f"{frames[e]}.png")
        objects = [int(v) for v in np.unique(ref_ids) if v != 0]
        if not objects:
            raise SampleRejected("no_object", f"{video}/{frames[s]}")
        obj = objects[int(rng.integers(len(objects)))]
        jpg = self.root / "JPEGImages" / video
        ref_image = read_rgb(_find_with_stem(jpg, frames[s]))
        tar_image = read_rgb(_find_with_stem(jpg, frames[e]))
        return Pair(
            ref_image,
            (ref_ids == obj).astype(np.uint8),
            tar_image,
            (tar_ids == obj).astype(np.uint8),
            source=f"{self.name}:{video}/{frames[s]}->{frames[e]}#{obj}",
        )


class MixDataset(Dataset[TrainingSample]):
    """A weighted mix: item ``i`` picks a dataset with probability ``weight / sum(weights)``
    and a uniform index inside it, both from a generator seeded with ``(seed, epoch, i)``.

    (The reference concatenates datasets with fixed virtual lengths and ignores the index; a
    weight here plays the role of that virtual length.)
    """

    def __init__(
        self,
        datasets: Sequence[PairDataset],
        weights: Sequence[float],
        length: int,
        *,
        seed: int = 0,
    ) -> None:
        if not datasets or len(datasets) != len(weights):
            raise ConfigError("MixDataset needs one weight per dataset and at least one dataset.")
        w = np.asarray(weights, dtype=np.float64)
        if (w < 0).any() or w.sum() <= 0:
            raise ConfigError(f"mix weights must be >= 0 with a positive sum, got {list(weights)}.")
        if length < 1:
            raise ConfigError(f"mix length must be >= 1, got {length}.")
        self.datasets = list(datasets)
        self.probs = w / w.sum()
        self.length = length
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        for ds in self.datasets:
            ds.set_epoch(epoch)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> TrainingSample:
        if not 0 <= index < self.length:
            raise IndexError(f"index {index} out of range for a mix of length {self.length}")
        rng = np.random.default_rng([self.seed, self.epoch, index, 1])
        ds = self.datasets[int(rng.choice(len(self.datasets), p=self.probs))]
        return ds[int(rng.integers(len(ds)))]

    @property
    def skipped(self) -> dict[str, Counter[str]]:
        """Rejection counts per dataset name (this process only)."""
        out: dict[str, Counter[str]] = {}
        for ds in self.datasets:
            out.setdefault(ds.name, Counter()).update(ds.skipped)
        return out


DATASET_TYPES: dict[str, Callable[..., PairDataset]] = {
    "image_mask": ImageMaskDataset,
    "viton_hd": VitonHDDataset,
    "dresscode": DressCodeDataset,
    "video": VideoDataset,
}


def build_mix(config: Mapping[str, Any]) -> MixDataset:
    """Build a :class:`MixDataset` from a plain mapping (e.g. parsed YAML/JSON).

    Keys: ``length`` (int), ``seed`` (int, 0), ``pair`` (mapping of :class:`PairConfig`
    fields), ``datasets``: a list of mappings with ``type`` (one of ``image_mask``,
    ``viton_hd``, ``dresscode``, ``video``), ``root``, ``weight`` (1.0) and the type's own
    keyword arguments (``labels``, ``categories``, ``ref_threshold``, ``interval_divisor``,
    ``kind``).
    """
    cfg = dict(config)
    pair = PairConfig.from_mapping(cfg.pop("pair", {}))
    seed = int(cfg.pop("seed", 0))
    length = int(cfg.pop("length", 0))
    specs = cfg.pop("datasets", None)
    if cfg:
        raise ConfigError(f"unknown training data keys {sorted(cfg)}.")
    if not specs:
        raise ConfigError("training data config needs a non-empty `datasets` list.")
    datasets, weights = [], []
    for i, spec in enumerate(specs):
        spec = dict(spec)
        kind = spec.pop("type", None)
        if kind not in DATASET_TYPES:
            raise ConfigError(
                f"datasets[{i}].type must be one of {sorted(DATASET_TYPES)}, got {kind!r}."
            )
        if "root" not in spec:
            raise ConfigError(f"datasets[{i}] needs a `root`.")
        weights.append(float(spec.pop("weight", 1.0)))
        root = spec.pop("root")
        try:
            datasets.append(DATASET_TYPES[kind](root, pair, seed=seed + i, **spec))
        except TypeError as exc:
            raise ConfigError(f"datasets[{i}] ({kind}): {exc}") from exc
    return MixDataset(datasets, weights, length or sum(len(d) for d in datasets), seed=seed)


def seed_worker(worker_id: int) -> None:
    """``DataLoader(worker_init_fn=...)``: keep stray ``random`` users deterministic too."""
    random.seed(torch.initial_seed() % 2**32)


__all__ = [
    "KINDS",
    "TIMESTEP_RANGES",
    "DressCodeDataset",
    "ImageMaskDataset",
    "MixDataset",
    "Pair",
    "PairConfig",
    "PairDataset",
    "SampleRejected",
    "TrainingSample",
    "VideoDataset",
    "VitonHDDataset",
    "build_mix",
    "build_sample",
    "collate_samples",
    "read_labels",
    "read_rgb",
    "sample_timestep",
    "seed_worker",
]
