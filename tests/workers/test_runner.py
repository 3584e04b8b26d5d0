"""The job runner in-process (no broker): success, fencing, cancel, time limit, transient
retries with bounded backoff (R-11), permanent errors, webhooks (S-15) to a loopback receiver."""

from __future__ import annotations

import http.server
import json
import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fake_engine import FakeEngine
from jobkit import add_job, claim_job, seed_inputs
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from tryon.config import Settings
from tryon.engines.request import job_seeds
from tryon.errors import StorageUnavailableError
from tryon.records import jobs, outbox
from tryon.records.models import Garment, Photo, TryOnJob, TryOnResult, WebhookDelivery
from tryon.storage import LocalStorage
from tryon.webhooks import verify
from workers.failures import unexpected_error_message
from workers.runner import (
    BusyError,
    JobRunner,
    default_worker_id,
)
from workers.webhooks import deliver_webhook


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path, heartbeat_interval_s=0.1, stale_after_s=1.0,
                    max_retry_backoff_s=2.0, webhook_allow_insecure=True,
                    webhook_max_attempts=2, secret_key="whsec-test")


@pytest.fixture
def ids(factory: sessionmaker[Session], storage: LocalStorage) -> dict[str, str]:
    with factory() as s:
        out = seed_inputs(s, storage)
        s.commit()
    return out


class FlakyStorage:
    """Wraps a storage; ``put`` raises StorageUnavailableError the first ``failures`` times."""

    def __init__(self, inner: LocalStorage, failures: int) -> None:
        self.inner, self.failures, self.calls = inner, failures, 0

    def put(self, key: str, data: bytes, content_type: str) -> None:
        self.calls += 1
        if self.calls <= self.failures:
            raise StorageUnavailableError("disk on fire")
        self.inner.put(key, data, content_type)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def make_runner(settings: Settings, factory: sessionmaker[Session], storage: Any,
                **kw: Any) -> tuple[JobRunner, list[float], list[str]]:
    sleeps: list[float] = []
    notified: list[str] = []
    kw.setdefault("engine_loader", lambda name, s: FakeEngine(s))
    runner = JobRunner(settings=settings, session_factory=factory, storage=storage,
                       sleep=sleeps.append, on_terminal=notified.append, **kw)
    return runner, sleeps, notified


def new(factory: sessionmaker[Session], ids: dict[str, str], **kw: Any) -> str:
    with factory() as s:
        job_id = add_job(s, ids, **kw)
        s.commit()
    return job_id


def row(factory: sessionmaker[Session], job_id: str) -> TryOnJob:
    with factory() as s:
        job = s.get(TryOnJob, job_id)
        assert job is not None
        return job


def stored(storage: LocalStorage, ids: dict[str, str], job_id: str) -> list[str]:
    base = storage.root / "results" / ids["owner"] / job_id
    return sorted(str(p.relative_to(storage.root)) for p in base.rglob("*.png"))


def test_success_with_derived_seeds_and_fixed_keys(settings, factory, storage, ids) -> None:  # type: ignore[no-untyped-def]
    job_id = new(factory, ids, params={"num_samples": 2})
    runner, sleeps, notified = make_runner(settings, factory, storage)
    out = runner.run(job_id)
    assert (out.status, out.attempt) == ("succeeded", 1)
    job = row(factory, job_id)
    assert (job.status, job.progress, job.stage) == ("succeeded", 1.0, "done")
    assert set(job.timings) >= {"preprocess", "load", "sampling", "store"}
    with factory() as s:
        results = s.execute(select(TryOnResult).where(TryOnResult.job_id == job_id)
                            .order_by(TryOnResult.index)).scalars().all()
    assert [r.seed for r in results] == list(job_seeds(job_id, 2))
    assert [r.storage_key for r in results] == [
        f"results/{ids['owner']}/{job_id}/a1/{i}.png" for i in range(2)]
    assert stored(storage, ids, job_id) == [r.storage_key for r in results]
    with factory() as s:
        photo = s.get(Photo, results[0].record["inputs"]["photo_id"])
        garment = s.get(Garment, results[0].record["inputs"]["garment_id"])
    # the reproducibility record names the engine, the parameters and the exact inputs
    record = results[0].record
    assert record["engine"] == "fake" and record["job_params"]["num_samples"] == 2
    assert record["inputs"]["photo_sha256"] == photo.image_sha256 != ""
    assert record["inputs"]["garment_sha256"] == garment.image_sha256 != ""
    assert notified == [job_id] and sleeps == []
    # redelivery of a finished job is a no-op
    assert runner.run(job_id).status == "skipped"


def test_busy_when_another_run_holds_a_fresh_heartbeat(settings, factory, storage, ids) -> None:  # type: ignore[no-untyped-def]
    job_id = new(factory, ids)
    with factory() as s:
        assert claim_job(s, job_id, "other") == 1
        s.commit()
    runner, _, _ = make_runner(settings, factory, storage)
    with pytest.raises(BusyError):
        runner.run(job_id)
    time.sleep(1.2)  # heartbeat now stale: take over with attempt 2
    assert runner.run(job_id).attempt == 2


@pytest.mark.parametrize("failures", [0, 2, 3])
def test_transient_storage_errors_retry_with_bounded_backoff(settings, factory, storage, ids,  # type: ignore[no-untyped-def]
                                                             failures: int) -> None:
    job_id = new(factory, ids)
    flaky = FlakyStorage(storage, failures)
    runner, sleeps, _ = make_runner(settings, factory, flaky, transient_retries=2)
    out = runner.run(job_id)
    if failures <= 2:
        assert out.status == "succeeded"
        assert len(sleeps) == failures
    else:
        assert (out.status, out.error_code) == ("failed", "storage_unavailable")
        assert row(factory, job_id).error_code == "storage_unavailable"
        assert len(sleeps) == 2 and flaky.calls == 3
    for i, delay in enumerate(sleeps):
        assert 0 <= delay <= min(settings.max_retry_backoff_s, 0.5 * 2**i)


def test_permanent_error_fails_at_once(settings, factory, storage, ids) -> None:  # type: ignore[no-untyped-def]
    job_id = new(factory, ids, params={"fake": {"fail": "corrupt_image"}})
    runner, sleeps, notified = make_runner(settings, factory, storage)
    out = runner.run(job_id)
    assert (out.status, out.error_code) == ("failed", "corrupt_image")
    assert sleeps == [] and notified == [job_id]
    assert row(factory, job_id).attempt == 1


def test_missing_input_object_fails_the_job(settings, factory, storage, ids) -> None:  # type: ignore[no-untyped-def]
    job_id = new(factory, ids)
    with factory() as s:
        from tryon.records.models import Photo

        storage.delete(s.get(Photo, ids["photo"]).image_key)  # type: ignore[union-attr]
    runner, _, _ = make_runner(settings, factory, storage)
    assert runner.run(job_id).error_code == "inputs_missing"


def test_cancel_mid_run_stops_and_leaves_no_output(settings, factory, storage, ids) -> None:  # type: ignore[no-untyped-def]
    job_id = new(factory, ids, params={"fake": {"steps": 40, "step_s": 0.05}})
    runner, _, _ = make_runner(settings, factory, storage)

    def cancel_when_running() -> None:
        for _ in range(200):
            if row(factory, job_id).progress > 0:
                with factory() as s:
                    jobs.cancel_job(s, job_id)
                    s.commit()
                return
            time.sleep(0.02)

    t = threading.Thread(target=cancel_when_running)
    t.start()
    out = runner.run(job_id)
    t.join()
    assert out.status == "fenced"
    job = row(factory, job_id)
    assert job.status == "canceled" and job.progress < 0.95
    assert stored(storage, ids, job_id) == []


def test_fenced_out_run_deletes_its_own_output(settings, factory, storage, ids) -> None:  # type: ignore[no-untyped-def]
    """A run superseded while storing (the reaper re-queued it, attempt 2 finished) must not
    record anything and must delete what it wrote (R-8, in-process)."""
    job_id = new(factory, ids)

    class Superseding(FakeEngine):
        def render(self, request, **kw):  # type: ignore[no-untyped-def]
            out = super().render(request, **kw)
            with factory() as s:  # attempt 2 takes over and wins
                s.execute(TryOnJob.__table__.update().where(TryOnJob.id == job_id)
                          .values(attempt=2))
                assert jobs.finish_success(s, job_id, 2, [])
                s.commit()
            return out

    runner, _, _ = make_runner(settings, factory, storage,
                               engine_loader=lambda n, s: Superseding(s))
    out = runner.run(job_id)
    assert out.status == "fenced"
    job = row(factory, job_id)
    assert (job.status, job.attempt) == ("succeeded", 2)
    assert stored(storage, ids, job_id) == []


def test_soft_time_limit_fails_with_timeout(settings, factory, storage, ids) -> None:  # type: ignore[no-untyped-def]
    class SoftLimit(Exception):
        pass

    class Slow(FakeEngine):
        def render(self, request, **kw):  # type: ignore[no-untyped-def]
            raise SoftLimit()

    job_id = new(factory, ids)
    runner, _, _ = make_runner(settings, factory, storage, timeout_exceptions=(SoftLimit,),
                               engine_loader=lambda n, s: Slow(s))
    assert runner.run(job_id).error_code == "timeout"
    assert row(factory, job_id).status == "failed"
    # the hard-limit path (on_failure in the parent) on another job mid-run
    job2 = new(factory, ids)
    with factory() as s:
        claim_job(s, job2, "host:101")
        s.commit()
    assert runner.mark_timed_out(job2, "host:101")
    assert (row(factory, job2).status, row(factory, job2).error_code) == ("failed", "timeout")
    assert not runner.mark_timed_out(job2, "host:101")


def test_hard_limit_of_a_superseded_child_leaves_the_new_attempt_alone(settings, factory,  # type: ignore[no-untyped-def]
                                                                      storage, ids) -> None:
    """The killed child's attempt went stale (e.g. a DB outage) and attempt 2 took the job on
    another worker; the parent's on_failure for the old child must not fail attempt 2."""
    job_id = new(factory, ids)
    with factory() as s:
        t0 = jobs.db_now(s)
        assert claim_job(s, job_id, "gpu-a:101", now=t0) == 1
        s.commit()
    with factory() as s:
        later = t0 + timedelta(seconds=settings.stale_after_s + 1)
        assert claim_job(s, job_id, "gpu-b:202", now=later,
                              stale_after_s=settings.stale_after_s) == 2
        s.commit()
    runner, _, notified = make_runner(settings, factory, storage)
    assert not runner.mark_timed_out(job_id, "gpu-a:101")
    job = row(factory, job_id)
    assert (job.status, job.attempt, job.worker_id, job.error_code) == (
        "running", 2, "gpu-b:202", None)
    assert notified == []
    # the owner's own hard limit still fails it
    assert runner.mark_timed_out(job_id, "gpu-b:202")
    assert (row(factory, job_id).status, row(factory, job_id).error_code) == ("failed", "timeout")
    assert notified == [job_id]


def test_default_worker_id_rebuilds_a_childs_id_from_its_pid() -> None:
    import os

    assert default_worker_id() == default_worker_id(os.getpid())
    assert default_worker_id(4242).endswith(":4242")
    assert default_worker_id(4242).split(":")[0] == default_worker_id().split(":")[0]


# ---------------------------------------------------------------------------------------
# unexpected errors


class _RaisingEngine(FakeEngine):
    """Renders nothing: raises ``exc`` (an instance) from render."""

    exc: BaseException = RuntimeError()

    def render(self, request, **kw):  # type: ignore[no-untyped-def]
        raise self.exc


def _raising(exc: BaseException) -> Any:
    def load(name: str, s: Settings) -> FakeEngine:
        eng = _RaisingEngine(s)
        eng.exc = exc
        return eng

    return load


@pytest.mark.parametrize("exc", [
    RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB (/opt/secret/path)"),
    AssertionError("shape mismatch at /opt/secret/path"),
    TypeError("unsupported operand /opt/secret/path"),
])
def test_unexpected_engine_error_fails_the_job_with_internal_error(settings, factory, storage,  # type: ignore[no-untyped-def]
                                                                   ids, exc) -> None:
    job_id = new(factory, ids)
    runner, _, notified = make_runner(settings, factory, storage, engine_loader=_raising(exc))
    out = runner.run(job_id)  # does not raise: the task acks, nothing re-runs the same crash
    assert (out.status, out.error_code, out.attempt) == ("failed", "internal_error", 1)
    job = row(factory, job_id)
    assert (job.status, job.error_code, job.heartbeat_at) == ("failed", "internal_error", None)
    assert type(exc).__name__ in (job.error_message or "")
    assert "/opt/secret/path" not in (job.error_message or "")  # no internals for the client
    assert notified == [job_id]


def test_unexpected_error_after_writing_deletes_the_outputs(settings, factory, storage,  # type: ignore[no-untyped-def]
                                                            ids) -> None:
    class BreaksOnSecondPut:
        def __init__(self, inner: LocalStorage) -> None:
            self.inner, self.puts = inner, 0

        def put(self, key: str, data: bytes, content_type: str) -> None:
            self.puts += 1
            if self.puts == 2:
                raise AssertionError("library bug")
            self.inner.put(key, data, content_type)

        def __getattr__(self, name: str) -> Any:
            return getattr(self.inner, name)

    job_id = new(factory, ids, params={"num_samples": 2})
    runner, _, _ = make_runner(settings, factory, BreaksOnSecondPut(storage))
    assert runner.run(job_id).error_code == "internal_error"
    assert stored(storage, ids, job_id) == []  # the first sample was written, then deleted


def test_out_of_memory_message_names_it_without_importing_torch() -> None:
    class OutOfMemoryError(RuntimeError):  # what torch raises, recognised by name
        pass

    assert "ran out of memory (OutOfMemoryError)" in unexpected_error_message(
        OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    assert "ran out of memory (RuntimeError)" in unexpected_error_message(
        RuntimeError("CUDA out of memory."))
    assert unexpected_error_message(KeyError("x")) == "The engine failed unexpectedly (KeyError)."


def test_framework_exceptions_and_interrupts_propagate(settings, factory, storage,  # type: ignore[no-untyped-def]
                                                      ids) -> None:
    class Retry(Exception):  # stands for celery.exceptions.Retry
        pass

    for exc, kw in ((Retry(), {"passthrough_exceptions": (Retry,)}),
                    (KeyboardInterrupt(), {})):
        job_id = new(factory, ids)
        runner, _, _ = make_runner(settings, factory, storage, engine_loader=_raising(exc), **kw)
        with pytest.raises(type(exc)):
            runner.run(job_id)
        assert row(factory, job_id).status == "running"  # left to the task framework / reaper


# ---------------------------------------------------------------------------------------
# webhooks


class Receiver:
    """A loopback webhook receiver; answers ``codes`` in order (then 200)."""

    def __init__(self, codes: list[int]) -> None:
        self.codes = list(codes)
        self.received: list[tuple[dict[str, str], bytes]] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers["content-length"]))
                outer.received.append((dict(self.headers.items()), body))
                self.send_response(outer.codes.pop(0) if outer.codes else 200)
                self.end_headers()

            def log_message(self, *a: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()


def test_webhook_signed_stable_id_and_retried(settings, factory, storage, ids) -> None:  # type: ignore[no-untyped-def]
    recv = Receiver([500])
    try:
        job_id = new(factory, ids, webhook_url=recv.url)
        runner, _, notified = make_runner(settings, factory, storage)
        assert runner.run(job_id).status == "succeeded"
        with factory() as s:
            (delivery_id,) = outbox.pending_deliveries(s, job_id)
        with factory() as s:
            before = jobs.db_now(s)
            assert s.get(WebhookDelivery, delivery_id).next_attempt_at is None  # type: ignore[union-attr]
        first = deliver_webhook(settings, factory, delivery_id, secret=settings.secret_key)
        assert first.status == "retry" and 0 <= first.countdown_s <= settings.max_retry_backoff_s
        with factory() as s:
            # when the retry is due: the reaper re-sends it if that message is lost
            due = s.get(WebhookDelivery, delivery_id).next_attempt_at  # type: ignore[union-attr]
            assert due is not None
            due = jobs._aware(due)
            assert before + timedelta(seconds=first.countdown_s) <= due
            assert due <= jobs.db_now(s) + timedelta(seconds=first.countdown_s)
        second = deliver_webhook(settings, factory, delivery_id, secret=settings.secret_key)
        assert second.status == "delivered"
        # delivered rows are never sent again
        assert deliver_webhook(settings, factory, delivery_id,
                               secret=settings.secret_key).status == "skipped"
        assert len(recv.received) == 2
        ids_seen = set()
        for headers, body in recv.received:
            ids_seen.add(verify(settings.secret_key, headers, body))
            assert json.loads(body)["data"] == {"id": job_id, "status": "succeeded"}
        assert ids_seen == {outbox.event_id_for(job_id, 1, "succeeded")}
        with factory() as s:
            d = s.get(WebhookDelivery, delivery_id)
            assert (d.status, d.attempt, d.last_status_code) == ("delivered", 2, 200)  # type: ignore[union-attr]
            assert d.next_attempt_at is None  # type: ignore[union-attr]
    finally:
        recv.close()


def test_webhook_dead_letter_after_max_attempts(settings, factory, storage, ids) -> None:  # type: ignore[no-untyped-def]
    recv = Receiver([500, 502, 503])
    try:
        job_id = new(factory, ids, webhook_url=recv.url, params={"fake": {"fail": "boom"}})
        runner, _, _ = make_runner(settings, factory, storage)
        runner.run(job_id)
        with factory() as s:
            (delivery_id,) = outbox.pending_deliveries(s, job_id)
        outcomes = [deliver_webhook(settings, factory, delivery_id, secret="k").status
                    for _ in range(3)]
        assert outcomes == ["retry", "failed", "skipped"]
        assert json.loads(recv.received[0][1])["data"]["error"]["code"] == "boom"
    finally:
        recv.close()


def test_webhook_to_private_address_is_refused_without_insecure_flag(settings, factory,  # type: ignore[no-untyped-def]
                                                                     storage, ids) -> None:
    recv = Receiver([])
    try:
        strict = settings.replace(webhook_allow_insecure=False, webhook_max_attempts=1)
        job_id = new(factory, ids, webhook_url=recv.url)
        runner, _, _ = make_runner(strict, factory, storage)
        runner.run(job_id)
        with factory() as s:
            (delivery_id,) = outbox.pending_deliveries(s, job_id)
        assert deliver_webhook(strict, factory, delivery_id, secret="k").status == "failed"
        assert recv.received == []
    finally:
        recv.close()


class _DbDownStorage:
    """Storage whose reads raise a database error carrying SQL, parameters and the host."""

    def __init__(self, inner: LocalStorage) -> None:
        self.inner = inner

    def get(self, key: str) -> bytes:
        from sqlalchemy.exc import OperationalError

        raise OperationalError("SELECT api_keys.secret FROM api_keys WHERE id = %(id)s",
                               {"id": "k-123"}, Exception("could not connect to db.internal:5432"))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def test_failed_job_stores_a_redacted_message_and_logs_the_detail(  # type: ignore[no-untyped-def]
        settings, factory, storage, ids, caplog) -> None:
    """Issue 11 item 3: after transient retries run out the job's message is the fixed one of
    its code; the SQL, parameters and host go to the log with the job id."""
    from workers.failures import REDACTED_MESSAGES

    job_id = new(factory, ids)
    runner, _, _ = make_runner(settings, factory, _DbDownStorage(storage), transient_retries=1)
    with caplog.at_level("WARNING", logger="workers.runner"):
        out = runner.run(job_id)
    assert out.error_code == "service_unavailable"
    job = row(factory, job_id)
    assert job.error_message == REDACTED_MESSAGES["service_unavailable"]
    for secret in ("SELECT", "api_keys", "k-123", "db.internal"):
        assert secret not in (job.error_message or "")
    detail = [r.getMessage() for r in caplog.records if job_id in r.getMessage()]
    assert any("db.internal" in m for m in detail), detail


def test_missing_input_message_names_no_storage_key(settings, factory, storage, ids) -> None:  # type: ignore[no-untyped-def]
    from workers.failures import REDACTED_MESSAGES

    job_id = new(factory, ids)
    with factory() as s:
        key = s.get(Photo, ids["photo"]).image_key  # type: ignore[union-attr]
    storage.delete(key)
    runner, _, _ = make_runner(settings, factory, storage)
    assert runner.run(job_id).error_code == "inputs_missing"
    message = row(factory, job_id).error_message or ""
    assert message == REDACTED_MESSAGES["inputs_missing"] and key not in message
