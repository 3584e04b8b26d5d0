"""Under CI=true a missing service fails the test; elsewhere it skips."""

from __future__ import annotations

import pytest
from service_checks import require_service


def test_missing_service_skips_outside_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception):
        require_service("PostgreSQL is not reachable")


@pytest.mark.parametrize("value", ["true", "1", "TRUE"])
def test_missing_service_fails_in_ci(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("CI", value)
    with pytest.raises(pytest.fail.Exception, match="PostgreSQL"):
        require_service("PostgreSQL is not reachable")


def test_present_service_passes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    require_service(None)

