"""What the pre-flight analysis reads: the photo reduced to analysis resolution, plus its size.

Light on purpose (numpy, OpenCV's resize, Pillow; no MediaPipe): the API process builds an
:class:`AnalysisInput` from the pixels it already decoded at intake and sends it to the
analysis process, so the stored photo is never decoded a second time for the pre-flight (a
2048 px PNG decode alone cost ~95 ms of CPU). Pickling a 640 px copy is ~1 MB.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
from numpy.typing import NDArray

from tryon.errors import InvalidImageError, InvalidInputError

#: pose, people and silhouette are computed on a copy whose long side is at most this
ANALYSIS_SIDE = 640


def reduce_for_analysis(image: NDArray[np.uint8], side: int = ANALYSIS_SIDE) -> NDArray[np.uint8]:
    """``image`` shrunk (area interpolation) so its long side is at most ``side``."""
    h, w = image.shape[:2]
    scale = min(1.0, side / max(h, w))
    if scale >= 1.0:
        return image
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return np.asarray(cv2.resize(image, size, interpolation=cv2.INTER_AREA), dtype=np.uint8)


@dataclass(frozen=True)
class AnalysisInput:
    """The analysis's view of one stored photo.

    ``image``: uint8 ``(h, w, 3)`` RGB whose long side is at most :data:`ANALYSIS_SIDE`;
    ``photo_size``: ``(W, H)`` of the stored photo, the frame every returned box, landmark and
    the person mask are in.
    """

    image: NDArray[np.uint8]
    photo_size: tuple[int, int]

    def __post_init__(self) -> None:
        arr = self.image
        if not isinstance(arr, np.ndarray) or arr.dtype != np.uint8 or arr.ndim != 3 \
                or arr.shape[2] != 3:
            raise InvalidInputError("AnalysisInput.image must be a uint8 (h, w, 3) array")
        w, h = self.photo_size
        if max(arr.shape[:2]) > ANALYSIS_SIDE and (arr.shape[1], arr.shape[0]) != (w, h):
            raise InvalidInputError(
                f"AnalysisInput.image {arr.shape[1]}x{arr.shape[0]} is neither the photo "
                f"({w}x{h}) nor at most {ANALYSIS_SIDE} px long"
            )


def analysis_input(rgb: NDArray[np.uint8]) -> AnalysisInput:
    """The :class:`AnalysisInput` of decoded photo pixels ``rgb`` (``(H, W, 3)`` uint8): one
    area downscale, the same the analysis would apply itself."""
    return AnalysisInput(reduce_for_analysis(rgb), (int(rgb.shape[1]), int(rgb.shape[0])))


def decode_rgb(
    image_bytes: bytes, max_side: int | None = None
) -> tuple[NDArray[np.uint8], tuple[int, int]]:
    """Decode PNG/JPEG bytes to uint8 ``(h, w, 3)`` RGB and the encoded ``(W, H)``.

    With ``max_side`` the result's long side is at most that: a JPEG is decoded at reduced
    scale (DCT scaling, ``draft``), anything else decoded in full and shrunk. No orientation
    handling: the bytes are an already normalised photo. For bytes that are not already
    decoded elsewhere (the upload path uses :func:`analysis_input` on the intake's pixels).
    """
    import io

    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(image_bytes)) as img:
            size = (int(img.width), int(img.height))
            if max_side is not None and img.format == "JPEG" and max(size) > max_side:
                scale = max_side / max(size)
                img.draft("RGB", (math.ceil(size[0] * scale), math.ceil(size[1] * scale)))
            rgb = np.asarray(img.convert("RGB"), dtype=np.uint8)
    except (UnidentifiedImageError, OSError) as exc:
        raise InvalidImageError(f"The photo could not be decoded: {exc}") from exc
    if max_side is not None:
        rgb = reduce_for_analysis(rgb, max_side)
    return rgb, size


def analysis_input_from_bytes(image_bytes: bytes) -> AnalysisInput:
    """:class:`AnalysisInput` of encoded, already normalised photo bytes (one decode, a JPEG
    at reduced scale); raises InvalidImageError for undecodable bytes."""
    rgb, size = decode_rgb(image_bytes, ANALYSIS_SIDE)
    return AnalysisInput(rgb, size)


__all__ = [
    "ANALYSIS_SIDE",
    "AnalysisInput",
    "analysis_input",
    "analysis_input_from_bytes",
    "decode_rgb",
    "reduce_for_analysis",
]
