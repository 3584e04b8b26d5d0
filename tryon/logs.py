"""One log format for every process, and the ids that tie a log line to a job or a request.

The job path and the web request path set a context once at their entry point
(:func:`job_context`, :func:`request_context`); :class:`ContextFilter` copies it onto every
record, so no log call types ``job=%s`` by hand. A log call about some *other* job (the reaper,
the API creating one) passes ``extra=job_extra(job_id)`` instead.

:func:`configure_logging` is called by every entry point (the CLI, ``tryon serve``, the gunicorn
config, the Celery worker): ``key=value`` lines by default, one JSON object a line with
``TRYON_LOG_FORMAT=json``. Threads start with an empty context (Python does not copy it), so a
thread that logs for a job passes ``extra=job_extra(...)`` or runs under ``copy_context()``.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

#: the context fields, in the order the key=value formatter writes them
CONTEXT_FIELDS = ("request_id", "job_id", "attempt")
LOG_FORMATS = ("text", "json")

_job_id: ContextVar[str | None] = ContextVar("tryon_job_id", default=None)
_attempt: ContextVar[int | None] = ContextVar("tryon_attempt", default=None)
_request_id: ContextVar[str | None] = ContextVar("tryon_request_id", default=None)
_VARS: dict[str, ContextVar[Any]] = {"job_id": _job_id, "attempt": _attempt,
                                     "request_id": _request_id}

#: a client's X-Request-ID is kept only if it is short and plain (it lands in every log line)
REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._:-]{1,128}$", re.ASCII)


@contextmanager
def job_context(job_id: str, attempt: int | None = None) -> Iterator[None]:
    """Tag every log line inside the block with ``job_id`` (and ``attempt`` once known)."""
    tokens = (_job_id.set(job_id), _attempt.set(attempt))
    try:
        yield
    finally:
        _attempt.reset(tokens[1])
        _job_id.reset(tokens[0])


def bind_attempt(attempt: int) -> None:
    """Record the attempt number once the job is claimed (inside :func:`job_context`)."""
    _attempt.set(attempt)


def job_extra(job_id: str, attempt: int | None = None) -> dict[str, Any]:
    """``extra=`` for a log call about a job outside its own context."""
    return {"job_id": job_id, "attempt": attempt}


def sane_request_id(value: str | None) -> str:
    """The client's request id if it is sane, else a fresh one."""
    if value and REQUEST_ID_RE.fullmatch(value):
        return value
    return uuid.uuid4().hex


def set_request_id(request_id: str | None) -> Any:
    """Set the request id for the current context; returns a token for :func:`reset_request_id`."""
    return _request_id.set(request_id)


def reset_request_id(token: Any) -> None:
    _request_id.reset(token)


def current(name: str) -> Any:
    """The current value of context field ``name`` (``job_id``, ``attempt``, ``request_id``)."""
    return _VARS[name].get()


class ContextFilter(logging.Filter):
    """Puts ``request_id``, ``job_id`` and ``attempt`` on every record (None when unset).

    A value passed with ``extra=`` wins over the context.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        for name, var in _VARS.items():
            if getattr(record, name, None) is None:
                setattr(record, name, var.get())
        return True


def _quote(value: str) -> str:
    if value and not any(c in value for c in ' "=\n\t\\'):
        return value
    return json.dumps(value, ensure_ascii=False)


class KeyValueFormatter(logging.Formatter):
    """``ts=... level=INFO logger=web.api job_id=... msg="..."``; unset context fields omitted."""

    def format(self, record: logging.LogRecord) -> str:
        ts = datetime.fromtimestamp(record.created, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3]
        parts = [f"ts={ts}Z", f"level={record.levelname}", f"logger={record.name}"]
        for name in CONTEXT_FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                parts.append(f"{name}={_quote(str(value))}")
        parts.append(f"msg={_quote(record.getMessage())}")
        if record.exc_info:
            parts.append(f"exc={_quote(self.formatException(record.exc_info))}")
        return " ".join(parts)


class JsonFormatter(logging.Formatter):
    """One JSON object a line, with the same keys as :class:`KeyValueFormatter`."""

    def format(self, record: logging.LogRecord) -> str:
        ts = datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")
        out: dict[str, Any] = {"ts": ts.replace("+00:00", "Z"), "level": record.levelname,
                               "logger": record.name}
        for name in CONTEXT_FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                out[name] = value
        out["msg"] = record.getMessage()
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False, default=str)


def make_formatter(log_format: str = "text") -> logging.Formatter:
    if log_format not in LOG_FORMATS:
        raise ValueError(f"log format must be one of {', '.join(LOG_FORMATS)}, got {log_format!r}")
    return JsonFormatter() if log_format == "json" else KeyValueFormatter()


class _TryonHandler(logging.StreamHandler):
    """The stderr handler :func:`configure_logging` installs (so a second call replaces it).

    It writes to whatever ``sys.stderr`` is at emit time, so a swapped stream (click's test
    runner, a daemon redirect) never leaves it writing to a closed file.
    """

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, _value: Any) -> None:
        pass


def configure_logging(log_format: str = "text", level: str | int = "INFO") -> logging.Handler:
    """Send every logger's records to stderr through one formatter and the context filter.

    Idempotent: a second call replaces the handler the first one installed; other handlers on
    the root logger (a test runner's capture) are left alone.
    """
    handler = _TryonHandler()
    handler.setFormatter(make_formatter(log_format))
    handler.addFilter(ContextFilter())
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _TryonHandler)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper() if isinstance(level, str) else level)
    return handler


def configure_from_settings(
    settings: Any | None = None, *, level: str | None = None
) -> logging.Handler:
    """:func:`configure_logging` from ``TRYON_LOG_FORMAT`` / ``TRYON_LOG_LEVEL`` (or ``level``).

    With no ``settings``, they are loaded from the environment; invalid settings fall back to
    the defaults here (the entry point reports the configuration error itself).
    """
    if settings is None:
        from tryon.config import load_settings
        from tryon.errors import ConfigError

        try:
            settings = load_settings()
        except ConfigError:
            return configure_logging(level=level or "INFO")
    return configure_logging(settings.log_format, level or settings.log_level)
