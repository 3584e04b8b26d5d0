"""Database records, plain SQLAlchemy 2.0, shared by the web app and the workers.

The try-on job row is the source of truth for status; Celery messages only carry its id.
Timestamps are timezone-aware UTC. Ids are random UUID hex strings (never guessable counters).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def new_id() -> str:
    return uuid.uuid4().hex


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {dict[str, Any]: JSON, datetime: DateTime(timezone=True)}


class Account(Base):
    __tablename__ = "accounts"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(16))  # tryon.types.Role
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    deleted_at: Mapped[datetime | None] = mapped_column(default=None)

    keys: Mapped[list[ApiKey]] = relationship(back_populates="account")


class ApiKey(Base):
    """An API key: only its SHA-256 is stored; the plaintext is shown once at creation."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    #: first characters of the key, shown in listings so a human can tell keys apart
    prefix: Mapped[str] = mapped_column(String(16))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(default=None)
    revoked_at: Mapped[datetime | None] = mapped_column(default=None)
    last_used_at: Mapped[datetime | None] = mapped_column(default=None)

    account: Mapped[Account] = relationship(back_populates="keys")


class Garment(Base):
    __tablename__ = "garments"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    owner_id: Mapped[str] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    sku: Mapped[str | None] = mapped_column(String(100), default=None)
    category: Mapped[str] = mapped_column(String(16))  # tryon.types.Category
    length: Mapped[str] = mapped_column(String(16), default="regular")
    image_key: Mapped[str] = mapped_column(String(300))
    mask_key: Mapped[str] = mapped_column(String(300))
    #: where the mask came from (uploaded | alpha | background_removal) and its quality score
    mask_source: Mapped[str] = mapped_column(String(32), default="")
    mask_score: Mapped[float] = mapped_column(Float, default=1.0)
    image_sha256: Mapped[str] = mapped_column(String(64), default="")
    width: Mapped[int] = mapped_column(Integer, default=0)
    height: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    deleted_at: Mapped[datetime | None] = mapped_column(default=None)


class Photo(Base):
    __tablename__ = "photos"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    owner_id: Mapped[str] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    image_key: Mapped[str] = mapped_column(String(300))
    image_sha256: Mapped[str] = mapped_column(String(64), default="")
    width: Mapped[int] = mapped_column(Integer, default=0)
    height: Mapped[int] = mapped_column(Integer, default=0)
    #: PoseResult.to_dict() or None when no person was found
    pose: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    #: {category: error code or None}
    verdicts: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    #: {category: Placement.to_dict()}
    placements: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    #: {category: the pre-flight error's message and details} for unusable categories
    verdict_details: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    #: ``{"spans": {...}, "on_body": [...]}`` from the analysis: what a placement recomputed
    #: for another garment length needs besides the pose (None for older photos)
    body: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    #: the person segmentation (grayscale PNG, 255 = person) for shape-aware target masks
    person_mask_key: Mapped[str | None] = mapped_column(String(300), default=None)
    consent_at: Mapped[datetime | None] = mapped_column(default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    deleted_at: Mapped[datetime | None] = mapped_column(default=None)


class TryOnJob(Base):
    __tablename__ = "tryon_jobs"
    __table_args__ = (UniqueConstraint("owner_id", "idempotency_key"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    owner_id: Mapped[str] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    #: tryon | compose | batch (``tryon.types.JobKind``): one row and one state machine for all
    kind: Mapped[str] = mapped_column(String(16), default="tryon", server_default="tryon")
    #: the batch this job is a child of (deleting the batch deletes its children)
    parent_id: Mapped[str | None] = mapped_column(
        ForeignKey("tryon_jobs.id", ondelete="CASCADE"), index=True, default=None)
    #: the person photo (try-on) or scene photo (compose); None for an uploaded scene or a batch
    photo_id: Mapped[str | None] = mapped_column(
        ForeignKey("photos.id", ondelete="CASCADE"), index=True, default=None)
    #: the garment (try-on) or reference garment (compose); None for an uploaded reference
    garment_id: Mapped[str | None] = mapped_column(
        ForeignKey("garments.id", ondelete="CASCADE"), index=True, default=None)
    engine: Mapped[str] = mapped_column(String(32))
    queue: Mapped[str] = mapped_column(String(32))  # gpu | cpu
    #: steps, guidance, seed (or None), num_samples, control_strength, box override, category
    params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    status: Mapped[str] = mapped_column(String(16), default="queued", index=True)
    stage: Mapped[str] = mapped_column(String(32), default="queued")
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer, default=3)
    heartbeat_at: Mapped[datetime | None] = mapped_column(default=None)
    #: set when the broker accepted the message; NULL = committed but not yet published
    published_at: Mapped[datetime | None] = mapped_column(default=None)
    #: messages published for the current queued spell (API publish and reaper re-publishes);
    #: the reaper backs off exponentially in it so a backlog does not duplicate its messages
    publish_count: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    error_code: Mapped[str | None] = mapped_column(String(64), default=None)
    error_message: Mapped[str | None] = mapped_column(Text, default=None)
    #: seconds per stage: {"queued": .., "preprocess": .., "sampling": .., "store": ..}
    timings: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    worker_id: Mapped[str | None] = mapped_column(String(200), default=None)
    webhook_url: Mapped[str | None] = mapped_column(String(2000), default=None)
    idempotency_key: Mapped[str | None] = mapped_column(String(200), default=None)
    request_hash: Mapped[str | None] = mapped_column(String(64), default=None)
    #: the stored response body for idempotent replays
    response_body: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    started_at: Mapped[datetime | None] = mapped_column(default=None)
    finished_at: Mapped[datetime | None] = mapped_column(default=None)

    results: Mapped[list[TryOnResult]] = relationship(
        back_populates="job", order_by="TryOnResult.index"
    )


class TryOnResult(Base):
    __tablename__ = "tryon_results"
    __table_args__ = (UniqueConstraint("job_id", "index"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    job_id: Mapped[str] = mapped_column(ForeignKey("tryon_jobs.id", ondelete="CASCADE"), index=True)
    index: Mapped[int] = mapped_column(Integer)
    #: the attempt that wrote it (fencing: only the winning attempt's result is recorded)
    attempt: Mapped[int] = mapped_column(Integer)
    storage_key: Mapped[str] = mapped_column(String(300))
    seed: Mapped[int] = mapped_column(Integer)
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64))
    #: engine, engine version, weights checksum, preprocessing version, parameters, input hashes
    record: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    job: Mapped[TryOnJob] = relationship(back_populates="results")


class WebhookDelivery(Base):
    __tablename__ = "webhook_deliveries"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    #: stable across retries: the Standard Webhooks `webhook-id`
    event_id: Mapped[str] = mapped_column(String(64), unique=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("tryon_jobs.id", ondelete="CASCADE"), index=True)
    event_type: Mapped[str] = mapped_column(String(64))
    url: Mapped[str] = mapped_column(String(2000))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    status: Mapped[str] = mapped_column(String(16), default="pending")  # pending|delivered|failed
    last_status_code: Mapped[int | None] = mapped_column(Integer, default=None)
    last_error: Mapped[str | None] = mapped_column(Text, default=None)
    #: when the next delivery attempt is due (set whenever a retry is scheduled); the reaper
    #: re-publishes a pending delivery overdue by more than a grace period (lost retry message)
    next_attempt_at: Mapped[datetime | None] = mapped_column(default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    delivered_at: Mapped[datetime | None] = mapped_column(default=None)


class WorkerProcess(Base):
    """One worker process that can run jobs (a Celery pool child), as it advertises itself.

    Written when the process starts and refreshed by its heartbeat thread; a row whose
    ``heartbeat_at`` is older than ``TRYON_STALE_AFTER_S`` is a worker that is gone. The API
    admits a try-on only for an engine some live row advertises (``engines``), so its own
    environment (``TRYON_WEIGHTS``) never decides what the workers can run.
    """

    __tablename__ = "worker_processes"

    #: ``<hostname>:<pid>``, the value the process writes to ``TryOnJob.worker_id``
    id: Mapped[str] = mapped_column(String(200), primary_key=True)
    #: logical queues consumed (``gpu``, ``cpu``)
    queues: Mapped[list[str]] = mapped_column(JSON, default=list)
    #: engines this process can run (each on the queue ``queue_for_engine`` names)
    engines: Mapped[list[str]] = mapped_column(JSON, default=list)
    #: loading | ready | failed: the engines are loaded (``failed``: see ``error``)
    state: Mapped[str] = mapped_column(String(16), default="loading")
    error: Mapped[str | None] = mapped_column(String(500), default=None)
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    heartbeat_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
