"""Real Celery worker processes on Redis + PostgreSQL: R-5, R-6, R-7, R-9, R-15, end to end.

The engine is a parameter: ``fake`` (tests/workers/fake_engine.py, behaviour from the job's
params) and ``preview`` always; add ``anydoor`` with tiny weights through
``TRYON_TEST_ENGINES=fake,preview,anydoor`` plus ``TRYON_WEIGHTS`` in the environment.
"""

from __future__ import annotations

import os
import signal

import pytest
from sqlalchemy import func, select

from tryon.engines.request import job_seeds
from tryon.records import jobs
from tryon.records.models import TryOnResult

pytestmark = pytest.mark.integration

ENGINES = [e for e in os.environ.get("TRYON_TEST_ENGINES", "fake,preview").split(",") if e]


@pytest.mark.parametrize("engine", ENGINES)
def test_job_end_to_end(stack_factory, engine: str) -> None:  # type: ignore[no-untyped-def]
    env = {"TRYON_WEIGHTS": os.environ["TRYON_WEIGHTS"]} if engine == "anydoor" else {}
    st = stack_factory(**env)
    st.start_worker()
    ids = st.seed()
    queue = "gpu" if engine == "anydoor" else "cpu"
    job_id = st.submit(ids, engine=engine, queue=queue, params={"num_samples": 2, "steps": 2})
    job = st.wait_status(job_id, {"succeeded", "failed"}, 90 if engine == "anydoor" else 45)
    assert (job.status, job.attempt, job.error_code) == ("succeeded", 1, None), st.logs()
    assert st.outputs(ids, job_id) == ["a1/0.png", "a1/1.png"]
    with st.factory() as s:
        seeds = s.execute(select(TryOnResult.seed).where(TryOnResult.job_id == job_id)
                          .order_by(TryOnResult.index)).scalars().all()
    assert tuple(seeds) == job_seeds(job_id, 2)
    assert job.published_at is not None and job.worker_id


def test_cancel_mid_run_frees_the_worker(stack_factory) -> None:  # type: ignore[no-untyped-def]
    st = stack_factory()
    st.start_worker()
    ids = st.seed()
    slow = st.submit(ids, params={"fake": {"steps": 200, "step_s": 0.1}})
    st.wait_status(slow, {"running"}, 30)
    st.wait_progress(slow)
    with st.factory() as s:
        jobs.cancel_job(s, slow)
        s.commit()
    quick = st.submit(ids)
    assert st.wait_status(quick, {"succeeded", "failed"}, 30).status == "succeeded"
    job = st.job(slow)
    assert job.status == "canceled" and job.progress < 0.9
    assert st.outputs(ids, slow) == []


def test_kill9_pool_child_mid_job_completes_with_attempt_2(stack_factory) -> None:  # type: ignore[no-untyped-def]
    """R-6: SIGKILL of the pool child -> reject_on_worker_lost redelivers; the redelivery waits
    out the fresh heartbeat, then takes over with attempt 2."""
    st = stack_factory()
    st.start_worker()
    ids = st.seed()
    job_id = st.submit(ids, params={"fake": {"steps": 30, "step_s": 0.1}})
    st.wait_status(job_id, {"running"}, 30)
    st.wait_progress(job_id)
    child_pid = int(st.job(job_id).worker_id.rsplit(":", 1)[1])
    os.kill(child_pid, signal.SIGKILL)
    job = st.wait_status(job_id, {"succeeded", "failed"}, 45)
    assert (job.status, job.attempt) == ("succeeded", 2), st.logs()
    assert st.outputs(ids, job_id) == ["a2/0.png"]


def test_kill9_whole_worker_then_restart_completes_with_attempt_2(stack_factory) -> None:  # type: ignore[no-untyped-def]
    """R-7: kill -9 of the worker's process group; the reaper re-queues the stale job and a
    restarted worker finishes it, without waiting for the visibility timeout."""
    st = stack_factory()
    st.start_reaper()
    first = st.start_worker("first")
    ids = st.seed()
    job_id = st.submit(ids, params={"fake": {"steps": 30, "step_s": 0.1}})
    st.wait_status(job_id, {"running"}, 30)
    st.wait_progress(job_id)
    st.kill_group(first)
    st.start_worker("second")
    job = st.wait_status(job_id, {"succeeded", "failed"}, 60)
    assert (job.status, job.attempt) == ("succeeded", 2), st.logs()
    assert job.attempt <= job.max_attempts


def test_job_that_always_crashes_fails_with_worker_lost_and_queue_empty(stack_factory) -> None:  # type: ignore[no-untyped-def]
    """R-9: os._exit(1) on every attempt; bounded by max_attempts, then the message is acked."""
    st = stack_factory()
    st.start_worker()
    ids = st.seed()
    job_id = st.submit(ids, params={"fake": {"crash": True, "steps": 4}})
    job = st.wait_status(job_id, {"succeeded", "failed"}, 60)
    assert (job.status, job.error_code, job.attempt) == ("failed", "worker_lost", 3), st.logs()
    # nothing left to deliver for this run: the ready list is empty and no message is unacked
    import redis

    r = redis.Redis.from_url(st.settings.resolved_broker_url)

    def drained() -> bool:
        unacked = [v for v in r.hvals("unacked") if st.prefix.encode() in v]
        return st.queue_len("cpu") == 0 and not unacked

    st.wait_until(drained, 20, "queue drained")
    # and the worker is alive and takes the next job
    ok = st.submit(ids)
    assert st.wait_status(ok, {"succeeded", "failed"}, 30).status == "succeeded"


def test_duplicate_delivery_does_the_work_once(stack_factory) -> None:  # type: ignore[no-untyped-def]
    """R-5: the same job id published 3 times to 2 workers: one claim, one result."""

    st = stack_factory()
    st.start_worker("a")
    st.start_worker("b")
    ids = st.seed()
    job_id = st.submit(ids, params={"fake": {"steps": 10, "step_s": 0.1}})
    st.dispatcher.publish(job_id, "cpu")
    st.dispatcher.publish(job_id, "cpu")
    job = st.wait_status(job_id, {"succeeded", "failed"}, 45)
    assert (job.status, job.attempt) == ("succeeded", 1), st.logs()
    with st.factory() as s:
        n = s.execute(select(func.count()).select_from(TryOnResult)
                      .where(TryOnResult.job_id == job_id)).scalar_one()
    assert n == 1
    assert st.outputs(ids, job_id) == ["a1/0.png"]


def test_soft_and_hard_time_limits_fail_with_timeout_and_the_worker_goes_on(stack_factory) -> None:  # type: ignore[no-untyped-def]
    """R-10: over the soft limit -> failed/timeout from the task; ignoring it -> killed at the
    hard limit and failed/timeout by the on_failure hook in the parent; the next job succeeds."""
    st = stack_factory(TRYON_SOFT_TIME_LIMIT_S="2", TRYON_HARD_TIME_LIMIT_S="4")
    st.start_worker()
    ids = st.seed()
    soft = st.submit(ids, params={"fake": {"steps": 1, "step_s": 30}})
    hard = st.submit(ids, params={"fake": {"hang": True}})
    after = st.submit(ids)
    for job_id in (soft, hard):
        job = st.wait_status(job_id, {"succeeded", "failed", "canceled"}, 30)
        assert (job.status, job.error_code, job.attempt) == ("failed", "timeout", 1), st.logs()
    assert st.wait_status(after, {"succeeded", "failed"}, 30).status == "succeeded"


def test_kill9_during_save_leaves_no_objects_of_the_lost_attempt(stack_factory) -> None:  # type: ignore[no-untyped-def]
    """Issue 11.2: a worker killed while saving left ``a1/0.png`` beside the winning ``a2/``
    for good. The reaper's orphan sweep removes it; the winning attempt's objects stay."""
    st = stack_factory(TRYON_PURGE_INTERVAL_S="1")
    st.start_reaper()
    st.start_worker()
    ids = st.seed()
    job_id = st.submit(ids, params={"num_samples": 2, "fake": {"save_stall_s": 60}})
    st.wait_until(lambda: "a1/0.png" in st.outputs(ids, job_id), 45, "sample 0 of attempt 1")
    st.wait_until(lambda: st.job(job_id).stage == "store", 10, "the heartbeat to say store")
    child_pid = int(st.job(job_id).worker_id.rsplit(":", 1)[1])
    os.kill(child_pid, signal.SIGKILL)
    job = st.wait_status(job_id, {"succeeded", "failed"}, 60)
    assert (job.status, job.attempt) == ("succeeded", 2), st.logs()
    st.wait_until(lambda: st.outputs(ids, job_id) == ["a2/0.png", "a2/1.png"], 20,
                  "the sweep to remove a1/")
    with st.factory() as s:
        keys = sorted(s.scalars(select(TryOnResult.storage_key)
                                .where(TryOnResult.job_id == job_id)))
    assert [k.rsplit("/", 2)[1:] for k in keys] == [["a2", "0.png"], ["a2", "1.png"]]
