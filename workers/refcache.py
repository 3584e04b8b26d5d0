"""Derived garment data (AnyDoor's prepared reference and ID tokens) kept in object storage."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from workers.retry import TRANSIENT_ERRORS

log = logging.getLogger(__name__)


class StorageReferenceCache:
    """A :class:`~tryon.engines.base.ReferenceCache` on object storage, per garment: name ``n``
    lives at ``derived/<garment owner>/<garment>/<n>.npz`` (:func:`tryon.storage.derived_key`),
    so deleting the garment's ``derived`` prefix removes it all.

    Storage errors are retried through ``retry`` and then swallowed (a miss, or data not
    kept). ``present`` maps the names known to exist (read or written) to their keys;
    ``written`` lists the keys this run wrote.
    """

    def __init__(self, storage: Any, owner_id: str, garment_id: str,
                 retry: Callable[[Callable[[], Any], str], Any]) -> None:
        self.storage, self.owner_id, self.garment_id = storage, owner_id, garment_id
        self._retry = retry
        self.present: dict[str, str] = {}
        self.written: list[str] = []

    def key(self, name: str) -> str:
        from tryon.storage import derived_key

        return derived_key(self.owner_id, self.garment_id, name)

    def get(self, name: str) -> bytes | None:
        key = self.key(name)
        try:
            data: bytes = self._retry(lambda: self.storage.get(key), "derived.get")
        except KeyError:  # ObjectNotFoundError: not cached yet
            return None
        except TRANSIENT_ERRORS as exc:
            log.warning("derived %s unreadable, recomputing: %s", key, exc)
            return None
        self.present[name] = key
        return data

    def put(self, name: str, data: bytes) -> None:
        key = self.key(name)
        try:
            self._retry(lambda: self.storage.put(key, data, "application/octet-stream"),
                        "derived.put")
        except TRANSIENT_ERRORS as exc:
            log.warning("derived %s not stored: %s", key, exc)
            return
        self.present[name] = key
        self.written.append(key)
