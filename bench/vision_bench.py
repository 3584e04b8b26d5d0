"""Per-photo cost of the pre-flight path on CPU: what the upload's analysis process runs for one
stored photo (decode once at analysis resolution, people, pose, silhouette, verdicts, the
person-mask PNG), plus the garment cut-out. Prints medians of wall time and of this process's
CPU time (the machine is shared: CPU time is the figure that does not depend on the load), and
the peak RSS.

    OMP_NUM_THREADS=1 .venv/bin/python bench/vision_bench.py [--runs 9]

Photos: real photos from tests/data/real_photos (see its SOURCES.md) at 512 px on the long
side and upscaled to 2048 px (the intake's default long side), stored as JPEG (quality 95)
and as PNG (a lossless intake).
"""

from __future__ import annotations

import argparse
import io
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

from tryon.vision.analysis import analyze_photo_json
from tryon.vision.masks import garment_mask

PHOTOS = Path(__file__).resolve().parents[1] / "tests" / "data" / "real_photos"
NAMES = ("skimage_astronaut", "skimage_camera", "p2s_single_cam01_f000", "s2d_f090_side")


def _median_ms(fn: Callable[[], Any], runs: int) -> tuple[float, float, Any]:
    """(median wall ms, median CPU ms, last result)."""
    walls, cpus, out = [], [], None
    for _ in range(runs):
        w0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        walls.append((time.perf_counter() - w0) * 1000)
        cpus.append((time.process_time() - c0) * 1000)
    return statistics.median(walls), statistics.median(cpus), out


def _encode(rgb: np.ndarray, fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    return buf.getvalue()


def _at(rgb: np.ndarray, side: int) -> np.ndarray:
    h, w = rgb.shape[:2]
    s = side / max(h, w)
    interp = cv2.INTER_AREA if s < 1 else cv2.INTER_CUBIC
    return np.asarray(cv2.resize(rgb, (round(w * s), round(h * s)), interpolation=interp))


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
    args = ap.parse_args()

    first = _encode(_at(np.asarray(Image.open(PHOTOS / f"{NAMES[0]}.jpg")), 512), "JPEG")
    w0 = time.perf_counter()
    analyze_photo_json(first)
    print(f"model start-up (first analysis): {(time.perf_counter() - w0) * 1000:.0f} ms")
    print(f"pre-flight = analyze_photo_json(stored bytes, with_person_mask=True); "
          f"median of {args.runs} runs")
    print(f"{'photo':<28}{'side':>6}{'format':>8}{'wall ms':>9}{'cpu ms':>8}  verdicts")
    cpu_by_side: dict[tuple[int, str], list[float]] = {}
    for name in NAMES:
        with Image.open(PHOTOS / f"{name}.jpg") as im:
            rgb = np.asarray(im.convert("RGB"))
        for side in (512, 2048):
            for fmt in ("JPEG", "PNG"):
                blob = _encode(_at(rgb, side), fmt)
                fn = partial(analyze_photo_json, blob, with_person_mask=True)
                wall, cpu, out = _median_ms(fn, args.runs)
                cpu_by_side.setdefault((side, fmt), []).append(cpu)
                usable = sorted(k for k, v in out["verdicts"].items() if v is None)
                print(f"{name:<28}{side:>6}{fmt:>8}{wall:>9.1f}{cpu:>8.1f}  "
                      f"people={out['people']} usable={','.join(usable) or '-'}")
    for (side, fmt), cpus in sorted(cpu_by_side.items()):
        print(f"median CPU over the photos, {side} px {fmt}: {statistics.median(cpus):.1f} ms")
    for side in (512, 1024):
        wall, cpu, gm = _median_ms(partial(garment_mask, _shirt(side)), args.runs)
        print(
            f"garment cut-out (background removal) {side}x{side}: {wall:.1f} ms wall, "
            f"{cpu:.1f} ms CPU, score {gm.score:.3f}"
        )
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS: {peak_mib:.0f} MiB")


if __name__ == "__main__":
    main()
