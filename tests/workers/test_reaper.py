"""The reaper pass (workers.reaper.Reaper) in-process, and the hard-time-limit hook's fencing
(workers.tasks) in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterable
from datetime import timedelta
from pathlib import Path

import pytest
from jobkit import add_job, claim_job, seed_inputs
from sqlalchemy.orm import Session, sessionmaker

from tryon.config import Settings
from tryon.records import jobs, outbox
from tryon.records.models import TryOnJob, WebhookDelivery
from tryon.storage import LocalStorage
from workers.reaper import Reaper

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path, heartbeat_interval_s=0.1, stale_after_s=1.0,
                    republish_after_s=30.0, max_retry_backoff_s=2.0, secret_key="whsec-test")


@pytest.fixture
def ids(factory: sessionmaker[Session], settings: Settings) -> dict[str, str]:
    with factory() as s:
        out = seed_inputs(s, LocalStorage(settings.resolved_storage_root))
        s.commit()
    return out


class Broker:
    """Records publishes; ``down`` makes them raise like kombu does when Redis is gone."""

    def __init__(self) -> None:
        self.jobs: list[str] = []
        self.webhooks: list[str] = []
        self.down = False

    def publish_job(self, job_id: str, queue: str) -> None:
        if self.down:
            raise ConnectionError("broker down")
        self.jobs.append(job_id)

    def publish_webhooks(self, delivery_ids: Iterable[str]) -> None:
        if self.down:
            raise ConnectionError("broker down")
        self.webhooks.extend(delivery_ids)


def _age(factory: sessionmaker[Session], job_id: str, seconds: float) -> None:
    """Move a job's timestamps ``seconds`` into the past (the reaper reads the DB clock)."""
    with factory() as s:
        job = s.get(TryOnJob, job_id)
        assert job is not None
        job.created_at = jobs._aware(job.created_at) - timedelta(seconds=seconds)
        if job.published_at is not None:
            job.published_at = jobs._aware(job.published_at) - timedelta(seconds=seconds)
        s.commit()


def test_failed_republish_is_handed_back_and_retried_next_pass(settings, factory, ids) -> None:  # type: ignore[no-untyped-def]
    """A re-publish the broker refused does not count towards the backoff: the job reads as
    unpublished again and the next pass sends it (once the broker is back)."""
    with factory() as s:
        job_id = add_job(s, ids)
        assert jobs.mark_published(s, job_id)
        s.commit()
    _age(factory, job_id, 31)
    broker = Broker()
    reaper = Reaper(settings, factory, broker.publish_job, broker.publish_webhooks)
    broker.down = True
    p = reaper.run_once()
    assert p.report is not None and [j for j, _ in p.report.republish] == [job_id]
    assert p.published == 0
    with factory() as s:
        job = s.get(TryOnJob, job_id)
        assert job is not None and (job.published_at, job.publish_count) == (None, 1)
    broker.down = False
    assert reaper.run_once().published == 1
    assert broker.jobs == [job_id]
    with factory() as s:
        job = s.get(TryOnJob, job_id)
        assert job is not None and job.published_at is not None and job.publish_count == 2
    # published 2 times: the next re-send waits 2 x republish_after_s, not one more pass
    assert reaper.run_once().published == 0


def test_lost_webhook_retry_is_republished_once_overdue(settings, factory, ids) -> None:  # type: ignore[no-untyped-def]
    """A delivery whose retry message was lost (attempt > 0, still pending) used to stay pending
    forever; now it is re-sent once its next_attempt_at is overdue by republish_after_s."""
    with factory() as s:
        job_id = add_job(s, ids, webhook_url="https://example.invalid/hook")
        s.commit()
        assert claim_job(s, job_id, "w") == 1
        assert jobs.finish_success(s, job_id, 1, [])
        (delivery_id,) = outbox.pending_deliveries(s, job_id)
        now = jobs.db_now(s)
        d = s.get(WebhookDelivery, delivery_id)
        assert d is not None
        d.attempt, d.next_attempt_at = 2, now - timedelta(seconds=20)  # due, not yet overdue
        s.commit()
    broker = Broker()
    reaper = Reaper(settings, factory, broker.publish_job, broker.publish_webhooks)
    assert reaper.run_once().webhooks == 0
    with factory() as s:
        d = s.get(WebhookDelivery, delivery_id)
        assert d is not None
        d.next_attempt_at = jobs.db_now(s) - timedelta(seconds=31)  # the retry message is lost
        s.commit()
    p = reaper.run_once()
    assert (p.webhooks, broker.webhooks) == (1, [delivery_id])
    assert reaper.run_once().webhooks == 0  # claimed: not re-sent on every pass


HOOK = """
import sys
import workers.tasks as t
from celery.exceptions import TimeLimitExceeded
from celery.worker.request import Request

calls = []

class FakeRunner:
    def mark_timed_out(self, job_id, killed_worker_id):
        calls.append((job_id, killed_worker_id))
        return True

t.runner = lambda: FakeRunner()
seen = []

def base_on_timeout(self, soft, timeout):
    # what Celery's Request.on_timeout does for a hard limit: call the task's on_failure
    seen.append(dict(t._killed_pids))
    if not soft:
        t.run_job.on_failure(TimeLimitExceeded(timeout), self.id, self.args, {}, None)

Request.on_timeout = base_on_timeout

class Req(t.RunJobRequest):
    id = "task-1"
    args = ["job-1"]
    def __init__(self, pid):
        self.worker_pid = pid

assert t.run_job.Request is t.RunJobRequest
Req(4242).on_timeout(False, 5.0)
assert seen == [{"task-1": 4242}], seen
assert calls == [("job-1", t.default_worker_id(4242))], calls
assert t._killed_pids == {}
# unknown child (no pid recorded): nothing is failed, the reaper takes over
t.run_job.on_failure(TimeLimitExceeded(5.0), "task-2", ["job-2"], {}, None)
assert len(calls) == 1, calls
# soft limits are not the parent's business
Req(4243).on_timeout(True, 5.0)
assert len(calls) == 1 and seen[-1] == {}, (calls, seen)
print("ok")
"""


def test_hard_limit_hook_fences_on_the_killed_childs_worker_id(tmp_path: Path) -> None:
    env = {**os.environ, "TRYON_DATA_DIR": str(tmp_path)}
    res = subprocess.run([sys.executable, "-c", HOOK], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.strip().endswith("ok")
