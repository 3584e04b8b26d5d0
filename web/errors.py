"""The one place where exceptions become HTTP responses: ``{"error": {"code", "message"}}``.

Status codes come from ``TryOnError.http_status``; Werkzeug's HTTP errors and APIFlask's
validation errors are translated to the same shape. Nothing here ever puts a stack trace, an
exception repr or SQL in a response body; unexpected exceptions are logged and answer 500.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, Response, jsonify, request
from sqlalchemy.exc import DBAPIError, DisconnectionError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from werkzeug.exceptions import HTTPException

from tryon.errors import DatabaseUnavailableError, TryOnError

log = logging.getLogger(__name__)

#: HTTP status -> (code, message) for errors Werkzeug or APIFlask raise
_HTTP_CODES: dict[int, tuple[str, str]] = {
    400: ("bad_request", "The request could not be understood."),
    401: ("unauthorized", "Missing or invalid API key: send `Authorization: Bearer <key>`."),
    403: ("forbidden", "This URL is not valid (expired or altered)."),
    404: ("not_found", "Not found."),
    405: ("method_not_allowed", "This method is not allowed on this URL."),
    409: ("conflict", "The request conflicts with the current state."),
    413: ("payload_too_large", "The request body is too large."),
    415: ("unsupported_media_type", "Unsupported Content-Type for this endpoint."),
    422: ("invalid_input", "The request is not valid."),
    429: ("rate_limited", "Too many requests: slow down."),
    500: ("internal_error", "Internal error."),
    503: ("service_unavailable", "The service is temporarily unavailable: retry shortly."),
}

#: seconds a client should wait after a 503
RETRY_AFTER_S = 5


def error_body(code: str, message: str, details: Any = None) -> dict[str, Any]:
    err: dict[str, Any] = {"code": code, "message": message}
    if details:
        err["details"] = details
    return {"error": err}


def _response(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> Response:
    resp = jsonify(body)
    resp.status_code = status
    for k, v in (headers or {}).items():
        resp.headers[k] = v
    if status == 503:
        resp.headers.setdefault("Retry-After", str(RETRY_AFTER_S))
    return resp


def from_tryon_error(exc: TryOnError) -> Response:
    status = exc.http_status if 400 <= exc.http_status < 600 else 500
    if status >= 500 and status != 503:
        # configuration or engine faults: the message may name internals, keep it generic
        log.error("server error %s: %s", exc.code, exc.message)
        return _response(status, error_body(exc.code, exc.default_message))
    return _response(status, {"error": exc.to_dict()})


def from_http_status(status: int, message: str | None = None, details: Any = None,
                     headers: dict[str, str] | None = None) -> Response:
    code, default = _HTTP_CODES.get(status, ("http_error", "HTTP error."))
    return _response(status, error_body(code, message or default, details), headers)


def register_error_handlers(app: Flask) -> None:
    """Install every handler; called once by the app factory."""

    @app.errorhandler(TryOnError)
    def _tryon(exc: TryOnError) -> Response:
        return from_tryon_error(exc)

    @app.errorhandler(OperationalError)
    @app.errorhandler(DisconnectionError)
    @app.errorhandler(PoolTimeoutError)
    def _db_down(exc: Exception) -> Response:
        log.warning("database unavailable: %s", type(exc).__name__)
        return from_tryon_error(DatabaseUnavailableError())

    @app.errorhandler(DBAPIError)
    def _dbapi(exc: DBAPIError) -> Response:
        if exc.connection_invalidated:
            return from_tryon_error(DatabaseUnavailableError())
        log.exception("database error")
        return from_http_status(500)

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException) -> Response:
        status = exc.code or 500
        headers = {k: v for k, v in exc.get_headers() if k.lower() in {"allow", "retry-after"}}
        return from_http_status(status, headers=headers)

    @app.errorhandler(RecursionError)
    def _too_deep(exc: RecursionError) -> Response:
        # webargs decodes JSON bodies with the stdlib parser, which raises RecursionError (not
        # ValueError) on a few thousand nested brackets: a client error, not a server fault.
        # Only for JSON bodies, so a real runaway recursion elsewhere still answers 500.
        if request.is_json:
            log.info("JSON body nested too deeply")
            return from_http_status(400, "The JSON body is nested too deeply.")
        log.exception("unhandled error")
        return from_http_status(500)

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Response:
        log.exception("unhandled error")
        return from_http_status(500)

    # APIFlask routes HTTP and validation errors through its error processor
    if hasattr(app, "error_processor"):

        @app.error_processor
        def _apiflask(error: Any) -> Response:
            status = int(error.status_code)
            details = error.detail or None
            message = None
            if status == 422 and details:
                message = "The request is not valid: " + _flatten(details)
            headers = {k: v for k, v in dict(error.headers or {}).items()
                       if k.lower() in {"allow", "retry-after"}}
            return from_http_status(status, message, details, headers)


def _flatten(detail: Any) -> str:
    """``{"json": {"steps": ["Must be..."]}}`` -> ``steps: Must be...`` (first few fields)."""
    parts: list[str] = []
    if isinstance(detail, dict):
        for loc in detail.values():
            if isinstance(loc, dict):
                for field, msgs in loc.items():
                    msg = msgs[0] if isinstance(msgs, list) and msgs else msgs
                    if isinstance(msg, dict):
                        msg = "invalid"
                    parts.append(f"{field}: {msg}")
    return "; ".join(parts[:5]) or "invalid input"
