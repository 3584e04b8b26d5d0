"""Safe image intake: the one place where untrusted image bytes become pixels.

Every entry point (API, CLI, workers) calls :func:`normalize_upload` (or :func:`load_image_file`,
:func:`decode_mask`). The contract, in order:

1. Size in bytes is checked before anything is parsed (``ImageTooLargeError``).
2. The format is decided from the magic bytes, never from a file name or ``Content-Type``; only
   JPEG, PNG and WebP are handed to Pillow, and Pillow itself is restricted to the sniffed
   format (``Image.open(..., formats=[fmt])``), so the EPS (Ghostscript), TIFF, PDF, JPEG 2000,
   GIF, SVG and HEIC parsers are never reached (``UnsupportedFormatError``, HTTP 415). HEIC is
   rejected on purpose: one more C parser on untrusted bytes is not worth it for v1.
3. Dimensions are read from the header and checked against the side and pixel limits before any
   pixel is decoded (``ImageTooLargeError``); Pillow's ``DecompressionBombWarning`` is an error
   inside the decode, and ``Image.MAX_IMAGE_PIXELS`` is never ``None``. A JPEG is decoded at
   reduced scale (DCT scaling: 1/2, 1/4 or 1/8, the smallest that still reaches the target
   size), and the limits apply to that decoded size: a 50 MP or 200 MP phone photo is
   accepted within the same memory bound. PNG and WebP cannot do that and keep the limits on
   their full size.
4. Only frame 0 of an animated PNG/WebP is used. Both formats constrain every frame to the
   canvas size checked in step 3 (Pillow rejects APNG frames outside the canvas, libwebp's demuxer
   rejects WebP frames outside it), so a later frame cannot be a bomb.
5. EXIF orientation is applied exactly once; the output is rebuilt from pixels only and
   re-encoded, so no EXIF, GPS, XMP, ICC, comment or text chunk, and no byte appended to or
   embedded in the upload (polyglots), survives.
6. Any decoder failure becomes ``CorruptImageError``: callers only ever see
   :class:`~tryon.errors.InvalidImageError` subclasses.

Colour: embedded ICC profiles are not applied (pixels are taken as sRGB); CMYK is converted with
Pillow's plain formula.

This module holds the contract: the limits, the result type and the entry points. Steps 2-6
(sniffing and the decode itself) are :mod:`tryon.image_decode`; the lossless stored form and
the metadata-free PNG/JPEG encoders are :mod:`tryon.image_store`. Both are re-exported here.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageFile

from tryon.errors import InvalidInputError, InvalidMaskError
from tryon.image_decode import ACCEPTED_FORMATS, decode_image, sniff_format
from tryon.image_store import (
    JPEG_QUALITY,
    encode_jpeg,
    encode_png,
    save_image,
    store_lossless,
    strip_jpeg_metadata,
)

if TYPE_CHECKING:
    from tryon.config import Settings

__all__ = [
    "ACCEPTED_FORMATS",
    "GARMENT_MIN_SIDE",
    "JPEG_QUALITY",
    "IntakeLimits",
    "NormalizedImage",
    "configure_pillow",
    "decode_mask",
    "encode_jpeg",
    "encode_png",
    "load_image_file",
    "normalize_upload",
    "sniff_format",
    "strip_jpeg_metadata",
]


_MiB = 1024 * 1024

#: garment photos may be smaller than shoppers' photos: product cut-outs are often a few
#: hundred pixels, and the garment is resized to AnyDoor's 224 px reference anyway
GARMENT_MIN_SIDE = 128


@dataclass(frozen=True)
class IntakeLimits:
    """Limits applied to every uploaded image.

    ``max_bytes`` is checked before parsing; ``max_side``/``max_pixels`` on the header
    dimensions before decoding; ``min_side`` on the upright source. ``long_side`` is the
    downscale target for the longest side (``None`` keeps the size); downscaling never takes the
    short side below ``min_side``.
    """

    max_bytes: int = 20 * _MiB
    max_pixels: int = 40_000_000
    max_side: int = 12_000
    min_side: int = 256
    long_side: int | None = 2048

    @classmethod
    def from_settings(cls, settings: Settings) -> IntakeLimits:
        """Limits from ``TRYON_MAX_UPLOAD_BYTES``, ``TRYON_MAX_IMAGE_PIXELS``,
        ``TRYON_MAX_IMAGE_SIDE``, ``TRYON_MIN_IMAGE_SIDE`` and ``TRYON_PHOTO_LONG_SIDE``
        (0 keeps the size)."""
        return cls(
            max_bytes=settings.max_upload_bytes,
            max_pixels=settings.max_image_pixels,
            max_side=settings.max_image_side,
            min_side=settings.min_image_side,
            long_side=settings.photo_long_side or None,
        )

    def for_garments(self) -> IntakeLimits:
        """The same limits with the garment minimum (:data:`GARMENT_MIN_SIDE`) when lower."""
        return replace(self, min_side=min(self.min_side, GARMENT_MIN_SIDE))


@dataclass(frozen=True)
class NormalizedImage:
    """A decoded, upright, metadata-free image and its stored encoding.

    ``rgb``: ``(H, W, 3)`` uint8, RGB order, equal to the pixels of ``encoded`` when decoded.
    ``alpha``: ``(H, W)`` uint8 (255 = opaque) when ``keep_alpha`` was asked and the source had
    a not-all-opaque alpha channel, else ``None``; ``rgb`` then holds the straight (not
    premultiplied) colours. Without a kept alpha, transparent sources are composited on white.
    ``format``: the source format (``"JPEG"``, ``"PNG"`` or ``"WEBP"``).
    ``original_size``: ``(w, h)`` of the source after EXIF orientation, before downscaling.
    ``encoded``: the bytes to store, always lossless against ``rgb``: the uploaded JPEG stream
    with its metadata segments removed when it decodes to exactly ``rgb`` (an upright JPEG that
    was not resized), else PNG (RGBA when ``alpha`` is set). ``content_type`` matches it;
    ``sha256`` is the hex digest of it.
    """

    rgb: NDArray[np.uint8]
    alpha: NDArray[np.uint8] | None
    format: str
    original_size: tuple[int, int]
    encoded: bytes
    content_type: str
    sha256: str

    @property
    def size(self) -> tuple[int, int]:
        """``(w, h)`` of ``rgb``."""
        return int(self.rgb.shape[1]), int(self.rgb.shape[0])


def configure_pillow(limits: IntakeLimits | None = None) -> None:
    """Process-wide Pillow hardening; call once at API and worker start-up.

    Sets ``Image.MAX_IMAGE_PIXELS`` to our pixel limit (never ``None``), keeps
    ``LOAD_TRUNCATED_IMAGES`` off, and turns ``DecompressionBombWarning`` into an error for
    every Pillow call in the process (the intake functions also do this locally).
    """
    lim = limits or IntakeLimits()
    Image.MAX_IMAGE_PIXELS = lim.max_pixels
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    warnings.simplefilter("error", Image.DecompressionBombWarning)


# Importing the intake module already lowers Pillow's bomb threshold to our default limit; a
# deployment with a higher TRYON_MAX_IMAGE_PIXELS calls configure_pillow(limits) at start-up.
if Image.MAX_IMAGE_PIXELS is None or Image.MAX_IMAGE_PIXELS > IntakeLimits.max_pixels:
    Image.MAX_IMAGE_PIXELS = IntakeLimits.max_pixels


# --- entry points ------------------------------------------------------------------------


def normalize_upload(
    data: bytes, limits: IntakeLimits = IntakeLimits(), *, keep_alpha: bool = False
) -> NormalizedImage:
    """Decode untrusted image bytes into a :class:`NormalizedImage`.

    ``keep_alpha``: keep a not-all-opaque alpha channel (garment cut-outs) as ``alpha`` and
    store PNG; otherwise transparency is composited on white. What is stored is lossless (see
    :class:`NormalizedImage`): never a re-encoded JPEG.

    Raises only :class:`~tryon.errors.InvalidImageError` subclasses:
    ``UnsupportedFormatError`` (415), ``ImageTooLargeError`` (413), ``ImageTooSmallError``
    and ``CorruptImageError`` (422).
    """
    data = bytes(data)
    im, fmt, original_size, alpha_kept = decode_image(
        data, limits, keep_alpha=keep_alpha, check_min=True
    )
    if alpha_kept:
        encoded = save_image(im, "PNG")
        arr = np.asarray(im)
        rgb = np.ascontiguousarray(arr[..., :3])
        alpha: NDArray[np.uint8] | None = np.ascontiguousarray(arr[..., 3])
        content_type = "image/png"
    else:
        # lossless: the stored bytes decode to exactly these pixels, so "outside the changed
        # region the result equals the upload (after orientation)" holds against the upload
        rgb = np.ascontiguousarray(np.asarray(im, dtype=np.uint8))
        alpha = None
        encoded, content_type = store_lossless(data, fmt, im, original_size, rgb)
    return NormalizedImage(
        rgb=rgb,
        alpha=alpha,
        format=fmt,
        original_size=original_size,
        encoded=encoded,
        content_type=content_type,
        sha256=hashlib.sha256(encoded).hexdigest(),
    )


def load_image_file(
    path: str | os.PathLike[str],
    limits: IntakeLimits = IntakeLimits(),
    *,
    keep_alpha: bool = False,
) -> NormalizedImage:
    """:func:`normalize_upload` on a file (CLI convenience); never reads past ``max_bytes``.

    Raises :class:`InvalidInputError` when the file cannot be read, else as
    :func:`normalize_upload`.
    """
    try:
        with open(path, "rb") as fh:
            data = fh.read(limits.max_bytes + 1)
    except OSError as exc:
        raise InvalidInputError(f"Cannot read {os.fspath(path)!r}: {exc.strerror or exc}") from None
    return normalize_upload(data, limits, keep_alpha=keep_alpha)


def decode_mask(
    data: bytes, size: tuple[int, int], limits: IntakeLimits = IntakeLimits()
) -> NDArray[np.bool_]:
    """Decode an uploaded mask to a boolean ``(h, w)`` array for an image of ``size = (w, h)``.

    The mask goes through the same safe decode as photos (format allowlist, limits, EXIF
    orientation). Where it has a not-all-opaque alpha channel the alpha is the mask, otherwise its
    grey level; a pixel is set when that value is > 127. The mask may be at ``size`` or at the
    photo's original upright resolution with the same aspect ratio (it is then resized like the
    photo). Raises :class:`InvalidMaskError` when it does not match ``size`` or is empty, and
    InvalidImageError subclasses for bad files.
    """
    w, h = int(size[0]), int(size[1])
    if w < 1 or h < 1:
        raise InvalidInputError(f"size must be positive (w, h), got {size!r}")
    mask_limits = IntakeLimits(
        max_bytes=limits.max_bytes,
        max_pixels=limits.max_pixels,
        max_side=limits.max_side,
        min_side=1,
        long_side=None,
    )
    im, _fmt, (mw, mh), has_alpha = decode_image(
        data, mask_limits, keep_alpha=True, check_min=False
    )
    arr = np.asarray(im)
    plane = arr[..., 3] if has_alpha else np.asarray(im.convert("L"))
    if (mw, mh) != (w, h):
        # same aspect ratio up to the rounding of one pixel of a downscale
        if abs(mw * h - mh * w) > max(mw, mh) or mw < w or mh < h:
            raise InvalidMaskError(
                f"The mask is {mw}x{mh} pixels but the image is {w}x{h}: upload a mask of the "
                "same size as the photo.",
                mask_size=[mw, mh],
                image_size=[w, h],
            )
        plane = np.asarray(
            Image.fromarray(np.ascontiguousarray(plane), "L").resize((w, h), Image.Resampling.BOX)
        )
    mask = plane > 127
    if not mask.any():
        raise InvalidMaskError("The mask is empty: mark the area with white (or opaque) pixels.")
    return mask
