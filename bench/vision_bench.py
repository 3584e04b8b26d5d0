"""Per-photo cost of the pre-flight on CPU, measured on the real upload path: intake
(``normalize_upload``: EXIF rotation, downscale to the long side, the stored bytes), then what
the API and its analysis process run for the pre-flight. Prints medians of wall time and of this
process's CPU time (the machine is shared: CPU time is the figure that does not depend on the
load), and the peak RSS; plus the garment cut-out.

    OMP_NUM_THREADS=1 .venv/bin/python bench/vision_bench.py [--runs 9]

Uploads, from the real photos in tests/data/real_photos (see its SOURCES.md):

- ``phone``: the photo upscaled to a 4032 px long side (aspect kept: 4032x3024 for a 4:3
  photo, 4032x4032 for the square ones) and written sideways as a JPEG (quality 92) with EXIF
  orientation 6, as a phone does; the intake rotates it and scales it down to the long side
  (512 or 2048 px, ``TRYON_PHOTO_LONG_SIDE``), so it is stored as PNG.
- ``jpeg``: an upright JPEG (quality 95) already at the long side, stored as its own stream.

Pre-flight, two ways on the same stored photo:

- ``now`` (web/api/photos.py): ``analysis_input(intake pixels)`` in the API process (one area
  downscale to 640 px), pickled to the analysis process (the round trip is timed here), then
  ``analyze_photo_input(..., with_person_mask=True)``: nothing is decoded.
- ``decode`` (the path before issue 10.6, still ``analyze_photo_json``): the analysis decodes
  the stored bytes (a JPEG at reduced scale, a PNG in full).
"""

from __future__ import annotations

import argparse
import io
import pickle
import resource
import statistics
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image

from tryon.images import IntakeLimits, NormalizedImage, normalize_upload
from tryon.vision.analysis import analyze_photo_input, analyze_photo_json
from tryon.vision.analysis_input import analysis_input
from tryon.vision.masks import garment_mask
from tryon.vision.pose import PoseEstimator

#: pose-graph runs (PoseEstimator.detect calls): the analysis's cost is mostly these, and
#: their number depends on the photo (second looks and tiles, see tryon/vision/people.py)
GRAPH_RUNS = [0]
_detect = PoseEstimator.detect


def _counted_detect(self: PoseEstimator, *a: Any, **k: Any) -> Any:
    GRAPH_RUNS[0] += 1
    return _detect(self, *a, **k)


PoseEstimator.detect = _counted_detect  # type: ignore[method-assign]

PHOTOS = Path(__file__).resolve().parents[1] / "tests" / "data" / "real_photos"
NAMES = ("skimage_astronaut", "skimage_camera", "p2s_single_cam01_f000", "s2d_f090_side")
PHONE_SIDE = 4032  # the long side of a 12 MP phone photo (4032x3024)


def _median_ms(fn: Callable[[], Any], runs: int) -> tuple[float, float, Any]:
    """(median wall ms, median CPU ms, last result)."""
    walls, cpus, out = [], [], None
    for _ in range(runs):
        w0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        walls.append((time.perf_counter() - w0) * 1000)
        cpus.append((time.process_time() - c0) * 1000)
    return statistics.median(walls), statistics.median(cpus), out


def _phone_jpeg(rgb: np.ndarray) -> bytes:
    """The photo upscaled to a :data:`PHONE_SIDE` px long side (a 12 MP phone's; its aspect
    kept, so the content is the ``jpeg`` upload's) and written sideways with EXIF orientation
    6 (rotate 90 degrees clockwise to view), as a phone does."""
    ih, iw = rgb.shape[:2]
    s = PHONE_SIDE / max(ih, iw)
    upright = Image.fromarray(
        cv2.resize(rgb, (round(iw * s), round(ih * s)), interpolation=cv2.INTER_CUBIC))
    exif = Image.Exif()
    exif[0x0112] = 6
    buf = io.BytesIO()
    upright.transpose(Image.Transpose.ROTATE_90).save(buf, "JPEG", quality=92, exif=exif)
    return buf.getvalue()


def _upright_jpeg(rgb: np.ndarray, side: int) -> bytes:
    h, w = rgb.shape[:2]
    s = side / max(h, w)
    interp = cv2.INTER_AREA if s < 1 else cv2.INTER_CUBIC
    small = cv2.resize(rgb, (round(w * s), round(h * s)), interpolation=interp)
    buf = io.BytesIO()
    Image.fromarray(small).save(buf, "JPEG", quality=95)
    return buf.getvalue()


def _preflight_now(image: NormalizedImage) -> dict[str, Any]:
    """What the upload runs: reduce in the API, pickle across, analyse without a decode."""
    photo = pickle.loads(pickle.dumps(analysis_input(image.rgb)))
    return analyze_photo_input(photo, with_person_mask=True)


def _shirt(side: int) -> np.ndarray:
    img = np.full((side, side, 3), 250, np.uint8)
    s = side / 300
    pts = np.array(
        [[90, 40], [170, 40], [240, 90], [190, 110], [190, 280], [70, 280], [70, 110], [20, 90]]
    )
    cv2.fillPoly(img, [np.round(pts * s).astype(np.int32)], (30, 60, 160))
    return img


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=9)
    ap.add_argument("--intake-runs", type=int, default=3)
    args = ap.parse_args()

    with Image.open(PHOTOS / f"{NAMES[0]}.jpg") as im:
        first = normalize_upload(_upright_jpeg(np.asarray(im.convert("RGB")), 512))
    w0 = time.perf_counter()
    _preflight_now(first)
    print(f"model start-up (first analysis): {(time.perf_counter() - w0) * 1000:.0f} ms")
    print(f"medians of {args.runs} runs (intake: {args.intake_runs}); ms wall / ms CPU")
    print(f"{'photo':<24}{'side':>5}{'upload':>7}{'stored':>15}{'intake':>12}"
          f"{'pre-flight now':>16}{'decode (old)':>14}  verdicts")
    cpu: dict[tuple[int, str, str], list[float]] = {}
    for name in NAMES:
        with Image.open(PHOTOS / f"{name}.jpg") as im:
            rgb = np.asarray(im.convert("RGB"))
        phone = _phone_jpeg(rgb)
        for side in (512, 2048):
            # min_side=1: a tall photo at 512 px has a short side under the 256 px minimum
            limits = IntakeLimits(long_side=side, min_side=1)
            for kind, upload in (("phone", phone), ("jpeg", _upright_jpeg(rgb, side))):
                iw, ic, image = _median_ms(partial(normalize_upload, upload, limits),
                                           args.intake_runs)
                GRAPH_RUNS[0] = 0
                nw, nc, now = _median_ms(partial(_preflight_now, image), args.runs)
                graphs = GRAPH_RUNS[0] // args.runs
                old_fn = partial(analyze_photo_json, image.encoded, with_person_mask=True)
                GRAPH_RUNS[0] = 0
                ow, oc, old = _median_ms(old_fn, args.runs)
                graphs_old = GRAPH_RUNS[0] // args.runs
                assert now["verdicts"] == old["verdicts"], (name, side, kind)
                for path, c in (("intake", ic), ("now", nc), ("decode", oc)):
                    cpu.setdefault((side, kind, path), []).append(c)
                fmt = image.content_type.split("/")[1].upper()
                stored = f"{fmt} {image.size[0]}x{image.size[1]}"
                usable = sorted(k for k, v in now["verdicts"].items() if v is None)
                print(f"{name:<24}{side:>5}{kind:>7}{stored:>15}{iw:>6.0f}/{ic:<5.0f}"
                      f"{nw:>10.0f}/{nc:<5.0f}{ow:>8.0f}/{oc:<5.0f}  "
                      f"graphs={graphs}/{graphs_old} people={now['people']} usable={','.join(usable) or '-'}")
    for (side, kind, path), c in sorted(cpu.items()):
        print(f"median CPU over the photos, {side} px {kind} upload, {path}: "
              f"{statistics.median(c):.1f} ms")
    for side in (512, 1024):
        wall, cpu_ms, gm = _median_ms(partial(garment_mask, _shirt(side)), args.runs)
        print(
            f"garment cut-out (background removal) {side}x{side}: {wall:.1f} ms wall, "
            f"{cpu_ms:.1f} ms CPU, score {gm.score:.3f}"
        )
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS: {peak_mib:.0f} MiB")


if __name__ == "__main__":
    main()
