"""Training-side helpers for AnyDoor (datasets, timestep sampling)."""

from __future__ import annotations

from tryon.anydoor.training.data import (
    DressCodeDataset,
    ImageMaskDataset,
    PairDataset,
    VideoDataset,
    VitonHDDataset,
)
from tryon.anydoor.training.mix import MixDataset, build_mix
from tryon.anydoor.training.samples import (
    KINDS,
    Pair,
    PairConfig,
    SampleRejected,
    TrainingSample,
    build_sample,
    collate_samples,
    sample_timestep,
)

__all__ = [
    "KINDS",
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
    "sample_timestep",
]
