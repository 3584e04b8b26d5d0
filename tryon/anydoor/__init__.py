"""AnyDoor engine: config, networks, sampler, pipeline.

Importing this package is cheap: the torch/diffusers-backed names below load on first use, so
``tryon.anydoor.config`` stays importable where torch is not installed (e.g. the web app).
"""

from __future__ import annotations

import importlib
from typing import Any

from tryon.anydoor.config import AnyDoorConfig

_LAZY = {
    "AnyDoorComponents": "tryon.anydoor.models",
    "IDExtractor": "tryon.anydoor.models",
    "build_components": "tryon.anydoor.models",
    "zero_controlnet_conv_in": "tryon.anydoor.models",
    "randomize_parameters": "tryon.anydoor.models",
    "DDIMSchedule": "tryon.anydoor.sampling",
    "ldm_timesteps": "tryon.anydoor.sampling",
    "AnyDoorOutput": "tryon.anydoor.pipeline_output",
    "AnyDoorPipeline": "tryon.anydoor.pipeline",
}

__all__ = ["AnyDoorConfig", *_LAZY]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
