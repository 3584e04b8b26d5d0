"""Steps 2-6 of the intake contract in :mod:`tryon.images`: sniff the format from the magic
bytes, check the header against the limits, decode frame 0 (a JPEG at reduced scale), apply
the EXIF orientation and rebuild the image from pixels only.

:func:`decode_image` is the one place Pillow parses untrusted bytes; it raises only
:class:`~tryon.errors.InvalidImageError` subclasses. Callers go through the entry points of
:mod:`tryon.images`, which also lower Pillow's bomb threshold on import.
"""

from __future__ import annotations

import io
import logging
import struct
import warnings
import zlib
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageFile, JpegImagePlugin

from tryon.errors import (
    CorruptImageError,
    ImageTooLargeError,
    ImageTooSmallError,
    InvalidImageError,
    UnsupportedFormatError,
)

if TYPE_CHECKING:
    from tryon.images import IntakeLimits

log = logging.getLogger(__name__)

#: Formats we decode, as Pillow names them (also the ``formats=`` allowlist passed to Pillow).
ACCEPTED_FORMATS: tuple[str, ...] = ("JPEG", "PNG", "WEBP")
_ACCEPTED_TEXT = "JPEG, PNG or WebP"

# Everything Pillow's decoders are known to raise on hostile input (Pillow's own fuzz harness
# accepts the same family). Caught only around Pillow calls, so a bug in our code still surfaces.
DECODER_ERRORS: tuple[type[BaseException], ...] = (
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
    except DECODER_ERRORS:
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


def decode_image(
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
    except DECODER_ERRORS as exc:
        log.info("corrupt %s upload: %s: %s", fmt, type(exc).__name__, exc)
        raise CorruptImageError(
            f"The {fmt} file is truncated or corrupt: upload it again."
        ) from None
    mode = "RGBA" if alpha_kept else "RGB"
    return Image.fromarray(arr, mode), fmt, upright, alpha_kept
