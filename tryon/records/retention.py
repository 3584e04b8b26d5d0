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
"""

from __future__ import annotations

import logging
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
