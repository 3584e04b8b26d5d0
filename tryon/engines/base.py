"""The engine interface every try-on engine implements (AnyDoor, preview)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from tryon.types import Box, Category, MaskMode

#: Called after each denoising step (or stage) with (step_index_1_based, total_steps).
ProgressCallback = Callable[[int, int], None]
#: Polled between steps; returning True stops the render with :class:`tryon.errors.CanceledError`.
CancelCheck = Callable[[], bool]


@dataclass(frozen=True)
class RenderParams:
    num_inference_steps: int = 50
    guidance_scale: float = 4.5
    control_strength: float = 1.0
    num_samples: int = 1
    #: one seed per sample; derived by the caller (e.g. from the job id) when the client gave none
    seeds: tuple[int, ...] = (0,)


class ReferenceCache(Protocol):
    """Byte store for derived garment data an engine may reuse between renders (AnyDoor: the
    prepared reference and its DINOv2 tokens). ``name`` is chosen by the engine: 1-64
    characters of ``[a-z0-9_-]``, derived from everything the data depends on, so a name never
    changes meaning. ``get`` returns None when nothing is stored (or it cannot be read right
    now); ``put`` may drop the data silently: a cache must never fail a render."""

    def get(self, name: str) -> bytes | None: ...

    def put(self, name: str, data: bytes) -> None: ...


@dataclass(frozen=True)
class RenderRequest:
    """Inputs to an engine. Images are RGB uint8 ``(H, W, 3)``; masks bool ``(H, W)``."""

    person: NDArray[np.uint8]
    garment: NDArray[np.uint8]
    garment_mask: NDArray[np.bool_]
    #: where the garment goes: the box and the target mask (plain box or shape-aware)
    box: Box
    target_mask: NDArray[np.bool_]
    category: Category
    params: RenderParams = field(default_factory=RenderParams)
    #: pose landmarks (33, 4) [x_px, y_px, z, visibility] when known (the preview engine fits to them)
    landmarks: NDArray[np.float32] | None = None
    #: True when the caller gave the box explicitly: it is authoritative and engines must not
    #: re-fit the garment to the landmarks (which may still be passed along for masks/shading)
    explicit_box: bool = False
    #: ``shape`` when ``target_mask`` is the person's shape inside the box (AnyDoor then uses it
    #: as the hint's mask channel, like the official demo's shape control); ``box`` otherwise
    mask_mode: MaskMode = MaskMode.BOX
    #: where an engine may keep derived data of this garment (ignored by engines without any)
    reference_cache: ReferenceCache | None = None
    #: the person's segmentation, float ``(H, W)`` in [0, 1] or bool, when known (the preview
    #: engine keeps the arms and hands that lie on it in front of the garment)
    person_mask: NDArray[np.floating[Any]] | NDArray[np.bool_] | None = None


@dataclass(frozen=True)
class RenderOutput:
    """Results, one image per sample (RGB uint8, full person size), plus reproducibility data."""

    images: list[NDArray[np.uint8]]
    seeds: list[int]
    #: engine name, engine version, weights checksum, preprocessing version, parameters
    record: dict[str, Any]


class Engine(Protocol):
    name: str

    def render(
        self,
        request: RenderRequest,
        *,
        callback: ProgressCallback | None = None,
        should_cancel: CancelCheck | None = None,
    ) -> RenderOutput: ...
