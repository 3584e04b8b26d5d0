"""Broker and database outages with real processes: R-4, R-8, R-13, R-14 (reliability.md §6).

Every test runs on its own throwaway ``redis-server`` and a database on this module's throwaway
PostgreSQL cluster (``servers.py``), because the tests stop, SIGKILL and restart them; the shared
servers on 6379/5432 are never touched. The API is the real Flask app (``web.app.create_app``)
with the real ``CeleryPublisher``, driven through Flask's test client; workers are real
``tryon worker`` processes (``conftest.Stack``). Figures are printed (run with ``-s``).
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from tryon.records.models import TryOnJob, TryOnResult

pytestmark = pytest.mark.integration

#: short timeouts: heartbeat 0.5 s, stale after 3 s, reaper every 0.5 s
OUTAGE_ENV = {
    "TRYON_REAPER_INTERVAL_S": "0.5",
    "TRYON_MAX_OPEN_JOBS_PER_SHOPPER": "20",
    "TRYON_EXTRA_ENGINES": "fake=fake_engine:FakeEngine,stall=stall_engine:StallEngine",
}


@pytest.fixture
def stacks(stack_on: Callable[..., Any], cluster_db_url: str) -> Callable[..., Any]:
    """``make(broker_url, **env)`` -> a ``conftest.Stack`` on this test's throwaway database
    and the given (throwaway) broker."""

    def make(broker_url: str, **env: str) -> Any:
        return stack_on(cluster_db_url, TRYON_BROKER_URL=broker_url, **{**OUTAGE_ENV, **env})

    return make


class Api:
    """The real app (real Celery dispatcher) behind Flask's test client, with a shopper key."""

    def __init__(self, st: Any, ids: dict[str, str]) -> None:
        from tryon.records.accounts import create_api_key
        from web.app import create_app

        # workers come and go in these tests (and may not be up at submit time): admission
        # by the worker registry is tested in tests/web/test_worker_registry.py
        self.app = create_app(st.settings,
                              TRYON_ENGINE_DIRECTORY=lambda session: {"fake": True,
                                                                      "stall": True})
        self.client = self.app.test_client()
        self.ids = ids
        with st.factory() as s:
            self.key = create_api_key(s, account_id=ids["owner"]).plaintext
            s.commit()
        self.headers = {"Authorization": f"Bearer {self.key}"}

    def create(self, engine: str = "fake", **params: Any) -> Any:
        body = {"photo_id": self.ids["photo"], "garment_id": self.ids["garment"],
                "engine": engine, "num_samples": 1, "steps": 4, "box": [8, 10, 40, 40]}
        resp = self.client.post("/v1/tryons", json=body, headers=self.headers)
        return resp

    def get(self, job_id: str) -> Any:
        return self.client.get(f"/v1/tryons/{job_id}", headers=self.headers)


def _set_fake(st: Any, job_id: str, fake: dict[str, Any], key: str = "fake") -> None:
    """Give an API-created job fake-engine behaviour (the API schema has no such field)."""
    with st.factory() as s:
        job = s.get(TryOnJob, job_id)
        job.params = {**job.params, key: fake}
        s.commit()


def _statuses(st: Any, ids: list[str]) -> Counter[str]:
    with st.factory() as s:
        rows = s.execute(select(TryOnJob.status).where(TryOnJob.id.in_(ids))).scalars().all()
    return Counter(rows)


def _wait_all(st: Any, ids: list[str], status: str, timeout: float) -> float:
    t0 = time.monotonic()
    st.wait_until(lambda: _statuses(st, ids)[status] == len(ids), timeout,
                  f"all {len(ids)} jobs {status}: {dict(_statuses(st, ids))}")
    return time.monotonic() - t0


# --------------------------------------------------------------------------------------
# broker down at submit time


def test_broker_down_api_still_accepts_and_reaper_publishes_later(
        stacks: Any, redis_factory: Any) -> None:
    """R-4: Redis stopped -> POST /v1/tryons answers 202 five times with ``published_at``
    NULL; Redis, a worker and the reaper start -> all five succeed."""
    redis = redis_factory(aof=True, start=False)  # a port where nothing listens yet
    st = stacks(redis.url(), TRYON_REPUBLISH_AFTER_S="2")
    ids = st.seed()
    api = Api(st, ids)
    job_ids, post_s = [], []
    for _ in range(5):
        t0 = time.monotonic()
        resp = api.create()
        post_s.append(time.monotonic() - t0)
        assert resp.status_code == 202, resp.get_json()
        job_ids.append(resp.get_json()["id"])
    for job_id in job_ids:
        job = st.job(job_id)
        assert (job.status, job.published_at) == ("queued", None)
    print(f"\nR-4: 5 POSTs with the broker down: 202 x5, latency max {max(post_s):.2f}s "
          f"median {sorted(post_s)[2]:.2f}s")

    redis.start()
    t0 = time.monotonic()
    st.start_reaper()
    st.start_worker()
    took = _wait_all(st, job_ids, "succeeded", 45)
    print(f"R-4: broker back -> all 5 succeeded {time.monotonic() - t0:.1f}s after Redis "
          f"started (worker start included; {took:.1f}s after the worker was ready)")
    for job_id in job_ids:
        job = st.job(job_id)
        assert job.published_at is not None and job.attempt == 1, st.logs()


# --------------------------------------------------------------------------------------
# Redis SIGKILL + restart, with and without AOF


def _redis_restart_run(stacks: Any, redis_factory: Any, *, aof: bool,
                       republish_after: str) -> dict[str, Any]:
    redis = redis_factory(aof=aof)
    st = stacks(redis.url(), TRYON_REPUBLISH_AFTER_S=republish_after)
    ids = st.seed()
    st.start_reaper()
    st.start_worker(concurrency=1)
    job_ids = [st.submit(ids, params={"fake": {"steps": 20, "step_s": 0.15}}) for _ in range(5)]
    st.wait_progress(job_ids[0])
    time.sleep(0.3)
    before = _statuses(st, job_ids)
    redis.kill()
    time.sleep(2.0)
    # nothing can be claimed while the broker is down: this is the backlog at the restart
    queued_at_kill = [j for j in job_ids if st.job(j).status == "queued"]
    assert len(queued_at_kill) >= 3, "expected jobs still waiting in the broker when Redis dies"
    redis.start()
    restarted = time.monotonic()
    # "consuming again": a job that was waiting in the broker at the kill gets claimed
    st.wait_until(lambda: any(st.job(j).status != "queued" for j in queued_at_kill), 30,
                  "a worker consuming again after the Redis restart")
    consume_s = time.monotonic() - restarted
    _wait_all(st, job_ids, "succeeded", 60)
    all_s = time.monotonic() - restarted
    attempts = Counter(st.job(j).attempt for j in job_ids)
    return {"before": dict(before), "consume_s": consume_s, "all_s": all_s,
            "attempts": dict(attempts), "st": st, "job_ids": job_ids}


def test_redis_sigkill_with_aof_loses_no_job(stacks: Any, redis_factory: Any) -> None:
    """R-13 / T-2: AOF everysec, SIGKILL redis-server mid-traffic, restart on the same port and
    dir -> every job succeeds and a worker consumes again within 30 s. The reaper's republish
    is pushed beyond the test (300 s): the queued messages must come back from the AOF."""
    r = _redis_restart_run(stacks, redis_factory, aof=True,
                           republish_after="300")
    print(f"\nR-13 AOF on: statuses at kill {r['before']}; consuming again "
          f"{r['consume_s']:.1f}s after the restart; all 5 succeeded after {r['all_s']:.1f}s; "
          f"attempts {r['attempts']}")
    st = r["st"]
    for job_id in r["job_ids"]:
        assert st.job(job_id).published_at is not None


def test_redis_sigkill_without_aof_reaper_recovers_every_job(
        stacks: Any, redis_factory: Any) -> None:
    """R-13 / T-2, AOF off: the restarted Redis is empty, so the queued messages are gone; the
    reaper re-publishes them from the database and every job succeeds."""
    r = _redis_restart_run(stacks, redis_factory, aof=False,
                           republish_after="3")
    print(f"\nR-13 AOF off: statuses at kill {r['before']}; first re-published job claimed "
          f"{r['consume_s']:.1f}s after the restart; all 5 succeeded after {r['all_s']:.1f}s; "
          f"attempts {r['attempts']}")


# --------------------------------------------------------------------------------------
# fencing of a paused worker


def test_sigstopped_worker_resumes_after_takeover_and_changes_nothing(
        stacks: Any, redis_factory: Any) -> None:
    """R-8: SIGSTOP worker A mid-job for 2 x stale_after; the reaper re-queues the job and
    worker B finishes it (attempt 2); SIGCONT A -> the result is still B's object, A's run is
    fenced out (its finish matches no row) and A's own output object is gone."""
    redis = redis_factory(aof=True)
    st = stacks(redis.url())
    ids = st.seed()
    st.start_reaper()
    workers = [st.start_worker("a"), st.start_worker("b")]
    job_id = st.submit(ids, engine="stall", params={"stall": {"steps": 15, "step_s": 0.2}})
    st.wait_status(job_id, {"running"}, 30)
    st.wait_progress(job_id)
    child = int(st.job(job_id).worker_id.rsplit(":", 1)[1])
    group = os.getpgid(child)
    a = next(w for w in workers if w.pid == group)
    b = next(w for w in workers if w is not a)
    os.killpg(group, signal.SIGSTOP)
    stopped = time.monotonic()
    try:
        job = st.wait_status(job_id, {"succeeded", "failed"}, 45)
        assert (job.status, job.attempt) == ("succeeded", 2), st.logs()
        takeover_s = time.monotonic() - stopped
        remaining = 2 * st.settings.stale_after_s - (time.monotonic() - stopped)
        if remaining > 0:
            time.sleep(remaining)
    finally:
        os.killpg(group, signal.SIGCONT)
    paused_s = time.monotonic() - stopped
    assert job.worker_id.rsplit(":", 1)[1] != str(child)
    with st.factory() as s:
        results = s.execute(select(TryOnResult).where(TryOnResult.job_id == job_id)).scalars().all()
    assert [r.storage_key.rsplit("/", 2)[-2:] for r in results] == [["a2", "0.png"]]
    b_key = results[0].storage_key
    b_bytes = st.storage.get(b_key)

    # A wakes up: its run must notice it lost the job and clean up after itself
    log_a = Path(a.log_path)  # type: ignore[attr-defined]
    marker = f"job={job_id} attempt=1 stopped: no longer the owner"
    st.wait_until(lambda: marker in log_a.read_text(errors="replace"), 30, "A fenced out")
    job = st.job(job_id)
    assert (job.status, job.attempt) == ("succeeded", 2)
    with st.factory() as s:
        results = s.execute(select(TryOnResult).where(TryOnResult.job_id == job_id)).scalars().all()
    assert [r.storage_key for r in results] == [b_key]
    assert st.storage.get(b_key) == b_bytes
    assert st.outputs(ids, job_id) == ["a2/0.png"], "A's output object must be gone"
    a_dir = st.storage.root / "results" / ids["owner"] / job_id / "a1"
    a_wrote = a_dir.is_dir()  # LocalStorage made the folder when A stored its object
    # which fence stopped A is a race between its heartbeat thread and its render returning;
    # both end the same way, and both are reported
    how = ("wrote its object, its finish matched 0 rows and it deleted the object" if a_wrote
           else "saw its lost heartbeat before storing anything")
    print(f"\nR-8: B finished the job {takeover_s:.1f}s after A was frozen; A resumed after "
          f"{paused_s:.1f}s and {how}; the result is still B's a2/0.png")
    assert b.poll() is None and a.poll() is None, "both workers keep running"


# --------------------------------------------------------------------------------------
# PostgreSQL restart while the API serves


def test_postgres_restart_api_answers_503_then_recovers_and_job_finishes(
        stacks: Any, redis_factory: Any, pg_cluster: Any) -> None:
    """R-14 / T-3: stop PostgreSQL (``-m immediate``) for a few seconds while GETs run and a job
    is running: during the outage every answer is 503 with Retry-After (never 500); the first
    request after the restart succeeds; the running job finishes."""
    redis = redis_factory(aof=True)
    st = stacks(redis.url())
    ids = st.seed()
    api = Api(st, ids)
    resp = api.create()
    assert resp.status_code == 202, resp.get_json()
    job_id = resp.get_json()["id"]
    _set_fake(st, job_id, {"steps": 60, "step_s": 0.2})  # ~12 s: spans the outage
    st.start_reaper()
    st.start_worker()
    st.wait_status(job_id, {"running"}, 30)
    st.wait_progress(job_id)

    phase = ["before"]
    codes: dict[str, Counter[int]] = {"before": Counter(), "outage": Counter(), "after": Counter()}
    bad: list[str] = []
    stop = threading.Event()

    def poll() -> None:
        while not stop.is_set():
            p = phase[0]
            r = api.get(job_id)
            codes[p][r.status_code] += 1
            if r.status_code >= 500:
                body = r.get_json(silent=True) or {}
                if r.status_code != 503 or "Retry-After" not in r.headers \
                        or body.get("error", {}).get("code") != "database_unavailable":
                    bad.append(f"{p}: {r.status_code} {r.headers.get('Retry-After')} {body}")
            time.sleep(0.05)

    t = threading.Thread(target=poll, daemon=True)
    t.start()
    time.sleep(0.5)
    phase[0] = "outage"
    pg_cluster.stop("immediate")
    time.sleep(3.0)
    pg_cluster.start()
    phase[0] = "after"
    stop.set()
    t.join(10)
    first = api.get(job_id)
    after_first = first.status_code
    stop.clear()
    t = threading.Thread(target=poll, daemon=True)
    t.start()
    time.sleep(1.0)
    stop.set()
    t.join(10)
    job = st.wait_status(job_id, {"succeeded", "failed", "canceled"}, 60)
    print("\nR-14: status codes by phase: "
          + "; ".join(f"{k} {dict(v)}" for k, v in codes.items())
          + f"; first request after the restart: {after_first}; job {job.status} "
          f"attempt {job.attempt}")
    assert not bad, bad[:5]
    assert codes["outage"][503] > 0, codes
    assert set(codes["outage"]) <= {200, 503}, codes
    assert after_first == 200
    assert set(codes["after"]) == {200}, codes
    assert (job.status, job.error_code) == ("succeeded", None), st.logs()
