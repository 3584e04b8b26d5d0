"""``tryon weights fetch``: a local HTTP server stands in for the hub (Range, If-Range, ETag),
and can drop the connection part-way to test that --dest stays clean and the next run resumes."""

from __future__ import annotations

import hashlib
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from click.testing import CliRunner

from tryon.anydoor import fetch as F
from tryon.cli import EXIT_NETWORK, EXIT_UNAVAILABLE, cli
from tryon.errors import NetworkUnavailableError, WeightsNotFoundError

PAYLOAD = bytes(range(256)) * 4096 + b"tail"  # ~1 MiB, not a multiple of the chunk size


class FakeHub:
    """A file server with the validators a CDN gives: ETag, Range/206, If-Range."""

    def __init__(self, payload: bytes, etag: str = '"v1"') -> None:
        self.payload = payload
        self.etag = etag
        self.drop_after: int | None = None  # close the connection after this many body bytes
        self.status: int | None = None  # answer every request with this HTTP status
        self.requests: list[dict[str, str]] = []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                hub.requests.append({k: v for k, v in self.headers.items()})
                if hub.status is not None:
                    self.send_error(hub.status)
                    return
                data, start = hub.payload, 0
                rng = self.headers.get("Range")
                if_range = self.headers.get("If-Range")
                if rng and (if_range is None or if_range == hub.etag):
                    start = int(rng.removeprefix("bytes=").rstrip("-"))
                    if start >= len(data):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(data)}")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                body = data[start:]
                self.send_header("Content-Length", str(len(body)))
                self.send_header("ETag", hub.etag)
                self.end_headers()
                if hub.drop_after is not None:
                    body = body[: hub.drop_after]
                self.wfile.write(body)
                self.wfile.flush()
                if hub.drop_after is not None:
                    self.close_connection = True

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/AnyDoor/{F.OFFICIAL_FILENAME}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def hub() -> Iterator[FakeHub]:
    server = FakeHub(PAYLOAD)
    yield server
    server.close()


@pytest.fixture(autouse=True)
def _online(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)


def _closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/{F.OFFICIAL_FILENAME}"


def test_fetch_downloads_into_dest_and_cleans_the_staging_area(hub: FakeHub, tmp_path: Path) -> None:
    seen: list[tuple[int, int | None]] = []
    path = F.fetch(tmp_path / "dest", cache_dir=tmp_path / "cache", url=hub.url,
                   progress=lambda done, total: seen.append((done, total)))
    assert path == tmp_path / "dest" / F.OFFICIAL_FILENAME
    assert path.read_bytes() == PAYLOAD
    assert [p.name for p in (tmp_path / "dest").iterdir()] == [F.OFFICIAL_FILENAME]
    assert list((tmp_path / "cache").iterdir()) == []
    assert seen[0] == (0, len(PAYLOAD)) and seen[-1] == (len(PAYLOAD), len(PAYLOAD))
    # a second call finds the file and asks nothing
    assert F.fetch(tmp_path / "dest", cache_dir=tmp_path / "cache", url=hub.url) == path
    assert len(hub.requests) == 1


def test_interrupted_download_leaves_dest_untouched_and_resumes(
    hub: FakeHub, tmp_path: Path
) -> None:
    dest, cache = tmp_path / "dest", tmp_path / "cache"
    hub.drop_after = 300_000
    with pytest.raises(NetworkUnavailableError, match="run the same command again to resume") as e:
        F.fetch(dest, cache_dir=cache, url=hub.url)
    assert e.value.code == "network_unavailable" and e.value.details["kept_bytes"] == 300_000
    assert not dest.exists()

    hub.drop_after = None
    path = F.fetch(dest, cache_dir=cache, url=hub.url)
    assert hashlib.sha256(path.read_bytes()).digest() == hashlib.sha256(PAYLOAD).digest()
    resumed = hub.requests[-1]
    assert resumed["Range"] == "bytes=300000-" and resumed["If-Range"] == '"v1"'
    assert list(cache.iterdir()) == []


def test_resume_restarts_when_the_file_changed_on_the_server(hub: FakeHub, tmp_path: Path) -> None:
    hub.drop_after = 100_000
    with pytest.raises(NetworkUnavailableError):
        F.fetch(tmp_path / "d", cache_dir=tmp_path / "c", url=hub.url)
    hub.drop_after, hub.etag, hub.payload = None, '"v2"', PAYLOAD[::-1]
    path = F.fetch(tmp_path / "d", cache_dir=tmp_path / "c", url=hub.url)
    assert path.read_bytes() == PAYLOAD[::-1]  # not v1's first 100 kB glued to v2's rest


def test_a_whole_partial_file_is_finished_without_a_body(hub: FakeHub, tmp_path: Path) -> None:
    hub.drop_after = len(PAYLOAD)  # every byte arrives, then the process dies before the move
    F.fetch(tmp_path / "d", cache_dir=tmp_path / "c", url=hub.url)
    (tmp_path / "d" / F.OFFICIAL_FILENAME).unlink()
    part, meta = F._staging_paths(tmp_path / "c", hub.url, F.OFFICIAL_FILENAME)
    part.write_bytes(PAYLOAD)
    meta.write_text('{"etag": "\\"v1\\""}')
    hub.drop_after = None
    path = F.fetch(tmp_path / "d", cache_dir=tmp_path / "c", url=hub.url)
    assert path.read_bytes() == PAYLOAD and hub.requests[-1]["Range"] == f"bytes={len(PAYLOAD)}-"


def test_sha256_etag_is_checked(tmp_path: Path) -> None:
    hub = FakeHub(PAYLOAD, etag='"' + "0" * 64 + '"')
    try:
        with pytest.raises(NetworkUnavailableError, match="SHA-256"):
            F.fetch(tmp_path / "d", cache_dir=tmp_path / "c", url=hub.url)
        assert not (tmp_path / "d").exists() and list((tmp_path / "c").iterdir()) == []
        hub.etag = '"' + hashlib.sha256(PAYLOAD).hexdigest() + '"'
        assert F.fetch(tmp_path / "d", cache_dir=tmp_path / "c", url=hub.url).is_file()
    finally:
        hub.close()


def test_missing_file_is_weights_not_found(hub: FakeHub, tmp_path: Path) -> None:
    hub.status = 404
    with pytest.raises(WeightsNotFoundError, match="HTTP 404"):
        F.fetch(tmp_path / "d", cache_dir=tmp_path / "c", url=hub.url)
    hub.status = 503
    with pytest.raises(NetworkUnavailableError):
        F.fetch(tmp_path / "d", cache_dir=tmp_path / "c", url=hub.url)
    assert not (tmp_path / "d").exists()


def test_cli_without_network_exits_6_and_leaves_dest_empty(tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    dest.mkdir()
    result = CliRunner().invoke(
        cli,
        ["weights", "fetch", "--dest", str(dest), "--cache-dir", str(tmp_path / "c"),
         "--url", _closed_port_url(), "--quiet"],
    )
    assert result.exit_code == EXIT_NETWORK == 6, result.output
    assert "network_unavailable" in result.output and "by hand" in result.output
    assert list(dest.iterdir()) == []


def test_cli_fetch_resumes_after_a_dropped_connection(hub: FakeHub, tmp_path: Path) -> None:
    args = ["weights", "fetch", "--dest", str(tmp_path / "d"), "--cache-dir", str(tmp_path / "c"),
            "--url", hub.url, "--quiet"]
    hub.drop_after = 500_000
    first = CliRunner().invoke(cli, args)
    assert first.exit_code == EXIT_NETWORK, first.output
    assert not (tmp_path / "d").exists()
    hub.drop_after = None
    second = CliRunner().invoke(cli, args)
    assert second.exit_code == 0, second.output
    assert "tryon weights convert" in second.output
    assert (tmp_path / "d" / F.OFFICIAL_FILENAME).read_bytes() == PAYLOAD
    assert hub.requests[-1]["Range"] == "bytes=500000-"


def test_cli_fetch_offline_fails_clearly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    result = CliRunner().invoke(cli, ["weights", "fetch", "--dest", str(tmp_path / "d")])
    assert result.exit_code == EXIT_NETWORK
    assert F.OFFICIAL_FILENAME in result.output and "tryon weights convert" in result.output
    assert not (tmp_path / "d").exists()


def test_404_exits_with_the_weights_status(hub: FakeHub, tmp_path: Path) -> None:
    hub.status = 404
    result = CliRunner().invoke(
        cli, ["weights", "fetch", "--dest", str(tmp_path / "d"), "--cache-dir",
              str(tmp_path / "c"), "--url", hub.url, "--quiet"]
    )
    assert result.exit_code == EXIT_UNAVAILABLE and "weights_not_found" in result.output


def test_official_url_names_the_authors_space() -> None:
    url = F.official_url(revision="abc")
    assert "spaces/" + F.OFFICIAL_REPO_ID in url and url.endswith("/abc/" + F.OFFICIAL_FILENAME.replace("=", "%3D"))
