"""Issue 11.10: shopper photos are kept losslessly at intake. Before, every upload was
re-encoded as JPEG q95, so "outside the changed region the result is pixel-exact" held only
against that copy (most pixels differed from the upload by a few levels)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageOps

from tryon.images import normalize_upload, strip_jpeg_metadata

MARKERS = {"APP1": b"\xff\xe1", "APP2": b"\xff\xe2", "APP13": b"\xff\xed", "COM": b"\xff\xfe"}


def photo(w: int = 400, h: int = 300, seed: int = 0) -> np.ndarray:
    """Noisy, so a re-encode cannot reproduce it by accident."""
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def jpeg_with_metadata(arr: np.ndarray, orientation: int = 1, **kw: object) -> bytes:
    im = Image.fromarray(arr)
    exif = Image.Exif()
    exif[0x0112] = orientation
    exif[0x010F] = "CameraMaker"
    exif[0x8825] = {1: "N", 2: (52.0, 31.0, 12.0)}  # GPS: where the shopper lives
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=87, exif=exif.tobytes(), comment=b"shot at home",
            icc_profile=b"\x00" * 128, **kw)
    return buf.getvalue()


def decoded(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("RGB"))


@pytest.mark.parametrize("progressive", [False, True])
def test_upright_jpeg_is_stored_as_uploaded_without_metadata(progressive: bool) -> None:
    data = jpeg_with_metadata(photo(), progressive=progressive)
    for name, marker in MARKERS.items():
        if name != "APP13":
            assert marker in data, name
    out = normalize_upload(data)
    assert out.content_type == "image/jpeg"
    # the pixels are the upload's, exactly (the old q95 re-encode changed most of them)
    assert np.array_equal(out.rgb, decoded(data))
    assert np.array_equal(decoded(out.encoded), decoded(data))
    with Image.open(io.BytesIO(out.encoded)) as back:
        assert not back.getexif() and "icc_profile" not in back.info
        assert "comment" not in back.info
    head = out.encoded[:out.encoded.index(b"\xff\xda")]
    for name, marker in MARKERS.items():
        assert marker not in head, name
    assert b"CameraMaker" not in out.encoded and b"shot at home" not in out.encoded


def test_rotated_jpeg_is_stored_as_png_equal_to_the_upright_upload() -> None:
    data = jpeg_with_metadata(photo(), orientation=6)
    out = normalize_upload(data)
    assert out.content_type == "image/png"
    with Image.open(io.BytesIO(data)) as im:
        upright = np.asarray(ImageOps.exif_transpose(im).convert("RGB"))
    assert out.rgb.shape == upright.shape
    assert np.array_equal(out.rgb, upright)
    assert np.array_equal(decoded(out.encoded), upright)


def test_png_and_webp_are_kept_exactly() -> None:
    arr = photo(seed=1)
    for fmt, kw in (("PNG", {}), ("WEBP", {"lossless": True})):
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, fmt, **kw)
        out = normalize_upload(buf.getvalue())
        assert out.content_type == "image/png"
        assert np.array_equal(out.rgb, arr) and np.array_equal(decoded(out.encoded), arr)


def test_strip_drops_trailers_and_refuses_malformed_streams() -> None:
    data = jpeg_with_metadata(photo(64, 64))
    stripped = strip_jpeg_metadata(data + b"TRAILER-with-secrets")
    assert stripped is not None and stripped.endswith(b"\xff\xd9")
    assert b"TRAILER" not in stripped
    assert np.array_equal(decoded(stripped), decoded(data))
    assert strip_jpeg_metadata(b"") is None
    assert strip_jpeg_metadata(b"\x89PNG\r\n") is None
    assert strip_jpeg_metadata(data[:200]) is None  # truncated inside the headers
    assert strip_jpeg_metadata(data[:-300]) is None  # no end marker


def test_garment_without_alpha_is_lossless_too() -> None:
    arr = photo(seed=2)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG")
    out = normalize_upload(buf.getvalue(), keep_alpha=True)
    assert out.alpha is None and out.content_type == "image/png"
    assert np.array_equal(out.rgb, arr)
