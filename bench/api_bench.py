"""API throughput: status polls and job creation at a fixed request rate (open loop).

The API runs in this process on a threaded WSGI server on 127.0.0.1 (SQLite, local storage, a
fake publisher that records instead of talking to a broker, a fake photo analyzer). Requests are
sent on a fixed schedule (request i at t0 + i/rate) by a pool of client threads; latency is
measured from the *scheduled* send time, so a slow server shows up as latency instead of
silently lowering the rate (no coordinated omission).

    python bench/api_bench.py --rate 50 --duration 10

Prints one line per scenario: achieved rate, p50/p99/max latency (ms), error count.
"""

from __future__ import annotations

import argparse
import http.client
import json
import logging
import os
import socket
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "web"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _request(port: int, method: str, path: str, headers: dict[str, str], body: bytes | None) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        resp.read()
        return resp.status
    finally:
        conn.close()


def open_loop(port: int, rate: float, duration: float, make_req, workers: int = 32) -> dict:
    n = int(rate * duration)
    lat: list[float] = []
    errors = 0
    lock = threading.Lock()
    t0 = time.perf_counter() + 0.2

    def one(i: int) -> None:
        nonlocal errors
        scheduled = t0 + i / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        method, path, headers, body = make_req(i)
        try:
            status = _request(port, method, path, headers, body)
        except OSError:
            status = 0
        done = time.perf_counter()
        with lock:
            lat.append(done - scheduled)
            if not 200 <= status < 300:
                errors += 1

    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(one, range(n)))
    elapsed = time.perf_counter() - t0
    lat.sort()
    q = statistics.quantiles(lat, n=100) if len(lat) >= 2 else [lat[0]] * 99
    return {"requests": n, "achieved_rps": round(n / elapsed, 1), "p50_ms": round(q[49] * 1e3, 1),
            "p99_ms": round(q[98] * 1e3, 1), "max_ms": round(lat[-1] * 1e3, 1), "errors": errors}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rate", type=float, default=50.0, help="requests per second")
    ap.add_argument("--duration", type=float, default=10.0, help="seconds per scenario")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("OMP_NUM_THREADS", "1")

    from webapi_support import make_ctx
    from werkzeug.serving import make_server

    tmp = Path(tempfile.mkdtemp(prefix="tryon-bench-"))
    ctx = make_ctx(tmp, settings_changes={"max_open_jobs_per_shopper": 10**9})
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    logging.getLogger("web").setLevel(logging.WARNING)
    port = _free_port()
    server = make_server("127.0.0.1", port, ctx.app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()

    photo = ctx.add_photo("shopper_a")
    garment = ctx.add_garment("merchant_x")
    job = ctx.add_job("shopper_a", photo, garment, status="running")
    auth = {"Authorization": f"Bearer {ctx.keys['shopper_a']}"}
    create_body = json.dumps({"photo_id": photo, "garment_id": garment}).encode()

    def poll(i: int):
        return "GET", f"/v1/tryons/{job}", auth, None

    def create(i: int):
        return "POST", "/v1/tryons", {**auth, "Content-Type": "application/json"}, create_body

    print(f"open loop, {args.rate:g} req/s for {args.duration:g} s each, threaded WSGI server, "
          f"SQLite, fake publisher")
    for name, fn in (("GET /v1/tryons/{id}", poll), ("POST /v1/tryons", create)):
        res = open_loop(port, args.rate, args.duration, fn)
        print(f"{name:22s} " + " ".join(f"{k}={v}" for k, v in res.items()))
    print(f"published (fake) = {len(ctx.publisher.published)}")
    server.shutdown()


if __name__ == "__main__":
    main()
