"""`tryon db upgrade` finds the Alembic scripts in every supported layout, or says how to."""

from __future__ import annotations

import re
from pathlib import Path

from click.testing import CliRunner

from tryon.cli import cli

ROOT = Path(__file__).resolve().parents[2]


def test_missing_migrations_dir_is_a_clear_error(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("TRYON_MIGRATIONS_DIR", str(tmp_path / "nowhere"))
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    res = CliRunner().invoke(cli, ["db", "upgrade", "--url", url])
    assert res.exit_code != 0
    assert "config_invalid" in res.output and "TRYON_MIGRATIONS_DIR" in res.output


def test_migrations_dir_override_is_used(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("TRYON_MIGRATIONS_DIR", str(ROOT / "migrations"))
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    res = CliRunner().invoke(cli, ["db", "upgrade", "--url", url])
    assert res.exit_code == 0, res.output


def test_docker_image_keeps_the_migrations_next_to_the_code() -> None:
    """A non-editable install would put `web` in site-packages, away from /app/migrations,
    and the compose `migrate` service (and so every service after it) would fail."""
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "COPY migrations ./migrations" in dockerfile
    # every image target (api, worker-cpu, worker-gpu) installs the project editable
    assert len(re.findall(r'pip install -e "?\.', dockerfile)) == 3
