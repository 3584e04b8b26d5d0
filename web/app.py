"""The app factory: ``create_app(settings=None, **overrides)``.

Config is read in one order: :class:`tryon.config.Settings` (from ``TRYON_*``), then keyword
overrides (tests inject ``TRYON_PUBLISHER``, ``TRYON_PHOTO_ANALYZER``, ``TRYON_STORAGE``...).
The database schema is never created or migrated here: run ``tryon db upgrade``.
"""

from __future__ import annotations

import logging
from typing import Any

from apiflask import APIFlask
from flask import Response

from tryon.config import Settings, load_settings
from web.auth import authenticate_request
from web.errors import register_error_handlers
from web.services import Services, close_session

log = logging.getLogger(__name__)

API_TITLE = "tryon"
API_VERSION = "1"
#: multipart bodies: image + mask + a few short fields
MAX_FORM_PARTS = 16
# also bounds the multipart parser's internal buffer, so it must exceed its 64 KiB read size
MAX_FORM_MEMORY_SIZE = 256 * 1024


def create_app(settings: Settings | None = None, **overrides: Any) -> APIFlask:
    """Build the API app. ``overrides`` are set on ``app.config`` after the defaults."""
    settings = settings or load_settings()
    settings.validate()
    app = APIFlask(
        __name__, title=API_TITLE, version=API_VERSION, spec_path="/openapi.json",
        docs_path="/docs", json_errors=True, static_folder=None,  # type: ignore[arg-type]
    )
    # 1. configuration
    app.config.update(
        # an upload (image + mask) plus form overhead; the image check itself is max_upload_bytes
        MAX_CONTENT_LENGTH=2 * settings.max_upload_bytes + 64 * 1024,
        MAX_FORM_MEMORY_SIZE=MAX_FORM_MEMORY_SIZE,
        MAX_FORM_PARTS=MAX_FORM_PARTS,
        JSON_SORT_KEYS=False,
        SECURITY_SCHEMES={"BearerAuth": {"type": "http", "scheme": "bearer"}},
        DESCRIPTION=(
            "Virtual try-on API. Authenticate with `Authorization: Bearer <key>`. Every error "
            'is `{"error": {"code", "message"}}`.'
        ),
        TRYON_OPEN_JOB_LIMIT=settings.max_open_jobs_per_shopper,
    )
    app.config.update(overrides)

    # 2. services
    from tryon.images import IntakeLimits, configure_pillow
    from tryon.records.db import make_engine, make_session_factory
    from tryon.storage import make_storage
    from web.analyzer import PoolAnalyzer
    from web.metrics import Metrics
    from web.publisher import CeleryPublisher
    from web.services import RegistryEngines
    from web.signing import resolve_secret_key

    configure_pillow(IntakeLimits.from_settings(settings))
    session_factory = app.config.get("TRYON_SESSION_FACTORY") or make_session_factory(
        make_engine(settings.resolved_database_url)
    )
    svc = Services(
        settings=settings,
        session_factory=session_factory,
        storage=app.config.get("TRYON_STORAGE") or make_storage(settings),
        publisher=app.config.get("TRYON_PUBLISHER") or CeleryPublisher(settings),
        analyzer=app.config.get("TRYON_PHOTO_ANALYZER") or PoolAnalyzer(),
        secret_key=resolve_secret_key(settings),
        engines=app.config.get("TRYON_ENGINE_DIRECTORY") or RegistryEngines(settings.stale_after_s),
        webhook_resolver=app.config.get("TRYON_WEBHOOK_RESOLVER"),
        webhook_allow_http=bool(app.config.get("TRYON_WEBHOOK_ALLOW_HTTP", False)),
        webhook_allow_private=bool(app.config.get("TRYON_WEBHOOK_ALLOW_PRIVATE", False)),
    )
    app.extensions["tryon"] = svc
    metrics = Metrics()
    app.extensions["tryon_metrics"] = metrics

    # 3. request lifecycle: metrics timer, auth, session teardown, headers
    metrics.install(app)
    app.before_request(authenticate_request)
    app.teardown_appcontext(close_session)

    @app.after_request
    def _headers(resp: Response) -> Response:
        resp.headers.setdefault("Cache-Control", "no-store")
        resp.headers["X-Content-Type-Options"] = "nosniff"
        return resp

    register_error_handlers(app)

    # 4. blueprints
    from web.api import batches, compose, files, garments, health, me, ops, photos, tryons

    for bp in (health.bp, garments.bp, photos.bp, tryons.bp, compose.bp, batches.bp, ops.bp,
               files.bp, me.bp):
        app.register_blueprint(bp)
    # the server-rendered pages (session cookie + CSRF) and the offline /docs assets
    from web import pages

    pages.install(app, svc.secret_key)

    def _job_stats() -> dict[str, Any] | None:
        from tryon.records.stats import queue_stats

        try:
            with session_factory() as s:
                return queue_stats(s)
        except Exception:  # noqa: BLE001 - a scrape during a DB outage reports nothing
            log.warning("metrics: job stats unavailable")
            return None

    metrics.add_job_collector(_job_stats)
    return app
