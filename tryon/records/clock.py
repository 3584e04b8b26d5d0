"""The database's clock (every job-state comparison uses it, never a host's wall clock)."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session


def db_now(session: Session) -> datetime:
    """The database's current time, timezone-aware UTC.

    PostgreSQL: ``clock_timestamp()`` (not ``now()``, which is frozen at transaction start).
    SQLite is single-host by construction (one file), so the host clock *is* the database clock.
    """
    if session.get_bind().dialect.name == "postgresql":
        value = session.execute(select(func.clock_timestamp())).scalar_one()
        return aware(value)
    return datetime.now(UTC)


def aware(value: datetime) -> datetime:
    # SQLite hands back naive datetimes; everything we store is UTC.
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
