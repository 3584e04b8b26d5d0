"""The reaper: finds jobs whose worker went silent and messages that never reached the broker.

One pass (:meth:`Reaper.run_once`) calls :func:`tryon.records.reaping.reap` in its own transaction,
commits, and only then publishes: stale ``running`` jobs re-queued, ``queued`` jobs never
published (or published long ago, with exponential backoff per message already sent), and
webhook outbox rows whose first publish or whose scheduled retry message was lost. A job whose
re-publish fails (broker down) is handed back at once (:func:`jobs.unmark_published`), so the
failed attempt does not count towards its backoff.
Duplicate messages are harmless (the claim is a compare-and-set), so the reaper may run in two
places at once (the beat-scheduled task and ``tryon serve``'s loop).

After a database outage every heartbeat looks stale, so the first pass after the reaper's own
connection recovers is skipped: running workers get one interval to heartbeat again before
anything is re-queued.

Retention (P-2): at most every ``TRYON_PURGE_INTERVAL_S`` (it lists and deletes objects, so not
every 10 s) a pass runs the orphan sweep (:func:`tryon.records.retention.sweep_result_orphans`:
result objects of lost attempts and other objects no row points at) and, when
``TRYON_PHOTO_TTL_S`` or ``TRYON_RESULT_TTL_S`` is set,
:func:`tryon.records.retention.purge_expired` with the database clock. A failing purge is
logged and retried by a later pass; it never stops the job recovery above.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from tryon.config import Settings
from tryon.logs import job_extra
from tryon.records import jobs, outbox, reaping
from tryon.records.db import session_scope
from tryon.records.retention import PurgeReport, purge_expired, sweep_result_orphans
from tryon.storage import Storage

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReaperPass:
    """What one pass did; ``skipped`` after a DB outage, ``error`` when the DB was down."""

    report: reaping.ReapReport | None
    published: int = 0
    webhooks: int = 0
    skipped: bool = False
    error: str | None = None
    #: what the retention purge removed, when it ran in this pass
    purge: PurgeReport | None = None


class Reaper:
    def __init__(
        self,
        settings: Settings,
        factory: sessionmaker[Session],
        publish_job: Callable[[str, str], None],
        publish_webhooks: Callable[[Iterable[str]], None] | None = None,
        *,
        storage: Storage | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.factory = factory
        self.publish_job = publish_job
        self.publish_webhooks = publish_webhooks
        self._db_was_down = False
        self._storage = storage  # built from the settings on the first purge when None
        self._monotonic = monotonic
        self._last_purge: float | None = None

    def run_once(self) -> ReaperPass:
        s = self.settings
        try:
            if self._db_was_down:
                with session_scope(self.factory) as session:
                    jobs.db_now(session)  # is it back?
                self._db_was_down = False
                log.warning("reaper: database is back; skipping one pass")
                return ReaperPass(None, skipped=True)
            with session_scope(self.factory) as session:
                report = reaping.reap(session, stale_after_s=s.stale_after_s,
                                   republish_after_s=s.republish_after_s)
                webhook_ids = self._stuck_webhooks(session)
        except OperationalError as exc:
            self._db_was_down = True
            log.warning("reaper: database unavailable: %s", exc)
            return ReaperPass(None, error=str(exc)[:300])
        published = 0
        unsent: list[str] = []
        for job_id, queue in report.republish:
            try:
                self.publish_job(job_id, queue)
                published += 1
            except Exception as exc:  # noqa: BLE001 - broker down: the next pass tries again
                log.warning("reaper: publish failed: %s", exc, extra=job_extra(job_id))
                unsent.append(job_id)
        if unsent and report.at is not None:
            self._hand_back(unsent, report.at)
        if webhook_ids and self.publish_webhooks is not None:
            try:
                self.publish_webhooks(webhook_ids)
            except Exception as exc:  # noqa: BLE001
                log.warning("reaper: webhook publish failed: %s", exc)
        return ReaperPass(report, published, len(webhook_ids), purge=self._maybe_purge())

    def _maybe_purge(self) -> PurgeReport | None:
        s = self.settings
        t = self._monotonic()
        if self._last_purge is not None and t - self._last_purge < s.purge_interval_s:
            return None
        self._last_purge = t
        try:
            if self._storage is None:
                from tryon.storage import make_storage

                self._storage = make_storage(s)
            report = PurgeReport()
            with self.factory() as session:
                if s.photo_ttl_s > 0 or s.result_ttl_s > 0:
                    report = purge_expired(session, self._storage, photo_ttl_s=s.photo_ttl_s,
                                           result_ttl_s=s.result_ttl_s, now=jobs.db_now(session))
                swept = sweep_result_orphans(session, self._storage)
            return dataclasses.replace(report, orphans=swept.objects,
                                       temp_files=swept.temp_files)
        except Exception as exc:  # noqa: BLE001 - DB or storage down: a later pass retries
            log.warning("reaper: retention purge failed: %s", exc)
            return None

    def _hand_back(self, job_ids: list[str], claimed_at: datetime) -> None:
        """Mark jobs whose re-publish failed as unpublished again (best effort: if the DB is
        down too, the job just waits out its backoff)."""
        try:
            with session_scope(self.factory) as session:
                for job_id in job_ids:
                    jobs.unmark_published(session, job_id, claimed_at)
        except OperationalError as exc:
            log.warning("reaper: could not hand back %d unsent jobs: %s", len(job_ids), exc)

    def _stuck_webhooks(self, session: Session) -> list[str]:
        """Pending outbox rows whose message looks lost: first publish older than
        ``republish_after_s``, or a scheduled retry overdue by more than ``republish_after_s``
        (see :func:`outbox.reap_webhooks`; claimed, so concurrent reapers send each once)."""
        grace = self.settings.republish_after_s
        return outbox.reap_webhooks(session, first_publish_after_s=grace, overdue_grace_s=grace)
