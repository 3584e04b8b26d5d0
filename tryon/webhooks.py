"""Outbound webhooks: Standard Webhooks signatures and the SSRF guard for webhook URLs.

Signature (Standard Webhooks, also what Replicate sends)::

    webhook-id:        the event id, identical on every retry (receivers dedupe on it)
    webhook-timestamp: Unix seconds of this delivery attempt
    webhook-signature: "v1,<base64 HMAC-SHA256(secret, f'{id}.{timestamp}.{body}')>"
                       (space-separated when several secrets are valid during a rotation)

Delivery itself (:func:`deliver`) connects to the address it checked, never follows redirects,
and uses short timeouts and a response-size cap.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.client
import ipaddress
import logging
import os
import secrets
import socket
import ssl
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from tryon.config import Settings
from tryon.errors import ConfigError, InvalidInputError

log = logging.getLogger(__name__)

#: receivers reject timestamps further than this from their clock
TOLERANCE_S = 5 * 60
SIGNATURE_VERSION = "v1"
MAX_URL_LENGTH = 2000

#: resolver(host, port) -> list of IP address strings
Resolver = Callable[[str, int], Sequence[str]]


class WebhookVerificationError(Exception):
    """The signature, id or timestamp of a received webhook does not check out."""


def _default_resolver(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return sorted({str(info[4][0]) for info in infos})


def _address_allowed(addr: str) -> bool:
    ip = ipaddress.ip_address(addr.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not (
        ip.is_private or ip.is_loopback or ip.is_link_local or ip.is_reserved
        or ip.is_multicast or ip.is_unspecified
    )


@dataclass(frozen=True)
class CheckedURL:
    """A webhook URL that passed :func:`validate_webhook_url`, with the addresses it resolved to."""

    url: str
    scheme: str
    host: str
    port: int
    path: str
    addresses: tuple[str, ...]


def validate_webhook_url(
    url: str,
    *,
    resolver: Resolver | None = None,
    allow_http: bool = False,
    allow_private: bool = False,
) -> CheckedURL:
    """Check a webhook URL before it is stored (and again before each delivery).

    Refuses (``InvalidInputError``, code ``webhook_url_not_allowed``): schemes other than https
    (http only with ``allow_http``), credentials in the URL, a missing host, and any host where
    *any* resolved address is private, loopback, link-local, reserved, multicast or unspecified
    (one bad address is enough: DNS can return it on the next lookup). ``allow_private`` exists
    for loopback test receivers only.
    """

    def refuse(why: str) -> InvalidInputError:
        return InvalidInputError(f"Webhook URL not allowed: {why}.", code="webhook_url_not_allowed")

    if not isinstance(url, str) or not url or len(url) > MAX_URL_LENGTH:
        raise refuse("missing or too long")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise refuse(f"malformed ({exc})") from None
    scheme = parts.scheme.lower()
    if scheme not in ({"https", "http"} if allow_http else {"https"}):
        raise refuse("use an https:// URL")
    if parts.username or parts.password:
        raise refuse("credentials in the URL")
    host = parts.hostname
    if not host:
        raise refuse("no host")
    port = port or (443 if scheme == "https" else 80)
    try:
        addresses = [host] if _is_ip(host) else list((resolver or _default_resolver)(host, port))
    except (OSError, UnicodeError) as exc:
        raise refuse(f"the host does not resolve ({exc})") from None
    if not addresses:
        raise refuse("the host does not resolve")
    if not allow_private:
        for addr in addresses:
            try:
                ok = _address_allowed(addr)
            except ValueError:
                ok = False
            if not ok:
                raise refuse(f"{host} resolves to a non-public address")
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return CheckedURL(url, scheme, host, port, path, tuple(addresses))


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


# --------------------------------------------------------------------------------------
# signing


#: the prefix of Standard Webhooks secrets: ``whsec_<base64 key bytes>``
WEBHOOK_SECRET_PREFIX = "whsec_"
#: purposes of the keys derived from the master secret (one key per purpose, never shared)
PURPOSE_RESULT_URL = "result-url"
PURPOSE_WEBHOOK = "webhook"
_DERIVE_LABEL = b"tryon.derive-key.v1:"


def load_master_secret(settings: Settings) -> str:
    """The master secret: ``TRYON_SECRET_KEY``, or a random one kept in ``<data_dir>/secret_key``
    (mode 0600), created on first use so every process of an embedded deployment shares it.

    Never used as a key itself: :func:`derive_key` makes one key per purpose from it. Creation is
    atomic (write a private temp file, then ``os.link`` it into place, which fails if another
    process got there first), so concurrent first starts agree on one secret and nobody reads a
    half-written file. An empty secret (set or on disk) raises :class:`ConfigError`.
    """
    if settings.secret_key:
        if not settings.secret_key.strip():
            raise ConfigError("TRYON_SECRET_KEY is blank")
        return settings.secret_key
    path = settings.data_dir / "secret_key"
    try:
        return _non_empty(path, path.read_text().strip())
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".secret_key.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_urlsafe(48))
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.link(tmp, path)  # atomic and fails if another process got there first
            log.info("generated a secret key in %s", path)
        except FileExistsError:
            pass
    finally:
        tmp.unlink(missing_ok=True)
    return _non_empty(path, path.read_text().strip())


def _non_empty(path: os.PathLike[str], value: str) -> str:
    if not value:
        raise ConfigError(f"{path} is empty: delete it to generate a new secret, or set "
                          "TRYON_SECRET_KEY")
    return value


def derive_key(secret: str | bytes, purpose: str) -> bytes:
    """A 32-byte key for one ``purpose``: HMAC-SHA256(secret, label + purpose).

    Keys for different purposes are independent: holding one (a webhook receiver holds the
    webhook key) reveals neither the master secret nor any other derived key.
    """
    if not purpose:
        raise ValueError("a purpose is needed")
    key = secret.encode() if isinstance(secret, str) else secret
    return hmac.new(key, _DERIVE_LABEL + purpose.encode(), hashlib.sha256).digest()


def webhook_secrets(settings: Settings) -> list[str]:
    """The secrets outbound webhooks are signed with, newest first.

    ``TRYON_WEBHOOK_SECRET`` (whitespace-separated ``whsec_`` values: during a rotation every one
    signs, so receivers holding either verify), else one ``whsec_`` secret derived from the
    master secret. Never the master secret itself, so a receiver cannot sign result URLs.
    """
    if settings.webhook_secret.strip():
        return settings.webhook_secret.split()
    raw = derive_key(load_master_secret(settings), PURPOSE_WEBHOOK)
    return [WEBHOOK_SECRET_PREFIX + base64.b64encode(raw).decode()]


def load_or_create_secret(settings: Settings) -> str:
    """The webhook signing secret(s) as one string for :func:`sign` (space-separated during a
    rotation); see :func:`webhook_secrets`. Kept under this name for the workers that call it."""
    return " ".join(webhook_secrets(settings))


def _secret_bytes(secret: str | bytes) -> bytes:
    if isinstance(secret, bytes):
        return secret
    # Standard Webhooks secrets look like "whsec_<base64>"; anything else is used as UTF-8.
    if secret.startswith("whsec_"):
        return base64.b64decode(secret[len("whsec_"):])
    return secret.encode()


def _signature(secret: str | bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(_secret_bytes(secret), signed, hashlib.sha256).digest()
    return f"{SIGNATURE_VERSION},{base64.b64encode(digest).decode()}"


def sign(
    secret: str | bytes | Iterable[str | bytes],
    msg_id: str,
    timestamp: int,
    body: bytes,
) -> dict[str, str]:
    """Headers for one delivery. Several secrets (a rotation) give space-separated signatures;
    a str holding whitespace-separated secrets (what :func:`load_or_create_secret` returns during
    a rotation) counts as several."""
    keys: list[str | bytes]
    if isinstance(secret, str):
        keys = list(secret.split()) or [secret]
    elif isinstance(secret, bytes):
        keys = [secret]
    else:
        keys = list(secret)
    if not keys:
        raise ValueError("at least one secret is needed")
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(timestamp)),
        "webhook-signature": " ".join(_signature(k, msg_id, int(timestamp), body) for k in keys),
    }


def verify(
    secret: str | bytes,
    headers: Mapping[str, str],
    body: bytes,
    *,
    now: float | None = None,
    tolerance_s: int = TOLERANCE_S,
) -> str:
    """Verify a received webhook (the receiver side; used by tests and documented for merchants).

    Checks the raw ``body`` bytes, the timestamp within ``tolerance_s`` of ``now``, and any one
    of the space-separated ``v1`` signatures in constant time. Returns the ``webhook-id``.
    """
    lower = {k.lower(): v for k, v in headers.items()}
    try:
        msg_id = lower["webhook-id"]
        timestamp = int(lower["webhook-timestamp"])
        sigs = lower["webhook-signature"].split()
    except (KeyError, ValueError):
        raise WebhookVerificationError("missing or malformed webhook headers") from None
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance_s:
        raise WebhookVerificationError("timestamp outside the tolerance")
    expected = _signature(secret, msg_id, timestamp, body)
    for sig in sigs:
        if sig.startswith(SIGNATURE_VERSION + ",") and hmac.compare_digest(sig, expected):
            return msg_id
    raise WebhookVerificationError("no matching signature")


# --------------------------------------------------------------------------------------
# delivery


@dataclass(frozen=True)
class DeliveryResult:
    ok: bool
    status_code: int | None
    error: str | None


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    """HTTPS to a fixed, already-checked IP while SNI and certificate checks use the host name."""

    def __init__(self, host: str, ip: str, port: int, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout, context=ssl.create_default_context())
        self._ip = ip

    def connect(self) -> None:
        sock = socket.create_connection((self._ip, self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)  # type: ignore[attr-defined]


class _PinnedHTTPConnection(http.client.HTTPConnection):
    def __init__(self, host: str, ip: str, port: int, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout)
        self._ip = ip

    def connect(self) -> None:
        self.sock = socket.create_connection((self._ip, self.port), self.timeout)


def deliver(
    checked: CheckedURL,
    headers: Mapping[str, str],
    body: bytes,
    *,
    timeout_s: float = 10.0,
    max_response_bytes: int = 64 * 1024,
) -> DeliveryResult:
    """POST ``body`` once to the checked address (no redirects: a 3xx counts as a failure)."""
    conn_cls = _PinnedHTTPSConnection if checked.scheme == "https" else _PinnedHTTPConnection
    conn = conn_cls(checked.host, checked.addresses[0], checked.port, timeout_s)
    try:
        conn.request("POST", checked.path, body=body, headers={
            **headers, "content-type": "application/json", "user-agent": "tryon-webhooks/1",
        })
        resp = conn.getresponse()
        resp.read(max_response_bytes)
        ok = 200 <= resp.status < 300
        return DeliveryResult(ok, resp.status, None if ok else f"HTTP {resp.status}")
    except (OSError, http.client.HTTPException) as exc:
        return DeliveryResult(False, None, f"{type(exc).__name__}: {exc}"[:500])
    finally:
        conn.close()
