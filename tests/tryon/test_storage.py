"""Storage: key safety (S-6), confinement to the root, atomic writes, S3 presign (S-12)."""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tryon.config import Settings
from tryon.errors import InvalidStorageKeyError, StorageUnavailableError
from tryon.storage import (
    LocalStorage,
    ObjectNotFoundError,
    S3Storage,
    check_key,
    make_storage,
    new_key,
    result_key,
)

OWNER = uuid.uuid4().hex

DANGEROUS = st.sampled_from(
    [
        "..", "../", "/..", "%2e%2e", "%2e", "%2F", "\\", "..\\", "\x00", "/", "//", "~",
        "\u2024\u2024",  # ONE DOT LEADER, looks like ".."
        "\uff0e\uff0e",  # FULLWIDTH FULL STOP
        "\u2215",  # DIVISION SLASH
        "é", "ｐhotos", "\n", " ", "C:", "file:", "./",
    ]
)
SAFE = st.text(alphabet="abcdef0123456789/_-.", max_size=40)


def _snapshot(path: Path) -> set[tuple[str, int]]:
    return {(str(p), p.stat().st_size) for p in path.rglob("*") if p.is_file()}


@st.composite
def bad_keys(draw: st.DrawFn) -> str:
    """Keys built around a valid shape with at least one dangerous piece spliced in."""
    base = draw(st.sampled_from([f"photos/{OWNER}/x.jpg", f"results/{OWNER}/j/a1/0.png", ""]))
    piece = draw(DANGEROUS)
    pos = draw(st.integers(0, len(base)))
    head = draw(SAFE)
    key = base[:pos] + piece + base[pos:]
    if draw(st.booleans()):
        key = head + key
    if draw(st.booleans()):
        key = "/" + key  # absolute
    return key


def test_new_and_result_keys_are_valid_and_unique() -> None:
    keys = {new_key("photos", OWNER, "JPEG") for _ in range(50)}
    assert len(keys) == 50
    for k in keys:
        assert check_key(k) == k and k.startswith(f"photos/{OWNER}/") and k.endswith(".jpg")
    rk = result_key(OWNER, uuid.uuid4().hex, 2, 3)
    assert check_key(rk).endswith("/a2/3.png")


@pytest.mark.parametrize(
    "kind,owner,ext",
    [("Photos", OWNER, "jpg"), ("photos", "../x", "jpg"), ("photos", OWNER, "../p"),
     ("photos", OWNER, "js/x"), ("pho/tos", OWNER, "jpg"), ("photos", OWNER.upper(), "jpg")],
)
def test_new_key_rejects_bad_parts(kind: str, owner: str, ext: str) -> None:
    with pytest.raises(InvalidStorageKeyError):
        new_key(kind, owner, ext)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(key=bad_keys())
def test_fuzzed_keys_are_rejected_and_nothing_is_written(tmp_path: Path, key: str) -> None:
    root = tmp_path / "root"
    store = LocalStorage(root)
    before = _snapshot(tmp_path)
    with pytest.raises(InvalidStorageKeyError):
        check_key(key)
    for op in (
        lambda: store.put(key, b"payload", "image/png"),
        lambda: store.get(key),
        lambda: store.exists(key),
        lambda: store.delete(key),
    ):
        with pytest.raises(InvalidStorageKeyError):
            op()
    assert _snapshot(tmp_path) == before


def test_local_roundtrip_and_atomic_write(tmp_path: Path) -> None:
    store = LocalStorage(tmp_path / "root")
    key = new_key("photos", OWNER, "png")
    assert not store.exists(key)
    store.put(key, b"abc", "image/png")
    store.put(key, b"abcd", "image/png")  # overwrite replaces atomically
    assert store.get(key) == b"abcd" and store.exists(key)
    files = [p.name for p in (tmp_path / "root").rglob("*") if p.is_file()]
    assert not any(n.startswith(".tmp-") for n in files)  # no temp leftovers
    assert (tmp_path / "root" / key).resolve().is_relative_to((tmp_path / "root").resolve())
    store.delete(key)
    assert not store.exists(key)
    with pytest.raises(ObjectNotFoundError):
        store.get(key)
    assert store.signed_url(key, 60) is None


def test_local_delete_prefix_only_touches_prefix(tmp_path: Path) -> None:
    store = LocalStorage(tmp_path)
    job, other = uuid.uuid4().hex, uuid.uuid4().hex
    for a in (1, 2):
        for i in range(2):
            store.put(result_key(OWNER, job, a, i), b"x", "image/png")
    keep = result_key(OWNER, other, 1, 0)
    store.put(keep, b"y", "image/png")
    assert store.delete_prefix(f"results/{OWNER}/{job}") == 4
    assert store.exists(keep)
    with pytest.raises(InvalidStorageKeyError):
        store.delete_prefix(f"results/{OWNER}/..")


def test_local_refuses_symlink_escape(tmp_path: Path) -> None:
    root = tmp_path / "root"
    outside = tmp_path / "outside"
    outside.mkdir()
    store = LocalStorage(root)
    (root / "photos").mkdir()
    os.symlink(outside, root / "photos" / OWNER)
    with pytest.raises(InvalidStorageKeyError):
        store.put(f"photos/{OWNER}/x.jpg", b"evil", "image/jpeg")
    assert list(outside.iterdir()) == []


def test_local_write_failure_is_transient(tmp_path: Path) -> None:
    root = tmp_path / "root"
    store = LocalStorage(root)
    (root / "photos").write_bytes(b"a file where a directory should be")
    with pytest.raises(StorageUnavailableError):
        store.put(new_key("photos", OWNER, "jpg"), b"x", "image/jpeg")


def test_make_storage_local(tmp_path: Path) -> None:
    s = make_storage(Settings(data_dir=tmp_path))
    assert isinstance(s, LocalStorage) and s.root == (tmp_path / "storage").resolve()


@pytest.fixture
def s3():
    moto = pytest.importorskip("moto")
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    with moto.mock_aws():
        import boto3
        from botocore.config import Config

        client = boto3.client("s3", region_name="us-east-1", config=Config(signature_version="s3v4"))
        client.create_bucket(Bucket="tryon-test")
        yield S3Storage("tryon-test", prefix="env1", client=client)


def test_s3_roundtrip_prefix_and_delete_prefix(s3: S3Storage) -> None:
    job = uuid.uuid4().hex
    k0, k1 = result_key(OWNER, job, 1, 0), result_key(OWNER, job, 1, 1)
    s3.put(k0, b"zero", "image/png")
    s3.put(k1, b"one", "image/png")
    assert s3.get(k0) == b"zero" and s3.exists(k1)
    listed = s3.client.list_objects_v2(Bucket="tryon-test")["Contents"]
    assert all(o["Key"].startswith("env1/results/") for o in listed)
    assert s3.delete_prefix(f"results/{OWNER}/{job}") == 2
    assert not s3.exists(k0)
    with pytest.raises(ObjectNotFoundError):
        s3.get(k0)
    with pytest.raises(InvalidStorageKeyError):
        s3.put("results/../x.png", b"", "image/png")


def test_s3_presign_expires_and_overrides(s3: S3Storage) -> None:
    from urllib.parse import parse_qs, urlparse

    key = result_key(OWNER, uuid.uuid4().hex, 1, 0)
    s3.put(key, b"png", "image/png")
    url = s3.signed_url(key, 300, content_type="image/png")
    q = parse_qs(urlparse(url).query)
    assert q["X-Amz-Expires"] == ["300"]
    assert q["response-content-type"] == ["image/png"]
    assert q["response-content-disposition"][0].startswith("inline;")
    # TTL is capped at 15 minutes whatever the caller asks
    url = s3.signed_url(key, 7 * 86400)
    q = parse_qs(urlparse(url).query)
    assert q["X-Amz-Expires"] == ["900"]
    # and the object itself carries its stored Content-Type
    assert s3.client.head_object(Bucket="tryon-test", Key=f"env1/{key}")["ContentType"] == "image/png"


def _check_list_keys(store: Any) -> None:
    job = uuid.uuid4().hex
    keys = [result_key(OWNER, job, 1, 0), result_key(OWNER, job, 2, 0)]
    other = new_key("photos", OWNER, "jpg")
    for k in (*keys, other):
        store.put(k, b"x", "image/png")
    assert store.list_keys("results") == sorted(keys)
    assert store.list_keys(f"results/{OWNER}/{job}") == sorted(keys)
    assert store.list_keys("photos") == [other]
    assert store.list_keys("masks") == []
    for bad in ("", "../results", "results/../x", "Results"):
        with pytest.raises(InvalidStorageKeyError):
            store.list_keys(bad)


def test_local_list_keys_skips_temp_files(tmp_path: Path) -> None:
    store = LocalStorage(tmp_path)
    _check_list_keys(store)
    # a write killed half-way leaves a temp file: no key
    (tmp_path / "results" / OWNER).mkdir(parents=True, exist_ok=True)
    (tmp_path / "results" / OWNER / ".tmp-abc.part").write_bytes(b"half")
    assert all(".part" not in k for k in store.list_keys("results"))
    # a killed writer's temp file goes once it is old enough; a fresh one may be in progress
    old = tmp_path / "results" / OWNER / ".tmp-old.part"
    old.write_bytes(b"half")
    os.utime(old, (1, 1))
    assert store.delete_stale_temp_files("results", 300) == 1
    assert not old.exists() and (tmp_path / "results" / OWNER / ".tmp-abc.part").exists()


def test_s3_list_keys(s3: S3Storage) -> None:
    _check_list_keys(s3)
