"""Download the released AnyDoor checkpoint, resumably, for ``tryon weights fetch``.

Contract:

1. The file is downloaded into a staging folder (``cache_dir``), never into ``dest``: a failed
   or interrupted download leaves ``dest`` exactly as it was.
2. The partial file stays in ``cache_dir`` with the server's validator (ETag) beside it. The
   next call asks only for the missing bytes (``Range`` + ``If-Range``); a server that answers
   with the whole file (the file changed, or no range support) restarts it from zero.
3. When the length matches the server's total (and the SHA-256 when the ETag is one, as for
   Hugging Face LFS files), the file is moved into ``dest`` under a temporary name and renamed,
   so ``dest`` holds either nothing or the complete file.
4. No network, a timeout or a server error raises :class:`~tryon.errors.NetworkUnavailableError`
   (exit status 6), saying how much is kept for the next try; a missing file on the server
   (HTTP 404/401/403) raises :class:`~tryon.errors.WeightsNotFoundError`. Nothing is retried in
   a loop: run the command again when the network is back.

The URL is built by ``huggingface_hub`` (its endpoint honours ``HF_ENDPOINT``); ``url=`` takes a
mirror or a direct link instead. Only the standard library does the transfer.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import re
import shutil
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from tryon.errors import NetworkUnavailableError, WeightsNotFoundError

#: where the authors publish the checkpoint (a Hugging Face *Space*, not a model repo)
OFFICIAL_REPO_ID = "xichenhku/AnyDoor"
OFFICIAL_REPO_TYPE = "space"
OFFICIAL_FILENAME = "epoch=1-step=8687.ckpt"

#: ``progress(bytes_done, bytes_total_or_None)``, called as bytes arrive
Progress = Callable[[int, "int | None"], None]

CHUNK = 1 << 20
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def offline() -> bool:
    """True when ``HF_HUB_OFFLINE`` forbids downloads."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def manual_hint(dest: Path) -> str:
    """How to place the checkpoint by hand."""
    return (
        f"Download {OFFICIAL_FILENAME} by hand from the files of the Hugging Face Space "
        f"{OFFICIAL_REPO_ID} on a machine with network access, copy it to {dest}/, then run "
        f"`tryon weights convert {dest / OFFICIAL_FILENAME} <output-dir>` "
        "(or point TRYON_WEIGHTS at the .ckpt)."
    )


def official_url(filename: str = OFFICIAL_FILENAME, revision: str | None = None) -> str:
    """The download URL of ``filename`` in the authors' Space (``HF_ENDPOINT`` honoured)."""
    from huggingface_hub import hf_hub_url

    return hf_hub_url(
        OFFICIAL_REPO_ID, filename, repo_type=OFFICIAL_REPO_TYPE, revision=revision
    )


def _staging_paths(cache_dir: Path, url: str, filename: str) -> tuple[Path, Path]:
    tag = hashlib.sha256(url.encode()).hexdigest()[:16]
    part = cache_dir / f"{tag}-{filename}.part"
    return part, part.with_name(part.name + ".json")


def _read_meta(meta: Path) -> dict[str, str]:
    try:
        data = json.loads(meta.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _total_from(response: http.client.HTTPResponse, start: int) -> int | None:
    content_range = response.headers.get("Content-Range", "")
    match = re.match(r"bytes \d+-\d+/(\d+)", content_range)
    if match:
        return int(match.group(1))
    length = response.headers.get("Content-Length")
    return start + int(length) if length and length.isdigit() else None


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def fetch(
    dest: str | os.PathLike[str],
    *,
    cache_dir: str | os.PathLike[str],
    revision: str | None = None,
    filename: str = OFFICIAL_FILENAME,
    url: str | None = None,
    timeout: float = 20.0,
    progress: Progress | None = None,
) -> Path:
    """Download the released AnyDoor checkpoint into ``dest``; return the file's path.

    ``cache_dir`` holds the partial download between calls (see the module docstring for the
    contract). ``timeout`` bounds each connect and read, in seconds.
    """
    dest, cache_dir = Path(dest), Path(cache_dir)
    final = dest / filename
    if final.is_file():
        return final
    if offline():
        raise NetworkUnavailableError(
            f"Downloads are disabled (HF_HUB_OFFLINE is set). {manual_hint(dest)}"
        )
    # 1. Where the bytes come from and where the partial file lives
    src = url or official_url(filename, revision)
    cache_dir.mkdir(parents=True, exist_ok=True)
    part, meta_path = _staging_paths(cache_dir, src, filename)
    meta = _read_meta(meta_path)
    start = part.stat().st_size if part.is_file() and meta.get("etag") else 0

    # 2. Ask for what is missing
    request = urllib.request.Request(src, headers={"Accept-Encoding": "identity"})
    if start:
        request.add_header("Range", f"bytes={start}-")
        request.add_header("If-Range", meta["etag"])
    total: int | None = None
    try:
        try:
            response = urllib.request.urlopen(request, timeout=timeout)
        except urllib.error.HTTPError as exc:
            if exc.code == 416 and start:  # nothing left to send: the partial file is whole
                total = start
                response = None
            else:
                raise
        if response is not None:
            with response:
                if response.status == 200:
                    start = 0  # the server sends everything: changed file or no range support
                total = _total_from(response, start)
                etag = response.headers.get("ETag", "")
                meta_path.write_text(json.dumps({"url": src, "etag": etag, "total": total}))
                done = start
                # 3. Append to the partial file as the bytes come
                with part.open("ab" if start else "wb") as out:
                    if progress is not None:
                        progress(done, total)
                    for block in iter(lambda: response.read(CHUNK), b""):
                        out.write(block)
                        done += len(block)
                        if progress is not None:
                            progress(done, total)
    except urllib.error.HTTPError as exc:
        if exc.code in (401, 403, 404):
            raise WeightsNotFoundError(
                f"{src} answered HTTP {exc.code}: the file is not there (check --revision or "
                f"--url). {manual_hint(dest)}"
            ) from exc
        raise _network_error(exc, src, part, dest) from exc
    except (urllib.error.URLError, ConnectionError, http.client.HTTPException, TimeoutError) as exc:
        raise _network_error(exc, src, part, dest) from exc

    # 4. Check it, then move it into dest in one rename
    size = part.stat().st_size if part.is_file() else 0
    if total is not None and size < total:
        raise _network_error(
            ConnectionError(f"the connection closed after {size} of {total} bytes"), src, part,
            dest,
        )
    etag = _read_meta(meta_path).get("etag", "").strip('"').removeprefix("W/").strip('"')
    if _SHA256.match(etag) and _sha256_file(part) != etag:
        part.unlink(missing_ok=True)
        meta_path.unlink(missing_ok=True)
        raise NetworkUnavailableError(
            f"The download of {filename} was corrupted in transit (SHA-256 mismatch); it was "
            "discarded: run the command again."
        )
    dest.mkdir(parents=True, exist_ok=True)
    tmp = dest / f".{filename}.tmp"
    try:
        shutil.move(part, tmp)  # a copy when cache_dir is on another filesystem
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)
    meta_path.unlink(missing_ok=True)
    return final


def _network_error(exc: BaseException, src: str, part: Path, dest: Path) -> NetworkUnavailableError:
    kept = part.stat().st_size if part.is_file() else 0
    resume = (
        f" {kept} bytes are kept in {part.parent}: run the same command again to resume."
        if kept
        else ""
    )
    reason = getattr(exc, "reason", None) or exc
    return NetworkUnavailableError(
        f"Could not download {src}: {reason}.{resume} Without network: {manual_hint(dest)}",
        kept_bytes=kept,
    )
