"""What intake stores, and the metadata-free encoders: the lossless stored form of a decoded
upload (the uploaded JPEG stream with its metadata segments removed when it decodes to exactly
the same pixels, else PNG) and the PNG / JPEG encoders used for results and masks.

Nothing here writes EXIF, ICC, XMP or comments. The intake contract is :mod:`tryon.images`.
"""

from __future__ import annotations

import io

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from tryon.errors import InvalidInputError
from tryon.image_decode import DECODER_ERRORS

JPEG_QUALITY = 95

#: APPn markers kept when a JPEG stream is stored as uploaded: JFIF (APP0, thumbnail dropped)
#: and Adobe (APP14, says how to read the colour components). EXIF, XMP, ICC, IPTC, maker
#: notes (APP1-APP13, APP15) and comments (COM) go.
_JPEG_APP0, _JPEG_APP14, _JPEG_SOS, _JPEG_EOI, _JPEG_COM = 0xE0, 0xEE, 0xDA, 0xD9, 0xFE


def strip_jpeg_metadata(data: bytes) -> bytes | None:
    """The JPEG stream ``data`` without metadata segments (EXIF with GPS, XMP, ICC, IPTC,
    comments, a JFIF thumbnail, anything after the end marker), the compressed pixels byte for
    byte; None when the stream is not laid out as expected (the caller then re-encodes)."""
    n = len(data)
    if data[:2] != b"\xff\xd8":
        return None
    out = bytearray(b"\xff\xd8")
    i, in_scan = 2, False
    while i < n:
        if in_scan:
            # entropy-coded data runs to the next marker that is not stuffing or a restart
            j = data.find(b"\xff", i)
            while (
                j != -1
                and j + 1 < n
                and (data[j + 1] == 0x00 or 0xD0 <= data[j + 1] <= 0xD7 or data[j + 1] == 0xFF)
            ):
                j = data.find(b"\xff", j + 1 if data[j + 1] == 0xFF else j + 2)
            if j == -1 or j + 1 >= n:
                return None
            out += data[i:j]
            i, in_scan = j, False
            continue
        if data[i] != 0xFF or i + 1 >= n:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker == _JPEG_EOI:
            out += b"\xff\xd9"
            return bytes(out)
        if i + 4 > n:
            return None
        length = int.from_bytes(data[i + 2 : i + 4], "big")
        if length < 2 or i + 2 + length > n:
            return None
        segment = data[i : i + 2 + length]
        if marker == _JPEG_APP0:
            if segment[4:9] == b"JFIF\x00" and length >= 16:
                # the same header with a 0x0 thumbnail
                out += b"\xff\xe0\x00\x10" + segment[4:16] + b"\x00\x00"
        elif 0xE1 <= marker <= 0xEF and marker != _JPEG_APP14 or marker == _JPEG_COM:
            pass
        else:
            out += segment
            in_scan = marker == _JPEG_SOS
        i += 2 + length
    return None


def store_lossless(
    data: bytes, fmt: str, im: Image.Image, original_size: tuple[int, int], rgb: NDArray[np.uint8]
) -> tuple[bytes, str]:
    """``(bytes, content type)`` to store for the upright RGB image ``im`` (pixels ``rgb``):
    the uploaded JPEG stream without its metadata when it already decodes to exactly ``rgb``
    (not rotated, not resized; checked by decoding it), else PNG."""
    if fmt == "JPEG" and im.size == original_size:
        stripped = strip_jpeg_metadata(data)
        if stripped is not None:
            try:
                with Image.open(io.BytesIO(stripped), formats=["JPEG"]) as back:
                    same = back.size == im.size and np.array_equal(
                        np.asarray(back.convert("RGB"), dtype=np.uint8), rgb
                    )
            except DECODER_ERRORS:
                same = False
            if same:
                return stripped, "image/jpeg"
    return save_image(im, "PNG"), "image/png"


def save_image(im: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    if fmt == "JPEG":
        # 4:4:4 keeps garment colour edges; no exif/icc/comment arguments, so none are written
        im.save(buf, "JPEG", quality=JPEG_QUALITY, subsampling=0)
    else:
        im.save(buf, "PNG", compress_level=6)
    return buf.getvalue()


def _check_uint8(arr: NDArray[np.uint8], shapes: str) -> None:
    if not isinstance(arr, np.ndarray) or arr.dtype != np.uint8:
        raise InvalidInputError(
            f"expected a uint8 numpy array {shapes}, got {type(arr).__name__}"
            f"{'/' + str(arr.dtype) if isinstance(arr, np.ndarray) else ''}"
        )


def encode_png(rgb_or_rgba: NDArray[np.uint8]) -> bytes:
    """Encode ``(H, W, 3)`` RGB, ``(H, W, 4)`` RGBA or ``(H, W)`` grey uint8 as metadata-free PNG."""
    arr = rgb_or_rgba
    _check_uint8(arr, "(H, W), (H, W, 3) or (H, W, 4)")
    modes = {2: "L", 3: "RGB", 4: "RGBA"}
    mode = modes.get(arr.ndim if arr.ndim == 2 else arr.shape[-1] if arr.ndim == 3 else -1)
    if mode is None or min(arr.shape[:2]) < 1:
        raise InvalidInputError(f"expected shape (H, W), (H, W, 3) or (H, W, 4), got {arr.shape}")
    return save_image(Image.fromarray(np.ascontiguousarray(arr), mode), "PNG")


def encode_jpeg(rgb: NDArray[np.uint8], quality: int = JPEG_QUALITY) -> bytes:
    """Encode ``(H, W, 3)`` uint8 RGB as metadata-free JPEG (4:4:4, ``quality`` 1..100)."""
    _check_uint8(rgb, "(H, W, 3)")
    if rgb.ndim != 3 or rgb.shape[2] != 3 or min(rgb.shape[:2]) < 1:
        raise InvalidInputError(f"expected shape (H, W, 3), got {rgb.shape}")
    if not 1 <= quality <= 100:
        raise InvalidInputError(f"quality must be in 1..100, got {quality}")
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb), "RGB").save(
        buf, "JPEG", quality=quality, subsampling=0
    )
    return buf.getvalue()
