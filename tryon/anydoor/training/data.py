"""Training datasets for AnyDoor: file layouts, a weighted mix, and how items are drawn.

Follows ``/work/shared/docs/anydoor-reference.md`` §5. Every dataset yields
:class:`~tryon.anydoor.training.samples.TrainingSample` objects built by
:func:`~tryon.anydoor.training.samples.build_sample` from a
:class:`~tryon.anydoor.training.samples.Pair`.

Randomness: a sample is a pure function of the files and the numbers that name its *draw*.
A :class:`PairDataset` read directly draws item ``i`` with a generator seeded from
``(seed, epoch, i)`` (the loop's sampler visits each index once per epoch). A
:class:`MixDataset` seeds one generator per *position* ``(seed, epoch, position)``: it picks
the dataset and the item and then builds the sample, so an item drawn twice in an epoch gets
a fresh crop, augmentation, mask perturbation and timestep each time, and a resumed run, which
replays the same positions, sees the same samples as an uninterrupted one.

Like the reference, a pair that fails a filter (or whose files are unreadable) is not fatal:
the dataset draws another item and records the reason, both in :attr:`PairDataset.skipped`
(this process) and on the sample it finally returns (``TrainingSample.skipped``, which the
training loop aggregates across DataLoader workers). ``max_tries`` rejections in a row raise
:class:`~tryon.errors.TrainingDataError`.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray
from PIL import Image
from torch.utils.data import Dataset

from tryon.anydoor.training.samples import (
    Pair,
    PairConfig,
    SampleRejected,
    TrainingSample,
    build_sample,
    check_kind,
)
from tryon.errors import ConfigError, TrainingDataError

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")

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

    ``__getitem__(i)`` is :meth:`draw` of item ``i`` with a generator seeded from
    ``(seed, epoch, i)``.
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
        return self.draw(index, np.random.default_rng([self.seed, self.epoch, index]))

    def draw(self, index: int, rng: np.random.Generator) -> TrainingSample:
        """Build a sample from item ``index`` with ``rng``; on rejection try another item.

        Each rejection's reason is counted in :attr:`skipped` (per process: with DataLoader
        workers each worker has its own counter) and listed in the returned sample's
        ``skipped``.

        Raises:
            TrainingDataError: ``config.max_tries`` pairs in a row were rejected.
        """
        n = self.num_items()
        item = index
        rejected: list[str] = []
        for _ in range(self.config.max_tries):
            try:
                sample = build_sample(self.load_pair(item, rng), self.kind, rng, self.config)
                return replace(sample, skipped=tuple(rejected)) if rejected else sample
            except SampleRejected as exc:
                self.skipped[exc.reason] += 1
                rejected.append(exc.reason)
                logger.debug("skipped %s item=%d reason=%s", self.name, item, exc)
            item = int(rng.integers(n))
        reasons = ", ".join(f"{r}: {c}" for r, c in Counter(rejected).most_common())
        raise TrainingDataError(
            f"{self.name}: {self.config.max_tries} pairs in a row were rejected ({reasons}); "
            "check the dataset's masks and files, or the `pair` filters (max_ratio, filters) "
            "in the data config."
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
        self.kind = check_kind(kind)
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


#: ``type`` names of the data config (see :func:`~tryon.anydoor.training.mix.build_mix`)
DATASET_TYPES: dict[str, Callable[..., PairDataset]] = {
    "image_mask": ImageMaskDataset,
    "viton_hd": VitonHDDataset,
    "dresscode": DressCodeDataset,
    "video": VideoDataset,
}


__all__ = [
    "DATASET_TYPES",
    "DressCodeDataset",
    "ImageMaskDataset",
    "PairDataset",
    "VideoDataset",
    "VitonHDDataset",
    "read_labels",
    "read_rgb",
]
