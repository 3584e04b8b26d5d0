"""In-process retries of transient errors (storage or database briefly unavailable)."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy.exc import OperationalError

from tryon.backoff import backoff_s
from tryon.errors import StorageUnavailableError

log = logging.getLogger(__name__)

T = TypeVar("T")

#: errors worth retrying in-process: the same call may work a moment later
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (StorageUnavailableError, OperationalError)
#: first backoff delay (seconds); doubled per retry, full jitter, capped by max_retry_backoff_s
RETRY_BASE_S = 0.5


def retry_transient(
    fn: Callable[[], T],
    *,
    retries: int,
    cap_s: float,
    sleep: Callable[[float], None] = time.sleep,
    rng: random.Random | None = None,
    what: str = "call",
) -> T:
    """Call ``fn``; on a transient error sleep :func:`tryon.backoff.backoff_s` (base
    ``RETRY_BASE_S``, cap ``cap_s``) and try again, at most ``retries`` more times, then re-raise
    the last error."""
    r = rng or random.Random()
    for i in range(retries + 1):
        try:
            return fn()
        except TRANSIENT_ERRORS as exc:
            if i >= retries:
                raise
            delay = backoff_s(i + 1, base=RETRY_BASE_S, cap=cap_s, rng=r)
            log.warning("transient error in %s (try %d/%d), retrying in %.2fs: %s",
                        what, i + 1, retries + 1, delay, exc)
            sleep(delay)
    raise AssertionError("unreachable")
