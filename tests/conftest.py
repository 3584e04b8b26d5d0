"""Test-wide settings (no hub access, few threads: the CI box has 2 cores) and the shared
throwaway PostgreSQL database."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from service_checks import require_service

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

#: the PostgreSQL that the project's machines (and .ci/run) start: trust auth on localhost
PG_DSN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"


def pg_unreachable() -> str | None:
    """Why PostgreSQL cannot be used, or None when it answers."""
    try:
        import psycopg

        with psycopg.connect(PG_DSN, connect_timeout=3):
            return None
    except Exception as exc:  # noqa: BLE001 - any driver error: not reachable
        return f"PostgreSQL is not reachable on 127.0.0.1:5432: {exc}"


@contextmanager
def throwaway_pg_database(prefix: str) -> Iterator[str]:
    """Create an empty database, yield its SQLAlchemy URL, drop it afterwards."""
    import psycopg

    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    finally:
        with psycopg.connect(PG_DSN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A throwaway PostgreSQL database (empty schema), dropped after the test."""
    require_service(pg_unreachable())
    with throwaway_pg_database("tryon_test") as url:
        yield url
