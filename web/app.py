"""The app factory: ``create_app(settings=None, services=None, config=None)``.

Settings come from one :class:`tryon.config.Settings` (read from ``TRYON_*`` when not given);
services (database sessions, storage, publisher, analyzer...) are built from it unless
``services`` (a :class:`web.services.ServiceOverrides`) supplies them; ``config`` holds Flask's
own keys only (``TESTING``, ``PROPAGATE_EXCEPTIONS``...). ``app.config`` is Flask's, never a
service locator. The database schema is never created or migrated here: run ``tryon db upgrade``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from apiflask import APIFlask
from flask import Response, g, request

from tryon.config import Settings, load_settings
from web import ratelimit
from web.auth import authenticate_request
from web.errors import register_error_handlers
from web.inputs import reject_malformed_path_ids
from web.openapi import make_truthful
from web.schemas import ErrorOut
from web.services import ServiceOverrides, Services, close_session

log = logging.getLogger(__name__)

API_TITLE = "tryon"
API_VERSION = "1"
#: multipart bodies: image + mask + a few short fields
MAX_FORM_PARTS = 16
# also bounds the multipart parser's internal buffer, so it must exceed its 64 KiB read size
MAX_FORM_MEMORY_SIZE = 256 * 1024


def create_app(
    settings: Settings | None = None,
    services: ServiceOverrides | None = None,
    *,
    config: Mapping[str, Any] | None = None,
) -> APIFlask:
    """Build the API app from ``settings``, with ``services`` overriding the built ones."""
    settings = settings or load_settings()
    settings.validate()
    over = services or ServiceOverrides()
    bad = [k for k in (config or {}) if str(k).startswith("TRYON_")]
    if bad:
        raise TypeError(f"settings and services go in Settings / ServiceOverrides, not app.config: "
                        f"{bad}")
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
        # the one error body, in the document too (web/openapi.py adds the missing statuses)
        HTTP_ERROR_SCHEMA=ErrorOut,
        VALIDATION_ERROR_SCHEMA=ErrorOut,
    )
    app.config.update(config or {})

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
    session_factory = over.session_factory or make_session_factory(
        make_engine(settings.resolved_database_url)
    )
    svc = Services(
        settings=settings,
        session_factory=session_factory,
        storage=over.storage or make_storage(settings),
        publisher=over.publisher or CeleryPublisher(settings),
        analyzer=over.analyzer or PoolAnalyzer(max_tasks=settings.analyzer_max_tasks),
        secret_key=resolve_secret_key(settings),
        engines=over.engines or RegistryEngines(settings.stale_after_s),
        webhook_resolver=over.webhook_resolver,
        broker_probe=over.broker_probe,
    )
    app.extensions["tryon"] = svc
    metrics = Metrics()
    app.extensions["tryon_metrics"] = metrics

    # 3. request lifecycle: request id, metrics timer, auth, session teardown, headers
    _install_request_id(app)
    metrics.install(app)
    ratelimit.install_auth(app, settings, authenticate_request)
    app.before_request(reject_malformed_path_ids)
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
    # after every blueprint, pages included: the limits wrap the registered view functions
    app.extensions["tryon_limiter"] = ratelimit.install_limits(app, settings)

    @app.spec_processor
    def _truthful_spec(spec: dict[str, Any] | str) -> dict[str, Any] | str:
        if isinstance(spec, str):  # only with SPEC_FORMAT yaml, which we do not use
            return spec
        return make_truthful(spec, ratelimit.limited_openapi_paths(app))

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


REQUEST_ID_HEADER = "X-Request-ID"


def _install_request_id(app: APIFlask) -> None:
    """A request id on every log line of a request (:mod:`tryon.logs`) and in the response:
    the client's ``X-Request-ID`` when it is sane, else a generated one."""
    from tryon import logs

    @app.before_request
    def _set_request_id() -> None:
        rid = logs.sane_request_id(request.headers.get(REQUEST_ID_HEADER))
        g.request_id = rid
        g.request_id_token = logs.set_request_id(rid)

    @app.after_request
    def _echo_request_id(resp: Response) -> Response:
        rid = g.get("request_id")
        if rid:
            resp.headers[REQUEST_ID_HEADER] = rid
        return resp

    @app.teardown_request
    def _reset_request_id(_exc: BaseException | None = None) -> None:
        token = g.pop("request_id_token", None)
        if token is not None:
            try:
                logs.reset_request_id(token)
            except ValueError:  # set in another context (a streamed response): just clear it
                logs.set_request_id(None)
