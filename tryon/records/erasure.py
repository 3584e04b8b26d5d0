"""Erasure of a shopper (P-1): everything they uploaded or had made, in one call.

Framework-free: the API (``DELETE /v1/me``) and the ops CLI (``tryon accounts erase``) both call
:func:`erase_account` with a session and a storage.

What is deleted (rows, not anonymised): the shopper's photos, try-on jobs, results, webhook
deliveries of those jobs and API keys. The account row stays as a tombstone (``deleted_at`` set,
name replaced) so its id is never reused and late references resolve to "deleted"; it holds no
personal data. Objects: everything under ``photos/<id>``, ``personmasks/<id>`` and
``results/<id>`` (the key scheme puts every shopper object under one of these per-owner
prefixes), plus any row-referenced key outside them.

Order, and why:

1. cancel queued/running jobs and commit: a running worker's heartbeat and finish are fenced on
   ``status='running' AND attempt=N``, so from here on it stops and deletes its own outputs;
2. delete the objects (a storage failure raises here, before any row is gone, so the request
   can simply be repeated with the still-valid key);
3. delete the rows, revoke the keys, tombstone the account, commit;
4. sweep the prefixes again: catches an object a worker wrote between 2 and its fenced finish.

Idempotent: erasing an already erased account repeats steps 2-4 (how ops finish an erasure whose
last sweep failed).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, or_, select
from sqlalchemy.orm import Session

from tryon.errors import ConflictError, InvalidInputError, NotFoundError
from tryon.records.models import (
    Account,
    ApiKey,
    Photo,
    TryOnJob,
    TryOnResult,
    WebhookDelivery,
    utcnow,
)
from tryon.storage import Storage
from tryon.types import Role

log = logging.getLogger(__name__)

#: storage kinds whose ``{kind}/{owner_id}`` prefix holds a shopper's objects
SHOPPER_KINDS = ("photos", "personmasks", "results")
#: the name a tombstoned account keeps
TOMBSTONE_NAME = "deleted"


@dataclass(frozen=True)
class ErasureReport:
    """What :func:`erase_account` removed (counts; ``objects`` as the backend reported)."""

    account_id: str
    jobs_canceled: int
    photos: int
    jobs: int
    results: int
    keys: int
    objects: int


def owner_prefixes(owner_id: str) -> list[str]:
    """The storage prefixes holding a shopper's objects."""
    return [f"{kind}/{owner_id}" for kind in SHOPPER_KINDS]


def delete_job_rows(session: Session, job_ids: Iterable[str]) -> tuple[int, int]:
    """Delete jobs with their results and webhook deliveries (caller commits; objects are the
    caller's job). Returns ``(jobs, results)`` deleted."""
    ids = list(job_ids)
    if not ids:
        return 0, 0
    n_results = 0
    n_jobs = 0
    for i in range(0, len(ids), 500):  # bounded IN lists
        chunk = ids[i:i + 500]
        session.execute(delete(WebhookDelivery).where(WebhookDelivery.job_id.in_(chunk)),
                        execution_options={"synchronize_session": False})
        res = session.execute(delete(TryOnResult).where(TryOnResult.job_id.in_(chunk)),
                              execution_options={"synchronize_session": False})
        n_results += res.rowcount  # type: ignore[attr-defined]
        res = session.execute(delete(TryOnJob).where(TryOnJob.id.in_(chunk)),
                              execution_options={"synchronize_session": False})
        n_jobs += res.rowcount  # type: ignore[attr-defined]
    return n_jobs, n_results


def cancel_open_jobs(session: Session, job_ids: Iterable[str]) -> int:
    """Cancel each job that is queued or running (caller commits). A job that finished in the
    meantime is terminal already, which is all a delete needs. Returns how many were canceled."""
    from tryon.records.jobs import cancel_job

    n = 0
    for job_id in job_ids:
        try:
            cancel_job(session, job_id)
            n += 1
        except (ConflictError, NotFoundError):
            pass
    return n


def delete_photos(session: Session, storage: Storage, photo_ids: Iterable[str], *,
                  keep_rows: bool, now: datetime | None = None) -> tuple[int, int, int, int]:
    """Delete photos and everything made from them, objects before rows (the one path for a
    shopper's ``DELETE /v1/photos/{id}`` and for retention). Commits itself.

    1. cancel their open jobs and commit (running workers are fenced out from here on);
    2. delete the objects: image, person mask, every output under each job's prefix (a storage
       failure raises here, before any row changed, so the call can simply be repeated);
    3. rows: ``keep_rows`` (a shopper's delete) marks the photos deleted and drops the result
       rows, so the jobs still answer with ``results_expired``; else the photos and their jobs
       go, with results and deliveries;
    4. commit.

    Returns ``(jobs canceled, objects, jobs deleted, results deleted)``.
    """
    from tryon.storage import job_prefix

    photo_ids = list(photo_ids)
    photos = session.execute(
        select(Photo.id, Photo.image_key, Photo.person_mask_key, Photo.deleted_at)
        .where(Photo.id.in_(photo_ids))).all()
    job_rows = session.execute(
        select(TryOnJob.id, TryOnJob.owner_id, TryOnJob.status)
        .where(TryOnJob.photo_id.in_(photo_ids))).all()
    # 1. fence running workers out
    canceled = cancel_open_jobs(
        session, [j.id for j in job_rows if j.status in ("queued", "running")])
    session.commit()
    # 2. objects
    objects = 0
    for p in photos:
        if p.deleted_at is None:  # a deleted photo's objects are gone already
            for key in (p.image_key, p.person_mask_key):
                if key:
                    storage.delete(key)
                    objects += 1
    for j in job_rows:
        objects += storage.delete_prefix(job_prefix(j.owner_id, j.id))
    # 3. rows
    job_ids = [j.id for j in job_rows]
    if keep_rows:
        n_jobs = 0
        n_results = session.execute(
            delete(TryOnResult).where(TryOnResult.job_id.in_(job_ids)),
            execution_options={"synchronize_session": False}).rowcount  # type: ignore[attr-defined]
        for photo in session.scalars(select(Photo).where(Photo.id.in_(photo_ids))):
            photo.deleted_at = photo.deleted_at or now or utcnow()
    else:
        n_jobs, n_results = delete_job_rows(session, job_ids)
        session.execute(delete(Photo).where(Photo.id.in_(photo_ids)),
                        execution_options={"synchronize_session": False})
    # 4.
    session.commit()
    session.expire_all()  # bulk deletes bypassed the identity map
    return canceled, objects, n_jobs, n_results


def delete_jobs(session: Session, storage: Storage, job_ids: Iterable[str]) -> tuple[int, int, int]:
    """Delete jobs that stand on their own (compose jobs with uploaded inputs, batches) with
    everything under them: a batch's children too. Open ones are canceled and committed first
    (fencing running workers out), then the objects under each job's prefix (uploaded inputs
    and results), then the rows; commits. Returns ``(canceled, objects, jobs deleted)``."""
    from tryon.storage import job_prefix

    ids = list(job_ids)
    rows = session.execute(
        select(TryOnJob.id, TryOnJob.owner_id, TryOnJob.status)
        .where(or_(TryOnJob.id.in_(ids), TryOnJob.parent_id.in_(ids)))).all()
    canceled = cancel_open_jobs(session, [r.id for r in rows if r.id in ids
                                          and r.status in ("queued", "running")])
    canceled += cancel_open_jobs(session, [r.id for r in rows if r.id not in ids
                                           and r.status in ("queued", "running")])
    session.commit()
    objects = sum(storage.delete_prefix(job_prefix(r.owner_id, r.id)) for r in rows)
    children = [r.id for r in rows if r.id not in ids]
    n_jobs = delete_job_rows(session, children)[0] + delete_job_rows(session, ids)[0]
    session.commit()
    session.expire_all()
    return canceled, objects, n_jobs


def _sweep(storage: Storage, owner_id: str, stray_keys: Iterable[str]) -> int:
    prefixes = owner_prefixes(owner_id)
    count = 0
    for prefix in prefixes:
        count += storage.delete_prefix(prefix)
    for key in stray_keys:
        if not any(key.startswith(p + "/") for p in prefixes):
            storage.delete(key)
            count += 1
    return count


def erase_account(
    session: Session, storage: Storage, account_id: str, *, now: datetime | None = None
) -> ErasureReport:
    """Erase shopper ``account_id`` (see the module docstring). Commits itself (twice).

    Raises :class:`NotFoundError` for an unknown account, :class:`InvalidInputError` for a
    merchant or ops account (their garments are another lifecycle), and
    :class:`tryon.errors.StorageUnavailableError` when the backend fails (safe to repeat).
    """
    account = session.get(Account, account_id)
    if account is None:
        raise NotFoundError(f"no account {account_id!r}")
    if account.role != Role.SHOPPER.value:
        raise InvalidInputError(f"account {account_id} is a {account.role}; only shopper "
                                "accounts can be erased")
    # 1. fence running workers out
    open_ids = list(session.scalars(select(TryOnJob.id).where(
        TryOnJob.owner_id == account_id, TryOnJob.status.in_(("queued", "running")))))
    canceled = cancel_open_jobs(session, open_ids)
    session.commit()
    # 2. objects (keys of rows outside the owner prefixes too, should any exist)
    photo_keys = session.execute(
        select(Photo.image_key, Photo.person_mask_key).where(Photo.owner_id == account_id)).all()
    job_ids = list(session.scalars(select(TryOnJob.id).where(TryOnJob.owner_id == account_id)))
    result_keys = list(session.scalars(
        select(TryOnResult.storage_key).join(TryOnJob).where(TryOnJob.owner_id == account_id)))
    stray = [k for row in photo_keys for k in row if k] + result_keys
    objects = _sweep(storage, account_id, stray)
    # 3. rows
    n_jobs, n_results = delete_job_rows(session, job_ids)
    n_photos = session.execute(
        delete(Photo).where(Photo.owner_id == account_id),
        execution_options={"synchronize_session": False}).rowcount  # type: ignore[attr-defined]
    n_keys = session.execute(
        delete(ApiKey).where(ApiKey.account_id == account_id),
        execution_options={"synchronize_session": False}).rowcount  # type: ignore[attr-defined]
    account.name = TOMBSTONE_NAME
    if account.deleted_at is None:
        account.deleted_at = now or utcnow()
    session.commit()
    session.expire_all()  # bulk deletes bypassed the identity map
    # 4. late writes of a fenced worker
    objects += _sweep(storage, account_id, [])
    report = ErasureReport(account_id, canceled, n_photos, n_jobs, n_results, n_keys, objects)
    log.info("erased account=%s canceled=%d photos=%d jobs=%d results=%d keys=%d objects=%d",
             account_id, canceled, n_photos, n_jobs, n_results, n_keys, objects)
    return report
