"""Argument checks of :class:`~tryon.anydoor.pipeline.AnyDoorPipeline`: each raises
:class:`~tryon.errors.InvalidInputError` or :class:`~tryon.errors.InvalidMaskError` naming the
argument at fault (``details["argument"]``). ``check_inputs`` on the pipeline calls them in
order; :func:`require_sdpa` refuses a build whose attention is not PyTorch SDPA.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numpy.typing import NDArray
from torch import Tensor

from tryon.anydoor.limits import Bound
from tryon.anydoor.models import AnyDoorComponents
from tryon.anydoor.preprocess import ReferenceInputs
from tryon.errors import InvalidInputError, InvalidMaskError
from tryon.types import Box


def check_rgb(name: str, image: Any) -> None:
    if not isinstance(image, np.ndarray):
        raise InvalidInputError(
            f"{name} must be a numpy array, got {type(image).__name__}", argument=name
        )
    if image.ndim != 3 or image.shape[2] != 3:
        raise InvalidInputError(
            f"{name} must be an RGB image of shape (H, W, 3), got shape {image.shape}",
            argument=name,
        )
    if image.dtype != np.uint8:
        raise InvalidInputError(f"{name} must be uint8, got {image.dtype}", argument=name)
    if image.shape[0] < 2 or image.shape[1] < 2:
        raise InvalidInputError(
            f"{name} is too small: {image.shape[1]}x{image.shape[0]}", argument=name
        )


def check_mask(name: str, mask: Any, image: NDArray[Any]) -> None:
    if not isinstance(mask, np.ndarray):
        raise InvalidMaskError(
            f"{name} must be a numpy array, got {type(mask).__name__}", argument=name
        )
    if mask.ndim != 2:
        raise InvalidMaskError(f"{name} must have shape (H, W), got {mask.shape}", argument=name)
    if mask.shape != image.shape[:2]:
        raise InvalidMaskError(
            f"{name} has shape {mask.shape} but its image is {image.shape[:2]}", argument=name
        )
    if mask.dtype != np.bool_ and not np.isin(mask, (0, 1)).all():
        raise InvalidMaskError(
            f"{name} must be bool or {{0, 1}}, got values in [{mask.min()}, {mask.max()}] "
            "(threshold it first, e.g. mask > 127)",
            argument=name,
        )
    if not np.any(mask):
        raise InvalidMaskError(f"{name} is empty: it must mark at least one pixel", argument=name)


def check_box(name: str, box: Box, image: NDArray[Any]) -> None:
    height, width = image.shape[:2]
    if box.is_empty():
        raise InvalidInputError(f"{name} box {box} is empty", argument=name)
    if box.x1 < 0 or box.y1 < 0 or box.x2 > width or box.y2 > height:
        raise InvalidInputError(
            f"{name} box {box} lies outside the {width}x{height} image (clip it first)",
            argument=name,
        )


def check_number(name: str, value: Any, *, low: float, high: float, low_open: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise InvalidInputError(f"{name} must be a number, got {value!r}", argument=name)
    v = float(value)
    too_low = v <= low if low_open else v < low
    if not math.isfinite(v) or too_low or v > high:
        bracket = "(" if low_open else "["
        raise InvalidInputError(
            f"{name} must be in {bracket}{low}, {high}], got {value!r}", argument=name
        )


def check_bound(name: str, value: Any, bound: Bound) -> None:
    check_number(name, value, low=bound.low, high=bound.high, low_open=bound.low_open)


def check_reference(reference: Any, size: int) -> None:
    """``reference`` must be a :class:`ReferenceInputs` prepared at ``size``."""
    want = {
        "image": ((size, size, 3), np.float32),
        "mask": ((size, size), np.uint8),
        "hf_map": ((size, size, 3), np.uint8),
    }
    if not isinstance(reference, ReferenceInputs):
        raise InvalidInputError(
            f"reference must be a ReferenceInputs, got {type(reference).__name__}",
            argument="reference",
        )
    for name, (shape, dtype) in want.items():
        arr = getattr(reference, name)
        if not isinstance(arr, np.ndarray) or arr.shape != shape or arr.dtype != dtype:
            raise InvalidInputError(
                f"reference.{name} must be {np.dtype(dtype).name} {shape}, got "
                f"{getattr(arr, 'dtype', None)} {getattr(arr, 'shape', None)}",
                argument="reference",
            )


def check_tokens(tokens: Any, want: tuple[int, ...]) -> None:
    """``tokens`` must be a float tensor of shape ``want`` (one row of ID tokens)."""
    if (
        not isinstance(tokens, Tensor)
        or not tokens.is_floating_point()
        or tuple(tokens.shape) != want
    ):
        raise InvalidInputError(
            f"reference_tokens must be a float tensor of shape {want}, got "
            f"{getattr(tokens, 'dtype', type(tokens).__name__)} "
            f"{tuple(getattr(tokens, 'shape', ()))}",
            argument="reference_tokens",
        )


def require_sdpa(components: AnyDoorComponents) -> None:
    """Refuse a build whose attention is not PyTorch SDPA (a diffusers or transformers
    upgrade that changed the default would otherwise silently cost memory and time)."""
    for name in ("unet", "controlnet", "vae"):
        module: Any = getattr(components, name)
        slow = {
            type(p).__name__
            for p in module.attn_processors.values()
            if type(p).__name__ != "AttnProcessor2_0"
        }
        if slow:
            raise RuntimeError(f"{name} attention is {sorted(slow)}, not PyTorch SDPA")
    impl = components.id_extractor.dino.config._attn_implementation
    if impl != "sdpa":
        raise RuntimeError(f"id_extractor attention is {impl!r}, not PyTorch SDPA")
