"""`tryon db|accounts|keys`: schema migrations and credentials, run by an operator.

Migrations are applied only here (and by the one-shot ``migrate`` service in
docker-compose), never when the web app or a worker starts.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import click

from tryon.cli import fail

#: the repository's ``migrations/`` (installs are editable: scripts/bootstrap.sh, Dockerfile);
#: ``TRYON_MIGRATIONS_DIR`` points elsewhere for other layouts
MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"


def migrations_dir() -> Path:
    import os

    from tryon.errors import ConfigError

    path = Path(os.environ.get("TRYON_MIGRATIONS_DIR") or MIGRATIONS_DIR)
    if not (path / "env.py").is_file():
        raise ConfigError(
            f"Alembic migrations not found at {path}: install tryon editable from a checkout "
            "(pip install -e .) or set TRYON_MIGRATIONS_DIR to the repository's migrations/."
        )
    return path


def alembic_config(url: str) -> Any:
    """An Alembic Config pointing at ``migrations/`` and ``url``."""
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(migrations_dir()))
    # ConfigParser interpolation: a literal % in a password must be doubled
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(url: str, revision: str = "head") -> None:
    from alembic import command

    command.upgrade(alembic_config(url), revision)


def downgrade(url: str, revision: str = "-1") -> None:
    from alembic import command

    command.downgrade(alembic_config(url), revision)


def current_revision(url: str) -> str | None:
    """The revision the database is at (None for an empty database)."""
    from alembic.runtime.migration import MigrationContext

    from tryon.records.db import make_engine

    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()


def head_revision() -> str | None:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()


def _url(url: str | None) -> str:
    if url:
        return url
    from tryon.config import load_settings

    return load_settings().resolved_database_url


def _session_factory(url: str | None) -> Any:
    from tryon.records.db import make_engine, make_session_factory

    return make_session_factory(make_engine(_url(url)))


url_option = click.option(
    "--url", envvar=None, default=None, help="Database URL (default: TRYON_DATABASE_URL or SQLite)."
)


@click.group()
def db() -> None:
    """Database schema migrations (Alembic)."""


@db.command("upgrade")
@click.option("--revision", default="head", show_default=True)
@url_option
def db_upgrade(revision: str, url: str | None) -> None:
    """Apply migrations up to REVISION."""
    try:
        upgrade(_url(url), revision)
        click.echo(f"database at {current_revision(_url(url))}")
    except Exception as exc:  # noqa: BLE001 - the CLI edge maps every failure to an exit code
        fail(exc)


@db.command("downgrade")
@click.option("--revision", default="-1", show_default=True, help="Target, e.g. -1 or base.")
@url_option
def db_downgrade(revision: str, url: str | None) -> None:
    """Revert migrations down to REVISION."""
    try:
        downgrade(_url(url), revision)
        click.echo(f"database at {current_revision(_url(url)) or 'base'}")
    except Exception as exc:  # noqa: BLE001
        fail(exc)


@db.command("current")
@url_option
def db_current(url: str | None) -> None:
    """Print the current revision and the head revision."""
    try:
        cur = current_revision(_url(url))
        head = head_revision()
        click.echo(f"current: {cur or 'base'}\nhead: {head}")
    except Exception as exc:  # noqa: BLE001
        fail(exc)


@click.group()
def accounts() -> None:
    """Accounts (shopper, merchant, ops)."""


@accounts.command("create")
@click.option("--name", required=True)
@click.option("--role", required=True, type=click.Choice(["shopper", "merchant", "ops"]))
@url_option
def accounts_create(name: str, role: str, url: str | None) -> None:
    """Create an account and print its id."""
    from tryon.records.accounts import create_account
    from tryon.records.db import session_scope

    try:
        with session_scope(_session_factory(url)) as session:
            account = create_account(session, name=name, role=role)
            account_id = account.id
        click.echo(account_id)
    except Exception as exc:  # noqa: BLE001
        fail(exc)


@accounts.command("erase")
@click.argument("account_id")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@url_option
def accounts_erase(account_id: str, yes: bool, url: str | None) -> None:
    """Erase the shopper ACCOUNT_ID (what `DELETE /v1/me` does): cancel their open try-ons,
    delete their photos, results and try-ons (rows and objects), revoke their keys and close
    the account. Safe to repeat (finishes an erasure interrupted by a storage outage)."""
    from tryon.config import load_settings
    from tryon.records.erasure import erase_account
    from tryon.storage import make_storage

    if not yes:
        click.confirm(f"Erase account {account_id} and all its data?", abort=True)
    try:
        factory = _session_factory(url)
        with factory() as session:
            r = erase_account(session, make_storage(load_settings()), account_id)
        click.echo(f"erased {r.account_id}: {r.photos} photos, {r.jobs} try-ons "
                   f"({r.jobs_canceled} canceled), {r.results} results, {r.keys} keys, "
                   f"{r.objects} objects")
    except Exception as exc:  # noqa: BLE001
        fail(exc)


@click.group()
def keys() -> None:
    """API keys (stored hashed; the plaintext is printed once)."""


@keys.command("create")
@click.option("--account", "account_id", required=True, help="Account id.")
@click.option("--expires-days", type=click.IntRange(min=1), default=None,
              help="Days until the key expires. Default: TRYON_SHOPPER_KEY_TTL_S for shopper "
                   "accounts, never for merchant and ops accounts.")
@url_option
def keys_create(account_id: str, expires_days: int | None, url: str | None) -> None:
    """Create a key and print it once: `<key id> <plaintext>`."""
    from tryon.config import load_settings
    from tryon.records.accounts import create_api_key
    from tryon.records.db import session_scope

    try:
        with session_scope(_session_factory(url)) as session:
            expires_in = key_lifetime(session, account_id, expires_days,
                                      load_settings().shopper_key_ttl_s)
            new = create_api_key(session, account_id=account_id, expires_in=expires_in)
        click.echo(f"key id: {new.id}", err=True)
        if new.expires_at is not None:
            click.echo(f"expires at: {new.expires_at.isoformat()}", err=True)
        click.echo("store this key now; it cannot be shown again", err=True)
        click.echo(new.plaintext)
    except Exception as exc:  # noqa: BLE001
        fail(exc)


def key_lifetime(session: Any, account_id: str, expires_days: int | None,
                 shopper_ttl_s: int) -> timedelta | None:
    """How long a new key lives: ``expires_days`` when given; else ``shopper_ttl_s`` for a
    shopper account (shopper keys sit on end-user devices, so they must not live forever; 0
    turns this off) and no expiry for merchant and ops accounts (server-side credentials that
    are revoked explicitly)."""
    from tryon.records.models import Account
    from tryon.types import Role

    if expires_days:
        return timedelta(days=expires_days)
    account = session.get(Account, account_id)
    if account is not None and account.role == Role.SHOPPER.value and shopper_ttl_s > 0:
        return timedelta(seconds=shopper_ttl_s)
    return None  # an unknown account is refused by create_api_key


@keys.command("webhook-secret")
@click.option("--all", "show_all", is_flag=True,
              help="Print every secret that signs (all of TRYON_WEBHOOK_SECRET during a rotation).")
def keys_webhook_secret(show_all: bool) -> None:
    """Print the secret outbound webhooks are signed with (`whsec_<base64>`), to hand to
    receivers. It is derived from the master secret (or is TRYON_WEBHOOK_SECRET) and cannot be
    used to sign result URLs."""
    from tryon.config import load_settings
    from tryon.webhooks import webhook_secrets

    try:
        values = webhook_secrets(load_settings())
        for value in values if show_all else values[:1]:
            click.echo(value)
    except Exception as exc:  # noqa: BLE001
        fail(exc)


@keys.command("revoke")
@click.argument("key_id")
@url_option
def keys_revoke(key_id: str, url: str | None) -> None:
    """Revoke the key KEY_ID (requests with it then answer 401)."""
    from tryon.records.accounts import revoke_api_key
    from tryon.records.db import session_scope

    try:
        with session_scope(_session_factory(url)) as session:
            revoke_api_key(session, key_id)
        click.echo(f"revoked {key_id}")
    except Exception as exc:  # noqa: BLE001
        fail(exc)
