"""Migrations: up and down on SQLite and PostgreSQL; the head matches models.py; CLI commands."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from click.testing import CliRunner
from sqlalchemy import inspect

from tryon.cli import cli
from tryon.records.db import make_engine
from tryon.records.models import Base
from web.cli import current_revision, downgrade, head_revision, upgrade


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'm.db'}"


def _tables(url: str) -> set[str]:
    engine = make_engine(url)
    try:
        return set(inspect(engine).get_table_names()) - {"alembic_version"}
    finally:
        engine.dispose()


def _diff(url: str) -> list:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            ctx = MigrationContext.configure(conn, opts={"compare_type": True})
            return compare_metadata(ctx, Base.metadata)
    finally:
        engine.dispose()


@pytest.mark.parametrize("db", ["sqlite", "postgresql"])
def test_upgrade_downgrade_and_head_matches_models(db: str, request: pytest.FixtureRequest) -> None:
    url = request.getfixturevalue("sqlite_url" if db == "sqlite" else "pg_url")
    assert current_revision(url) is None
    upgrade(url)
    assert current_revision(url) == head_revision()
    assert _tables(url) == set(Base.metadata.tables)
    # a model change without a migration shows up here
    assert _diff(url) == []
    downgrade(url, "base")
    assert current_revision(url) is None
    assert _tables(url) == set()
    upgrade(url)  # and up again: downgrade left nothing behind that blocks it
    assert current_revision(url) == head_revision()


def test_compare_metadata_detects_a_missing_migration(sqlite_url: str) -> None:
    """The head check can fail: a column the migrations don't create is reported."""
    from sqlalchemy import Column, Integer, MetaData, Table

    upgrade(sqlite_url)
    md = MetaData()
    for t in Base.metadata.tables.values():
        t.to_metadata(md)
    Table("accounts", md, Column("extra_column", Integer), extend_existing=True)
    engine = make_engine(sqlite_url)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), md)
    engine.dispose()
    assert any(d[0] == "add_column" and d[3].name == "extra_column" for d in diff)


def test_cli_db_accounts_keys(sqlite_url: str) -> None:
    from tryon.records.accounts import authenticate
    from tryon.records.db import make_session_factory
    from tryon.records.models import ApiKey

    runner = CliRunner()
    r = runner.invoke(cli, ["db", "current", "--url", sqlite_url])
    assert r.exit_code == 0 and "current: base" in r.output
    r = runner.invoke(cli, ["db", "upgrade", "--url", sqlite_url])
    assert r.exit_code == 0, r.output
    r = runner.invoke(cli, ["db", "current", "--url", sqlite_url])
    assert f"current: {head_revision()}" in r.output

    r = runner.invoke(cli, ["accounts", "create", "--name", "Shop", "--role", "merchant", "--url", sqlite_url])
    assert r.exit_code == 0, r.output
    account_id = r.stdout.strip()
    assert len(account_id) == 32
    r = runner.invoke(cli, ["accounts", "create", "--name", "x", "--role", "admin", "--url", sqlite_url])
    assert r.exit_code == 2  # click rejects the role

    r = runner.invoke(cli, ["keys", "create", "--account", account_id, "--expires-days", "3", "--url", sqlite_url])
    assert r.exit_code == 0, r.output
    plaintext = r.stdout.strip()
    assert plaintext.startswith("tk_") and len(plaintext) > 40

    factory = make_session_factory(make_engine(sqlite_url))
    with factory() as s:
        rows = s.query(ApiKey).all()
        assert len(rows) == 1 and plaintext not in {rows[0].key_hash, rows[0].prefix}
        assert authenticate(s, plaintext).id == account_id
        key_id = rows[0].id
    r = runner.invoke(cli, ["keys", "create", "--account", "f" * 32, "--url", sqlite_url])
    assert r.exit_code != 0 and "not_found" in r.output

    r = runner.invoke(cli, ["keys", "revoke", key_id, "--url", sqlite_url])
    assert r.exit_code == 0
    with factory() as s:
        assert authenticate(s, plaintext) is None

    r = runner.invoke(cli, ["db", "downgrade", "--revision", "base", "--url", sqlite_url])
    assert r.exit_code == 0 and "base" in r.output


def test_cli_shopper_keys_expire_by_default(sqlite_url: str) -> None:
    """S-10: a shopper key defaults to TRYON_SHOPPER_KEY_TTL_S; merchant and ops keys do not
    expire unless --expires-days says so; --expires-days overrides the shopper default."""
    from datetime import UTC, datetime, timedelta

    from tryon.records.db import make_session_factory
    from tryon.records.models import ApiKey

    runner = CliRunner(env={"TRYON_SHOPPER_KEY_TTL_S": "7200"})
    assert runner.invoke(cli, ["db", "upgrade", "--url", sqlite_url]).exit_code == 0

    def account(role: str) -> str:
        r = runner.invoke(cli, ["accounts", "create", "--name", role, "--role", role,
                                "--url", sqlite_url])
        assert r.exit_code == 0, r.output
        return r.stdout.strip()

    def key_expiry(account_id: str, *extra: str) -> datetime | None:
        r = runner.invoke(cli, ["keys", "create", "--account", account_id, *extra,
                                "--url", sqlite_url])
        assert r.exit_code == 0, r.output
        factory = make_session_factory(make_engine(sqlite_url))
        with factory() as s:
            row = s.query(ApiKey).order_by(ApiKey.created_at.desc()).first()
            assert row is not None
            exp = row.expires_at
        factory.kw["bind"].dispose()
        return None if exp is None else exp.replace(tzinfo=exp.tzinfo or UTC)

    shopper, merchant, ops = account("shopper"), account("merchant"), account("ops")
    now = datetime.now(UTC)
    exp = key_expiry(shopper)
    assert exp is not None and abs((exp - now) - timedelta(seconds=7200)) < timedelta(minutes=5)
    exp = key_expiry(shopper, "--expires-days", "3")
    assert exp is not None and abs((exp - now) - timedelta(days=3)) < timedelta(minutes=5)
    assert key_expiry(merchant) is None
    assert key_expiry(ops) is None
    exp = key_expiry(merchant, "--expires-days", "2")
    assert exp is not None and abs((exp - now) - timedelta(days=2)) < timedelta(minutes=5)


def test_cli_webhook_secret_verifies_what_workers_sign(tmp_path: Path) -> None:
    """`tryon keys webhook-secret` prints a whsec_ value that verifies the signatures workers
    send (tryon.webhooks.load_or_create_secret) and differs from the master secret."""
    from tryon.config import Settings
    from tryon.webhooks import load_or_create_secret, sign, verify

    env = {"TRYON_DATA_DIR": str(tmp_path), "TRYON_SECRET_KEY": "master-secret-value"}
    r = CliRunner(env=env).invoke(cli, ["keys", "webhook-secret"])
    assert r.exit_code == 0, r.output
    printed = r.stdout.strip()
    assert printed.startswith("whsec_") and "master-secret-value" not in printed
    settings = Settings(data_dir=tmp_path, secret_key="master-secret-value")
    headers = sign(load_or_create_secret(settings), "msg_1", 1_800_000_000, b"{}")
    assert verify(printed, headers, b"{}", now=1_800_000_000) == "msg_1"
    # a rotation: both configured secrets sign, --all prints both, each verifies
    new, old = printed, "whsec_" + "b2xkLXNlY3JldC1vbGQtc2VjcmV0"
    r = CliRunner(env={**env, "TRYON_WEBHOOK_SECRET": f"{new} {old}"}).invoke(
        cli, ["keys", "webhook-secret", "--all"])
    assert r.exit_code == 0 and r.stdout.split() == [new, old]
    rotating = Settings(data_dir=tmp_path, secret_key="x", webhook_secret=f"{new} {old}")
    headers = sign(load_or_create_secret(rotating), "m", 1_800_000_000, b"{}")
    assert len(headers["webhook-signature"].split()) == 2
    for secret in (new, old):
        assert verify(secret, headers, b"{}", now=1_800_000_000) == "m"
