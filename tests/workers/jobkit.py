"""Shared by the worker unit tests and the integration tests: seed a shopper, a merchant, a
photo with a placement and a garment with a mask, with real images in storage."""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Any

import numpy as np
from sqlalchemy.orm import Session

from tryon.images import encode_png
from tryon.records import jobs
from tryon.records.models import Account, Garment, Photo, TryOnJob
from tryon.storage import new_key


def seed_inputs(session: Session, storage: Any, size: tuple[int, int] = (48, 64)) -> dict[str, str]:
    w, h = size
    owner = Account(name="shopper", role="shopper")
    merchant = Account(name="shop", role="merchant")
    session.add_all([owner, merchant])
    session.flush()
    person = np.full((h, w, 3), 120, np.uint8)
    garment = np.zeros((32, 24, 3), np.uint8)
    garment[..., 0] = 200
    mask = np.zeros((32, 24), np.uint8)
    mask[4:28, 4:20] = 255
    pk = new_key("photos", owner.id, "png")
    gk = new_key("garments", merchant.id, "png")
    mk = new_key("masks", merchant.id, "png")
    storage.put(pk, encode_png(person), "image/png")
    storage.put(gk, encode_png(garment), "image/png")
    storage.put(mk, encode_png(mask), "image/png")
    photo = Photo(owner_id=owner.id, image_key=pk, width=w, height=h,
                  image_sha256=hashlib.sha256(encode_png(person)).hexdigest(),
                  placements={"upper_body": {"box": [8, 10, 40, 40], "category": "upper_body"}})
    g = Garment(owner_id=merchant.id, category="upper_body", image_key=gk, mask_key=mk,
                image_sha256=hashlib.sha256(encode_png(garment)).hexdigest())
    session.add_all([photo, g])
    session.flush()
    return {"owner": owner.id, "photo": photo.id, "garment": g.id}


def add_job(session: Session, ids: dict[str, str], *, engine: str = "fake", queue: str = "cpu",
            params: dict[str, Any] | None = None, max_attempts: int = 3,
            webhook_url: str | None = None) -> str:
    job = jobs.create_job(session, owner_id=ids["owner"], photo_id=ids["photo"],
                          garment_id=ids["garment"], engine=engine, queue=queue,
                          params={"num_samples": 1, "steps": 4, **(params or {})},
                          max_attempts=max_attempts, webhook_url=webhook_url)
    return job.id


def claim_job(session: Session, job_id: str, worker_id: str, now: datetime | None = None, *,
              stale_after_s: float | None = None) -> int | None:
    """:func:`jobs.try_claim` reduced to the fencing token (``None`` when not claimed)."""
    claim = jobs.try_claim(session, job_id, worker_id, now=now, stale_after_s=stale_after_s)
    return claim.attempt if claim.outcome is jobs.ClaimOutcome.CLAIMED else None


def still_owner(session: Session, job_id: str, attempt: int) -> bool:
    """True while attempt ``attempt`` owns the running job and no cancel was requested."""
    row = session.get(TryOnJob, job_id, populate_existing=True)
    return bool(row is not None and row.status == jobs.RUNNING and row.attempt == attempt
                and not row.cancel_requested)
