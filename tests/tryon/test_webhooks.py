"""Webhook signing and the SSRF guard (S-15). No connection is ever opened to a refused host."""

from __future__ import annotations

import base64
import hashlib
import hmac
import random

import pytest

from tryon.config import Settings
from tryon.errors import InvalidInputError
from tryon.webhooks import (
    WebhookVerificationError,
    backoff_s,
    load_or_create_secret,
    sign,
    validate_webhook_url,
    verify,
)

BODY = b'{"data":{"id":"j1","status":"succeeded"},"type":"tryon.succeeded"}'
NOW = 1_800_000_000


def test_signature_matches_the_standard_webhooks_construction() -> None:
    headers = sign("s3cret", "msg_1", NOW, BODY)
    expected = base64.b64encode(
        hmac.new(b"s3cret", b"msg_1.%d." % NOW + BODY, hashlib.sha256).digest()).decode()
    assert headers == {"webhook-id": "msg_1", "webhook-timestamp": str(NOW),
                       "webhook-signature": f"v1,{expected}"}
    assert verify("s3cret", headers, BODY, now=NOW + 10) == "msg_1"


def test_whsec_secrets_are_base64_decoded() -> None:
    raw = b"\x01\x02binary-key"
    secret = "whsec_" + base64.b64encode(raw).decode()
    headers = sign(secret, "m", NOW, BODY)
    assert verify(raw, headers, BODY, now=NOW) == "m"


@pytest.mark.parametrize(
    "mutate",
    [
        lambda h, b: (h, b + b" "),  # tampered body
        lambda h, b: ({**h, "webhook-id": "msg_2"}, b),  # another id
        lambda h, b: ({**h, "webhook-timestamp": str(NOW + 1)}, b),  # timestamp not signed
        lambda h, b: ({**h, "webhook-signature": "v1,AAAA"}, b),
        lambda h, b: ({k: v for k, v in h.items() if k != "webhook-signature"}, b),
    ],
)
def test_verify_rejects_tampering(mutate) -> None:  # type: ignore[no-untyped-def]
    headers, body = mutate(sign("s3cret", "msg_1", NOW, BODY), BODY)
    with pytest.raises(WebhookVerificationError):
        verify("s3cret", headers, body, now=NOW)


def test_verify_rejects_a_timestamp_six_minutes_off() -> None:
    headers = sign("s3cret", "msg_1", NOW - 6 * 60, BODY)
    with pytest.raises(WebhookVerificationError, match="timestamp"):
        verify("s3cret", headers, BODY, now=NOW)
    assert verify("s3cret", sign("s3cret", "m", NOW - 4 * 60, BODY), BODY, now=NOW) == "m"


def test_rotation_sends_two_signatures_and_either_secret_verifies() -> None:
    headers = sign(["old", "new"], "msg_1", NOW, BODY)
    assert len(headers["webhook-signature"].split(" ")) == 2
    assert verify("old", headers, BODY, now=NOW) == "msg_1"
    assert verify("new", headers, BODY, now=NOW) == "msg_1"
    with pytest.raises(WebhookVerificationError):
        verify("other", headers, BODY, now=NOW)


def _resolver(mapping: dict[str, list[str]]):  # type: ignore[no-untyped-def]
    calls: list[str] = []

    def resolve(host: str, port: int) -> list[str]:
        calls.append(host)
        return mapping[host]

    resolve.calls = calls  # type: ignore[attr-defined]
    return resolve


@pytest.mark.parametrize(
    "url",
    [
        "https://127.0.0.1/hook",
        "https://169.254.169.254/latest/meta-data",
        "https://10.1.2.3/x",
        "https://[::1]/x",
        "https://[::ffff:127.0.0.1]/x",
        "https://0.0.0.0/x",
        "https://internal.example/x",  # resolves to a private address
        "https://mixed.example/x",  # one public and one private address
        "http://public.example/x",  # not https
        "https://user:pw@public.example/x",
        "ftp://public.example/x",
        "https:///nohost",
        "",
    ],
)
def test_ssrf_guard_refuses(url: str) -> None:
    resolve = _resolver({
        "internal.example": ["192.168.1.20"],
        "mixed.example": ["93.184.216.34", "10.0.0.5"],
        "public.example": ["93.184.216.34"],
    })
    with pytest.raises(InvalidInputError) as info:
        validate_webhook_url(url, resolver=resolve)
    assert info.value.code == "webhook_url_not_allowed"


def test_ssrf_guard_accepts_a_public_https_host_and_keeps_the_checked_address() -> None:
    resolve = _resolver({"shop.example": ["93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946"]})
    checked = validate_webhook_url("https://shop.example:8443/hooks?x=1", resolver=resolve)
    assert resolve.calls == ["shop.example"]  # type: ignore[attr-defined]
    assert (checked.host, checked.port, checked.path) == ("shop.example", 8443, "/hooks?x=1")
    assert set(checked.addresses) == {"93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946"}


def test_unresolvable_host_is_refused() -> None:
    def fail(host: str, port: int) -> list[str]:
        raise OSError("no such host")

    with pytest.raises(InvalidInputError):
        validate_webhook_url("https://nowhere.example/", resolver=fail)


def test_backoff_is_bounded_and_grows() -> None:
    rng = random.Random(1)
    for attempt in range(1, 12):
        for _ in range(50):
            assert 0 <= backoff_s(attempt, base=5, cap=60, rng=rng) <= min(60, 5 * 2 ** (attempt - 1))


def test_secret_file_is_created_once(tmp_path) -> None:  # type: ignore[no-untyped-def]
    s = Settings(data_dir=tmp_path)
    first = load_or_create_secret(s)
    assert len(first) >= 32
    assert load_or_create_secret(s) == first
    assert (tmp_path / "secret_key").stat().st_mode & 0o077 == 0
    assert load_or_create_secret(Settings(data_dir=tmp_path, secret_key="x")) == "x"
