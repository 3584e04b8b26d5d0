"""Rate limits (reliability checklist S-13), through Flask-Limiter and its ``limits`` storage.

* Uploads (``POST /v1/photos``, ``POST /v1/garments``) and try-on creation (``POST /v1/tryons``):
  one budget per API key and one per client address, each endpoint its own.
* Failed authentication: one budget per client address; once spent, every request from that
  address that needs a key answers 429 until the window frees up (a valid key included, so
  guessing cannot go on between successes). A wrong key at the pages' sign-in form counts
  against the same budget, and a spent budget refuses that form too.
* The pages' form posts (photo upload, garment upload, start a try-on) draw on the budgets of
  the matching /v1 endpoint, so the pages are no way around the API's limits.

Counters live in Redis when ``TRYON_RATE_LIMIT_STORAGE_URL`` is a ``redis://`` URL (default: the
broker URL when that is Redis), so every gunicorn worker shares them; on the embedded default
they are in-process (each gunicorn worker counts on its own). A limit of ``""`` turns that limit
off. A 429 carries ``Retry-After`` (seconds) and the usual error body. If the counter storage
is down, requests are let through (logged), never answered 500.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from typing import Any

from flask import Flask, Response, current_app, g, request
from flask_limiter import Limiter
from limits import RateLimitItem, parse_many
from limits.storage import storage_from_string
from limits.strategies import MovingWindowRateLimiter

from tryon.config import Settings
from tryon.errors import ConfigError, UnauthorizedError
from web.auth import PUBLIC_ENDPOINTS, SESSION_BLUEPRINTS
from web.errors import from_http_status

log = logging.getLogger(__name__)

#: endpoint -> which per-key setting limits it
LIMITED_ENDPOINTS = {
    "photos.create_photo": "uploads",
    "garments.create_garment": "uploads",
    "tryons.create_tryon": "tryons",
}
#: page form posts -> the API endpoint whose budgets (per key and per address) they share: an
#: upload through the pages costs the same as one through /v1
PAGE_LIMITED_ENDPOINTS = {
    "pages.upload_my_photo": "photos.create_photo",
    "pages.upload_garment": "garments.create_garment",
    "pages.start_my_tryon": "tryons.create_tryon",
}


def client_address() -> str:
    """The caller's address as the WSGI server saw it (behind a proxy, configure the proxy
    and gunicorn's ``forwarded_allow_ips`` so this is the client, not the proxy)."""
    return request.remote_addr or "unknown"


def _key_or_address() -> str:
    principal = g.get("principal")
    return f"key:{principal.account_id}" if principal is not None else f"addr:{client_address()}"


def storage_url(settings: Settings) -> str:
    if settings.rate_limit_storage_url:
        return settings.rate_limit_storage_url
    if settings.broker_url.startswith(("redis://", "rediss://")):
        return settings.broker_url
    return "memory://"


def storage_options(uri: str) -> dict[str, Any]:
    """Short Redis timeouts: a frozen Redis must cost a request half a second, not hang it."""
    if uri.startswith(("redis://", "rediss://")):
        return {"socket_connect_timeout": 0.5, "socket_timeout": 0.5}
    return {}


def _parse(name: str, value: str) -> list[RateLimitItem]:
    if not value.strip():
        return []
    try:
        return list(parse_many(value))
    except ValueError as exc:
        raise ConfigError(f"TRYON_{name.upper()}: {exc} (e.g. '30/minute')") from None


class AuthFailureLimit:
    """Failed-authentication budget per client address, on the limiter's storage."""

    def __init__(self, items: list[RateLimitItem], uri: str, namespace: str) -> None:
        self.items = items
        self.namespace = namespace
        self._limiter = (MovingWindowRateLimiter(storage_from_string(uri, **storage_options(uri)))
                         if items else None)

    def retry_after(self, address: str) -> int | None:
        """Seconds until ``address`` may try again, or None when it may now."""
        if self._limiter is None:
            return None
        for item in self.items:
            if not self._limiter.test(item, self.namespace, address):
                reset = self._limiter.get_window_stats(item, self.namespace, address).reset_time
                return max(1, math.ceil(reset - time.time()))
        return None

    def hit(self, address: str) -> None:
        if self._limiter is None:
            return
        for item in self.items:
            self._limiter.hit(item, self.namespace, address)


def _check_storage(uri: str) -> None:
    try:
        storage_from_string(uri, **storage_options(uri))
    except Exception as exc:  # noqa: BLE001 - a bad URL or a missing driver
        raise ConfigError(f"TRYON_RATE_LIMIT_STORAGE_URL: {exc}") from None


def install_auth(app: Flask, settings: Settings, authenticate: Callable[[], None]) -> None:
    """Register ``authenticate`` as a ``before_request`` hook behind the failed-auth limit."""
    uri = storage_url(settings)
    _check_storage(uri)
    auth_limit = AuthFailureLimit(
        _parse("rate_limit_auth_failures", settings.rate_limit_auth_failures), uri,
        f"tryon-authfail{settings.queue_prefix}")

    app.extensions["tryon_auth_limit"] = auth_limit

    def authenticate_limited() -> Response | None:
        if request.endpoint is None or request.endpoint in PUBLIC_ENDPOINTS:
            return None
        if request.blueprint in SESSION_BLUEPRINTS:
            return None  # the pages count failed sign-ins themselves (auth_failure_wait)
        address = client_address()
        try:
            wait = auth_limit.retry_after(address)
        except Exception as exc:  # noqa: BLE001 - counters down: let the request through
            log.warning("rate limit storage unavailable: %s", type(exc).__name__)
            wait = None
        if wait is not None:
            return from_http_status(429, "Too many failed authentication attempts from this "
                                    "address: retry later.", headers={"Retry-After": str(wait)})
        try:
            authenticate()
        except UnauthorizedError:
            try:
                auth_limit.hit(address)
            except Exception as exc:  # noqa: BLE001
                log.warning("rate limit storage unavailable: %s", type(exc).__name__)
            raise
        return None

    app.before_request(authenticate_limited)


def auth_failure_wait() -> int | None:
    """For a page sign-in: seconds this address must wait (its failed-authentication budget is
    spent, API and pages together), or None."""
    limit: AuthFailureLimit | None = current_app.extensions.get("tryon_auth_limit")
    if limit is None:
        return None
    try:
        return limit.retry_after(client_address())
    except Exception as exc:  # noqa: BLE001 - counters down: let the request through
        log.warning("rate limit storage unavailable: %s", type(exc).__name__)
        return None


def record_auth_failure() -> None:
    """For a page sign-in with a wrong key: count it against the address, like a bad bearer."""
    limit: AuthFailureLimit | None = current_app.extensions.get("tryon_auth_limit")
    if limit is None:
        return
    try:
        limit.hit(client_address())
    except Exception as exc:  # noqa: BLE001
        log.warning("rate limit storage unavailable: %s", type(exc).__name__)


def install_limits(app: Flask, settings: Settings) -> Limiter:
    """Limit :data:`LIMITED_ENDPOINTS` per API key and per address. Call after the blueprints
    and after :func:`install_auth` (the per-key limit needs the principal)."""
    per_key = {"uploads": settings.rate_limit_uploads.strip(),
               "tryons": settings.rate_limit_tryons.strip()}
    per_address = settings.rate_limit_per_address.strip()
    for name in ("uploads", "tryons"):
        _parse(f"rate_limit_{name}", per_key[name])
    _parse("rate_limit_per_address", per_address)
    limiter = Limiter(
        key_func=client_address, app=app, storage_uri=storage_url(settings),
        storage_options=storage_options(storage_url(settings)),
        strategy="moving-window", headers_enabled=True, swallow_errors=True,
        key_prefix=f"tryon-rl{settings.queue_prefix}",
    )
    targets = [(endpoint, endpoint) for endpoint in LIMITED_ENDPOINTS]
    targets += [(page, api) for page, api in PAGE_LIMITED_ENDPOINTS.items()
                if page in app.view_functions]
    for endpoint, budget in targets:
        which = LIMITED_ENDPOINTS[budget]
        view: Any = app.view_functions[endpoint]
        # shared limits: the scope alone names the counter, so a page and its /v1 endpoint
        # draw on one budget
        if per_key[which]:
            view = limiter.shared_limit(per_key[which], key_func=_key_or_address,
                                        scope=f"{budget}:key")(view)
        if per_address:
            view = limiter.shared_limit(per_address, key_func=client_address,
                                        scope=f"{budget}:addr")(view)
        app.view_functions[endpoint] = view
    return limiter


def limited_openapi_paths(app: Flask) -> set[tuple[str, str]]:
    """``(method, "/v1/photos")`` for each rate-limited route, in OpenAPI path syntax."""
    import re

    out: set[tuple[str, str]] = set()
    for rule in app.url_map.iter_rules():
        if rule.endpoint in LIMITED_ENDPOINTS:
            path = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule)
            out.update((m.lower(), path) for m in rule.methods or () if m not in {"HEAD", "OPTIONS"})
    return out
