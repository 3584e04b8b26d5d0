"""Object storage behind one interface: local filesystem (default) or S3-compatible (boto3).

Keys are always built by the server (:func:`new_key`, :func:`result_key`) and every key is
checked against :data:`KEY_RE` before any I/O, on every backend: a user's file name never
becomes part of a key, and tenant prefixes (``{kind}/{owner_id}/...``) are an authorization
boundary even on S3, where some tools normalise ``../``.

Transient backend failures (disk full, connection errors, S3 5xx/throttling) raise
:class:`tryon.errors.StorageUnavailableError` so callers can retry; a missing key raises
:class:`ObjectNotFoundError` (a :class:`LookupError`, not a :class:`KeyError`).
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from tryon.errors import InvalidStorageKeyError, StorageUnavailableError

if TYPE_CHECKING:
    from tryon.config import Settings

log = logging.getLogger(__name__)

#: ``{kind}/{owner_id}/{segment}[/{segment}...][.{ext}]``: lowercase kind, 32-hex owner id,
#: 1-4 further segments of ``[a-z0-9_-]``, at most one extension on the last one. No dots
#: anywhere else, so ``..`` can never appear; no backslash, NUL, percent, or non-ASCII.
KEY_RE = re.compile(
    r"^[a-z]{1,32}/[0-9a-f]{32}(?:/[a-z0-9_-]{1,64}){1,4}(?:\.[a-z0-9]{1,8})?$", re.ASCII
)
#: a prefix for :meth:`Storage.delete_prefix`: ``{kind}/{owner_id}`` plus optional segments
PREFIX_RE = re.compile(r"^[a-z]{1,32}/[0-9a-f]{32}(?:/[a-z0-9_-]{1,64}){0,3}$", re.ASCII)
_KIND_RE = re.compile(r"^[a-z]{1,32}$", re.ASCII)
_OWNER_RE = re.compile(r"^[0-9a-f]{32}$", re.ASCII)
_EXT_RE = re.compile(r"^[a-z0-9]{1,8}$", re.ASCII)


class ObjectNotFoundError(LookupError):
    """The key is valid but no object is stored under it (every backend's ``get``/``open``...).

    Deliberately not a :class:`KeyError`: callers catch exactly this, so a programming
    ``KeyError`` (a missing dict entry) is never mistaken for a missing object.
    """


def check_key(key: str) -> str:
    """Return ``key`` unchanged if it matches :data:`KEY_RE`, else raise InvalidStorageKeyError."""
    if not isinstance(key, str) or KEY_RE.fullmatch(key) is None:
        raise InvalidStorageKeyError(f"invalid storage key: {key!r}"[:200])
    return key


def check_prefix(prefix: str) -> str:
    if not isinstance(prefix, str) or PREFIX_RE.fullmatch(prefix) is None:
        raise InvalidStorageKeyError(f"invalid storage prefix: {prefix!r}"[:200])
    return prefix


def check_list_prefix(prefix: str) -> str:
    """A prefix for :meth:`Storage.list_keys`: a bare kind (``results``) or a delete prefix."""
    if isinstance(prefix, str) and _KIND_RE.fullmatch(prefix):
        return prefix
    return check_prefix(prefix)


def new_key(kind: str, owner_id: str, ext: str) -> str:
    """A fresh server-generated key ``{kind}/{owner_id}/{uuid4hex}.{ext}``.

    ``kind`` is a lowercase word (``photos``, ``garments``, ``masks``), ``owner_id`` the 32-hex
    account id, ``ext`` the extension of the *detected* format (``jpg``, ``png``, ``webp``).
    """
    if not _KIND_RE.fullmatch(kind):
        raise InvalidStorageKeyError(f"invalid key kind: {kind!r}")
    if not _OWNER_RE.fullmatch(owner_id):
        raise InvalidStorageKeyError(f"invalid owner id: {owner_id!r}")
    ext = ext.lower().lstrip(".")
    if ext == "jpeg":
        ext = "jpg"
    if not _EXT_RE.fullmatch(ext):
        raise InvalidStorageKeyError(f"invalid extension: {ext!r}")
    return check_key(f"{kind}/{owner_id}/{uuid.uuid4().hex}.{ext}")


def job_prefix(owner_id: str, job_id: str) -> str:
    """The prefix holding every output of one job: ``results/{owner_id}/{job_id}``."""
    return check_prefix(f"results/{owner_id}/{job_id}")


def result_key(owner_id: str, job_id: str, attempt: int, index: int, ext: str = "png") -> str:
    """The fixed key of one sample of one attempt: ``results/{owner}/{job}/a{attempt}/{index}.{ext}``.

    Fixed by job id and attempt, so a redelivered attempt overwrites its own output and a stale
    attempt's output can be told apart (and deleted) after fencing.
    """
    if attempt < 0 or index < 0:
        raise InvalidStorageKeyError("attempt and index must be non-negative")
    return check_key(f"{job_prefix(owner_id, job_id)}/a{int(attempt)}/{int(index)}.{ext}")


def derived_prefix(owner_id: str, garment_id: str) -> str:
    """The prefix holding every derived object of one garment (cached engine inputs):
    ``derived/{owner_id}/{garment_id}``; deleting the garment deletes it whole."""
    if not _OWNER_RE.fullmatch(garment_id):
        raise InvalidStorageKeyError(f"invalid garment id: {garment_id!r}")
    return check_prefix(f"derived/{owner_id}/{garment_id}")


def derived_key(owner_id: str, garment_id: str, name: str, ext: str = "npz") -> str:
    """The fixed key of one derived object of a garment:
    ``derived/{owner_id}/{garment_id}/{name}.{ext}``. ``name`` (``[a-z0-9_-]{1,64}``) comes from
    the engine and already encodes what the data depends on, so the key is deterministic."""
    return check_key(f"{derived_prefix(owner_id, garment_id)}/{name}.{ext}")


@runtime_checkable
class Storage(Protocol):
    """What every backend offers. Keys must pass :func:`check_key`."""

    def put(self, key: str, data: bytes, content_type: str) -> None: ...

    def get(self, key: str) -> bytes: ...

    def exists(self, key: str) -> bool: ...

    def delete(self, key: str) -> None: ...

    def delete_prefix(self, prefix: str) -> int: ...

    def list_keys(self, prefix: str) -> list[str]:
        """Every key under ``prefix`` (a kind such as ``results``, or a delete prefix), sorted:
        what the orphan sweep compares with the rows."""
        ...

    def signed_url(
        self, key: str, ttl: int, *, content_type: str | None = None, filename: str | None = None
    ) -> str | None:
        """A direct, expiring URL, or None when the backend has none (the API then signs its own)."""
        ...


# ---------------------------------------------------------------------------------------
class LocalStorage:
    """Files under ``root``. Every path is resolved and must stay inside ``root``.

    Writes go to a temp file in the target directory and are moved into place with
    ``os.replace``, so a reader never sees half an object and a crash leaves no partial file
    under the final name. Symlinks inside the tree are refused.
    """

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        check_key(key)
        path = (self.root / key).resolve()
        if not path.is_relative_to(self.root) or path == self.root:
            raise InvalidStorageKeyError(f"key escapes the storage root: {key!r}")
        # resolve() follows symlinks, so a link inside the tree pointing elsewhere fails above;
        # a link pointing inside the tree is refused too (nothing of ours creates links).
        if (self.root / key).is_symlink():
            raise InvalidStorageKeyError(f"key is a symlink: {key!r}")
        return path

    def put(self, key: str, data: bytes, content_type: str) -> None:
        path = self._path(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".part")
            try:
                with os.fdopen(fd, "wb") as fh:
                    fh.write(data)
                    fh.flush()
                    os.fsync(fh.fileno())
                os.replace(tmp, path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        except OSError as exc:
            raise StorageUnavailableError(f"could not write {key}: {exc.strerror}") from exc

    def get(self, key: str) -> bytes:
        path = self._path(key)
        try:
            return path.read_bytes()
        except FileNotFoundError:
            raise ObjectNotFoundError(key) from None
        except OSError as exc:
            raise StorageUnavailableError(f"could not read {key}: {exc.strerror}") from exc

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def delete(self, key: str) -> None:
        path = self._path(key)
        try:
            path.unlink(missing_ok=True)
        except OSError as exc:
            raise StorageUnavailableError(f"could not delete {key}: {exc.strerror}") from exc

    def delete_prefix(self, prefix: str) -> int:
        check_prefix(prefix)
        base = (self.root / prefix).resolve()
        if not base.is_relative_to(self.root) or not base.is_dir():
            return 0
        count = 0
        try:
            for p in sorted(base.rglob("*"), reverse=True):
                if p.is_symlink() or p.is_file():
                    p.unlink()
                    count += 1
                elif p.is_dir():
                    p.rmdir()
            base.rmdir()
        except OSError as exc:
            raise StorageUnavailableError(f"could not delete {prefix}: {exc.strerror}") from exc
        return count

    def list_keys(self, prefix: str) -> list[str]:
        base = self.root / check_list_prefix(prefix)
        if not base.is_dir():
            return []
        keys = []
        try:
            for p in base.rglob("*"):
                if p.is_file() and not p.is_symlink():
                    key = p.relative_to(self.root).as_posix()
                    if KEY_RE.fullmatch(key):  # temp files of a write in progress are no keys
                        keys.append(key)
        except OSError as exc:
            raise StorageUnavailableError(f"could not list {prefix}: {exc.strerror}") from exc
        return sorted(keys)

    def delete_stale_temp_files(self, prefix: str, min_age_s: float) -> int:
        """Remove ``.tmp-*.part`` files under ``prefix`` older than ``min_age_s``: what a
        writer killed between the temp write and the rename left (no key names them, so only
        this finds them). A younger one may be a write in progress and stays."""
        import time

        base = self.root / check_list_prefix(prefix)
        if not base.is_dir():
            return 0
        cutoff = time.time() - min_age_s
        count = 0
        try:
            for p in base.rglob(".tmp-*.part"):
                if p.is_file() and not p.is_symlink() and p.stat().st_mtime <= cutoff:
                    p.unlink(missing_ok=True)
                    count += 1
        except OSError as exc:
            raise StorageUnavailableError(f"could not clean {prefix}: {exc.strerror}") from exc
        return count

    def signed_url(
        self, key: str, ttl: int, *, content_type: str | None = None, filename: str | None = None
    ) -> str | None:
        check_key(key)
        return None  # the API serves local files through its own signed route


# ---------------------------------------------------------------------------------------
#: botocore error codes that are worth retrying
_TRANSIENT_S3_CODES = {
    "InternalError", "ServiceUnavailable", "SlowDown", "RequestTimeout", "Throttling",
    "ThrottlingException", "RequestTimeTooSkewed", "503", "500",
}


def _is_missing(exc: Any) -> bool:
    """A botocore ClientError that means "no such object" (GET says NoSuchKey, HEAD says 404)."""
    return exc.response.get("Error", {}).get("Code") in {"NoSuchKey", "404", "NotFound"}


class S3Storage:
    """An S3-compatible bucket (AWS, MinIO, Ceph). Keys live under an optional ``prefix``.

    The bucket stays private; results are shared through presigned GETs that expire in at most
    :attr:`MAX_TTL` seconds with the response Content-Type and Content-Disposition forced.
    """

    MAX_TTL = 900

    def __init__(
        self,
        bucket: str,
        *,
        prefix: str = "",
        endpoint_url: str | None = None,
        region: str | None = None,
        client: Any = None,
    ) -> None:
        if not bucket:
            raise ValueError("S3Storage needs a bucket")
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        if client is None:
            import boto3
            from botocore.config import Config

            client = boto3.client(
                "s3",
                endpoint_url=endpoint_url or None,
                region_name=region or None,
                # SigV4 presigned URLs carry X-Amz-Expires (SigV2 has a 7-day-unbounded Expires)
                config=Config(
                    signature_version="s3v4",
                    connect_timeout=5,
                    read_timeout=30,
                    retries={"max_attempts": 3, "mode": "standard"},
                ),
            )
        self.client = client

    def _full(self, key: str) -> str:
        check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _wrap(self, exc: Exception, what: str) -> Exception:
        from botocore.exceptions import BotoCoreError, ClientError

        if isinstance(exc, ClientError):
            code = str(exc.response.get("Error", {}).get("Code", ""))
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
            if code in _TRANSIENT_S3_CODES or status >= 500:
                return StorageUnavailableError(f"{what}: {code}")
            return exc
        if isinstance(exc, BotoCoreError):  # connection, timeout, endpoint errors
            return StorageUnavailableError(f"{what}: {type(exc).__name__}")
        return exc

    def put(self, key: str, data: bytes, content_type: str) -> None:
        full = self._full(key)
        try:
            self.client.put_object(Bucket=self.bucket, Key=full, Body=data, ContentType=content_type)
        except Exception as exc:
            raise self._wrap(exc, f"put {key}") from exc

    def get(self, key: str) -> bytes:
        from botocore.exceptions import ClientError

        full = self._full(key)
        try:
            obj = self.client.get_object(Bucket=self.bucket, Key=full)
            data: bytes = obj["Body"].read()
            return data
        except ClientError as exc:
            if _is_missing(exc):
                raise ObjectNotFoundError(key) from None
            raise self._wrap(exc, f"get {key}") from exc
        except Exception as exc:
            raise self._wrap(exc, f"get {key}") from exc

    def exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        full = self._full(key)
        try:
            self.client.head_object(Bucket=self.bucket, Key=full)
            return True
        except ClientError as exc:
            if _is_missing(exc):
                return False
            raise self._wrap(exc, f"head {key}") from exc
        except Exception as exc:
            raise self._wrap(exc, f"head {key}") from exc

    def delete(self, key: str) -> None:
        full = self._full(key)
        try:
            self.client.delete_object(Bucket=self.bucket, Key=full)
        except Exception as exc:
            raise self._wrap(exc, f"delete {key}") from exc

    def delete_prefix(self, prefix: str) -> int:
        check_prefix(prefix)
        full = (f"{self.prefix}/{prefix}" if self.prefix else prefix) + "/"
        count = 0
        try:
            paginator = self.client.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=self.bucket, Prefix=full):
                objs = [{"Key": o["Key"]} for o in page.get("Contents", [])]
                if objs:
                    self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": objs})
                    count += len(objs)
        except Exception as exc:
            raise self._wrap(exc, f"delete prefix {prefix}") from exc
        return count

    def list_keys(self, prefix: str) -> list[str]:
        full = (f"{self.prefix}/" if self.prefix else "") + check_list_prefix(prefix) + "/"
        strip = len(self.prefix) + 1 if self.prefix else 0
        keys = []
        try:
            paginator = self.client.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=self.bucket, Prefix=full):
                for o in page.get("Contents", []):
                    key = o["Key"][strip:]
                    if KEY_RE.fullmatch(key):
                        keys.append(key)
        except Exception as exc:
            raise self._wrap(exc, f"list {prefix}") from exc
        return sorted(keys)

    def signed_url(
        self, key: str, ttl: int, *, content_type: str | None = None, filename: str | None = None
    ) -> str | None:
        params: dict[str, Any] = {"Bucket": self.bucket, "Key": self._full(key)}
        if content_type:
            params["ResponseContentType"] = content_type
        name = filename or key.rsplit("/", 1)[-1]
        params["ResponseContentDisposition"] = f'inline; filename="{name}"'
        expires = max(1, min(int(ttl), self.MAX_TTL))
        try:
            url: str = self.client.generate_presigned_url(
                "get_object", Params=params, ExpiresIn=expires
            )
            return url
        except Exception as exc:
            raise self._wrap(exc, f"presign {key}") from exc


def make_storage(settings: Settings) -> Storage:
    """The backend chosen by ``TRYON_STORAGE`` (``local`` under the storage root, or ``s3``)."""
    if settings.storage == "s3":
        return S3Storage(
            settings.s3_bucket,
            prefix=settings.s3_prefix,
            endpoint_url=settings.s3_endpoint_url or None,
            region=settings.s3_region or None,
        )
    return LocalStorage(settings.resolved_storage_root)
