"""Safe image intake: a corpus generated here (nothing copied), replayed through the one entry
point. Covers reliability.md S-2..S-5, S-7, S-8 and the conversion contract."""

from __future__ import annotations

import io
import struct
import subprocess
import sys
import warnings
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import EpsImagePlugin, ExifTags, Image, ImageCms, PngImagePlugin

from tryon import images
from tryon.config import Settings
from tryon.errors import (
    CorruptImageError,
    ImageTooLargeError,
    ImageTooSmallError,
    InvalidImageError,
    InvalidInputError,
    InvalidMaskError,
    UnsupportedFormatError,
)
from tryon.images import (
    IntakeLimits,
    decode_mask,
    encode_jpeg,
    encode_png,
    load_image_file,
    normalize_upload,
    sniff_format,
)

SMALL = IntakeLimits(min_side=8)


# --- corpus builders ---------------------------------------------------------------------


def upright(w: int = 320, h: int = 256) -> np.ndarray:
    """An asymmetric picture: four flat quadrants (JPEG-friendly) and a marker block."""
    a = np.zeros((h, w, 3), np.uint8)
    a[: h // 2, : w // 2] = (220, 30, 30)
    a[: h // 2, w // 2 :] = (30, 200, 30)
    a[h // 2 :, : w // 2] = (30, 30, 220)
    a[h // 2 :, w // 2 :] = (230, 230, 40)
    a[: h // 8, : w // 8] = (255, 255, 255)
    return a


def save(arr_or_im: np.ndarray | Image.Image, fmt: str, **kw: object) -> bytes:
    im = arr_or_im if isinstance(arr_or_im, Image.Image) else Image.fromarray(arr_or_im)
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def exif_with(orientation: int) -> Image.Exif:
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = orientation
    exif[ExifTags.Base.Make] = "SecretPhoneCo"
    gps = exif.get_ifd(ExifTags.IFD.GPSInfo)
    gps[ExifTags.GPS.GPSLatitudeRef] = "N"
    gps[ExifTags.GPS.GPSLatitude] = (48.0, 51.0, 24.0)
    gps[ExifTags.GPS.GPSLongitudeRef] = "E"
    gps[ExifTags.GPS.GPSLongitude] = (2.0, 21.0, 3.0)
    return exif


# Stored pixels for each EXIF orientation, written from the EXIF spec's definition of where the
# 0th row and column go (not from Pillow's table), so the test checks Pillow and our use of it.
STORED = {
    1: lambda u: u,
    2: lambda u: u[:, ::-1],
    3: lambda u: u[::-1, ::-1],
    4: lambda u: u[::-1, :],
    5: lambda u: u.transpose(1, 0, 2),
    6: lambda u: np.rot90(u, 1),
    7: lambda u: u[::-1, ::-1].transpose(1, 0, 2),
    8: lambda u: np.rot90(u, -1),
}

XMP = (
    b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/'
    b'22-rdf-syntax-ns#"><rdf:Description xmlns:dc="http://purl.org/dc/elements/1.1/" '
    b'dc:creator="SecretAuthor"/></rdf:RDF></x:xmpmeta>'
)
SRGB_ICC = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
SECRETS = [b"SecretPhoneCo", b"SecretAuthor", b"SecretComment", b"Exif\x00\x00", b"GPS"]


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def header_only_png(w: int, h: int) -> bytes:
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IEND", b"")


def assert_no_metadata(encoded: bytes) -> None:
    with Image.open(io.BytesIO(encoded)) as im:
        assert len(im.getexif()) == 0
        leftover = set(im.info) - {"jfif", "jfif_version", "jfif_unit", "jfif_density", "dpi"}
        assert not leftover, leftover
    for secret in SECRETS + [b"ICC_PROFILE", b"http://ns.adobe.com/xap", b"iCCP", b"tEXt", b"iTXt"]:
        assert secret not in encoded, secret


# --- accepted formats and conversions ----------------------------------------------------


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_accepted_formats_decode_to_rgb(fmt: str) -> None:
    u = upright()
    data = save(u, fmt, **({"lossless": True} if fmt == "WEBP" else {}))
    assert sniff_format(data) == fmt
    out = normalize_upload(data)
    assert out.format == fmt
    assert out.rgb.shape == (256, 320, 3) and out.rgb.dtype == np.uint8
    assert out.original_size == (320, 256)
    # stored losslessly: the JPEG stream as uploaded (metadata removed), anything else as PNG
    stored = "JPEG" if fmt == "JPEG" else "PNG"
    assert out.alpha is None and out.content_type == f"image/{stored.lower()}"
    assert np.abs(out.rgb.astype(int) - u).mean() < 3
    with Image.open(io.BytesIO(data)) as up:
        assert np.array_equal(np.asarray(up.convert("RGB")), out.rgb)
    # rgb is exactly what the stored bytes decode to
    with Image.open(io.BytesIO(out.encoded)) as back:
        assert back.format == stored
        assert np.array_equal(np.asarray(back.convert("RGB")), out.rgb)
    import hashlib

    assert out.sha256 == hashlib.sha256(out.encoded).hexdigest()


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_applied_once_and_metadata_stripped(orientation: int) -> None:
    u = upright()
    stored = np.ascontiguousarray(STORED[orientation](u))
    data = save(
        stored,
        "JPEG",
        quality=95,
        exif=exif_with(orientation),
        icc_profile=SRGB_ICC,
        comment=b"SecretComment",
        xmp=XMP,
    )
    with Image.open(io.BytesIO(data)) as src:  # the fixture really carries what we strip
        assert src.getexif().get_ifd(ExifTags.IFD.GPSInfo)
        assert "icc_profile" in src.info and "xmp" in src.info and "comment" in src.info
    out = normalize_upload(data)
    assert out.rgb.shape == u.shape
    assert out.original_size == (320, 256)
    assert np.abs(out.rgb.astype(int) - u).mean() < 4
    assert tuple(out.rgb[5, 5]) > (240, 240, 240)  # the white marker is top-left
    assert_no_metadata(out.encoded)


@pytest.mark.parametrize("orientation", [3, 6])
def test_exif_orientation_in_png_and_webp_exact(orientation: int) -> None:
    u = upright()
    stored = np.ascontiguousarray(STORED[orientation](u))
    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", "SecretComment")
    info.add_itxt("XML:com.adobe.xmp", XMP.decode())
    for data in (
        save(stored, "PNG", exif=exif_with(orientation), pnginfo=info, icc_profile=SRGB_ICC),
        save(stored, "WEBP", lossless=True, exif=exif_with(orientation), xmp=XMP),
    ):
        out = normalize_upload(data, IntakeLimits(long_side=None), keep_alpha=True)
        assert out.rgb.shape == u.shape
        assert np.abs(out.rgb.astype(int) - u).mean() < 2.5
        assert_no_metadata(out.encoded)


def test_cmyk_jpeg_converts_to_rgb() -> None:
    u = upright()
    data = save(Image.fromarray(u).convert("CMYK"), "JPEG", quality=95)
    with Image.open(io.BytesIO(data)) as src:
        assert src.mode == "CMYK"
    out = normalize_upload(data)
    assert out.rgb.shape == u.shape
    assert np.abs(out.rgb.astype(int) - u).mean() < 6


def test_grayscale_and_16bit() -> None:
    g = np.tile(np.arange(256, dtype=np.uint8), (256, 1))
    out = normalize_upload(save(g, "PNG"))
    assert out.rgb.shape == (256, 256, 3)
    assert np.abs(out.rgb[..., 0].astype(int) - g).max() <= 3
    # 16-bit: high byte kept, not clipped to 255 (a naive convert would make it all white)
    g16 = (g.astype(np.uint16) * 257).astype(np.uint16)
    data = save(Image.fromarray(g16), "PNG")
    with Image.open(io.BytesIO(data)) as src:
        assert src.mode.startswith("I")
    out16 = normalize_upload(data)
    assert np.abs(out16.rgb[..., 1].astype(int) - g).max() <= 3


def test_palette_with_transparency_and_la_rgba() -> None:
    u = upright()
    rgba = np.dstack([u, np.full(u.shape[:2], 255, np.uint8)])
    rgba[:, :100, 3] = 0  # a cut-out: left strip transparent
    rgba[:, :100, :3] = (0, 0, 0)
    # dropped alpha: composited on white, stored as PNG (lossless)
    out = normalize_upload(save(rgba, "PNG"))
    assert out.alpha is None and out.content_type == "image/png"
    assert out.rgb[:, :90].min() > 245
    # kept alpha: PNG with exact pixels
    kept = normalize_upload(save(rgba, "PNG"), keep_alpha=True)
    assert kept.content_type == "image/png" and kept.alpha is not None
    assert np.array_equal(kept.alpha, rgba[..., 3])
    assert np.array_equal(kept.rgb[:, 100:], u[:, 100:])
    with Image.open(io.BytesIO(kept.encoded)) as back:
        assert back.mode == "RGBA"
    # an all-opaque alpha is not "meaningful"
    opaque = normalize_upload(
        save(np.dstack([u, np.full(u.shape[:2], 255, np.uint8)]), "PNG"), keep_alpha=True
    )
    assert opaque.alpha is None and opaque.content_type == "image/png"
    # palette with a transparent index
    p = Image.fromarray(u).convert("P", palette=Image.Palette.ADAPTIVE, colors=8)
    idx = int(np.asarray(p)[0, -1])
    pdata = save(p, "PNG", transparency=idx)
    pk = normalize_upload(pdata, keep_alpha=True)
    assert pk.alpha is not None and pk.alpha[0, -1] == 0 and pk.alpha[-1, 0] == 255
    # LA
    la = Image.merge("LA", [Image.fromarray(u[..., 0]), Image.fromarray(rgba[..., 3])])
    lk = normalize_upload(save(la, "PNG"), keep_alpha=True)
    assert lk.alpha is not None and np.array_equal(lk.alpha, rgba[..., 3])
    assert np.array_equal(lk.rgb[..., 0], lk.rgb[..., 2])


def test_downscale_keeps_aspect_and_min_side() -> None:
    u = np.zeros((1000, 3000, 3), np.uint8)
    u[:, :1500] = 200
    out = normalize_upload(save(u, "PNG"), IntakeLimits(long_side=600))
    assert out.rgb.shape == (256, 768, 3)  # short side would be 200 < min_side 256
    assert out.original_size == (3000, 1000)
    out2 = normalize_upload(save(u, "JPEG"), IntakeLimits(long_side=1200, min_side=100))
    assert out2.rgb.shape == (400, 1200, 3)  # JPEG draft path: exact target still
    assert np.abs(out2.rgb[:, :590].astype(int) - 200).max() < 8
    assert out2.rgb[:, 610:].max() < 8
    keep = normalize_upload(save(u, "PNG"), IntakeLimits(long_side=None))
    assert keep.rgb.shape == u.shape


def test_downscale_after_rotation() -> None:
    u = np.zeros((600, 300, 3), np.uint8)  # portrait, upright
    u[:100] = 255
    data = save(np.ascontiguousarray(STORED[6](u)), "JPEG", exif=exif_with(6))
    out = normalize_upload(data, IntakeLimits(long_side=300, min_side=64))
    assert out.rgb.shape == (300, 150, 3)
    assert out.original_size == (300, 600)
    assert out.rgb[:40].min() > 230 and out.rgb[-100:].max() < 30


def test_too_small() -> None:
    with pytest.raises(ImageTooSmallError) as ei:
        normalize_upload(save(upright(300, 200), "PNG"))
    assert ei.value.http_status == 422 and "256" in ei.value.message


def test_animated_png_and_webp_use_frame_zero() -> None:
    red = Image.new("RGB", (300, 300), (255, 0, 0))
    blue = Image.new("RGB", (300, 300), (0, 0, 255))
    for fmt, kw in (("PNG", {}), ("WEBP", {"lossless": True})):
        data = save(red, fmt, save_all=True, append_images=[blue], duration=100, **kw)
        with Image.open(io.BytesIO(data)) as src:
            assert getattr(src, "n_frames", 1) == 2
        out = normalize_upload(data)
        assert tuple(np.median(out.rgb.reshape(-1, 3), axis=0)) == pytest.approx((254, 0, 0), abs=2)


# --- rejected formats (S-2, S-7, S-8) ----------------------------------------------------

EPS = (
    b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 300 300\n"
    b"/Helvetica findfont 12 scalefont setfont 10 10 moveto (x) show showpage\n%%EOF\n"
)
SVG = (
    b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg" width="300" height="300">'
    b"<script>alert(1)</script><rect width='300' height='300'/></svg>"
)
HTML = b"<!DOCTYPE html><html><body><script>alert(1)</script></body></html>"
HEIC = b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + b"\x00" * 200


def _zip_bytes() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("payload.js", "alert(1)")
    return buf.getvalue()


def rejected_corpus() -> dict[str, bytes]:
    u = upright(300, 300)
    corpus = {
        "eps": EPS,
        "eps_binary_header": b"\xc5\xd0\xd3\xc6" + b"\x00" * 26 + EPS,
        "svg": SVG,
        "svg_no_decl": SVG.split(b"\n", 1)[1],
        "html": HTML,
        "heic": HEIC,
        "avif": b"\x00\x00\x00\x1cftypavif\x00\x00\x00\x00avifmif1miaf" + b"\x00" * 100,
        "zip": _zip_bytes(),
        "tiff": save(u, "TIFF"),
        "pdf": save(u, "PDF"),
        "gif": save(u, "GIF"),
        "bmp": save(u, "BMP"),
        "jpeg2000": save(u, "JPEG2000"),
        "text": b"hello",
        "one_byte": b"\xff",
        "jpeg_magic_short": b"\xff\xd8",
        "riff_not_webp": b"RIFF\x10\x00\x00\x00WAVEfmt " + b"\x00" * 16,
    }
    return corpus


@pytest.mark.parametrize("name", sorted(rejected_corpus()))
def test_rejected_formats_are_415_naming_accepted(name: str, tmp_path: Path) -> None:
    data = rejected_corpus()[name]
    path = tmp_path / f"{name}.jpg"  # renamed .jpg: the name must not matter
    path.write_bytes(data)
    with pytest.raises(UnsupportedFormatError) as ei:
        load_image_file(path)
    assert ei.value.http_status == 415 and ei.value.code == "unsupported_format"
    assert "JPEG, PNG or WebP" in ei.value.message
    with pytest.raises(UnsupportedFormatError):
        sniff_format(data)


def test_heic_message_names_heic() -> None:
    with pytest.raises(UnsupportedFormatError) as ei:
        normalize_upload(HEIC)
    assert "HEIC" in ei.value.message and ei.value.details["detected"] == "HEIC"


def test_ghostscript_never_invoked(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []

    def spy(*args: object, **kwargs: object) -> None:
        calls.append("called")
        raise AssertionError("Ghostscript reached")

    monkeypatch.setattr(EpsImagePlugin, "Ghostscript", spy)
    monkeypatch.setattr(EpsImagePlugin, "has_ghostscript", lambda: True)
    monkeypatch.setattr(EpsImagePlugin.EpsImageFile, "_open", spy)
    # the spy is live: the EPS parser would reach it without an allowlist
    with pytest.raises(AssertionError):
        Image.open(io.BytesIO(EPS)).load()
    calls.clear()
    for data in (EPS, b"\xc5\xd0\xd3\xc6" + b"\x00" * 26 + EPS, b"\xff\xd8\xff" + EPS):
        with pytest.raises(InvalidImageError):
            normalize_upload(data)
    assert calls == []


def test_open_is_called_with_the_allowlist(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[object] = []
    real_open = Image.open

    def spy_open(fp: object, mode: str = "r", formats: object = None) -> Image.Image:
        seen.append(formats)
        return real_open(fp, mode, formats)

    monkeypatch.setattr(images.Image, "open", spy_open)
    normalize_upload(save(upright(), "PNG"))
    # the upload is opened as PNG only (it is stored as PNG: nothing to read back)
    assert seen == [["PNG"]]


# --- size limits and bombs (S-3) ---------------------------------------------------------


def test_bytes_over_limit_rejected_before_decode(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(images.Image, "open", lambda *a, **k: pytest.fail("decoded"))
    with pytest.raises(ImageTooLargeError) as ei:
        normalize_upload(b"\xff\xd8\xff" + b"\x00" * 2000, IntakeLimits(max_bytes=1000))
    assert ei.value.http_status == 413


def test_load_image_file_reads_at_most_the_limit(tmp_path: Path) -> None:
    path = tmp_path / "big.png"
    path.write_bytes(save(upright(), "PNG") + b"\x00" * 5000)
    with pytest.raises(ImageTooLargeError):
        load_image_file(path, IntakeLimits(max_bytes=1000))
    with pytest.raises(InvalidInputError):
        load_image_file(tmp_path / "missing.png")


@pytest.mark.parametrize(
    ("w", "h"),
    [(100_000, 100_000), (13_000, 300), (300, 13_000), (7_000, 7_000), (2**31 - 1, 2**31 - 1)],
)
def test_header_only_bombs(w: int, h: int, monkeypatch: pytest.MonkeyPatch) -> None:
    loads: list[int] = []
    real_load = PngImagePlugin.PngImageFile.load

    def spy_load(self: PngImagePlugin.PngImageFile) -> object:
        loads.append(1)
        return real_load(self)

    monkeypatch.setattr(PngImagePlugin.PngImageFile, "load", spy_load)
    with pytest.raises(ImageTooLargeError) as ei:
        normalize_upload(header_only_png(w, h))
    assert ei.value.http_status == 413
    assert loads == []  # rejected from the header, before any pixel decode


def test_header_only_bomb_low_memory_in_subprocess() -> None:
    code = (
        "import sys\n"
        "from tests.tryon.test_images import header_only_png\n"
        "from tryon.images import normalize_upload\n"
        "from tryon.errors import ImageTooLargeError\n"
        "try:\n    normalize_upload(header_only_png(100000, 100000))\n"
        "except ImageTooLargeError:\n    pass\n"
        "else:\n    sys.exit('accepted')\n"
        # VmHWM is this process's own peak; ru_maxrss would include the forking parent's RSS
        "print([l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM')][0])\n"
    )
    root = Path(__file__).resolve().parents[2]
    res = subprocess.run(
        [sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=120
    )
    assert res.returncode == 0, res.stderr
    assert int(res.stdout.strip().splitlines()[-1]) < 400 * 1024  # KiB; a decode needs 30 GB


def test_decompression_bomb_warning_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pillow's own threshold (monkeypatched low, as Pillow's tests do) also maps to 413."""
    data = save(upright(64, 64), "PNG")
    before = list(warnings.filters)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 64 * 64 - 1)  # warning zone
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # even a caller that ignores warnings gets the error
        with pytest.raises(ImageTooLargeError):
            normalize_upload(data, SMALL)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 64 * 64 // 3)  # error zone
    with pytest.raises(ImageTooLargeError):
        normalize_upload(data, SMALL)
    assert warnings.filters == before  # the filter is local to the decode


def test_max_image_pixels_never_none(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)
    normalize_upload(save(upright(), "PNG"))
    assert Image.MAX_IMAGE_PIXELS == IntakeLimits().max_pixels


def test_configure_pillow_sets_process_wide_hardening(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)
    with warnings.catch_warnings():
        images.configure_pillow(IntakeLimits(max_pixels=1234))
        assert Image.MAX_IMAGE_PIXELS == 1234
        with pytest.raises(Image.DecompressionBombWarning):
            warnings.warn("x", Image.DecompressionBombWarning, stacklevel=1)


# --- truncation and polyglots (S-5) -----------------------------------------------------


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_truncated_files_are_corrupt(fmt: str) -> None:
    rng = np.random.default_rng(1)
    noisy = (rng.random((300, 300, 3)) * 255).astype(np.uint8)  # noise: pixel data dominates
    data = save(noisy, fmt)
    cuts = sorted({*range(0, 64, 3), *np.linspace(64, len(data) * 0.9, 25).astype(int)})
    for cut in cuts:
        with pytest.raises(InvalidImageError) as ei:
            normalize_upload(data[:cut])
        if cut >= 16:
            assert isinstance(ei.value, CorruptImageError), (cut, ei.value)
    # near the end (only trailer bytes lost) the result may decode; it must never be another type
    for cut in range(len(data) - 24, len(data)):
        try:
            normalize_upload(data[:cut])
        except InvalidImageError:
            pass


def test_empty_file() -> None:
    with pytest.raises(CorruptImageError):
        normalize_upload(b"")


def test_jpeg_with_zip_appended_and_script_comment() -> None:
    zip_payload = _zip_bytes()
    script = b"<script>alert(document.cookie)</script>"
    base = save(upright(), "JPEG", comment=script)
    assert script in base
    polyglot = base + zip_payload
    out = normalize_upload(polyglot)
    assert script not in out.encoded and b"<script" not in out.encoded
    assert zip_payload not in out.encoded and b"PK\x03\x04" not in out.encoded
    assert b"payload.js" not in out.encoded
    html_tail = normalize_upload(save(upright(), "PNG") + HTML)
    assert b"<html" not in html_tail.encoded.lower()


# --- masks -------------------------------------------------------------------------------


def test_decode_mask_gray_alpha_and_resize() -> None:
    m = np.zeros((200, 300), np.uint8)
    m[50:150, 100:200] = 255
    got = decode_mask(save(m, "PNG"), (300, 200))
    assert got.dtype == np.bool_ and got.shape == (200, 300)
    assert np.array_equal(got, m > 127)
    # alpha channel is the mask when present (colour ignored)
    rgba = np.zeros((200, 300, 4), np.uint8)
    rgba[..., 3] = m
    assert np.array_equal(decode_mask(save(rgba, "PNG"), (300, 200)), m > 127)
    # threshold is > 127
    edge = np.full((10, 10), 127, np.uint8)
    edge[0, 0] = 128
    assert decode_mask(save(edge, "PNG"), (10, 10)).sum() == 1
    # a mask at the photo's original resolution is scaled to the normalized size
    big = np.kron(m, np.ones((4, 4), np.uint8))
    scaled = decode_mask(save(big, "PNG"), (300, 200))
    assert np.array_equal(scaled, m > 127)
    # JPEG masks work (grey level)
    assert decode_mask(save(m, "JPEG", quality=95), (300, 200))[100, 150]


def test_decode_mask_errors() -> None:
    m = np.zeros((200, 300), np.uint8)
    m[50:150, 100:200] = 255
    with pytest.raises(InvalidMaskError) as ei:
        decode_mask(save(m, "PNG"), (300, 199 * 2))
    assert ei.value.http_status == 422 and "300x200" in ei.value.message
    with pytest.raises(InvalidMaskError):
        decode_mask(save(m, "PNG"), (600, 400))  # a smaller mask is not upscaled
    with pytest.raises(InvalidMaskError):
        decode_mask(save(np.zeros((20, 20), np.uint8), "PNG"), (20, 20))
    with pytest.raises(UnsupportedFormatError):
        decode_mask(SVG, (300, 200))
    with pytest.raises(CorruptImageError):
        decode_mask(save(m, "PNG")[:300], (300, 200))
    with pytest.raises(ImageTooLargeError):
        decode_mask(header_only_png(100_000, 100_000), (300, 200))


# --- encoders and settings ---------------------------------------------------------------


def test_encoders_roundtrip_and_validate() -> None:
    u = upright()
    png = encode_png(u)
    with Image.open(io.BytesIO(png)) as im:
        assert im.format == "PNG" and np.array_equal(np.asarray(im), u)
    rgba = np.dstack([u, np.full(u.shape[:2], 7, np.uint8)])
    with Image.open(io.BytesIO(encode_png(rgba))) as im:
        assert im.mode == "RGBA" and np.array_equal(np.asarray(im), rgba)
    with Image.open(io.BytesIO(encode_png(u[..., 0]))) as im:
        assert im.mode == "L"
    jpg = encode_jpeg(u, quality=90)
    with Image.open(io.BytesIO(jpg)) as im:
        assert im.format == "JPEG" and im.size == (320, 256)
    assert_no_metadata(jpg)
    with pytest.raises(InvalidInputError):
        encode_png(u.astype(np.float32))  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError):
        encode_jpeg(rgba)
    with pytest.raises(InvalidInputError):
        encode_jpeg(u, quality=0)


def test_limits_from_settings() -> None:
    s = Settings(
        max_upload_bytes=123,
        max_image_pixels=456,
        max_image_side=789,
        min_image_side=10,
        photo_long_side=0,
    )
    lim = IntakeLimits.from_settings(s)
    assert lim == IntakeLimits(
        max_bytes=123, max_pixels=456, max_side=789, min_side=10, long_side=None
    )
    assert IntakeLimits.from_settings(Settings()) == IntakeLimits()


# --- phone photos: JPEG decoded at reduced scale (issue 10) ------------------------------------


def _big_jpeg(w: int, h: int) -> bytes:
    """A plain JPEG of ``w`` x ``h`` pixels (grayscale keeps the test's own memory small)."""
    plane = np.tile(np.linspace(0, 255, w, dtype=np.uint8), (h, 1))
    buf = io.BytesIO()
    Image.fromarray(plane, "L").save(buf, "JPEG", quality=70)
    return buf.getvalue()


def test_fifty_megapixel_jpeg_is_decoded_at_reduced_scale() -> None:
    data = _big_jpeg(8160, 6120)  # 49.9 MP: over the 40 MP limit at full size
    out = normalize_upload(data, IntakeLimits(max_bytes=len(data) + 1))
    assert out.original_size == (8160, 6120)
    assert out.size == (2048, 1536)
    # a PNG of the same size still hits the bomb limit: it cannot decode at reduced scale
    with pytest.raises(ImageTooLargeError):
        normalize_upload(header_only_png(8160, 6120))


def test_huge_jpeg_refused_when_no_downscale_is_asked() -> None:
    data = _big_jpeg(8160, 6120)
    with pytest.raises(ImageTooLargeError) as ei:
        normalize_upload(data, IntakeLimits(max_bytes=len(data) + 1, long_side=None))
    assert "8160x6120" in ei.value.message


def test_fifty_megapixel_jpeg_decode_stays_within_the_memory_bound() -> None:
    code = (
        "import io, sys\n"
        "from tests.tryon.test_images import _big_jpeg\n"
        "data = _big_jpeg(8160, 6120)\n"
        "base = [l.split()[1] for l in open('/proc/self/status') if l.startswith('VmRSS')][0]\n"
        "from tryon.images import IntakeLimits, normalize_upload\n"
        "out = normalize_upload(data, IntakeLimits(max_bytes=len(data) + 1))\n"
        "peak = [l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM')][0]\n"
        "print(base, peak)\n"
    )
    root = Path(__file__).resolve().parents[2]
    res = subprocess.run(
        [sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=300
    )
    assert res.returncode == 0, res.stderr
    base, peak = (int(v) for v in res.stdout.split())
    # a full decode needs 150 MB for RGB; at 1/2 scale it is about 37 MB
    assert peak - base < 120 * 1024, (base, peak)  # KiB


def test_garments_have_their_own_minimum_size() -> None:
    cutout = save(upright(237, 398), "PNG")  # a product cut-out below the photo minimum
    with pytest.raises(ImageTooSmallError):
        normalize_upload(cutout)
    out = normalize_upload(cutout, IntakeLimits().for_garments(), keep_alpha=True)
    assert out.size == (237, 398)
    assert IntakeLimits(min_side=64).for_garments().min_side == 64  # never raises a minimum
    with pytest.raises(ImageTooSmallError):
        normalize_upload(save(upright(100, 398), "PNG"), IntakeLimits().for_garments())
