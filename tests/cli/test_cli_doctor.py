"""``tryon doctor``: embedded defaults pass, unreachable services and missing weights fail."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from tryon.cli import cli


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    for key in list(os.environ):
        if key.startswith("TRYON_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("TRYON_DATA_DIR", str(tmp_path / "var"))
    yield


def _invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    return result.exit_code, result.output


def test_doctor_embedded_defaults_ok() -> None:
    code, text = _invoke("doctor", "--json")
    assert code == 0, text
    report = json.loads(text)
    names = {c["name"]: c for c in report["checks"]}
    assert {"weights", "cuda", "device", "engines", "database", "broker", "storage"} <= set(names)
    assert all(c["status"] != "fail" for c in report["checks"])
    assert report["versions"]["torch"]


def test_doctor_unreachable_broker_exits_5(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRYON_BROKER_URL", "redis://127.0.0.1:1/0")
    code, text = _invoke("doctor")
    assert code == 5
    assert "broker" in text and "unreachable" in text


def test_doctor_missing_weights_exits_4(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TRYON_WEIGHTS", str(tmp_path / "missing"))
    code, text = _invoke("doctor")
    assert code == 4 and "does not exist" in text


def test_doctor_unreachable_database_exits_5(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRYON_DATABASE_URL", "postgresql+psycopg://u:secret@127.0.0.1:1/x")
    code, text = _invoke("doctor")
    assert code == 5
    assert "database" in text and "secret" not in text


def test_doctor_does_not_import_flask_or_celery() -> None:
    import subprocess
    import sys

    code = (
        "import sys; from tryon.cli import main\n"
        "try:\n    main(['doctor'])\nexcept SystemExit:\n    pass\n"
        "print('LEAK', [m for m in ('flask', 'celery') if m in sys.modules])"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRYON_")}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, env=env)
    assert "LEAK []" in proc.stdout, proc.stdout + proc.stderr[-1000:]
