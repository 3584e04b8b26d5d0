"""Median time of ``normalize_upload`` on a 12 MP JPEG and a 2 MP PNG (default limits).

Run: ``OMP_NUM_THREADS=1 .venv/bin/python bench/intake_bench.py [--repeat N]``
"""

from __future__ import annotations

import argparse
import io
import statistics
import time

import numpy as np
from PIL import Image

from tryon.images import IntakeLimits, normalize_upload


def photo_like(w: int, h: int, seed: int = 0) -> np.ndarray:
    """Smooth gradients plus sensor-like noise, so encoders see realistic entropy."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    base = np.stack(
        [
            128 + 100 * np.sin(x / 97.0),
            128 + 100 * np.cos(y / 71.0),
            128 + 80 * np.sin((x + y) / 150.0),
        ],
        axis=-1,
    )
    noisy = base + rng.normal(0, 6, size=base.shape).astype(np.float32)
    return np.clip(noisy, 0, 255).astype(np.uint8)


def encode(arr: np.ndarray, fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return buf.getvalue()


def median_seconds(data: bytes, limits: IntakeLimits, repeat: int) -> float:
    normalize_upload(data, limits)  # warm-up
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        normalize_upload(data, limits)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    limits = IntakeLimits()
    cases = [
        ("12 MP JPEG 4000x3000", photo_like(4000, 3000), "JPEG"),
        ("2 MP PNG 1632x1224", photo_like(1632, 1224, seed=1), "PNG"),
    ]
    for name, arr, fmt in cases:
        data = encode(arr, fmt)
        t = median_seconds(data, limits, args.repeat)
        print(
            f"{name}: {len(data) / 1e6:.1f} MB in, median normalize {t * 1000:.0f} ms "
            f"over {args.repeat} runs (long_side={limits.long_side})"
        )


if __name__ == "__main__":
    main()
