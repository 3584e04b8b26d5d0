"""Webhook signing and the SSRF guard (S-15). No connection is ever opened to a refused host."""

from __future__ import annotations

import base64
import hashlib
import hmac
import random
from pathlib import Path
from typing import Any

import pytest

from tryon.backoff import backoff_s
from tryon.config import Settings
from tryon.errors import ConfigError, InvalidInputError
from tryon.webhooks import (
    PURPOSE_RESULT_URL,
    PURPOSE_WEBHOOK,
    WebhookVerificationError,
    derive_key,
    load_master_secret,
    load_or_create_secret,
    sign,
    validate_webhook_url,
    verify,
    webhook_secrets,
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


def test_master_secret_file_is_created_once(tmp_path: Path) -> None:
    s = Settings(data_dir=tmp_path)
    first = load_master_secret(s)
    assert len(first) >= 32
    assert load_master_secret(s) == first
    assert (tmp_path / "secret_key").stat().st_mode & 0o077 == 0
    assert [p.name for p in tmp_path.iterdir()] == ["secret_key"]  # no temp file left behind
    assert load_master_secret(Settings(data_dir=tmp_path, secret_key="x")) == "x"


def test_master_secret_loser_of_a_creation_race_reads_the_winner(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Another process creates the file between our first read and our own creation: we get
    its secret, never FileExistsError and never a second secret."""
    import pathlib

    path = tmp_path / "secret_key"
    real_read = pathlib.Path.read_text
    calls: list[pathlib.Path] = []

    def read_text(self: pathlib.Path, *a: Any, **k: Any) -> str:
        calls.append(self)
        if self == path and len(calls) == 1:
            path.write_text("the-winner-secret")  # the other process wins right now
            raise FileNotFoundError(path)
        return real_read(self, *a, **k)

    monkeypatch.setattr(pathlib.Path, "read_text", read_text)
    assert load_master_secret(Settings(data_dir=tmp_path)) == "the-winner-secret"
    assert [p.name for p in tmp_path.iterdir()] == ["secret_key"]


def test_master_secret_concurrent_first_starts_agree(tmp_path: Path) -> None:
    import threading

    settings = Settings(data_dir=tmp_path / "var")
    barrier = threading.Barrier(8)
    got: list[object] = []

    def start() -> None:
        barrier.wait()
        try:
            got.append(load_master_secret(settings))
        except Exception as exc:  # noqa: BLE001 - recorded and asserted below
            got.append(exc)

    threads = [threading.Thread(target=start) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(got) == 8 and len(set(got)) == 1 and isinstance(got[0], str) and got[0]


def test_empty_master_secret_is_refused(tmp_path: Path) -> None:
    (tmp_path / "secret_key").write_text("\n")
    with pytest.raises(ConfigError, match="empty"):
        load_master_secret(Settings(data_dir=tmp_path))
    with pytest.raises(ConfigError):
        load_master_secret(Settings(data_dir=tmp_path, secret_key="   "))


def test_derived_keys_are_per_purpose_and_stable() -> None:
    a = derive_key("master", PURPOSE_WEBHOOK)
    assert a == derive_key(b"master", PURPOSE_WEBHOOK) and len(a) == 32
    assert a != derive_key("master", PURPOSE_RESULT_URL)
    assert a != derive_key("other", PURPOSE_WEBHOOK)
    assert b"master" not in a
    with pytest.raises(ValueError):
        derive_key("master", "")


def test_webhook_secret_is_derived_not_the_master(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, secret_key="master")
    [secret] = webhook_secrets(settings)
    assert secret == "whsec_" + base64.b64encode(derive_key("master", PURPOSE_WEBHOOK)).decode()
    assert load_or_create_secret(settings) == secret
    headers = sign(load_or_create_secret(settings), "m", NOW, BODY)
    assert verify(secret, headers, BODY, now=NOW) == "m"
    with pytest.raises(WebhookVerificationError):  # the master secret no longer verifies
        verify("master", headers, BODY, now=NOW)
    # embedded: derived from the generated master file, identical across calls
    embedded = Settings(data_dir=tmp_path / "var")
    assert webhook_secrets(embedded) == webhook_secrets(embedded)


def test_webhook_secret_setting_overrides_and_is_validated(tmp_path: Path) -> None:
    from tryon.config import load_settings

    good = "whsec_" + base64.b64encode(b"k" * 24).decode()
    s = load_settings({"TRYON_DATA_DIR": str(tmp_path), "TRYON_WEBHOOK_SECRET": good})
    assert webhook_secrets(s) == [good] and load_or_create_secret(s) == good
    for bad in ("plain-text", "whsec_***", "whsec_" + base64.b64encode(b"short").decode()):
        with pytest.raises(ConfigError, match="TRYON_WEBHOOK_SECRET"):
            load_settings({"TRYON_WEBHOOK_SECRET": bad})


def test_a_whitespace_separated_secret_string_signs_with_each() -> None:
    headers = sign("new old", "msg_1", NOW, BODY)
    assert len(headers["webhook-signature"].split()) == 2
    assert verify("new", headers, BODY, now=NOW) == verify("old", headers, BODY, now=NOW)
