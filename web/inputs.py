"""Text the database can store: no NUL byte (PostgreSQL refuses it in text columns) and no lone
surrogate (not encodable as UTF-8). Enforced on every client-supplied string, so neither
reaches psycopg or SQLite as a 500.

Path ids are checked by shape in a ``before_request`` hook (an id that is not 32 lowercase hex
digits names nothing: 404); body and query strings by the schema field :class:`web.schemas.Text`.
The pages (``web.pages``) read forms and query strings by hand, so they refuse any unstorable
query or form value up front (:func:`first_unstorable_field`).
"""

from __future__ import annotations

import re

from flask import request

from tryon.errors import NotFoundError

#: every record id is ``uuid4().hex``
ID_PATTERN = r"^[0-9a-f]{32}$"
_ID_RE = re.compile(ID_PATTERN)
#: a page cursor: 16 hex digits of microseconds since the epoch (UTC), then the row id. Every
#: string of this shape is a valid cursor (the OpenAPI document says so with this pattern);
#: empty means the first page.
CURSOR_PATTERN = r"^(?:[0-9a-f]{48})?$"
#: path parameters that carry a record id
_ID_ARGS = frozenset({"garment_id", "photo_id", "job_id"})


def is_record_id(value: str) -> bool:
    return _ID_RE.fullmatch(value) is not None


def unstorable_reason(value: str) -> str | None:
    """Why ``value`` cannot be stored in a text column, or None when it can."""
    if "\x00" in value:
        return "must not contain NUL (0x00) characters"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "must not contain unpaired surrogate characters"
    return None


def reject_malformed_path_ids() -> None:
    """``before_request`` (after authentication): a path id of the wrong shape is a 404 without
    a query; other path strings (a signed token) must at least be storable text. The pages
    (session blueprints) run :func:`check_path_ids` themselves, after their session check, so
    a signed-out visitor is sent to sign in first, as for any other page."""
    from web.auth import SESSION_BLUEPRINTS

    if request.blueprint in SESSION_BLUEPRINTS:
        return
    check_path_ids()


def check_path_ids() -> None:
    """404 unless every path id has the record-id shape and every path string is storable."""
    for name, value in (request.view_args or {}).items():
        if not isinstance(value, str):
            continue
        if (name in _ID_ARGS and not is_record_id(value)) or unstorable_reason(value):
            raise NotFoundError()


def first_unstorable_field() -> str | None:
    """The name of the first query or (non-file) form field whose name or value cannot be
    stored, or None."""
    for source in (request.args, request.form):
        for name, value in source.items(multi=True):
            if unstorable_reason(value) or unstorable_reason(name):
                return name if unstorable_reason(name) is None else "(unnamed)"
    return None
