"""docs/settings.md carries the generated table of every setting, and it is current."""

from __future__ import annotations

import re
from dataclasses import fields
from pathlib import Path

from tryon.config import Settings, settings_reference, with_settings_table

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "settings.md"
#: TRYON_* variables that are not service settings (scripts, compose, tests); listed in the doc
NOT_SETTINGS = {"TRYON_MIGRATIONS_DIR", "TRYON_WEIGHTS_DIR", "TRYON_RUN_NO_SERVE",
                "TRYON_DEMO_OUT", "TRYON_TEST_ENGINES", "TRYON_TEST_REDIS_DB",
                "TRYON_UPDATE_SCREENSHOTS", "TRYON_EXTRAS", "TRYON_GPU_ID", "TRYON_PORT",
                "TRYON_NATIVE_LOGS", "TRYON_STDERR_FILTERED", "TRYON_E2E_MANIFEST_OUT",
                # gone app-config keys, named in the doc's note on the webhook policy
                "TRYON_WEBHOOK_ALLOW_HTTP", "TRYON_WEBHOOK_ALLOW_PRIVATE",
                # the docstring example of the naming rule
                "TRYON_FOO_BAR"}


def test_every_setting_has_a_meaning() -> None:
    ref = settings_reference()
    assert [d.env for d in ref] == ["TRYON_" + f.name.upper() for f in fields(Settings)]
    missing = [d.env for d in ref if len(d.doc) < 10]
    assert not missing, f"add a #: comment above these fields in tryon/config.py: {missing}"


def test_docs_settings_table_is_current() -> None:
    text = DOC.read_text(encoding="utf-8")
    assert text == with_settings_table(text), (
        "docs/settings.md is stale: run python -m tryon.config --write docs/settings.md")


def test_every_tryon_variable_in_the_repository_is_a_setting_or_listed() -> None:
    settings = {"TRYON_" + f.name.upper() for f in fields(Settings)}
    seen: set[str] = set()
    for folder in ("tryon", "web", "workers", "scripts", "docs", ".ci"):
        for path in (ROOT / folder).rglob("*"):
            if path.is_file() and path.suffix in {".py", ".md", ".sh", ".yml", ".yaml", ""}:
                seen |= set(re.findall(r"TRYON_[A-Z0-9_]*[A-Z0-9]", path.read_text(errors="ignore")))
    for name in ("README.md", "docker-compose.yml", "Dockerfile"):
        if (ROOT / name).exists():
            seen |= set(re.findall(r"TRYON_[A-Z0-9_]*[A-Z0-9]", (ROOT / name).read_text()))
    unknown = sorted(seen - settings - NOT_SETTINGS)
    assert not unknown, f"neither a Settings field nor a documented non-setting: {unknown}"
    doc = DOC.read_text(encoding="utf-8")
    assert all(name in doc for name in NOT_SETTINGS - {"TRYON_FOO_BAR"})
