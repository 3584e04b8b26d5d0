"""The result type of :class:`~tryon.anydoor.pipeline.AnyDoorPipeline` (diffusers keeps its
pipelines' outputs in a ``pipeline_output`` module the same way)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from tryon.anydoor.preprocess import TargetInputs


@dataclass(frozen=True)
class AnyDoorOutput:
    """Result of one :class:`~tryon.anydoor.pipeline.AnyDoorPipeline` call.

    ``image``: uint8 ``(H, W, 3)`` RGB, the target image with the generated crop pasted back;
    ``crop``: uint8 ``(T, T, 3)`` RGB, the generated square crop (T = ``config.image_size``);
    ``prepared``: the target preprocessing (boxes used); ``timesteps``: the timesteps run.
    ``images``/``crops``: one per sample (``num_samples``); ``image``/``crop`` are the first.
    """

    image: NDArray[np.uint8]
    crop: NDArray[np.uint8]
    prepared: TargetInputs
    timesteps: tuple[int, ...]
    images: tuple[NDArray[np.uint8], ...] = ()
    crops: tuple[NDArray[np.uint8], ...] = ()
