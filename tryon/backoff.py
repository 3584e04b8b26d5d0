"""The one backoff formula: full-jitter exponential (AWS architecture blog, "Exponential Backoff
And Jitter"), used by in-process retries, task retries and webhook deliveries alike."""

from __future__ import annotations

import random


def backoff_s(attempt: int, *, base: float, cap: float, rng: random.Random | None = None) -> float:
    """Delay before retry ``attempt`` (1-based): ``uniform(0, min(cap, base * 2**(attempt-1)))``,
    never above ``cap``."""
    r = rng or random
    return r.uniform(0.0, min(cap, base * 2 ** max(0, attempt - 1)))
