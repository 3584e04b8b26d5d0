"""The transactional outbox of webhook events: a terminal job transition adds its delivery row
in the same transaction (:func:`add_terminal_event`); workers deliver them, the reaper re-sends
those whose message was lost (:func:`reap_webhooks`)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, or_, select, update
from sqlalchemy.orm import Session

from tryon.records.clock import db_now
from tryon.records.models import TryOnJob, WebhookDelivery

_NO_SYNC = {"synchronize_session": False}


def event_id_for(job_id: str, attempt: int, status: str) -> str:
    """The stable Standard Webhooks ``webhook-id`` of a job's terminal event.

    One terminal transition per (job, attempt), so the id is unique and identical across
    delivery retries; an ops retry (a later attempt) yields a new event."""
    return f"msg_{job_id}_{attempt}_{status}"[:64]


def add_terminal_event(session: Session, job_id: str, status: str, now: datetime) -> None:
    row = session.execute(
        select(TryOnJob.webhook_url, TryOnJob.attempt, TryOnJob.error_code,
               TryOnJob.error_message, TryOnJob.kind).where(TryOnJob.id == job_id)
    ).one()
    if not row.webhook_url:
        return
    # tryon.succeeded, compose.failed, batch.canceled, ...
    event_type = f"{row.kind or 'tryon'}.{status}"
    data: dict[str, Any] = {"id": job_id, "status": status}
    if row.error_code:
        data["error"] = {"code": row.error_code, "message": row.error_message or ""}
    session.add(
        WebhookDelivery(
            event_id=event_id_for(job_id, row.attempt, status),
            job_id=job_id,
            event_type=event_type,
            url=row.webhook_url,
            payload={"type": event_type, "timestamp": now.isoformat(), "data": data},
            attempt=0,
            status="pending",
        )
    )
    session.flush()


def pending_deliveries(session: Session, job_id: str | None = None) -> list[str]:
    """Ids of webhook deliveries still ``pending`` (of one job, or all), oldest first."""
    q = select(WebhookDelivery.id).where(WebhookDelivery.status == "pending")
    if job_id is not None:
        q = q.where(WebhookDelivery.job_id == job_id)
    return list(session.execute(q.order_by(WebhookDelivery.created_at)).scalars())


def reap_webhooks(
    session: Session,
    now: datetime | None = None,
    *,
    first_publish_after_s: float = 30.0,
    overdue_grace_s: float = 30.0,
    limit: int = 500,
) -> list[str]:
    """Claim the ``pending`` webhook deliveries whose message looks lost, oldest first:

    * no attempt scheduled (``next_attempt_at`` NULL: the first publish after the terminal
      transition) and created more than ``first_publish_after_s`` ago;
    * a scheduled attempt (``next_attempt_at``, set with each retry) overdue by more than
      ``overdue_grace_s`` (the retry message was lost, e.g. the broker restarted empty).

    Each claim is a CAS setting ``next_attempt_at = now``, so concurrent reapers publish a row
    once and the same row is re-published at most once per ``overdue_grace_s``. The caller
    publishes the returned ids after commit; a duplicate delivery is possible (receivers dedupe
    on ``webhook-id``)."""
    now = now or db_now(session)
    due = and_(
        WebhookDelivery.status == "pending",
        or_(
            and_(WebhookDelivery.next_attempt_at.is_(None),
                 WebhookDelivery.created_at < now - timedelta(seconds=first_publish_after_s)),
            WebhookDelivery.next_attempt_at < now - timedelta(seconds=overdue_grace_s),
        ),
    )
    ids = session.execute(
        select(WebhookDelivery.id).where(due).order_by(WebhookDelivery.created_at).limit(limit)
    ).scalars().all()
    claimed: list[str] = []
    for delivery_id in ids:
        res = session.execute(
            update(WebhookDelivery).where(WebhookDelivery.id == delivery_id, due)
            .values(next_attempt_at=now).execution_options(**_NO_SYNC)
        )
        if res.rowcount == 1:  # type: ignore[attr-defined]
            claimed.append(delivery_id)
    return claimed
