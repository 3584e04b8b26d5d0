"""API host memory (issue 11.8): RSS of gunicorn's master, its workers and their analyzer
processes at rest, after the first upload, and after N photo uploads.

Runs the real stack a production API host runs: gunicorn (``--workers``) on PostgreSQL and
Redis with the MediaPipe analyzer (one process per worker, replaced every
``TRYON_ANALYZER_MAX_TASKS`` analyses). Uploads a real photo (skimage's astronaut) from two
client threads.

    python bench/api_memory.py --uploads 500 --workers 2
"""

from __future__ import annotations

import argparse
import io
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from api_fuzz import PG_DSN, ROOT, _free_port, _seed, _wait


def _rss(pid: int) -> dict[str, float]:
    import psutil

    root = psutil.Process(pid)
    out: dict[str, float] = {}
    for p in [root, *root.children(recursive=True)]:
        try:
            cmd = " ".join(p.cmdline())
            kind = ("tracker" if "resource_tracker" in cmd
                    else "analyzer" if "multiprocessing" in cmd or "spawn" in cmd
                    else "master" if p.pid == pid else "worker")
            out[f"{kind}:{p.pid}"] = p.memory_info().rss / 2**20
        except psutil.NoSuchProcess:
            pass
    return out


def _report(label: str, rss: dict[str, float]) -> None:
    by_kind: dict[str, list[float]] = {}
    for k, v in rss.items():
        by_kind.setdefault(k.split(":")[0], []).append(v)
    parts = [f"{k} {len(v)}x {' '.join(f'{x:.0f}' for x in sorted(v))} MiB"
             for k, v in sorted(by_kind.items())]
    print(f"{label:<22} total {sum(rss.values()):7.0f} MiB | " + " | ".join(parts))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--uploads", type=int, default=500)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--max-tasks", type=int, default=200)
    args = ap.parse_args()

    import psycopg
    from PIL import Image
    from skimage import data as skdata

    buf = io.BytesIO()
    Image.fromarray(skdata.astronaut()).save(buf, "JPEG", quality=90)
    photo = buf.getvalue()
    import tempfile

    tmp = Path(tempfile.mkdtemp(prefix="tryon-mem-"))
    db = f"tryon_mem_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{db}"')
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRYON_")}
    env.update({
        "TRYON_DATA_DIR": str(tmp / "var"),
        "TRYON_DATABASE_URL": f"postgresql+psycopg://postgres@127.0.0.1:5432/{db}",
        "TRYON_BROKER_URL": "redis://127.0.0.1:6379/12",
        "TRYON_QUEUE_PREFIX": f"mem{uuid.uuid4().hex[:6]}-",
        "TRYON_SECRET_KEY": "mem-secret",
        "TRYON_RATE_LIMIT_UPLOADS": "", "TRYON_RATE_LIMIT_PER_ADDRESS": "",
        "TRYON_ANALYZER_MAX_TASKS": str(args.max_tasks),
        "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT),
    })
    py = [sys.executable, "-c", "from tryon.cli import main; main()"]
    subprocess.run([*py, "db", "upgrade"], env=env, cwd=ROOT, check=True, capture_output=True)
    key = _seed(env)["shopper"]
    server = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-c", "python:web.gunicorn_conf", "-w",
         str(args.workers), "-b", f"127.0.0.1:{port}", "--error-logfile", str(tmp / "err.log"),
         "web.app:create_app()"], env=env, cwd=ROOT, start_new_session=True)
    boundary = "tryonbench"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"consent\"\r\n\r\ntrue\r\n"
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; "
            f"filename=\"a.jpg\"\r\nContent-Type: image/jpeg\r\n\r\n").encode() + photo + \
        f"\r\n--{boundary}--\r\n".encode()
    statuses: dict[int, int] = {}
    lock = threading.Lock()

    def upload() -> None:
        req = urllib.request.Request(
            f"http://127.0.0.1:{port}/v1/photos", data=body, method="POST",
            headers={"Authorization": f"Bearer {key}",
                     "Content-Type": f"multipart/form-data; boundary={boundary}"})
        try:
            with urllib.request.urlopen(req, timeout=120) as r:
                status = r.status
        except urllib.error.HTTPError as e:
            status = e.code
        with lock:
            statuses[status] = statuses.get(status, 0) + 1

    try:
        _wait(f"http://127.0.0.1:{port}/healthz")
        time.sleep(2)
        _report("at rest", _rss(server.pid))
        for _ in range(args.workers * 2):
            upload()
        _report("after first uploads", _rss(server.pid))
        t0 = time.monotonic()
        left = [args.uploads - args.workers * 2]

        def client() -> None:
            while True:
                with lock:
                    if left[0] <= 0:
                        return
                    left[0] -= 1
                upload()

        threads = [threading.Thread(target=client) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        _report(f"after {args.uploads} uploads", _rss(server.pid))
        print(f"statuses {statuses}  ({time.monotonic() - t0:.0f} s)")
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(30)
        with psycopg.connect(PG_DSN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')


if __name__ == "__main__":
    main()
