"""Skip-or-fail for tests that need a service (PostgreSQL, Redis) or a binary.

Imported by the conftest files (``tests/`` is on ``sys.path`` through the root conftest).
"""

from __future__ import annotations

import os

import pytest


def in_ci() -> bool:
    """True when the ``CI`` environment variable says so (``true``/``1``/``yes``)."""
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def require_service(why: str | None) -> None:
    """Skip the test when a service or binary it needs is missing (``why`` says which), but fail
    it under ``CI=true``: a CI run where PostgreSQL, Redis or a tool did not start must not be
    green with the tests that need it quietly skipped."""
    if why is None:
        return
    if in_ci():
        pytest.fail(f"CI=true and a required service is missing: {why}", pytrace=False)
    pytest.skip(why)
