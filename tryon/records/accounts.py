"""Accounts and API keys: create, look up, revoke. Framework-free (CLI, web, tests).

A key is ``tk_`` + 43 url-safe characters (256 random bits). Only its SHA-256 is stored: a fast
hash is enough for a secret that long. Lookup goes through the unique hash index and the stored
hash is then compared with :func:`hmac.compare_digest`, so the check does not leak timing.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from tryon.errors import InvalidInputError, NotFoundError
from tryon.records.models import Account, ApiKey, utcnow
from tryon.types import Role

KEY_PREFIX = "tk_"


def hash_key(plaintext: str) -> str:
    """Hex SHA-256 of a key (64 chars)."""
    return hashlib.sha256(plaintext.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class NewKey:
    """A freshly minted key: ``plaintext`` is shown once and never stored."""

    id: str
    account_id: str
    plaintext: str
    prefix: str
    expires_at: datetime | None


def create_account(session: Session, *, name: str, role: str) -> Account:
    """Add an account (caller commits). ``role`` is one of :class:`tryon.types.Role`."""
    try:
        role = Role(role).value
    except ValueError:
        raise InvalidInputError(f"role must be one of {[r.value for r in Role]}, got {role!r}") from None
    name = name.strip()
    if not name or len(name) > 200:
        raise InvalidInputError("name must be 1-200 characters")
    account = Account(name=name, role=role)
    session.add(account)
    session.flush()
    return account


def create_api_key(
    session: Session, *, account_id: str, expires_in: timedelta | None = None
) -> NewKey:
    """Mint a key for an existing, non-deleted account (caller commits)."""
    account = session.get(Account, account_id)
    if account is None or account.deleted_at is not None:
        raise NotFoundError(f"no account {account_id!r}")
    plaintext = KEY_PREFIX + secrets.token_urlsafe(32)
    expires_at = utcnow() + expires_in if expires_in is not None else None
    row = ApiKey(
        account_id=account.id,
        prefix=plaintext[:10],
        key_hash=hash_key(plaintext),
        expires_at=expires_at,
    )
    session.add(row)
    session.flush()
    return NewKey(row.id, account.id, plaintext, row.prefix, expires_at)


def revoke_api_key(session: Session, key_id: str) -> ApiKey:
    """Mark a key revoked (idempotent; caller commits)."""
    row = session.get(ApiKey, key_id)
    if row is None:
        raise NotFoundError(f"no key {key_id!r}")
    if row.revoked_at is None:
        row.revoked_at = utcnow()
    return row


def _aware(dt: datetime) -> datetime:
    # SQLite returns naive datetimes even for timezone=True columns; all our times are UTC
    from datetime import UTC

    return dt if dt.tzinfo is not None else dt.replace(tzinfo=UTC)


def authenticate(session: Session, plaintext: str, *, now: datetime | None = None) -> Account | None:
    """The account owning a valid key, or None (unknown, revoked, expired, deleted account)."""
    row = authenticate_key(session, plaintext, now=now)
    return None if row is None else row.account


def authenticate_key(session: Session, plaintext: str, *, now: datetime | None = None) -> ApiKey | None:
    """The valid key row for ``plaintext`` (its account live), else None."""
    if not plaintext or not plaintext.startswith(KEY_PREFIX) or len(plaintext) > 200:
        return None
    digest = hash_key(plaintext)
    row = session.scalars(select(ApiKey).where(ApiKey.key_hash == digest)).first()
    if row is None or not hmac.compare_digest(row.key_hash, digest):
        return None
    return row if key_is_valid(row, now=now) else None


def key_is_valid(row: ApiKey, *, now: datetime | None = None) -> bool:
    """Not revoked, not expired, and its account not deleted. The web pages re-check a signed-in
    session's key with this on every request, so revoking the key ends the session too."""
    now = now or utcnow()
    if row.revoked_at is not None:
        return False
    if row.expires_at is not None and _aware(row.expires_at) <= now:
        return False
    return row.account.deleted_at is None
