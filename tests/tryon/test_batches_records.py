"""Batch parents on the one job state machine: settled by their children's terminal
transitions, canceled as a whole, never claimed or reaped; compose/batch uploads purged by
retention. SQLite and PostgreSQL (the parent row lock matters on the latter)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker
from test_jobs import T0, seed_inputs, spec, state

from tryon.records import jobs, reaping
from tryon.records.db import make_engine, make_session_factory
from tryon.records.models import Base, TryOnJob, WebhookDelivery


@pytest.fixture(params=["sqlite", "postgresql"])
def factory(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[sessionmaker[Session]]:
    url = (f"sqlite:///{tmp_path / 'b.db'}" if request.param == "sqlite"
           else request.getfixturevalue("pg_url"))
    engine = make_engine(url)
    Base.metadata.create_all(engine)
    yield make_session_factory(engine)
    engine.dispose()


def batch(s: Session, n: int, webhook_url: str | None = None) -> tuple[str, list[str]]:
    owner, photo, garment = seed_inputs(s)
    parent = jobs.create_batch(s, owner_id=owner, engine="preview", queue="cpu",
                               params={"item_kind": "tryon"}, webhook_url=webhook_url)
    kids = [jobs.create_job(s, owner_id=owner, photo_id=photo, garment_id=garment,
                            engine="preview", queue="cpu", params={"batch_index": i},
                            max_attempts=2, parent_id=parent.id).id for i in range(n)]
    s.commit()
    return parent.id, kids


def run(s: Session, job_id: str, ok: bool = True) -> None:
    claim = jobs.try_claim(s, job_id, "w:1")
    assert claim.outcome is jobs.ClaimOutcome.CLAIMED and claim.attempt is not None
    if ok:
        assert jobs.finish_success(s, job_id, claim.attempt, [spec()])
    else:
        assert jobs.finish_failure(s, job_id, claim.attempt, "internal_error", "x")
    s.commit()


def test_parent_settles_when_the_last_child_ends(factory: sessionmaker[Session]) -> None:
    with factory() as s:
        parent, kids = batch(s, 3, webhook_url="https://example.com/h")
        assert state(s, parent).status == "running"
        # never claimed, never reaped (no heartbeat), never retried one by one
        assert jobs.try_claim(s, parent, "w:1").outcome is jobs.ClaimOutcome.DONE
        rep = reaping.reap(s, now=jobs.db_now(s) + timedelta(hours=1), stale_after_s=1)
        assert parent not in rep.requeued + rep.failed
        assert parent not in [j for j, _ in rep.republish]
        s.rollback()
        run(s, kids[0])
        run(s, kids[1], ok=False)
        p = state(s, parent)
        assert p.status == "running" and p.progress == pytest.approx(2 / 3)
        assert jobs.batch_progress(s, parent) == jobs.BatchProgress(3, 2, 1, 1, 0)
        run(s, kids[2], ok=False)
        p = state(s, parent)
        assert p.status == "succeeded" and p.progress == 1.0
        ev = s.query(WebhookDelivery).filter(WebhookDelivery.job_id == parent).one()
        assert ev.event_type == "batch.succeeded"
        with pytest.raises(Exception, match="not retried"):
            jobs.retry_job(s, kids[1])


def test_all_children_failed_fails_the_batch(factory: sessionmaker[Session]) -> None:
    with factory() as s:
        parent, kids = batch(s, 2)
        for k in kids:
            run(s, k, ok=False)
        p = state(s, parent)
        assert p.status == "failed" and p.error_code == "batch_failed"


def test_cancel_batch_cancels_every_open_child(factory: sessionmaker[Session]) -> None:
    with factory() as s:
        parent, kids = batch(s, 3)
        run(s, kids[0])
        claim = jobs.try_claim(s, kids[1], "w:2")  # running
        s.commit()
        p = jobs.cancel_job(s, parent)  # the generic cancel routes to the batch
        s.commit()
        assert p.status == "canceled"
        assert [state(s, k).status for k in kids] == ["succeeded", "canceled", "canceled"]
        # the running attempt is fenced out
        assert claim.attempt is not None
        assert not jobs.heartbeat(s, kids[1], claim.attempt)
        assert jobs.cancel_batch(s, parent).status == "canceled"  # idempotent


def test_concurrent_children_settle_the_parent_exactly_once(
        factory: sessionmaker[Session]) -> None:
    with factory() as s:
        parent, kids = batch(s, 6)
    errors: list[BaseException] = []

    def work(k: str) -> None:
        try:
            with factory() as s2:
                run(s2, k)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(k,)) for k in kids]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    with factory() as s:
        assert state(s, parent).status == "succeeded"


def test_retention_purges_upload_compose_jobs_and_batches(
        factory: sessionmaker[Session], tmp_path: Path) -> None:
    from tryon.records.retention import purge_expired
    from tryon.storage import LocalStorage, job_prefix

    storage = LocalStorage(tmp_path / "objects")
    with factory() as s:
        owner, _, _ = seed_inputs(s)
        c = jobs.create_job(s, owner_id=owner, photo_id=None, garment_id=None, engine="preview",
                            queue="cpu", params={}, max_attempts=1, kind="compose")
        b = jobs.create_batch(s, owner_id=owner, engine="preview", queue="cpu", params={})
        kid = jobs.create_job(s, owner_id=owner, photo_id=None, garment_id=None,
                              engine="preview", queue="cpu", params={}, max_attempts=1,
                              kind="compose", parent_id=b.id)
        for j in (c, b, kid):
            j.created_at = T0
            storage.put(f"{job_prefix(owner, j.id)}/in/scene.png", b"x", "image/png")
        s.commit()
        ids = (c.id, b.id, kid.id)
        rep = purge_expired(s, storage, photo_ttl_s=60, result_ttl_s=0,
                            now=T0 + timedelta(seconds=61))
        assert rep.jobs == 3 and rep.objects == 3 and rep.jobs_canceled >= 2
        assert s.query(TryOnJob).filter(TryOnJob.id.in_(ids)).count() == 0
        assert not any(storage.exists(f"{job_prefix(owner, i)}/in/scene.png") for i in ids)
