"""Signed, expiring result URLs (itsdangerous), bound to one storage key and one purpose."""

from __future__ import annotations

import logging
import os
import secrets
from pathlib import Path
from typing import Any

from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer

from tryon.config import Settings

log = logging.getLogger(__name__)

RESULT_SALT = "tryon.result-url.v1"
#: hard cap on a signed URL's lifetime, whatever the settings say
MAX_TTL_S = 900


def resolve_secret_key(settings: Settings) -> str:
    """``TRYON_SECRET_KEY``, else a random key persisted (0600) in ``data_dir/secret_key``."""
    if settings.secret_key:
        return settings.secret_key
    path = Path(settings.data_dir) / "secret_key"
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(48)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(key)
    log.info("generated a secret key in %s", path)
    return key


class ResultSigner:
    def __init__(self, secret: str, ttl_s: int) -> None:
        self.ttl_s = max(1, min(int(ttl_s), MAX_TTL_S))
        self._s = URLSafeTimedSerializer(secret, salt=RESULT_SALT)

    def sign(self, storage_key: str, job_id: str, index: int) -> str:
        return self._s.dumps({"k": storage_key, "j": job_id, "i": int(index)})

    def verify(self, token: str) -> tuple[dict[str, Any], float] | None:
        """The payload and its age in seconds, or None when altered or expired."""
        try:
            payload, ts = self._s.loads(token, max_age=self.ttl_s, return_timestamp=True)
        except SignatureExpired:
            return None
        except BadSignature:
            return None
        if not isinstance(payload, dict) or not {"k", "j", "i"} <= payload.keys():
            return None
        import time

        return payload, max(0.0, time.time() - ts.timestamp())
