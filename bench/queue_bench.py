"""Enqueue-to-start latency of the job queue: median and p99.

Starts one real worker process (``tryon worker``) with a no-op fake engine, then sends jobs one
at a time (closed loop, so a job never waits behind another) and measures, per job, the time
from just before ``send_task`` to the worker's claim (``started_at``, written with the database
clock on the same host). Brokers: Redis (``--broker redis``, default; needs Redis and
PostgreSQL on 127.0.0.1) or the embedded SQLAlchemy broker on SQLite (``--broker embedded``).

    .venv/bin/python bench/queue_bench.py --jobs 100
    .venv/bin/python bench/queue_bench.py --broker embedded --jobs 30
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "workers"))  # the fake engine and input seeding

PG_DSN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[k]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--broker", choices=["redis", "embedded"], default="redis")
    ap.add_argument("--jobs", type=int, default=100)
    ap.add_argument("--redis-db", type=int, default=14)
    args = ap.parse_args()

    from jobkit import add_job, seed_inputs

    from tryon.config import load_settings
    from tryon.records import jobs
    from tryon.records.db import make_engine, make_session_factory
    from tryon.records.models import Base, TryOnJob
    from tryon.storage import make_storage
    from workers.app import make_dispatcher

    tmp = Path(tempfile.mkdtemp(prefix="queue-bench-"))
    env = {"TRYON_DATA_DIR": str(tmp / "var"), "TRYON_QUEUE_PREFIX": f"b{uuid.uuid4().hex[:6]}-",
           "TRYON_EXTRA_ENGINES": "fake=fake_engine:FakeEngine"}
    pg_name = None
    if args.broker == "redis":
        import psycopg

        pg_name = f"tryon_bench_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(PG_DSN, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{pg_name}"')
        env["TRYON_DATABASE_URL"] = f"postgresql+psycopg://postgres@127.0.0.1:5432/{pg_name}"
        env["TRYON_BROKER_URL"] = f"redis://127.0.0.1:6379/{args.redis_db}"
    settings = load_settings(env)
    engine = make_engine(settings.resolved_database_url)
    Base.metadata.create_all(engine)
    factory = make_session_factory(engine)
    storage = make_storage(settings)
    dispatcher = make_dispatcher(settings)
    with factory() as s:
        ids = seed_inputs(s, storage)
        s.commit()

    log = open(tmp / "worker.log", "wb")  # noqa: SIM115
    worker = subprocess.Popen(
        [sys.executable, "-c", "from tryon.cli import main; main()", "worker", "--queues",
         "gpu,cpu", "--concurrency", "1", "--loglevel", "WARNING"],
        cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        env={**os.environ, **env, "OMP_NUM_THREADS": "1",
             "PYTHONPATH": os.pathsep.join([str(ROOT / "tests" / "workers"), str(ROOT)])})
    latencies: list[float] = []
    try:
        for i in range(args.jobs + 3):  # the first 3 warm the worker (engine load, connections)
            with factory() as s:
                job_id = add_job(s, ids, params={"fake": {"steps": 1, "step_s": 0}})
                s.commit()
                sent = jobs.db_now(s)
            dispatcher.publish(job_id, "cpu")
            deadline = time.monotonic() + 60
            while True:
                with factory() as s:
                    job = s.get(TryOnJob, job_id)
                    assert job is not None
                    if job.status in ("succeeded", "failed"):
                        break
                if time.monotonic() > deadline:
                    raise SystemExit(f"job {job_id} did not finish; see {tmp / 'worker.log'}")
                time.sleep(0.005)
            if i >= 3:
                latencies.append((jobs._aware(job.started_at) - sent).total_seconds() * 1000)
    finally:
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait()
        engine.dispose()
        if pg_name:
            import psycopg

            with psycopg.connect(PG_DSN, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{pg_name}" WITH (FORCE)')
    print(f"broker={args.broker} jobs={len(latencies)} enqueue-to-start ms: "
          f"median={statistics.median(latencies):.1f} p99={percentile(latencies, 99):.1f} "
          f"max={max(latencies):.1f}")


if __name__ == "__main__":
    main()
