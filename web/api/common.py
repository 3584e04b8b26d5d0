"""Helpers shared by the blueprints: keyset pagination, content-type rules, time formatting."""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from flask import request
from sqlalchemy import Select, and_, or_
from sqlalchemy.orm import Session

from tryon.errors import InvalidInputError, UnsupportedMediaTypeError
from web.inputs import CURSOR_PATTERN

F = TypeVar("F", bound=Callable[..., Any])

AUTH_DOC: dict[str, Any] = {"security": "BearerAuth"}


def png_responses(**errors: str) -> Any:
    """``@bp.doc(responses=...)`` for a view answering a PNG image, plus error statuses."""
    out: dict[Any, Any] = {200: {"description": "PNG image", "content": {"image/png": {}}}}
    out.update({int(k.lstrip("_")): v for k, v in errors.items()})
    return out


def consumes(mimetype: str) -> Callable[[F], F]:
    """Accept only ``mimetype`` bodies (415 otherwise). Place it below :func:`web.auth.roles`
    (so the role check answers first) and above ``@bp.input`` (so nothing is parsed first)."""

    def deco(view: F) -> F:
        @functools.wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if request.mimetype != mimetype:
                raise UnsupportedMediaTypeError(f"Send this request as {mimetype}.")
            return view(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return deco


def aware(dt: datetime | None) -> datetime | None:
    if dt is None:
        return None
    return dt if dt.tzinfo is not None else dt.replace(tzinfo=UTC)


def iso(dt: datetime | None) -> str | None:
    d = aware(dt)
    return None if d is None else d.isoformat().replace("+00:00", "Z")


_CURSOR_RE = re.compile(CURSOR_PATTERN)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _encode_cursor(created_at: datetime, row_id: str) -> str:
    delta = aware(created_at) - _EPOCH  # type: ignore[operator]
    micros = max(0, (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds)
    return f"{micros:016x}{row_id}"


def _decode_cursor(cursor: str) -> tuple[datetime, str]:
    """``(created_at as aware UTC, id)``; 422 ``invalid_cursor`` unless it matches
    :data:`CURSOR_PATTERN`. A time past the calendar's end means "after everything"."""
    if _CURSOR_RE.fullmatch(cursor) is None:
        raise InvalidInputError("The cursor is not valid.", code="invalid_cursor")
    try:
        when = _EPOCH + timedelta(microseconds=int(cursor[:16], 16))
    except OverflowError:
        when = datetime.max.replace(tzinfo=UTC)
    return when, cursor[16:]


def paginate(session: Session, stmt: Select[Any], model: Any, limit: int,
             cursor: str | None) -> tuple[list[Any], str | None]:
    """Newest first, keyset on ``(created_at, id)``: stable under concurrent inserts."""
    if cursor:
        ts, row_id = _decode_cursor(cursor)
        if session.get_bind().dialect.name == "sqlite":
            ts = ts.replace(tzinfo=None)  # SQLite stores naive UTC (ts is UTC already)
        stmt = stmt.where(or_(model.created_at < ts, and_(model.created_at == ts, model.id < row_id)))
    rows = list(session.scalars(stmt.order_by(model.created_at.desc(), model.id.desc()).limit(limit + 1)))
    nxt = _encode_cursor(rows[limit - 1].created_at, rows[limit - 1].id) if len(rows) > limit else None
    return rows[:limit], nxt


def read_upload(file: Any, max_bytes: int) -> bytes:
    """Read an uploaded part, never more than ``max_bytes + 1`` bytes."""
    data: bytes = file.stream.read(max_bytes + 1)
    return data
