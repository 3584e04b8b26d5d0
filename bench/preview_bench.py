"""Preview engine cost at 1024 px long side on CPU, and each stage's share (the warp's above all).

    OMP_NUM_THREADS=1 .venv/bin/python bench/preview_bench.py [--runs 7]

Inputs: the shipped sports2d man (BSD-3-Clause) scaled to 1024 px high, with each shipped
product garment (tee, jeans, dress); pose and person mask are computed once, outside the timing,
as the worker has them stored with the photo. Prints the median render time and the median of
each stage (cutout, fit, warp, light, composite) per garment.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time
from importlib import resources

import cv2
import numpy as np

from tryon.cli.render import analyse_person, prepare
from tryon.engines.preview import STAGES, PreviewEngine
from tryon.images import IntakeLimits, normalize_upload
from tryon.types import Category
from tryon.vision.masks import box_mask

GARMENTS = (
    ("garment_product_tee.png", Category.UPPER_BODY),
    ("garment_product_jeans.png", Category.LOWER_BODY),
    ("garment_product_dress.png", Category.DRESS),
)


def _asset(name: str) -> bytes:
    return (resources.files("tryon") / "assets" / name).read_bytes()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--side", type=int, default=1024, help="long side of the photo")
    args = parser.parse_args()
    limits = IntakeLimits()
    photo = normalize_upload(_asset("person_sports2d_man.jpg"), limits).rgb
    scale = args.side / max(photo.shape[:2])
    photo = np.ascontiguousarray(cv2.resize(photo, None, fx=scale, fy=scale,
                                            interpolation=cv2.INTER_CUBIC))
    info = analyse_person(photo, [c for _, c in GARMENTS])
    engine = PreviewEngine()
    h, w = photo.shape[:2]
    print(f"photo {w}x{h}, {args.runs} runs per garment (median)")
    for name, category in GARMENTS:
        garment = normalize_upload(_asset(name), limits, keep_alpha=True)
        prep = prepare(info, garment.rgb, garment.alpha, None, category)
        request = dataclasses.replace(prep.request, target_mask=box_mask(prep.placement.box, (w, h)),
                                      person_mask=info.person_mask)
        engine.render(request)  # warm-up
        totals, stages = [], {s: [] for s in STAGES}
        for _ in range(args.runs):
            t0 = time.perf_counter()
            out = engine.render(request)
            totals.append(time.perf_counter() - t0)
            for s in STAGES:
                stages[s].append(out.record["timings_s"][s])
        total = statistics.median(totals)
        parts = ", ".join(f"{s} {statistics.median(v) * 1000:.0f} ms" for s, v in stages.items())
        warp_share = statistics.median(stages["warp"]) / total
        print(f"{category.value:11s} {total * 1000:6.0f} ms  warp share {warp_share:.0%}  ({parts})")


if __name__ == "__main__":
    main()
