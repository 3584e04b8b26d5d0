"""Per-photo cost of the pre-flight path on CPU: intake, pose, placement, segmentation, and the
garment cut-out. Prints the median of several runs per stage and the process's peak RSS.

    OMP_NUM_THREADS=1 .venv/bin/python bench/vision_bench.py [--runs 7]

Photos: scikit-image's astronaut and camera (public domain), at their size (512) and upscaled
so the long side is 2048 (the intake's default target).
"""

from __future__ import annotations

import argparse
import io
import resource
import statistics
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import cv2
import numpy as np
from PIL import Image
from skimage import data

from tryon.vision.masks import PersonSegmenter, garment_mask
from tryon.vision.placement import compute_placement
from tryon.vision.pose import PoseEstimator

try:
    from tryon.images import normalize_upload
except ImportError:  # intake not present: time decoding only
    normalize_upload = None  # type: ignore[assignment]


def _median_ms(fn: Callable[[], Any], runs: int) -> tuple[float, Any]:
    times, out = [], None
    for _ in range(runs):
        t0 = time.perf_counter()
        out = fn()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times), out


def _jpeg(rgb: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=92)
    return buf.getvalue()


def _photos() -> dict[str, np.ndarray]:
    astro = data.astronaut()
    cam = np.stack([data.camera()] * 3, axis=-1)
    up = lambda im: cv2.resize(im, (2048, 2048), interpolation=cv2.INTER_CUBIC)  # noqa: E731
    return {
        "astronaut 512": astro,
        "camera 512": cam,
        "astronaut 2048": up(astro),
        "camera 2048": up(cam),
    }


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
    ap.add_argument("--runs", type=int, default=7)
    args = ap.parse_args()

    pose_est, seg = PoseEstimator(), PersonSegmenter()
    t0 = time.perf_counter()
    pose_est.estimate(data.astronaut())
    seg.segment(data.astronaut())
    print(
        f"model start-up (first pose + segmentation call): {(time.perf_counter() - t0) * 1000:.0f} ms"
    )
    print(f"median of {args.runs} runs, ms")
    print(f"{'photo':<16}{'intake':>9}{'pose':>9}{'placement':>11}{'segment':>9}{'total':>9}")
    for name, rgb in _photos().items():
        blob = _jpeg(rgb)
        if normalize_upload is not None:
            t_in, norm = _median_ms(partial(normalize_upload, blob), args.runs)
            image = norm.rgb
        else:
            t_in, image = _median_ms(
                lambda b=blob: np.asarray(Image.open(io.BytesIO(b)).convert("RGB")), args.runs
            )
        t_pose, pose = _median_ms(partial(pose_est.estimate, image), args.runs)
        t_pl, _ = _median_ms(partial(compute_placement, pose, "upper_body"), args.runs)
        t_seg, _ = _median_ms(partial(seg.segment, image), args.runs)
        total = t_in + t_pose + t_pl + t_seg
        print(f"{name:<16}{t_in:>9.1f}{t_pose:>9.1f}{t_pl:>11.2f}{t_seg:>9.1f}{total:>9.1f}")
    for side in (512, 1024):
        t_g, gm = _median_ms(partial(garment_mask, _shirt(side)), args.runs)
        print(
            f"garment cut-out (background removal) {side}x{side}: {t_g:.1f} ms, score {gm.score:.3f}"
        )
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS: {peak_mib:.0f} MiB")
    pose_est.close()
    seg.close()


if __name__ == "__main__":
    main()
