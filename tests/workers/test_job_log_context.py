"""The Celery task (the job's entry point) puts the job id and attempt on every log line."""

from __future__ import annotations

import logging
from types import SimpleNamespace
from typing import Any

import pytest

from tryon import logs


def test_run_job_task_tags_the_lines_of_its_run(monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    import workers.tasks as tasks

    class Runner:
        def run(self, job_id: str) -> Any:
            logging.getLogger("workers.runner").info("claimed")
            logs.bind_attempt(2)
            logging.getLogger("tryon.engines.preview").warning("rendering")
            return SimpleNamespace(status="succeeded")

    monkeypatch.setattr(tasks, "runner", lambda: Runner())
    root = logging.getLogger()
    try:
        logs.configure_logging("text", "INFO")
        assert tasks.run_job("f" * 32) == "succeeded"
        logging.getLogger("t").info("after")
    finally:
        for h in [h for h in root.handlers if isinstance(h, logs._TryonHandler)]:
            root.removeHandler(h)
        root.setLevel(logging.WARNING)
    lines = capsys.readouterr().err.splitlines()
    assert f"job_id={'f' * 32}" in lines[0] and "msg=claimed" in lines[0]
    assert f"job_id={'f' * 32} attempt=2" in lines[1]
    assert "job_id" not in lines[2]
