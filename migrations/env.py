"""Alembic environment. Run through `tryon db upgrade|downgrade|current`, never at app start.

The database URL comes from, in order: the Config's ``sqlalchemy.url`` (set by the CLI),
``alembic -x url=...``, then ``TRYON_DATABASE_URL`` / the embedded SQLite default.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from tryon.records.db import make_engine
from tryon.records.models import Base

config = context.config
target_metadata = Base.metadata


def _url() -> str:
    url = config.get_main_option("sqlalchemy.url")
    if url:
        return url
    x = context.get_x_argument(as_dictionary=True)
    if x.get("url"):
        return x["url"]
    from tryon.config import load_settings

    return load_settings().resolved_database_url


def _configure(connection: Connection | None = None, url: str | None = None) -> None:
    dialect = connection.dialect.name if connection is not None else (url or "").split(":")[0]
    context.configure(
        connection=connection,
        url=url,
        target_metadata=target_metadata,
        compare_type=True,
        # SQLite cannot ALTER most things; batch mode rebuilds tables instead
        render_as_batch=dialect.startswith("sqlite"),
        literal_binds=connection is None,
    )


def run_migrations_offline() -> None:
    _configure(url=_url())
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _configure(connection)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = make_engine(_url())
    try:
        with engine.connect() as conn:
            _configure(conn)
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
