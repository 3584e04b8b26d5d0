"""Fixtures for API tests (helpers live in webapi_support.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from webapi_support import Ctx, make_ctx


@pytest.fixture
def ctx(tmp_path: Path) -> Iterator[Ctx]:
    c = make_ctx(tmp_path)
    yield c
    c.factory.kw["bind"].dispose()
