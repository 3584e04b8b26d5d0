"""``tryon serve`` smoke test: the README's first command runs a working service.

Embedded defaults only (SQLite, local storage, the SQLAlchemy broker under TRYON_DATA_DIR; no
Redis, no PostgreSQL): ``tryon db upgrade``, accounts and keys from the CLI, then through HTTP
a garment and a photo (the shipped assets), a preview try-on polled to ``succeeded``, and the
result PNG. Ctrl-C (SIGINT to the foreground process group) must stop every process it started.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from servers import free_port, port_open
from service_checks import require_service

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
TRYON = ROOT / ".venv" / "bin" / "tryon"
ASSETS = ROOT / "tryon" / "assets"


def _env(data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRYON_")}
    env.update({"TRYON_DATA_DIR": str(data_dir), "OMP_NUM_THREADS": "1",
                "HF_HUB_OFFLINE": "1"})
    return env


def _cli(env: dict[str, str], cwd: Path, *args: str) -> str:
    r = subprocess.run([str(TRYON), *args], env=env, cwd=cwd, capture_output=True, text=True,
                       timeout=120, check=False)
    assert r.returncode == 0, (args, r.stdout, r.stderr)
    return r.stdout.strip()


class Http:
    def __init__(self, base: str) -> None:
        self.base = base

    def call(self, method: str, path: str, key: str | None = None, *, body: bytes | None = None,
             ctype: str | None = None) -> tuple[int, bytes, dict[str, str]]:
        req = urllib.request.Request(self.base + path, data=body, method=method)
        if key:
            req.add_header("Authorization", f"Bearer {key}")
        if ctype:
            req.add_header("Content-Type", ctype)
        try:
            with urllib.request.urlopen(req, timeout=180) as resp:
                return resp.status, resp.read(), dict(resp.headers)
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read(), dict(exc.headers)

    def json(self, method: str, path: str, key: str | None = None, *,
             payload: dict[str, Any] | None = None, expect: int = 200) -> Any:
        body = json.dumps(payload).encode() if payload is not None else None
        status, data, _ = self.call(method, path, key, body=body,
                                    ctype="application/json" if body is not None else None)
        assert status == expect, (method, path, status, data[:500])
        return json.loads(data)

    def upload(self, path: str, key: str, fields: dict[str, str], image: Path,
               expect: int = 201) -> Any:
        boundary = uuid.uuid4().hex
        out = b""
        for name, value in fields.items():
            out += (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n"
                    f"{value}\r\n").encode()
        out += (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; "
                f"filename=\"{image.name}\"\r\nContent-Type: image/png\r\n\r\n").encode()
        out += image.read_bytes() + f"\r\n--{boundary}--\r\n".encode()
        status, data, _ = self.call("POST", path, key, body=out,
                                    ctype=f"multipart/form-data; boundary={boundary}")
        assert status == expect, (path, status, data[:500])
        return json.loads(data)


def _alive(procs: list[Any]) -> list[Any]:
    import psutil

    left = []
    for p in procs:
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                left.append(p)
        except psutil.NoSuchProcess:
            pass
    return left


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[dict[str, Any]]:
    psutil = pytest.importorskip("psutil")
    if not TRYON.exists():
        require_service(f"{TRYON} is not installed (run the bootstrap script)")
    data = tmp_path / "var"
    env = _env(data)
    print("\n" + _cli(env, tmp_path, "db", "upgrade"))
    port = free_port()
    log = open(tmp_path / "serve.log", "wb")
    # its own process group, like a shell job: Ctrl-C is a SIGINT to that group
    proc = subprocess.Popen([str(TRYON), "serve", "--port", str(port)], cwd=tmp_path, env=env,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    state: dict[str, Any] = {"proc": proc, "port": port, "env": env, "cwd": tmp_path,
                             "log": Path(log.name)}
    try:
        yield state
    finally:
        if proc.poll() is None:
            descendants = psutil.Process(proc.pid).children(recursive=True)
            for p in [proc, *descendants]:
                try:
                    os.kill(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            proc.wait(10)
        log.close()


def test_serve_runs_the_readme_walkthrough_and_ctrl_c_stops_everything(
        serve: dict[str, Any]) -> None:
    import psutil

    proc, env, cwd, log = serve["proc"], serve["env"], serve["cwd"], serve["log"]
    http = Http(f"http://127.0.0.1:{serve['port']}")
    t_start = time.monotonic()

    shop = _cli(env, cwd, "accounts", "create", "--name", "Acme", "--role", "merchant")
    me = _cli(env, cwd, "accounts", "create", "--name", "Ana", "--role", "shopper")
    mkey = _cli(env, cwd, "keys", "create", "--account", shop)
    skey = _cli(env, cwd, "keys", "create", "--account", me, "--expires-days", "30")

    deadline = time.monotonic() + 90
    while not port_open(serve["port"]):
        assert proc.poll() is None, log.read_text()[-3000:]
        assert time.monotonic() < deadline, "the API never listened\n" + log.read_text()[-3000:]
        time.sleep(0.3)
    assert http.json("GET", "/healthz")["status"] == "ok"

    garment = http.upload("/v1/garments", mkey,
                          {"category": "upper_body", "length": "regular", "name": "Tee",
                           "sku": "T-1"}, ASSETS / "garment_tshirt.png")
    photo = http.upload("/v1/photos", skey, {"consent": "true"}, ASSETS / "person_astronaut.png")
    photo = http.json("GET", f"/v1/photos/{photo['id']}", skey)
    body: dict[str, Any] = {"photo_id": photo["id"], "garment_id": garment["id"],
                            "engine": "preview", "num_samples": 1, "seed": 7}
    # until the worker has registered, the API answers 503 engine_unavailable with
    # Retry-After (docs/api.md): a client retries, as this one does
    deadline = time.monotonic() + 90
    while True:
        status, data, headers = http.call("POST", "/v1/tryons", skey,
                                          body=json.dumps(body).encode(),
                                          ctype="application/json")
        if status != 503:
            break
        assert json.loads(data)["error"]["code"] == "engine_unavailable"
        assert time.monotonic() < deadline, "no worker registered\n" + log.read_text()[-3000:]
        time.sleep(0.5)
    assert status == 202, data[:500]
    job = json.loads(data)
    t_job = time.monotonic()
    deadline = time.monotonic() + 120
    while job["status"] in ("queued", "running"):
        assert proc.poll() is None, log.read_text()[-3000:]
        assert time.monotonic() < deadline, f"job stuck: {job}\n" + log.read_text()[-3000:]
        time.sleep(0.5)
        job = http.json("GET", f"/v1/tryons/{job['id']}", skey)
    job_s = time.monotonic() - t_job
    assert job["status"] == "succeeded", job
    result = job["results"][0]
    status, png, headers = http.call("GET", result["owner_url"].split(str(serve["port"]), 1)[1],
                                     skey)
    assert status == 200 and headers.get("Content-Type") == "image/png"
    with Image.open(io.BytesIO(png)) as im:
        im.load()
        assert im.format == "PNG"
        assert im.size == (photo["width"], photo["height"]) == (result["width"], result["height"])
    # the signed URL works without the key
    status, signed_png, _ = http.call("GET", result["url"].split(str(serve["port"]), 1)[1])
    assert status == 200 and signed_png == png

    # Ctrl-C: SIGINT to serve's process group; every process it started must be gone in ~15 s
    family = psutil.Process(proc.pid).children(recursive=True)
    names = sorted({" ".join(p.cmdline()[1:4]) for p in family})
    assert len(family) >= 3, names  # gunicorn master + workers, celery main + pool child
    t_int = time.monotonic()
    os.killpg(proc.pid, signal.SIGINT)
    rc = proc.wait(20)
    deadline = time.monotonic() + 15
    while _alive(family) and time.monotonic() < deadline:
        time.sleep(0.2)
    stop_s = time.monotonic() - t_int
    left = [(p.pid, " ".join(p.cmdline())[:120]) for p in _alive(family)]
    print(f"tryon serve: walkthrough done {time.monotonic() - t_start:.1f}s after start; "
          f"preview job {job_s:.1f}s submit-to-succeeded; Ctrl-C stopped {len(family)} "
          f"processes in {stop_s:.1f}s; serve exit code {rc}")
    assert not left, left
    assert rc in (0, 130), log.read_text()[-3000:]
    assert not port_open(serve["port"])
