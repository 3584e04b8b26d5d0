"""tryon.logs: one formatter, and the job / request context on every record."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest

from tryon import logs


@pytest.fixture
def captured(capsys: pytest.CaptureFixture[str]) -> Iterator[pytest.CaptureFixture[str]]:
    root = logging.getLogger()
    level = root.level
    logs.configure_logging("text", "INFO")
    yield capsys
    for h in [h for h in root.handlers if isinstance(h, logs._TryonHandler)]:
        root.removeHandler(h)
    root.setLevel(level)


def test_job_context_tags_every_line_and_ends_with_the_block(captured) -> None:  # type: ignore[no-untyped-def]
    log = logging.getLogger("tryon.test")
    with logs.job_context("job123"):
        log.info("before the claim")
        logs.bind_attempt(2)
        log.info("rendering %s", "x y")
    log.info("after")
    lines = captured.readouterr().err.splitlines()
    assert "job_id=job123" in lines[0] and "attempt=" not in lines[0]
    assert "job_id=job123 attempt=2" in lines[1] and 'msg="rendering x y"' in lines[1]
    assert "job_id" not in lines[2] and "msg=after" in lines[2]
    assert logs.current("job_id") is None and logs.current("attempt") is None


def test_extra_wins_over_the_context(captured) -> None:  # type: ignore[no-untyped-def]
    with logs.job_context("outer"):
        logging.getLogger("t").warning("about another", extra=logs.job_extra("other", 3))
    line = captured.readouterr().err
    assert "job_id=other attempt=3" in line and "outer" not in line


def test_json_format_and_exceptions(capsys: pytest.CaptureFixture[str]) -> None:
    root = logging.getLogger()
    try:
        logs.configure_logging("json", "INFO")
        logs.configure_logging("json", "INFO")  # idempotent: one handler
        assert sum(isinstance(h, logs._TryonHandler) for h in root.handlers) == 1
        token = logs.set_request_id("req-1")
        try:
            try:
                raise ValueError("bad")
            except ValueError:
                logging.getLogger("t").exception("failed")
        finally:
            logs.reset_request_id(token)
        out = json.loads(capsys.readouterr().err.strip())
        assert out["request_id"] == "req-1" and out["msg"] == "failed" and out["level"] == "ERROR"
        assert "ValueError: bad" in out["exc"] and "job_id" not in out
    finally:
        for h in [h for h in root.handlers if isinstance(h, logs._TryonHandler)]:
            root.removeHandler(h)
        root.setLevel(logging.WARNING)


def test_request_id_sanity() -> None:
    assert logs.sane_request_id("abc-123.x:y_z") == "abc-123.x:y_z"
    for bad in (None, "", "a b", "x" * 129, "new\nline", "é"):
        rid = logs.sane_request_id(bad)
        assert len(rid) == 32 and rid != bad


def test_unknown_format_is_refused() -> None:
    with pytest.raises(ValueError):
        logs.make_formatter("xml")
    from tryon.config import Settings
    from tryon.errors import ConfigError

    with pytest.raises(ConfigError):
        Settings().replace(log_format="xml")
