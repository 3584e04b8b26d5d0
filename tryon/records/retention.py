"""Retention (P-2): photos and results older than their TTL are purged, rows and objects.

Pure database + storage, with the clock injected (``now=``), run by the reaper pass
(:class:`workers.reaper.Reaper`) at most every ``TRYON_PURGE_INTERVAL_S``.

* A photo older than ``TRYON_PHOTO_TTL_S`` is erased as if never uploaded: its open try-ons are
  canceled first (committed, so a running worker is fenced out and deletes its own output), then
  its image and person mask, every result object of its try-ons, and the rows (photo, its
  try-ons, their results and webhook deliveries) are deleted. A photo the shopper deleted earlier
  (``deleted_at`` set, objects already gone) has its row removed the same way once past the TTL.
* A compose job or batch whose scene was uploaded with it (no photo row) is erased the same
  way once older than ``TRYON_PHOTO_TTL_S``: open jobs canceled, its uploaded inputs and
  results (and a batch's children's) deleted, then the rows.
* A result older than ``TRYON_RESULT_TTL_S`` loses its object and its row; the job keeps its
  status (``succeeded``) with an empty ``results`` list, and the API shows
  ``results_expired: true``.

``0`` disables a TTL. Objects are deleted before their rows, so a storage outage leaves rows
that the next pass retries rather than orphaned objects nobody points at.

Retention does not trust rows alone: :func:`sweep_result_orphans` lists the ``results/`` tree
and deletes every object no result row points at, unless it may still become one (the
current attempt of a job that is still queued or running). That removes what killed attempts
wrote (``a1/…`` beside the winning ``a2/…``), what a fenced run stored after losing its job,
and objects whose rows a crash removed first.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from tryon.records.erasure import delete_jobs, delete_photos
from tryon.records.models import Photo, TryOnJob, TryOnResult
from tryon.storage import Storage

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PurgeReport:
    """What one :func:`purge_expired` call removed."""

    photos: int = 0
    jobs_canceled: int = 0
    jobs: int = 0
    results: int = 0
    objects: int = 0
    #: objects under ``results/`` that no row points at, deleted by the orphan sweep
    orphans: int = 0
    #: local temp files of killed writes, deleted by the orphan sweep (counted apart: they are
    #: no objects, and a young one is left for a later pass)
    temp_files: int = 0


@dataclass(frozen=True)
class SweepReport:
    """What one :func:`sweep_result_orphans` call removed."""

    #: result objects no row points at and no live attempt can still claim
    objects: int = 0
    #: ``.tmp-*.part`` files of writes killed before their rename (local storage only)
    temp_files: int = 0


def purge_expired(
    session: Session,
    storage: Storage,
    *,
    photo_ttl_s: float,
    result_ttl_s: float,
    now: datetime,
    batch: int = 200,
) -> PurgeReport:
    """Purge photos created before ``now - photo_ttl_s`` and results created before
    ``now - result_ttl_s`` (a TTL ``<= 0`` is off). At most ``batch`` photos and ``batch``
    results per call (the reaper runs again); commits itself. ``now`` is timezone-aware UTC."""
    photos = canceled = n_jobs = n_results = objects = 0
    if photo_ttl_s > 0:
        cutoff = now - timedelta(seconds=photo_ttl_s)
        photo_ids = list(session.scalars(
            select(Photo.id).where(Photo.created_at < cutoff).order_by(Photo.created_at)
            .limit(batch)))
        if photo_ids:
            canceled, objects, n_jobs, n_results = delete_photos(
                session, storage, photo_ids, keep_rows=False)
            photos = len(photo_ids)
        # uploads that came with a compose job or batch are photos by another name
        upload_jobs = list(session.scalars(
            select(TryOnJob.id).where(TryOnJob.kind.in_(("compose", "batch")),
                                      TryOnJob.parent_id.is_(None), TryOnJob.photo_id.is_(None),
                                      TryOnJob.created_at < cutoff)
            .order_by(TryOnJob.created_at).limit(batch)))
        if upload_jobs:
            c, o, j = delete_jobs(session, storage, upload_jobs)
            canceled, objects, n_jobs = canceled + c, objects + o, n_jobs + j
    if result_ttl_s > 0:
        cutoff = now - timedelta(seconds=result_ttl_s)
        results = session.execute(
            select(TryOnResult.id, TryOnResult.storage_key)
            .where(TryOnResult.created_at < cutoff).order_by(TryOnResult.created_at).limit(batch)
        ).all()
        if results:
            for res in results:
                storage.delete(res.storage_key)
                objects += 1
            n_results += session.execute(
                delete(TryOnResult).where(TryOnResult.id.in_([res.id for res in results])),
                execution_options={"synchronize_session": False},
            ).rowcount  # type: ignore[attr-defined]
            session.commit()
    report = PurgeReport(photos, canceled, n_jobs, n_results, objects)
    if report != PurgeReport():
        log.info("purge: photos=%d jobs=%d (canceled %d) results=%d objects=%d",
                 photos, n_jobs, canceled, n_results, objects)
    return report


#: ``results/{owner}/{job}/a{attempt}/{index}.{ext}``
_RESULT_KEY_RE = re.compile(r"^results/[0-9a-f]{32}/([0-9a-f]{32})/a(\d+)/")
_OPEN = ("queued", "running")


#: a local temp file this old is no write in progress but a killed writer's leftover
STALE_TEMP_S = 300.0


def sweep_result_orphans(session: Session, storage: Storage, *, batch: int = 500,
                         temp_min_age_s: float = STALE_TEMP_S) -> SweepReport:
    """Delete result objects that no ``TryOnResult`` row points at and that no live attempt
    can still claim, and (local storage) temp files older than ``temp_min_age_s``; return how
    many of each were deleted. ``temp_min_age_s=0`` is only safe when no writer can be running
    (every worker stopped): a younger temp file may be a write in progress. Kept: the keys of result rows, and the
    objects of a job's current attempt while the job is queued or running (its finish may
    still record them). Everything else under a job (lost attempts, a fenced run's late
    writes, a deleted job's leftovers) goes. Lists storage first, then reads the rows, so an
    attempt that finishes in between is seen as finished with its rows. At most ``batch``
    jobs' rows are read per query."""
    keys = storage.list_keys("results")
    by_job: dict[str, list[tuple[str, int]]] = {}
    for key in keys:
        m = _RESULT_KEY_RE.match(key)
        if m is None:  # not a result layout we wrote: never ours to judge
            continue
        by_job.setdefault(m.group(1), []).append((key, int(m.group(2))))
    deleted = 0
    job_ids = sorted(by_job)
    for start in range(0, len(job_ids), batch):
        chunk = job_ids[start:start + batch]
        live = {r.id: (r.status, r.attempt) for r in session.execute(
            select(TryOnJob.id, TryOnJob.status, TryOnJob.attempt).where(TryOnJob.id.in_(chunk)))}
        kept = set(session.scalars(
            select(TryOnResult.storage_key).where(TryOnResult.job_id.in_(chunk))))
        session.rollback()  # read-only: release the snapshot before deleting objects
        for job_id in chunk:
            status, attempt = live.get(job_id, (None, None))
            for key, key_attempt in by_job[job_id]:
                if key in kept or (status in _OPEN and key_attempt >= (attempt or 0)):
                    continue
                storage.delete(key)
                deleted += 1
    # local storage: temp files of writes killed before their rename (no key names them)
    temp_files = 0
    clean = getattr(storage, "delete_stale_temp_files", None)
    if clean is not None:
        temp_files = clean("results", temp_min_age_s)
    if deleted or temp_files:
        log.info("orphan sweep: deleted %d result objects no row points at and %d temp files "
                 "of killed writes", deleted, temp_files)
    return SweepReport(deleted, temp_files)
