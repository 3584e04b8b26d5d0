"""Shared worker-test fixtures: a SQLite database with the schema and local storage, both
under the module's own ``settings`` fixture (each test module sets its own timings)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy.orm import Session, sessionmaker

from tryon.config import Settings
from tryon.records.db import make_engine, make_session_factory
from tryon.records.models import Base
from tryon.storage import LocalStorage


@pytest.fixture
def factory(settings: Settings) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(settings.resolved_database_url)
    Base.metadata.create_all(engine)
    yield make_session_factory(engine)
    engine.dispose()


@pytest.fixture
def storage(settings: Settings) -> LocalStorage:
    return LocalStorage(settings.resolved_storage_root)
