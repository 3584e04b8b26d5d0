"""Bug 4 and the start-up load with a real Celery worker (Redis + PostgreSQL): each pool child
registers the engines it can run and its queues, loads them right after the fork (so the first
job finds them loaded), heartbeats, and leaves the registry on a clean shutdown."""

from __future__ import annotations

import os
import signal

import pytest

from tryon.records import workers as registry

pytestmark = pytest.mark.integration


def _rows(st, proc):  # type: ignore[no-untyped-def]
    """The registry rows of ``proc``'s pool children (the database is shared with other
    tests, whose killed workers leave rows until they are forgotten)."""
    psutil = pytest.importorskip("psutil")
    try:
        pids = {c.pid for c in psutil.Process(proc.pid).children(recursive=True)}
    except psutil.NoSuchProcess:
        pids = set()
    with st.factory() as s:
        rows = registry.list_workers(s, st.settings.stale_after_s)
    return [r for r in rows if int(r.id.rsplit(":", 1)[1]) in pids | {proc.pid}]


def test_pool_child_registers_loads_its_engines_and_leaves(stack_factory) -> None:  # type: ignore[no-untyped-def]
    st = stack_factory()
    proc = st.start_worker()
    st.wait_until(lambda: any(w.state == "ready" for w in _rows(st, proc)), 60, "a ready worker")
    (row,) = _rows(st, proc)
    assert row.alive and row.queues == ["cpu", "gpu"]
    # no weights: anydoor is not advertised; the fake plugin and preview run on cpu
    assert row.engines == ["fake", "preview"]
    assert int(row.id.rsplit(":", 1)[1]) != proc.pid  # the pool child, not the main process
    with st.factory() as s:
        live = registry.live_engines(s, st.settings.stale_after_s)
    assert live["fake"] is True and live["preview"] is True
    ids = st.seed()
    job_id = st.submit(ids)
    job = st.wait_status(job_id, {"succeeded", "failed"}, 45)
    assert job.status == "succeeded", st.logs()
    assert job.worker_id == row.id
    with st.factory() as s:
        from tryon.records.models import TryOnResult

        result = s.query(TryOnResult).filter_by(job_id=job_id).one()
    # the engine was loaded at process start, in the child that ran the job
    assert result.record["loaded"] is True and result.record["pid"] != proc.pid
    # a clean shutdown deletes the row
    os.kill(proc.pid, signal.SIGTERM)
    proc.wait(30)
    with st.factory() as s:
        assert row.id not in {w.id for w in registry.list_workers(s, 30.0)}
