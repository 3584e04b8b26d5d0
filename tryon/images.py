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
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import struct
import warnings
import zlib
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageFile, JpegImagePlugin

from tryon.errors import (
    CorruptImageError,
    ImageTooLargeError,
    ImageTooSmallError,
    InvalidImageError,
    InvalidInputError,
    InvalidMaskError,
    UnsupportedFormatError,
)

if TYPE_CHECKING:
    from tryon.config import Settings

log = logging.getLogger(__name__)

__all__ = [
    "ACCEPTED_FORMATS",
    "IntakeLimits",
    "NormalizedImage",
    "configure_pillow",
    "decode_mask",
    "encode_jpeg",
    "encode_png",
    "load_image_file",
    "normalize_upload",
    "sniff_format",
]

#: Formats we decode, as Pillow names them (also the ``formats=`` allowlist passed to Pillow).
ACCEPTED_FORMATS: tuple[str, ...] = ("JPEG", "PNG", "WEBP")
_ACCEPTED_TEXT = "JPEG, PNG or WebP"
JPEG_QUALITY = 95

_MiB = 1024 * 1024

# Everything Pillow's decoders are known to raise on hostile input (Pillow's own fuzz harness
# accepts the same family). Caught only around Pillow calls, so a bug in our code still surfaces.
_DECODER_ERRORS: tuple[type[BaseException], ...] = (
    OSError,  # includes UnidentifiedImageError and "image file is truncated"
    SyntaxError,
    ValueError,
    TypeError,
    IndexError,
    KeyError,
    EOFError,
    struct.error,
    zlib.error,
    ZeroDivisionError,
    OverflowError,
    Image.DecompressionBombError,
)

# EXIF Orientation -> the transpose that makes the pixels upright (EXIF 2.32, tag 0x0112).
_ORIENTATION_FIX: dict[int, Image.Transpose] = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


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


# --- sniffing ----------------------------------------------------------------------------


def _describe_unsupported(data: bytes) -> str | None:
    """Best-effort name of a rejected format, for the error message only."""
    head = data[:64]
    stripped = head.lstrip()
    lowered = stripped.lower()
    if len(head) >= 12 and head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand in {b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1"}:
            return "HEIC"
        if brand in {b"avif", b"avis"}:
            return "AVIF"
        return None
    checks: list[tuple[bool, str]] = [
        (head.startswith((b"GIF87a", b"GIF89a")), "GIF"),
        (head.startswith((b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")), "TIFF"),
        (head.startswith(b"%PDF"), "PDF"),
        (head.startswith((b"%!PS", b"\xc5\xd0\xd3\xc6")), "EPS/PostScript"),
        (head.startswith((b"\x00\x00\x00\x0cjP  ", b"\xff\x4f\xff\x51")), "JPEG 2000"),
        (head.startswith(b"BM"), "BMP"),
        (head.startswith((b"PK\x03\x04", b"PK\x05\x06")), "ZIP"),
        (lowered.startswith((b"<svg", b"<?xml")) or b"<svg" in lowered, "SVG"),
        (lowered.startswith((b"<!doctype html", b"<html")), "HTML"),
    ]
    for hit, name in checks:
        if hit:
            return name
    return None


def sniff_format(data: bytes) -> str:
    """Return ``"JPEG"``, ``"PNG"`` or ``"WEBP"`` from the magic bytes of ``data``.

    Raises :class:`UnsupportedFormatError` (415) for anything else, naming the accepted formats.
    """
    if data[:3] == b"\xff\xd8\xff":
        return "JPEG"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "PNG"
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    found = _describe_unsupported(data)
    what = f" ({found})" if found else ""
    raise UnsupportedFormatError(
        f"Unsupported image format{what}: upload a {_ACCEPTED_TEXT} file.",
        accepted=list(ACCEPTED_FORMATS),
        **({"detected": found} if found else {}),
    )


# --- decoding ----------------------------------------------------------------------------


def _check_header_size(
    size: tuple[int, int], limits: IntakeLimits, source: tuple[int, int] | None = None
) -> None:
    """``size``: what will be decoded; ``source``: the file's size when that is larger (a
    JPEG decoded at reduced scale)."""
    w, h = size
    if w > limits.max_side or h > limits.max_side or w * h > limits.max_pixels:
        sw, sh = source or size
        raise ImageTooLargeError(
            f"The image is {sw}x{sh} pixels; the limit is {limits.max_side} pixels per side and "
            f"{limits.max_pixels // 1_000_000} megapixels in total"
            + (f" (it would decode at {w}x{h})." if source and source != size else "."),
            width=sw,
            height=sh,
        )


def _orientation(im: Image.Image) -> int:
    # EXIF is untrusted: an unreadable block means "no orientation", as browsers treat it.
    try:
        value = im.getexif().get(0x0112, 1)
    except _DECODER_ERRORS:
        log.info("unreadable EXIF block ignored")
        return 1
    return value if isinstance(value, int) and value in _ORIENTATION_FIX else 1


def _target_size(size: tuple[int, int], limits: IntakeLimits) -> tuple[int, int]:
    w, h = size
    if limits.long_side is None or max(w, h) <= limits.long_side:
        return size
    scale = max(limits.long_side / max(w, h), limits.min_side / min(w, h))
    if scale >= 1.0:
        return size
    return max(1, round(w * scale)), max(1, round(h * scale))


def _as_8bit(im: Image.Image) -> Image.Image:
    """16/32-bit grayscale -> ``L`` by keeping the high byte (Pillow's convert would clip)."""
    if im.mode in {"I;16", "I;16L", "I;16B", "I;16N", "I"}:
        arr = np.asarray(im).astype(np.int64)
        return Image.fromarray((np.clip(arr, 0, 65535) >> 8).astype(np.uint8), "L")
    return im


def _has_alpha(im: Image.Image) -> bool:
    return im.mode in {"RGBA", "LA", "PA", "RGBa", "La"} or (
        im.mode in {"P", "L", "RGB", "1"} and "transparency" in im.info
    )


def _decode(
    data: bytes, limits: IntakeLimits, *, keep_alpha: bool, check_min: bool
) -> tuple[Image.Image, str, tuple[int, int], bool]:
    """Decode to an upright, resized ``RGB`` or ``RGBA`` image built from pixels only.

    Returns ``(image, format, original_size, alpha_kept)``. Raises only InvalidImageError.
    """
    if len(data) > limits.max_bytes:
        raise ImageTooLargeError(
            f"The file is {len(data)} bytes; the limit is {limits.max_bytes} bytes.",
            bytes=len(data),
        )
    if not data:
        raise CorruptImageError("The file is empty: upload a JPEG, PNG or WebP image.")
    fmt = sniff_format(data)
    if Image.MAX_IMAGE_PIXELS is None:  # someone undid our hardening; never decode without it
        Image.MAX_IMAGE_PIXELS = limits.max_pixels
    try:
        with warnings.catch_warnings():
            # Pillow warns about malformed EXIF/tags in hostile files: noise, not our signal
            warnings.simplefilter("ignore", UserWarning)
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            src: ImageFile.ImageFile
            if fmt == "JPEG":
                # header only; Image.open's bomb check would judge the full size, but a JPEG
                # is decoded at reduced scale (step 2): the limits apply to that size
                src = JpegImagePlugin.JpegImageFile(io.BytesIO(data))
            else:
                src = Image.open(io.BytesIO(data), formats=[fmt])
            im: Image.Image = src
            # 1. header-only checks, before a single pixel is decoded
            src_w, src_h = src.size
            if fmt != "JPEG":
                _check_header_size(src.size, limits)
            if check_min and min(src_w, src_h) < limits.min_side:
                raise ImageTooSmallError(
                    f"The image is {src_w}x{src_h} pixels; the short side must be at least "
                    f"{limits.min_side} pixels.",
                    width=src_w,
                    height=src_h,
                )
            # the target is orientation-independent up to a swap of (w, h)
            target = _target_size((src_w, src_h), limits)
            # 2. JPEG can decode at 1/2, 1/4 or 1/8 scale for free; ask for at least the target.
            # A 50 MP phone photo decodes at 1/2 or 1/4 scale, within the pixel limit.
            if fmt == "JPEG":
                if target != (src_w, src_h):
                    src.draft(src.mode, target)
                _check_header_size(src.size, limits, source=(src_w, src_h))
            # 3. full decode of frame 0 only; truncation raises here. EXIF is read after the
            # load because PNG may carry it after the pixel data.
            src.load()
            orientation = _orientation(src)
            if orientation in {5, 6, 7, 8}:
                upright = (src_h, src_w)
                target = (target[1], target[0])
            else:
                upright = (src_w, src_h)
            if orientation in _ORIENTATION_FIX:
                im = im.transpose(_ORIENTATION_FIX[orientation])
            # 4. colour model: RGB, plus RGBA while a useful alpha may be kept
            im = _as_8bit(im)
            if _has_alpha(im):
                rgba = im.convert("RGBA")
                lowest = np.asarray(rgba.getchannel("A")).min()
                alpha_kept = keep_alpha and int(lowest) < 255
                if alpha_kept:
                    im = rgba
                else:
                    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
                    im = Image.alpha_composite(white, rgba).convert("RGB")
            else:
                alpha_kept = False
                im = im.convert("RGB")
            if im.size != target:
                im = im.resize(target, Image.Resampling.LANCZOS, reducing_gap=3.0)
            # 5. a fresh image from pixels only: nothing from the source's info survives
            arr = np.array(im, dtype=np.uint8)
    except InvalidImageError:
        raise
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
        # Pillow's own threshold (Image.MAX_IMAGE_PIXELS) tripped in the header read
        log.info("decompression bomb rejected: %s", exc)
        raise ImageTooLargeError(
            f"The image has too many pixels; the limit is "
            f"{limits.max_pixels // 1_000_000} megapixels.",
            reason="decompression_bomb",
        ) from None
    except MemoryError:
        raise ImageTooLargeError("The image needs too much memory to decode.") from None
    except _DECODER_ERRORS as exc:
        log.info("corrupt %s upload: %s: %s", fmt, type(exc).__name__, exc)
        raise CorruptImageError(
            f"The {fmt} file is truncated or corrupt: upload it again."
        ) from None
    mode = "RGBA" if alpha_kept else "RGB"
    return Image.fromarray(arr, mode), fmt, upright, alpha_kept


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
    im, fmt, original_size, alpha_kept = _decode(
        data, limits, keep_alpha=keep_alpha, check_min=True
    )
    if alpha_kept:
        encoded = _save(im, "PNG")
        arr = np.asarray(im)
        rgb = np.ascontiguousarray(arr[..., :3])
        alpha: NDArray[np.uint8] | None = np.ascontiguousarray(arr[..., 3])
        content_type = "image/png"
    else:
        # lossless: the stored bytes decode to exactly these pixels, so "outside the changed
        # region the result equals the upload (after orientation)" holds against the upload
        rgb = np.ascontiguousarray(np.asarray(im, dtype=np.uint8))
        alpha = None
        encoded, content_type = _store_lossless(data, fmt, im, original_size, rgb)
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
    im, _fmt, (mw, mh), has_alpha = _decode(data, mask_limits, keep_alpha=True, check_min=False)
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


# --- encoding ----------------------------------------------------------------------------
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
            while j != -1 and j + 1 < n and (data[j + 1] == 0x00 or 0xD0 <= data[j + 1] <= 0xD7
                                             or data[j + 1] == 0xFF):
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
        length = int.from_bytes(data[i + 2:i + 4], "big")
        if length < 2 or i + 2 + length > n:
            return None
        segment = data[i:i + 2 + length]
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


def _store_lossless(data: bytes, fmt: str, im: Image.Image, original_size: tuple[int, int],
                    rgb: NDArray[np.uint8]) -> tuple[bytes, str]:
    """``(bytes, content type)`` to store for the upright RGB image ``im`` (pixels ``rgb``):
    the uploaded JPEG stream without its metadata when it already decodes to exactly ``rgb``
    (not rotated, not resized; checked by decoding it), else PNG."""
    if fmt == "JPEG" and im.size == original_size:
        stripped = strip_jpeg_metadata(data)
        if stripped is not None:
            try:
                with Image.open(io.BytesIO(stripped), formats=["JPEG"]) as back:
                    same = back.size == im.size and np.array_equal(
                        np.asarray(back.convert("RGB"), dtype=np.uint8), rgb)
            except _DECODER_ERRORS:
                same = False
            if same:
                return stripped, "image/jpeg"
    return _save(im, "PNG"), "image/png"




def _save(im: Image.Image, fmt: str) -> bytes:
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
    return _save(Image.fromarray(np.ascontiguousarray(arr), mode), "PNG")


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
