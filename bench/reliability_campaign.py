"""Reliability campaign (issue 11): N try-ons through the HTTP API on PostgreSQL + Redis with
real worker processes, while workers are SIGKILLed at random (pool children and whole worker
process groups, which are then restarted) and Redis is SIGKILLed once and restarted. Prints
what must all be zero: lost jobs, duplicate results, orphaned objects, and the API's 5xx count.

    python bench/reliability_campaign.py --jobs 200 --kills 20

Pieces: gunicorn (2 workers) for the API, ``tryon worker`` processes (prefork, concurrency 2),
the reaper (with its orphan sweep) in this process, a throwaway ``redis-server`` with AOF on a
free port (the shared Redis is never touched), a throwaway PostgreSQL database. The engine is
the test ``fake`` engine (tests/workers/fake_engine.py: a few short steps, deterministic
output), so the campaign measures delivery and recovery, not diffusion.

Definitions: *lost*: a job accepted with 202 that is not terminal when the campaign ends (or
has no row). *Duplicate*: more than one result row for one (job, index), or result rows from
more than one attempt of a job. *Orphaned*: an object under ``results/`` that no result row
points at, after the reaper's sweep had its interval. Then every worker is stopped and a final
sweep runs with a temp-file age of 0 (no write can be in flight any more): the temp files of
writes killed before their rename that it removes are reported apart (the reaper's own sweep
keeps those younger than 5 minutes, which may be writes in progress); one left after it is a
failure. Every process is stopped on the way out, after an error too.
Jobs that *failed* (attempts used up by the kills) are reported apart: not lost, not a success.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from api_fuzz import PG_DSN, ROOT, _free_port, _seed, _wait

sys.path.insert(0, str(ROOT / "tests" / "integration"))
sys.path.insert(0, str(ROOT / "tests" / "workers"))


class Api:
    def __init__(self, port: int, key: str) -> None:
        self.base, self.key = f"http://127.0.0.1:{port}", key

    def post_tryon(self, body: dict[str, Any], idem: str) -> tuple[int, dict[str, Any]]:
        req = urllib.request.Request(
            self.base + "/v1/tryons", data=json.dumps(body).encode(), method="POST",
            headers={"Authorization": f"Bearer {self.key}", "Content-Type": "application/json",
                     "Idempotency-Key": idem})
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, {}
        except OSError:
            return 0, {}


def _stop_workers(workers: list[subprocess.Popen[bytes]]) -> None:
    """SIGKILL every worker's process group (the pool children with it) and reap them."""
    for p in workers:
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            p.wait(10)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--jobs", type=int, default=200)
    ap.add_argument("--kills", type=int, default=20, help="worker kills (at least)")
    ap.add_argument("--workers", type=int, default=2, help="worker processes")
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--timeout", type=float, default=1500)
    args = ap.parse_args()
    rng = random.Random(args.seed)

    import tempfile

    import psycopg
    from servers import RedisServer
    from sqlalchemy import func, select

    # 1. services: a Redis of our own (AOF on), a fresh database
    tmp = Path(tempfile.mkdtemp(prefix="tryon-campaign-"))
    redis_server = RedisServer(tmp / "redis", aof=True)
    db = f"tryon_campaign_{uuid.uuid4().hex[:10]}"
    db_created = False
    workers: list[subprocess.Popen[bytes]] = []
    api_proc: subprocess.Popen[bytes] | None = None
    engine = None
    reaper_thread: threading.Thread | None = None
    stop = threading.Event()
    bad = True
    try:
        redis_server.start()
        with psycopg.connect(PG_DSN, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{db}"')
        db_created = True
        env = {k: v for k, v in os.environ.items() if not k.startswith("TRYON_")}
        env.update({
            "TRYON_DATA_DIR": str(tmp / "var"),
            "TRYON_DATABASE_URL": f"postgresql+psycopg://postgres@127.0.0.1:5432/{db}",
            "TRYON_BROKER_URL": redis_server.url(0),
            "TRYON_SECRET_KEY": "campaign-secret",
            "TRYON_EXTRA_ENGINES": "fake=fake_engine:FakeEngine",
            "TRYON_DEFAULT_ENGINE": "fake",
            "TRYON_HEARTBEAT_INTERVAL_S": "0.5", "TRYON_STALE_AFTER_S": "3",
            "TRYON_REAPER_INTERVAL_S": "1", "TRYON_REPUBLISH_AFTER_S": "10",
            "TRYON_SOFT_TIME_LIMIT_S": "60", "TRYON_HARD_TIME_LIMIT_S": "70",
            "TRYON_MAX_RETRY_BACKOFF_S": "5", "TRYON_VISIBILITY_TIMEOUT_S": "120",
            "TRYON_MAX_ATTEMPTS": "6", "TRYON_PURGE_INTERVAL_S": "5",
            "TRYON_MAX_OPEN_JOBS_PER_SHOPPER": str(args.jobs + 10),
            "TRYON_RATE_LIMIT_TRYONS": "", "TRYON_RATE_LIMIT_PER_ADDRESS": "",
            "FAKE_ENGINE_STEP_S": "0.3",  # 4 steps: about 1.2 s per job, so kills land mid-job
            "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
            "PYTHONPATH": os.pathsep.join([str(ROOT / "tests" / "workers"), str(ROOT)]),
        })
        py = [sys.executable, "-c", "from tryon.cli import main; main()"]
        subprocess.run([*py, "db", "upgrade"], env=env, cwd=ROOT, check=True, capture_output=True)
        keys = _seed(env)
        from tryon.config import load_settings
        from tryon.records.db import make_engine, make_session_factory
        from tryon.records.models import Garment, Photo, TryOnJob, TryOnResult
        from tryon.storage import make_storage

        settings = load_settings(env)
        engine = make_engine(settings.resolved_database_url)
        factory = make_session_factory(engine)
        storage = make_storage(settings)
        with factory() as s:
            photo_id = s.scalars(select(Photo.id)).one()
            garment_id = s.scalars(select(Garment.id)).one()

        # 2. processes: gunicorn, workers, the reaper
        port = _free_port()
        access = tmp / "access.log"
        api_proc = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", "python:web.gunicorn_conf", "-w", "2", "-b",
             f"127.0.0.1:{port}", "--access-logfile", str(access), "--access-logformat",
             "%(s)s %(m)s %(U)s", "--error-logfile", str(tmp / "api-error.log"),
             "web.app:create_app()"], env=env, cwd=ROOT, start_new_session=True)
        log_paths: dict[int, Path] = {}

        def start_worker() -> subprocess.Popen[bytes]:
            log = open(tmp / f"worker-{len(workers)}.log", "wb")
            log_paths[len(workers)] = Path(log.name)
            p = subprocess.Popen([*py, "worker", "--queues", "gpu,cpu", "--concurrency", "2",
                                  "--hostname", f"w{uuid.uuid4().hex[:6]}@%h"],
                                 env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                 start_new_session=True)
            workers.append(p)
            return p

        live = [start_worker() for _ in range(args.workers)]
        restarts = [0]

        def supervise() -> None:
            """What systemd or a container runtime does: start a new worker for each one that
            exited (a worker whose pool child is killed while the pool starts gives up)."""
            for w in list(live):
                if w.poll() is not None:
                    live.remove(w)
                    live.append(start_worker())
                    restarts[0] += 1
                    print(f"[{time.monotonic() - t0:6.1f}s] worker {w.pid} exited "
                          f"({w.returncode}); started another", flush=True)

        def is_ready(w: subprocess.Popen[bytes]) -> bool:
            path = log_paths[workers.index(w)]
            return b"ready." in path.read_bytes()

        from workers.app import make_dispatcher
        from workers.reaper import Reaper

        dispatcher = make_dispatcher(settings)
        reaper = Reaper(settings, factory, dispatcher.publish, dispatcher.publish_webhooks,
                        storage=storage)

        def reaper_loop() -> None:  # what `tryon serve` and the beat task run
            while not stop.wait(settings.reaper_interval_s):
                try:
                    reaper.run_once()
                except Exception as exc:  # noqa: BLE001 - the next pass retries
                    print(f"reaper pass failed: {exc}", flush=True)

        reaper_thread = threading.Thread(target=reaper_loop, daemon=True)
        reaper_thread.start()
        _wait(f"http://127.0.0.1:{port}/healthz")
        api = Api(port, keys["shopper"])

        # 3. submit N try-ons (retrying what did not get an answer: the Idempotency-Key makes a
        # retry return the same job)
        accepted: dict[str, str] = {}
        statuses: dict[int, int] = {}

        def submit() -> None:
            for i in range(args.jobs):
                idem = f"campaign-{i}"
                body = {"photo_id": photo_id, "garment_id": garment_id, "num_samples": 2, "seed": i}
                for _ in range(20):
                    status, out = api.post_tryon(body, idem)
                    statuses[status] = statuses.get(status, 0) + 1
                    if status == 202:
                        accepted[idem] = out["id"]
                        break
                    time.sleep(0.5)
                time.sleep(rng.uniform(0.0, 0.15))

        t0 = time.monotonic()
        submitter = threading.Thread(target=submit)
        submitter.start()

        # 4. chaos: kill pool children and whole workers at random, Redis once
        kills = {"pool_child": 0, "worker_group": 0, "redis": 0}
        import psutil

        def open_jobs() -> int:
            with factory() as s:
                return int(s.scalar(select(func.count()).select_from(TryOnJob)
                                    .where(TryOnJob.status.in_(["queued", "running"]))) or 0)

        redis_at = rng.uniform(0.25, 0.6) * args.kills
        while (sum(kills[k] for k in ("pool_child", "worker_group")) < args.kills
               or submitter.is_alive()) and time.monotonic() - t0 < args.timeout:
            time.sleep(rng.uniform(1.5, 4.0))
            supervise()
            n = kills["pool_child"] + kills["worker_group"]
            if n >= args.kills and not submitter.is_alive():
                break
            if n >= args.kills:
                continue
            if kills["redis"] == 0 and n >= redis_at:
                redis_server.kill()
                kills["redis"] += 1
                print(f"[{time.monotonic() - t0:6.1f}s] SIGKILL redis; restart in 2 s", flush=True)
                time.sleep(2)
                redis_server.start()
                continue
            # only workers whose pool is up (a worker still starting has no children yet)
            ready = []
            for w in live:
                try:
                    kids = psutil.Process(w.pid).children()
                except psutil.NoSuchProcess:
                    kids = []
                if kids and is_ready(w):
                    ready.append((w, kids))
            if not ready:
                continue
            victim, children = rng.choice(ready)
            if children and rng.random() < 0.6:
                child = rng.choice(children)
                try:
                    os.kill(child.pid, signal.SIGKILL)
                    kills["pool_child"] += 1
                    print(f"[{time.monotonic() - t0:6.1f}s] SIGKILL pool child {child.pid}", flush=True)
                except ProcessLookupError:
                    pass
            else:
                os.killpg(victim.pid, signal.SIGKILL)
                victim.wait(10)
                kills["worker_group"] += 1
                live.remove(victim)
                live.append(start_worker())
                print(f"[{time.monotonic() - t0:6.1f}s] SIGKILL worker group {victim.pid}; "
                      "restarted", flush=True)
        submitter.join()

        # 5. drain: every accepted job must reach a terminal state
        deadline = time.monotonic() + args.timeout
        while open_jobs() and time.monotonic() < deadline:
            supervise()
            time.sleep(1)
        # give the orphan sweep one more interval after the last job finished
        time.sleep(settings.purge_interval_s + 2 * settings.reaper_interval_s)
        stop.set()
        if reaper_thread is not None:
            reaper_thread.join(60)
        # stop every worker: from here on no result write can be in flight
        _stop_workers(workers)

        # 6. count
        with factory() as s:
            rows = {j.id: j for j in s.scalars(select(TryOnJob))}
            results = list(s.scalars(select(TryOnResult)))
        by_status: dict[str, int] = {}
        for j in rows.values():
            by_status[j.status] = by_status.get(j.status, 0) + 1
        lost = sum(1 for jid in accepted.values()
                   if jid not in rows or rows[jid].status in ("queued", "running"))
        not_accepted = args.jobs - len(accepted)
        per_index: dict[tuple[str, int], int] = {}
        attempts: dict[str, set[int]] = {}
        for r in results:
            per_index[(r.job_id, r.index)] = per_index.get((r.job_id, r.index), 0) + 1
            attempts.setdefault(r.job_id, set()).add(r.attempt)
        duplicates = (sum(n - 1 for n in per_index.values() if n > 1)
                      + sum(1 for a in attempts.values() if len(a) > 1))
        wrong_count = sum(1 for j in rows.values() if j.status == "succeeded"
                          and sum(1 for r in results if r.job_id == j.id) != 2)
        referenced = {r.storage_key for r in results}
        objects = storage.list_keys("results")
        orphans = [k for k in objects if k not in referenced]
        missing = [k for k in referenced if not storage.exists(k)]
        # the final sweep: every writer is stopped, so a temp file of any age is a killed
        # write's leftover (the reaper's sweep keeps those younger than STALE_TEMP_S, which
        # may be writes in progress). The objects it removes are the orphans counted above.
        from tryon.records.retention import sweep_result_orphans

        with factory() as s:
            final = sweep_result_orphans(s, storage, temp_min_age_s=0)
        root = settings.resolved_storage_root / "results"
        temp_left = [p for p in root.rglob("*.part")] if root.exists() else []
        lines = access.read_text().splitlines() if access.exists() else []
        api_5xx = sum(1 for ln in lines if ln[:1] == "5")
        won_later = sum(1 for j in rows.values() if j.status == "succeeded" and j.attempt > 1)
        print(f"jobs {args.jobs}  accepted {len(accepted)}  statuses {by_status}  "
              f"(succeeded after a retry: {won_later})")
        print(f"kills: pool children {kills['pool_child']}, worker groups {kills['worker_group']}, "
              f"redis {kills['redis']}  in {time.monotonic() - t0:.0f} s; workers that exited "
              f"on their own and were restarted: {restarts[0]}")
        print(f"lost {lost}  not accepted {not_accepted}  duplicate {duplicates}  "
              f"wrong result count {wrong_count}  orphaned objects {len(orphans)}  "
              f"missing objects {len(missing)}  "
              f"API 5xx {api_5xx} of {len(lines)} requests  client statuses {statuses}")
        print(f"final sweep (workers stopped): temp files of killed writes removed "
              f"{final.temp_files}, left {len(temp_left)}; orphaned objects removed "
              f"{final.objects}")
        for k in orphans[:10]:
            print("  orphan", k)
        bad = bool(lost or duplicates or orphans or temp_left or api_5xx or missing
                   or wrong_count)

    # 7. teardown, also after an exception or Ctrl-C: no worker, gunicorn or Redis is left
    finally:
        stop.set()
        _stop_workers(workers)
        if api_proc is not None and api_proc.poll() is None:
            try:
                os.killpg(api_proc.pid, signal.SIGTERM)
                api_proc.wait(30)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                os.killpg(api_proc.pid, signal.SIGKILL)
                api_proc.wait(10)
        redis_server.close()
        if engine is not None:
            engine.dispose()
        if db_created:
            with psycopg.connect(PG_DSN, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
