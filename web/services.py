"""Per-app services (database, storage, publisher, analyzer) and the per-request session."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from flask import current_app, g
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from tryon.config import Settings
from tryon.storage import Storage

log = logging.getLogger(__name__)


@dataclass
class Services:
    """Everything a view needs besides the request. One instance per app."""

    settings: Settings
    session_factory: sessionmaker[Session]
    storage: Storage
    publisher: Any  # web.publisher.Publisher protocol
    analyzer: Any  # callable(AnalysisInput, categories) -> analysis dict
    secret_key: str
    #: ``engines(session) -> {engine: ready}`` for engines live workers advertise
    engines: Any = None
    webhook_resolver: Any = None  # tryon.webhooks.Resolver; None: the system resolver
    #: raises when the broker is unreachable (/readyz); None: a kombu connection check
    broker_probe: Callable[[], None] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ServiceOverrides:
    """What ``create_app(services=...)`` uses instead of building it from the settings.

    Tests and embedders pass fakes here (never through ``app.config``); ``None`` means build the
    default from :class:`~tryon.config.Settings`.
    """

    session_factory: sessionmaker[Session] | None = None
    storage: Storage | None = None
    publisher: Any = None  # web.publisher.Publisher protocol
    analyzer: Any = None  # callable(AnalysisInput, categories) -> analysis dict
    #: ``engines(session) -> {engine: ready}``; None: the worker registry (RegistryEngines)
    engines: Any = None
    webhook_resolver: Any = None
    broker_probe: Callable[[], None] | None = None


class RegistryEngines:
    """The engines live workers advertise in the worker registry (:mod:`tryon.records.workers`):
    a worker whose heartbeat is older than ``stale_after_s`` counts as gone."""

    def __init__(self, stale_after_s: float) -> None:
        self.stale_after_s = stale_after_s

    def __call__(self, session: Session) -> dict[str, bool]:
        from tryon.records.workers import live_engines

        return live_engines(session, self.stale_after_s)


def services() -> Services:
    svc: Services = current_app.extensions["tryon"]
    return svc


def db_session() -> Session:
    """The request's session, opened on first use and closed at teardown."""
    session: Session | None = g.get("db_session")
    if session is None:
        session = services().session_factory()
        g.db_session = session
    return session


def close_session(_exc: BaseException | None = None) -> None:
    session: Session | None = g.pop("db_session", None)
    if session is not None:
        try:
            session.rollback()  # anything the view did not commit is dropped
        except SQLAlchemyError as exc:
            # the database went away under this request (its answer is already made): the
            # connection is invalidated and the pool reconnects; a teardown must not raise
            log.warning("session rollback at teardown failed: %s", exc.__class__.__name__)
        finally:
            session.close()
