"""S-9: whatever the bytes, intake raises only InvalidImageError subclasses (Pillow's
``test_fuzzers.py`` idea, with our single boundary as the harness)."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from tryon.errors import InvalidImageError, InvalidInputError
from tryon.images import IntakeLimits, NormalizedImage, decode_mask, normalize_upload

# small limits so mutated images reach the decoder, the orientation and the resize paths
FUZZ_LIMITS = IntakeLimits(max_bytes=256 * 1024, min_side=4, long_side=24)
FUZZ = settings(
    max_examples=1000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
MUTATE = settings(
    max_examples=400,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def _seed(fmt: str, mode: str) -> bytes:
    rng = np.random.default_rng(7)
    arr = (rng.random((32, 40, 4)) * 255).astype(np.uint8)
    im = Image.fromarray(arr, "RGBA").convert(mode)
    buf = io.BytesIO()
    exif = Image.Exif()
    exif[0x0112] = 6
    im.save(buf, fmt, exif=exif, **({"quality": 80} if fmt == "JPEG" else {}))
    return buf.getvalue()


SEEDS = [
    _seed("PNG", "RGBA"),
    _seed("PNG", "P"),
    _seed("PNG", "L"),
    _seed("JPEG", "RGB"),
    _seed("JPEG", "CMYK"),
    _seed("WEBP", "RGBA"),
    _seed("WEBP", "RGB"),
]
MAGICS = [
    b"\xff\xd8\xff",
    b"\x89PNG\r\n\x1a\n",
    b"RIFF\x00\x00\x00\x00WEBP",
    b"RIFF\xff\xff\x00\x00WEBPVP8X",
]


def check(data: bytes, keep_alpha: bool = False) -> None:
    try:
        out = normalize_upload(data, FUZZ_LIMITS, keep_alpha=keep_alpha)
    except InvalidImageError:
        return
    assert isinstance(out, NormalizedImage)
    assert out.rgb.ndim == 3 and out.rgb.shape[2] == 3 and out.rgb.dtype == np.uint8
    assert max(out.rgb.shape[:2]) <= 24 or min(out.rgb.shape[:2]) <= 4


def test_seeds_are_valid() -> None:
    for data in SEEDS:
        out = normalize_upload(data, FUZZ_LIMITS, keep_alpha=True)
        assert out.original_size == (32, 40)  # EXIF orientation 6 applied


@FUZZ
@given(st.binary(max_size=4096))
def test_random_bytes(data: bytes) -> None:
    check(data)


@FUZZ
@given(st.sampled_from(MAGICS), st.binary(max_size=2048))
def test_magic_prefixed_bytes(magic: bytes, tail: bytes) -> None:
    check(magic + tail)


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(SEEDS)))
    n = len(data)
    for _ in range(draw(st.integers(0, 8))):
        pos = draw(st.integers(0, n - 1))
        data[pos] = draw(st.integers(0, 255))
    if draw(st.booleans()):
        pos = draw(st.integers(0, n))
        data[pos:pos] = draw(st.binary(min_size=1, max_size=64))
    if draw(st.booleans()):
        data = data[: draw(st.integers(0, len(data)))]
    return bytes(data)


@MUTATE
@given(mutated(), st.booleans())
def test_mutated_valid_images(data: bytes, keep_alpha: bool) -> None:
    check(data, keep_alpha)


def _png_with_ihdr(w: int, h: int, depth: int, color: int, interlace: int, body: bytes) -> bytes:
    def chunk(kind: bytes, payload: bytes) -> bytes:
        crc = zlib.crc32(kind + payload)
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", w, h, depth, color, 0, 0, interlace)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(body))
        + chunk(b"IEND", b"")
    )


@MUTATE
@given(
    st.integers(0, 2**32 - 1) | st.integers(0, 64),
    st.integers(0, 2**32 - 1) | st.integers(0, 64),
    st.sampled_from([1, 2, 4, 8, 16, 3, 0, 255]),
    st.sampled_from([0, 2, 3, 4, 6, 1, 7]),
    st.integers(0, 2),
    st.binary(max_size=512),
)
def test_png_with_valid_crc_and_odd_header(
    w: int, h: int, depth: int, color: int, interlace: int, body: bytes
) -> None:
    """CRCs are correct, so the fields themselves reach Pillow's header and pixel code."""
    check(_png_with_ihdr(w, h, depth, color, interlace, body))


@MUTATE
@given(mutated(), st.integers(1, 64), st.integers(1, 64))
def test_mask_decoder(data: bytes, w: int, h: int) -> None:
    try:
        mask = decode_mask(data, (w, h), FUZZ_LIMITS)
    except (InvalidImageError, InvalidInputError):
        return
    assert mask.shape == (h, w) and mask.dtype == np.bool_


@pytest.mark.parametrize("seed", range(len(SEEDS)))
def test_every_single_byte_truncation_of_small_seeds(seed: int) -> None:
    data = SEEDS[seed]
    for cut in range(0, len(data), max(1, len(data) // 200)):
        check(data[:cut])
