"""Delivering one webhook outbox row (the logic behind the ``tryon.deliver_webhook`` task)."""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from tryon.backoff import backoff_s
from tryon.config import Settings
from tryon.errors import InvalidInputError
from tryon.records import jobs
from tryon.records.db import session_scope
from tryon.records.models import WebhookDelivery

log = logging.getLogger(__name__)

#: first retry delay of a failed delivery (seconds), doubled per attempt, full jitter
WEBHOOK_BACKOFF_BASE_S = 5.0


@dataclass(frozen=True)
class DeliveryOutcome:
    """``status``: delivered | retry (after ``countdown_s``) | failed | skipped."""

    status: str
    countdown_s: float = 0.0


def deliver_webhook(
    settings: Settings,
    factory: sessionmaker[Session],
    delivery_id: str,
    *,
    secret: str,
    rng: random.Random | None = None,
    resolver: Any = None,
) -> DeliveryOutcome:
    """Attempt one delivery of outbox row ``delivery_id`` (idempotent per event id).

    The URL is checked again (DNS may have changed since registration); the signature and
    ``webhook-id`` follow Standard Webhooks. After ``webhook_max_attempts`` failures the row is
    ``failed`` (the dead-letter state ops can see).
    """
    import json

    from tryon import webhooks

    with session_scope(factory) as s:
        row = s.get(WebhookDelivery, delivery_id)
        if row is None or row.status != "pending":
            return DeliveryOutcome("skipped")
        url, event_id, payload, attempt = row.url, row.event_id, dict(row.payload), row.attempt
    body = json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()
    try:
        checked = webhooks.validate_webhook_url(
            url, resolver=resolver, allow_http=settings.webhook_allow_insecure,
            allow_private=settings.webhook_allow_insecure)
        headers = webhooks.sign(secret, event_id, int(time.time()), body)
        result = webhooks.deliver(checked, headers, body)
    except InvalidInputError as exc:
        result = webhooks.DeliveryResult(False, None, exc.message)
    attempt += 1
    if result.ok:
        status, countdown = "delivered", 0.0
    elif attempt >= settings.webhook_max_attempts:
        status, countdown = "failed", 0.0
    else:
        status = "pending"
        countdown = backoff_s(attempt, base=WEBHOOK_BACKOFF_BASE_S, cap=settings.max_retry_backoff_s,
                              rng=rng)
    with session_scope(factory) as s:
        row = s.get(WebhookDelivery, delivery_id)
        if row is not None:
            row.attempt = attempt
            row.status = status
            # when the retry message is due; the reaper re-sends it if it is overdue (lost)
            row.next_attempt_at = (jobs.db_now(s) + timedelta(seconds=countdown)
                                   if status == "pending" else None)
            row.last_status_code = result.status_code
            row.last_error = result.error
            if result.ok:
                row.delivered_at = jobs.db_now(s)
    log.info("webhook delivery=%s event=%s attempt=%d status=%s code=%s", delivery_id, event_id,
             attempt, status, result.status_code)
    return DeliveryOutcome("retry" if status == "pending" else status, countdown)
