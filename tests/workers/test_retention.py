"""P-2 retention: photos and results past their TTL are purged (rows and objects) with an
injected clock, younger ones remain; the reaper runs the purge at most every interval."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from tryon.config import Settings
from tryon.errors import ConfigError
from tryon.records import jobs
from tryon.records.accounts import create_account
from tryon.records.models import Garment, Photo, TryOnJob, TryOnResult, WebhookDelivery
from tryon.records.retention import (
    PurgeReport,
    SweepReport,
    purge_expired,
    sweep_result_orphans,
)
from tryon.storage import LocalStorage, new_key, result_key
from workers.reaper import Reaper

T0 = datetime(2030, 1, 1, tzinfo=UTC)
DAY = 86_400


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path, secret_key="test-secret")


class World:
    """One shopper and one merchant garment; rows created at chosen times."""

    def __init__(self, factory: sessionmaker[Session], storage: LocalStorage) -> None:
        self.factory, self.storage = factory, storage
        with factory() as s:
            self.shopper = create_account(s, name="s", role="shopper").id
            merchant = create_account(s, name="m", role="merchant").id
            gk, mk = new_key("garments", merchant, "png"), new_key("masks", merchant, "png")
            for k in (gk, mk):
                storage.put(k, b"g", "image/png")
            g = Garment(owner_id=merchant, category="upper_body", image_key=gk, mask_key=mk)
            s.add(g)
            s.commit()
            self.garment, self.garment_keys = g.id, (gk, mk)

    def photo(self, at: datetime) -> str:
        key = new_key("photos", self.shopper, "jpg")
        mask = new_key("personmasks", self.shopper, "png")
        self.storage.put(key, b"p", "image/jpeg")
        self.storage.put(mask, b"m", "image/png")
        with self.factory() as s:
            p = Photo(owner_id=self.shopper, image_key=key, person_mask_key=mask, created_at=at)
            s.add(p)
            s.commit()
            return p.id

    def job(self, photo: str, at: datetime, status: str = "succeeded") -> str:
        with self.factory() as s:
            j = TryOnJob(owner_id=self.shopper, photo_id=photo, garment_id=self.garment,
                         engine="fake", queue="cpu", status=status, attempt=1, created_at=at,
                         webhook_url="https://hooks.example.com/x")
            s.add(j)
            s.flush()
            if status == "succeeded":
                key = result_key(self.shopper, j.id, 1, 0)
                self.storage.put(key, b"r", "image/png")
                s.add(TryOnResult(job_id=j.id, index=0, attempt=1, storage_key=key, seed=1,
                                  width=1, height=1, sha256="0" * 64, created_at=at))
            s.commit()
            return j.id

    def keys(self, session: Session, photo_id: str) -> list[str]:
        p = session.get(Photo, photo_id)
        assert p is not None
        return [p.image_key, p.person_mask_key or ""]


def _files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


def test_photos_past_ttl_are_erased_younger_ones_remain(
        factory: sessionmaker[Session], storage: LocalStorage) -> None:
    w = World(factory, storage)
    old = w.photo(T0)
    young = w.photo(T0 + timedelta(days=9))
    old_done = w.job(old, T0 + timedelta(days=1))
    old_running = w.job(old, T0 + timedelta(days=1), status="running")
    young_done = w.job(young, T0 + timedelta(days=9))
    with factory() as s:
        old_keys, young_keys = w.keys(s, old), w.keys(s, young)
    files_before = _files(storage.root)

    with factory() as s:
        r = purge_expired(s, storage, photo_ttl_s=7 * DAY, result_ttl_s=0,
                          now=T0 + timedelta(days=10))
    assert r == PurgeReport(photos=1, jobs_canceled=1, jobs=2, results=1, objects=3)
    with factory() as s:
        assert s.get(Photo, old) is None and s.get(Photo, young) is not None
        assert s.get(TryOnJob, old_done) is None and s.get(TryOnJob, old_running) is None
        assert s.get(TryOnJob, young_done) is not None
        assert s.scalars(select(WebhookDelivery)).all() == []  # the cancel event went too
        # the running attempt is fenced out
        assert not jobs.finish_success(s, old_running, 1, [])
    gone = files_before - _files(storage.root)
    assert gone == {*old_keys, result_key(w.shopper, old_done, 1, 0)}
    for k in young_keys + [result_key(w.shopper, young_done, 1, 0), *w.garment_keys]:
        assert storage.exists(k)
    # nothing more to do at the same instant; TTL 0 purges nothing at all
    with factory() as s:
        assert purge_expired(s, storage, photo_ttl_s=7 * DAY, result_ttl_s=0,
                             now=T0 + timedelta(days=10)) == PurgeReport()
        assert purge_expired(s, storage, photo_ttl_s=0, result_ttl_s=0,
                             now=T0 + timedelta(days=1000)) == PurgeReport()


def test_results_past_ttl_are_deleted_jobs_keep_status(
        factory: sessionmaker[Session], storage: LocalStorage) -> None:
    w = World(factory, storage)
    photo = w.photo(T0)
    old = w.job(photo, T0)
    young = w.job(photo, T0 + timedelta(days=3))
    with factory() as s:
        r = purge_expired(s, storage, photo_ttl_s=0, result_ttl_s=2 * DAY,
                          now=T0 + timedelta(days=4))
    assert r == PurgeReport(results=1, objects=1)
    with factory() as s:
        job = s.get(TryOnJob, old)
        assert job is not None and job.status == "succeeded" and job.results == []
        assert len(s.get(TryOnJob, young).results) == 1  # type: ignore[union-attr]
        assert s.get(Photo, photo) is not None
    assert not storage.exists(result_key(w.shopper, old, 1, 0))
    assert storage.exists(result_key(w.shopper, young, 1, 0))


def test_reaper_purges_at_most_every_interval(
        settings: Settings, factory: sessionmaker[Session], storage: LocalStorage) -> None:
    w = World(factory, storage)
    now = datetime.now(UTC)
    old = w.photo(now - timedelta(hours=2))
    young = w.photo(now)
    clock = [1000.0]
    reaper = Reaper(settings.replace(photo_ttl_s=3600, purge_interval_s=300), factory,
                    lambda job_id, queue: None, storage=storage, monotonic=lambda: clock[0])
    p = reaper.run_once()
    assert p.purge == PurgeReport(photos=1, objects=2)
    with factory() as s:
        assert s.get(Photo, old) is None and s.get(Photo, young) is not None
    # another expired photo appears, but the interval has not passed
    older = w.photo(now - timedelta(hours=3))
    clock[0] += 10
    assert reaper.run_once().purge is None
    with factory() as s:
        assert s.get(Photo, older) is not None
    clock[0] += 300
    assert reaper.run_once().purge == PurgeReport(photos=1, objects=2)
    # TTLs off (the default): the reaper purges nothing (it only sweeps orphans)
    off = Reaper(settings, factory, lambda job_id, queue: None, storage=storage)
    ancient = w.photo(now - timedelta(days=3650))
    assert off.run_once().purge == PurgeReport()
    with factory() as s:
        assert s.get(Photo, ancient) is not None


def test_negative_ttl_is_refused(settings: Settings) -> None:
    with pytest.raises(ConfigError):
        settings.replace(result_ttl_s=-1)


def test_orphan_sweep_removes_lost_attempts_and_rowless_objects(
        settings: Settings, factory: sessionmaker[Session], storage: LocalStorage) -> None:
    """Issue 11.2: a killed attempt's outputs (a1 beside the winning a2) and objects whose rows
    are gone were kept for good; retention deleted by row only. What a live attempt may still
    record is kept."""
    w = World(factory, storage)
    photo = w.photo(T0)
    won = w.job(photo, T0)  # a1/0.png with its row
    with factory() as s:
        j = s.get(TryOnJob, won)
        assert j is not None
        j.attempt = 2
        r = j.results[0]
        r.attempt, r.storage_key = 2, result_key(w.shopper, won, 2, 0)
        s.commit()
    storage.put(result_key(w.shopper, won, 2, 0), b"r", "image/png")
    lost = [result_key(w.shopper, won, 1, 0), result_key(w.shopper, won, 1, 1)]
    storage.put(lost[1], b"half", "image/png")  # a1/0 exists from w.job already
    # a running job on attempt 3: its a3 outputs may still be recorded, a2 is lost
    running = w.job(photo, T0, status="running")
    with factory() as s:
        s.get(TryOnJob, running).attempt = 3  # type: ignore[union-attr]
        s.commit()
    keep_live = result_key(w.shopper, running, 3, 0)
    lost_live = result_key(w.shopper, running, 2, 0)
    storage.put(keep_live, b"x", "image/png")
    storage.put(lost_live, b"x", "image/png")
    # a failed job keeps nothing; a job row that is gone leaves objects nobody points at
    failed = w.job(photo, T0, status="failed")
    failed_key = result_key(w.shopper, failed, 1, 0)
    storage.put(failed_key, b"x", "image/png")
    ghost_key = result_key(w.shopper, "f" * 32, 1, 0)
    storage.put(ghost_key, b"x", "image/png")

    with factory() as s:
        assert sweep_result_orphans(s, storage) == SweepReport(objects=5)
    assert storage.list_keys("results") == sorted([result_key(w.shopper, won, 2, 0), keep_live])
    for key in (*lost, lost_live, failed_key, ghost_key):
        assert not storage.exists(key)
    assert storage.exists(w.garment_keys[0])
    with factory() as s:
        assert sweep_result_orphans(s, storage) == SweepReport()
    # the reaper runs the sweep with the TTLs off, at its purge interval
    storage.put(lost[0], b"again", "image/png")
    reaper = Reaper(settings, factory, lambda job_id, queue: None, storage=storage)
    # the same pass reaps the heartbeat-less running job (its attempts are used up, so it
    # fails), and then its a3 output is an orphan too
    assert reaper.run_once().purge == PurgeReport(orphans=2)
    with factory() as s:
        assert s.get(TryOnJob, running).status == "failed"  # type: ignore[union-attr]
    assert storage.list_keys("results") == [result_key(w.shopper, won, 2, 0)]


def test_orphan_sweep_counts_temp_files_apart_and_keeps_young_ones_by_default(
        factory: sessionmaker[Session], storage: LocalStorage) -> None:
    """A temp file younger than the threshold may be a write in progress: the periodic sweep
    keeps it; with ``temp_min_age_s=0`` (every writer stopped, as at the end of
    bench/reliability_campaign.py) it goes, counted as a temp file, not an orphaned object."""
    job_dir = storage.root / "results" / ("a" * 32) / ("b" * 32) / "a1"
    job_dir.mkdir(parents=True)
    young = job_dir / ".tmp-young.part"
    young.write_bytes(b"half")
    with factory() as s:
        assert sweep_result_orphans(s, storage) == SweepReport()
    assert young.exists()
    with factory() as s:
        assert sweep_result_orphans(s, storage, temp_min_age_s=0) == SweepReport(temp_files=1)
    assert not young.exists()
