"""S-1 under a real gunicorn: body, form-part and form-field limits answer 413; a chunked body
with no Content-Length is never read past the limit; the worker's RSS does not grow by more
than the limit (reliability.md §3.3 and §6 S-1).

gunicorn runs ``web.app:create_app()`` in a subprocess (one sync worker, so there is exactly one
process to measure) on SQLite and local storage in a temp dir, with a low
``TRYON_MAX_UPLOAD_BYTES`` so the limits are small.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from servers import free_port, wait_port

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
MAX_UPLOAD = 200_000


class Server:
    def __init__(self, proc: subprocess.Popen[bytes], port: int, key: str, limits: dict[str, int],
                 log: Path) -> None:
        self.proc, self.port, self.key, self.limits, self.log = proc, port, key, limits, log

    def worker_rss(self) -> int:
        import psutil

        kids = psutil.Process(self.proc.pid).children()
        assert len(kids) == 1, kids
        return int(kids[0].memory_info().rss)

    def worker_peak_rss(self) -> int:
        """The worker's peak RSS so far (VmHWM): it rises if any request was ever buffered."""
        with open(f"/proc/{self.worker_pid()}/status") as fh:
            kib = next(int(line.split()[1]) for line in fh if line.startswith("VmHWM"))
        return kib * 1024

    def worker_pid(self) -> int:
        import psutil

        return int(psutil.Process(self.proc.pid).children()[0].pid)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    pytest.importorskip("gunicorn")
    pytest.importorskip("psutil")
    tmp = tmp_path_factory.mktemp("gunicorn")
    env = {
        **os.environ,
        "TRYON_DATA_DIR": str(tmp / "var"),
        "TRYON_MAX_UPLOAD_BYTES": str(MAX_UPLOAD),
        "TRYON_SECRET_KEY": "limits-secret",
        "PYTHONPATH": str(ROOT),
        "OMP_NUM_THREADS": "1",
    }
    for k in [k for k in env if k.startswith("TRYON_") and k not in {
            "TRYON_DATA_DIR", "TRYON_MAX_UPLOAD_BYTES", "TRYON_SECRET_KEY"}]:
        del env[k]
    from tryon.config import load_settings
    from tryon.records.accounts import create_account, create_api_key
    from tryon.records.db import make_engine, make_session_factory
    from tryon.records.models import Base
    from web.app import create_app

    settings = load_settings({k: v for k, v in env.items() if k.startswith("TRYON_")})
    engine = make_engine(settings.resolved_database_url)
    Base.metadata.create_all(engine)
    with make_session_factory(engine)() as s:
        acct = create_account(s, name="shopper", role="shopper")
        key = create_api_key(s, account_id=acct.id).plaintext
        s.commit()
    engine.dispose()
    cfg = create_app(settings).config
    limits = {k: int(cfg[k]) for k in ("MAX_CONTENT_LENGTH", "MAX_FORM_PARTS",
                                       "MAX_FORM_MEMORY_SIZE")}
    port = free_port()
    log = tmp / "gunicorn.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}", "--workers", "1",
             "--timeout", "30", "web.app:create_app()"],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_port(port, 60)
        srv = Server(proc, port, key, limits, log)
        status, _, _ = request(srv, "GET", "/healthz")
        assert status == 200, log.read_text()[-3000:]
        yield srv
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def request(srv: Server, method: str, path: str, body: bytes | None = None,
            headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def multipart(fields: list[tuple[str, bytes, str | None]]) -> tuple[bytes, str]:
    """``[(name, value, filename or None)]`` -> (body, content type)."""
    boundary = uuid.uuid4().hex
    parts = []
    for name, value, filename in fields:
        disp = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        head = f"--{boundary}\r\nContent-Disposition: {disp}\r\n"
        if filename:
            head += "Content-Type: application/octet-stream\r\n"
        parts.append(head.encode() + b"\r\n" + value + b"\r\n")
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def auth(srv: Server, content_type: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {srv.key}", "Content-Type": content_type}


def assert_413_json(status: int, headers: dict[str, str], body: bytes, what: str) -> None:
    assert status == 413, (what, status, body[:300])
    assert headers.get("content-type", "").startswith("application/json"), (what, headers)
    assert json.loads(body)["error"]["code"] == "payload_too_large", (what, body[:300])


def body_over_limit(srv: Server) -> tuple[bytes, str]:
    limit = srv.limits["MAX_CONTENT_LENGTH"]
    body, ctype = multipart([("consent", b"true", None), ("image", b"", "me.png")])
    filler = limit + 1 - len(body)
    body, ctype = multipart([("consent", b"true", None), ("image", b"\x00" * filler, "me.png")])
    assert len(body) == limit + 1
    return body, ctype


def chunked_post(srv: Server, path: str, content_type: str, total: int,
                 chunk: int = 64 * 1024) -> str:
    """POST ``total`` bytes with ``Transfer-Encoding: chunked`` (no Content-Length).

    Returns ``"<status>"`` or ``"reset"`` when the server closed the connection first.
    """
    sock = socket.create_connection(("127.0.0.1", srv.port), timeout=30)
    try:
        head = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {srv.key}\r\n"
                f"Content-Type: {content_type}\r\nTransfer-Encoding: chunked\r\n\r\n").encode()
        try:
            sock.sendall(head)
            sent = 0
            while sent < total:
                n = min(chunk, total - sent)
                sock.sendall(f"{n:x}\r\n".encode() + b"a" * n + b"\r\n")
                sent += n
            sock.sendall(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and closed early: read what it said, if anything
        data = b""
        try:
            while True:
                got = sock.recv(65536)
                if not got:
                    break
                data += got
                if b"\r\n\r\n" in data:
                    break
        except (TimeoutError, ConnectionResetError):
            pass
        if not data.startswith(b"HTTP/1."):
            return "reset"
        return data.split(b" ", 2)[1].decode()
    finally:
        sock.close()


def test_body_over_limit_with_content_length_is_413_json(server: Server) -> None:
    body, ctype = body_over_limit(server)
    status, headers, out = request(server, "POST", "/v1/photos", body, auth(server, ctype))
    assert_413_json(status, headers, out, "Content-Length over MAX_CONTENT_LENGTH")


def test_too_many_form_parts_is_413(server: Server) -> None:
    n = server.limits["MAX_FORM_PARTS"] + 1
    body, ctype = multipart([(f"f{i}", b"x", None) for i in range(n)])
    status, headers, out = request(server, "POST", "/v1/photos", body, auth(server, ctype))
    assert_413_json(status, headers, out, f"{n} form parts")


def test_oversize_text_field_is_413(server: Server) -> None:
    size = server.limits["MAX_FORM_MEMORY_SIZE"] + 1
    body, ctype = multipart([("consent", b"t" * size, None)])
    assert len(body) < server.limits["MAX_CONTENT_LENGTH"], "must hit the field limit, not the body's"
    status, headers, out = request(server, "POST", "/v1/photos", body, auth(server, ctype))
    assert_413_json(status, headers, out, f"a {size}-byte text field")


def test_chunked_over_limit_is_refused_never_5xx(server: Server) -> None:
    limit = server.limits["MAX_CONTENT_LENGTH"]
    _, ctype = multipart([("consent", b"true", None)])
    outcome = chunked_post(server, "/v1/photos", ctype, limit + 1)
    print(f"\nS-1: chunked {limit + 1} bytes with no Content-Length -> {outcome}")
    assert outcome == "reset" or 400 <= int(outcome) < 500, outcome
    # the worker survived and still answers
    assert request(server, "GET", "/healthz")[0] == 200


def test_rss_grows_by_less_than_the_limit(server: Server) -> None:
    """Oversize bodies are refused without being buffered: after warm-up rounds, ten rounds of
    every oversize request (chunked ones 40x the limit) leave the worker's current RSS and its
    peak RSS within 4x the limit. Buffering even one chunked body would lift the peak by 40x
    the limit; allocator noise from handling 40 requests is a few hundred KiB."""
    limit = server.limits["MAX_CONTENT_LENGTH"]
    pid = server.worker_pid()
    big, big_type = body_over_limit(server)
    parts, parts_type = multipart(
        [(f"f{i}", b"x", None) for i in range(server.limits["MAX_FORM_PARTS"] + 1)])
    field, field_type = multipart([("consent", b"t" * (server.limits["MAX_FORM_MEMORY_SIZE"] + 1),
                                    None)])

    def round_() -> list[str]:
        seen = []
        for body, ctype in ((big, big_type), (parts, parts_type), (field, field_type)):
            seen.append(str(request(server, "POST", "/v1/photos", body, auth(server, ctype))[0]))
        seen.append(chunked_post(server, "/v1/photos", field_type, 40 * limit))
        return seen

    round_()
    round_()
    before, peak_before = server.worker_rss(), server.worker_peak_rss()
    outcomes = [o for _ in range(10) for o in round_()]
    after, peak_after = server.worker_rss(), server.worker_peak_rss()
    assert server.worker_pid() == pid, "the gunicorn worker was replaced (crash or timeout)"
    growth = after - before
    print(f"\nS-1: gunicorn worker RSS {before / 2**20:.1f} -> {after / 2**20:.1f} MiB "
          f"(+{growth / 1024:.0f} KiB; limit {limit / 1024:.0f} KiB) over 40 oversize requests; "
          f"(peak +{(peak_after - peak_before) / 1024:.0f} KiB); outcomes {sorted(set(outcomes))}")
    assert not [o for o in outcomes if o != "reset" and int(o) >= 500], outcomes
    assert growth < 4 * limit
    assert peak_after - peak_before < 4 * limit
