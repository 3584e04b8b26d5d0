"""Signed, expiring result URLs (itsdangerous), bound to one storage key and one purpose."""

from __future__ import annotations

import logging
import time
from typing import Any

from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer

from tryon.config import Settings
from tryon.webhooks import PURPOSE_RESULT_URL, derive_key, load_master_secret

log = logging.getLogger(__name__)

RESULT_SALT = "tryon.result-url.v1"
#: hard cap on a signed URL's lifetime, whatever the settings say
MAX_TTL_S = 900


def resolve_secret_key(settings: Settings) -> str:
    """The master secret (``TRYON_SECRET_KEY``, else created once, atomically, in
    ``data_dir/secret_key``; an empty one is refused). :class:`ResultSigner` derives its own key
    from it, so the webhook secret handed to receivers cannot sign result URLs."""
    return load_master_secret(settings)


class ResultSigner:
    def __init__(self, secret: str, ttl_s: int) -> None:
        """``secret`` is the master secret; the signing key is derived from it for this one
        purpose (never the key webhooks are signed with)."""
        self.ttl_s = max(1, min(int(ttl_s), MAX_TTL_S))
        self._s = URLSafeTimedSerializer(derive_key(secret, PURPOSE_RESULT_URL), salt=RESULT_SALT)

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
        return payload, max(0.0, time.time() - ts.timestamp())
