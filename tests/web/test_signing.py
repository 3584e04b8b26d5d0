"""web.signing: the master secret the web processes load (created atomically, never empty) and
the result-URL key derived from it."""

from __future__ import annotations

import pathlib
from pathlib import Path
from typing import Any

import pytest

from tryon.config import Settings
from tryon.errors import ConfigError
from web.signing import ResultSigner, resolve_secret_key


def test_second_process_reads_the_first_ones_secret(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Two web processes start at once: the one that finds no file, then loses the creation
    race, gets the winner's secret (it used to die with FileExistsError)."""
    path = tmp_path / "secret_key"
    real_read = pathlib.Path.read_text
    first = [True]

    def read_text(self: pathlib.Path, *a: Any, **k: Any) -> str:
        if self == path and first[0]:
            first[0] = False
            path.write_text("winner")
            raise FileNotFoundError(path)
        return real_read(self, *a, **k)

    monkeypatch.setattr(pathlib.Path, "read_text", read_text)
    assert resolve_secret_key(Settings(data_dir=tmp_path)) == "winner"


def test_empty_secret_file_is_refused(tmp_path: Path) -> None:
    """An empty file (a writer that died half-way under the old non-atomic code) must not
    become an empty signing key."""
    (tmp_path / "secret_key").write_text("")
    with pytest.raises(ConfigError, match="empty"):
        resolve_secret_key(Settings(data_dir=tmp_path))


def test_signer_round_trip_and_key_separation(tmp_path: Path) -> None:
    secret = resolve_secret_key(Settings(data_dir=tmp_path))
    assert secret and resolve_secret_key(Settings(data_dir=tmp_path)) == secret
    token = ResultSigner(secret, 60).sign("results/a.png", "j1", 0)
    got = ResultSigner(secret, 60).verify(token)
    assert got is not None and got[0] == {"k": "results/a.png", "j": "j1", "i": 0}
    assert ResultSigner(secret + "x", 60).verify(token) is None


def test_token_is_opaque(tmp_path: Path) -> None:
    """Issue 11.6: a shared link must not reveal the account or job id (the old itsdangerous
    token carried its JSON payload in readable base64)."""
    import base64

    account, job = "a" * 32, "b" * 32
    key = f"results/{account}/{job}/a1/0.png"
    token = ResultSigner("s3cret", 60).sign(key, job, 0)
    raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    for secret_part in (account, job, key):
        assert secret_part not in token
        assert secret_part.encode() not in raw
    assert "=" not in token and "/" not in token
    # two tokens for the same sample differ (random IV): no token reveals another's content
    assert ResultSigner("s3cret", 60).sign(key, job, 0) != token


def test_token_expires_and_binds_one_sample(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    signer = ResultSigner("s3cret", 60)
    token = signer.sign("results/x/y/a1/1.png", "y", 1)
    got = signer.verify(token)
    assert got is not None and got[0]["i"] == 1 and got[0]["k"].endswith("/1.png")
    assert 0.0 <= got[1] < 5
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + 61)
    assert signer.verify(token) is None
    monkeypatch.setattr(time, "time", real)
    assert signer.verify(token[:-2]) is None and signer.verify("") is None
    assert signer.verify("\x00\ud800") is None
