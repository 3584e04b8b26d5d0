"""Signed, expiring result URLs, bound to one storage key and one purpose.

The token is encrypted and authenticated (Fernet: AES-128-CBC + HMAC-SHA256 with a key derived
for this one purpose), so a shopper who shares a link shares no account or job id: the payload
(storage key, job id, sample index) is readable only by the server. Fernet's issue time (in the
clear, as in any Fernet token) gives the expiry.
"""

from __future__ import annotations

import base64
import json
import logging
import time
from typing import Any

from cryptography.fernet import Fernet, InvalidToken

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
        key = derive_key(secret, PURPOSE_RESULT_URL)
        # the salt keeps this key apart from any other use of the same derived key
        key = derive_key(key, RESULT_SALT)
        self._f = Fernet(base64.urlsafe_b64encode(key))

    def sign(self, storage_key: str, job_id: str, index: int) -> str:
        payload = json.dumps({"k": storage_key, "j": job_id, "i": int(index)},
                             separators=(",", ":")).encode()
        # base64 padding is dropped so the token is one clean path segment
        return self._f.encrypt(payload).decode().rstrip("=")

    def verify(self, token: str) -> tuple[dict[str, Any], float] | None:
        """The payload and its age in seconds, or None when altered, foreign or expired."""
        raw = (token + "=" * (-len(token) % 4)).encode("ascii", "replace")
        try:
            data = self._f.decrypt(raw, ttl=self.ttl_s)
            issued = self._f.extract_timestamp(raw)
            payload = json.loads(data)
        except (InvalidToken, ValueError):
            return None
        if not isinstance(payload, dict) or not {"k", "j", "i"} <= payload.keys():
            return None
        return payload, max(0.0, time.time() - issued)
