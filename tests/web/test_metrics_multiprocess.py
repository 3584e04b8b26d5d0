"""With PROMETHEUS_MULTIPROC_DIR set (as `tryon serve` and docker-compose do for gunicorn's
workers), /metrics adds up the requests of every worker process, not only the one scraped."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = r"""
import multiprocessing as mp, re, sys, tempfile
from pathlib import Path
sys.path.insert(0, "tests/web")
from webapi_support import make_ctx

def worker(n):
    ctx = make_ctx(Path(tempfile.mkdtemp()))
    for _ in range(n):
        assert ctx.client.get("/healthz").status_code == 200

if __name__ == "__main__":
    mp.set_start_method("fork")
    procs = [mp.Process(target=worker, args=(n,)) for n in (3, 4)]
    for p in procs: p.start()
    for p in procs: p.join(); assert p.exitcode == 0
    ctx = make_ctx(Path(tempfile.mkdtemp()))          # the "worker" that answers the scrape
    text = ctx.client.get("/metrics", headers=ctx.h("ops")).get_data(as_text=True)
    hits = [float(m) for m in re.findall(
        r'tryon_http_requests_total\{[^}]*endpoint="health.healthz"[^}]*\} ([0-9.]+)', text)]
    print(sum(hits))
"""


def test_metrics_add_up_all_worker_processes(tmp_path: Path) -> None:
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    res = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=180)
    assert res.returncode == 0, res.stderr[-3000:]
    assert float(res.stdout.strip().splitlines()[-1]) == 7.0
