"""Real processes: Celery workers on the real Redis and a throwaway PostgreSQL database.

Isolation: a dedicated Redis DB number (``TRYON_TEST_REDIS_DB``, default 14) and queue names
prefixed with a per-run id, so concurrent runs and other users of the Redis never share messages.
Timeouts are short (heartbeat 0.5 s, stale after 3 s) so crash recovery takes seconds.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "workers"))
sys.path.insert(0, str(ROOT / "tests"))

from service_checks import require_service  # noqa: E402

PG_DSN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"
REDIS_DB = int(os.environ.get("TRYON_TEST_REDIS_DB", "14"))
REDIS_URL = f"redis://127.0.0.1:6379/{REDIS_DB}"


def _services_up() -> str | None:
    try:
        import redis

        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping()
    except Exception as exc:  # noqa: BLE001 - any client error: not reachable
        return f"Redis is not reachable: {exc}"
    try:
        import psycopg

        with psycopg.connect(PG_DSN, connect_timeout=3):
            pass
    except Exception as exc:  # noqa: BLE001 - any driver error: not reachable
        return f"PostgreSQL is not reachable: {exc}"
    return None


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    why = _services_up()
    require_service(why)
    import psycopg

    name = f"tryon_it_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    from tryon.records.db import make_engine
    from tryon.records.models import Base

    engine = make_engine(url)
    Base.metadata.create_all(engine)
    engine.dispose()
    try:
        yield url
    finally:
        with psycopg.connect(PG_DSN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


BASE_ENV = {
    "TRYON_HEARTBEAT_INTERVAL_S": "0.5",
    "TRYON_STALE_AFTER_S": "3",
    "TRYON_REAPER_INTERVAL_S": "1",
    "TRYON_REPUBLISH_AFTER_S": "20",
    "TRYON_SOFT_TIME_LIMIT_S": "40",
    "TRYON_HARD_TIME_LIMIT_S": "45",
    "TRYON_MAX_RETRY_BACKOFF_S": "5",
    "TRYON_VISIBILITY_TIMEOUT_S": "120",
    "TRYON_MAX_ATTEMPTS": "3",
    "TRYON_WEBHOOK_ALLOW_INSECURE": "1",
    "TRYON_SECRET_KEY": "integration-secret",
    "TRYON_EXTRA_ENGINES": "fake=fake_engine:FakeEngine",
}


class Stack:
    """Settings, DB, storage, publisher and worker processes for one test."""

    def __init__(self, tmp: Path, pg_url: str, env: dict[str, str]) -> None:
        from tryon.config import load_settings
        from tryon.dispatch import Dispatcher
        from tryon.records.db import make_engine, make_session_factory
        from tryon.storage import LocalStorage
        from workers.app import make_celery

        self.tmp = tmp
        self.prefix = f"t{uuid.uuid4().hex[:8]}-"
        self.env = {
            **BASE_ENV,
            "TRYON_DATA_DIR": str(tmp / "var"),
            "TRYON_DATABASE_URL": pg_url,
            "TRYON_BROKER_URL": REDIS_URL,
            "TRYON_QUEUE_PREFIX": self.prefix,
            **env,
        }
        self.settings = load_settings(self.env)
        self.engine = make_engine(pg_url)
        self.factory = make_session_factory(self.engine)
        self.storage = LocalStorage(self.settings.resolved_storage_root)
        self.app = make_celery(self.settings)
        self.dispatcher = Dispatcher(self.settings, lambda: self.app)
        self.workers: list[subprocess.Popen[bytes]] = []
        self._stop_reaper = threading.Event()

    # -- processes --------------------------------------------------------------------
    def start_worker(self, name: str = "w", concurrency: int = 1,
                     extra_env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        log = open(self.tmp / f"{name}-{len(self.workers)}.log", "wb")
        env = {**os.environ, **self.env, **(extra_env or {}),
               "PYTHONPATH": os.pathsep.join([str(ROOT / "tests" / "workers"),
                                              str(ROOT / "tests" / "integration"), str(ROOT)]),
               "OMP_NUM_THREADS": "1"}
        cmd = [sys.executable, "-c", "from tryon.cli import main; main()", "worker",
               "--queues", "gpu,cpu", "--concurrency", str(concurrency),
               "--hostname", f"{name}-{uuid.uuid4().hex[:6]}@%h"]
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        proc.log_path = log.name  # type: ignore[attr-defined]
        self.workers.append(proc)
        wait_for(lambda: b"ready." in Path(log.name).read_bytes() or proc.poll() is not None,
                 60, "worker ready")
        assert proc.poll() is None, Path(log.name).read_text()[-3000:]
        return proc

    def kill_group(self, proc: subprocess.Popen[bytes]) -> None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)

    def start_reaper(self) -> None:
        from workers.reaper import Reaper

        reaper = Reaper(self.settings, self.factory, self.dispatcher.publish,
                        self.dispatcher.publish_webhooks)

        def loop() -> None:
            while not self._stop_reaper.wait(self.settings.reaper_interval_s):
                reaper.run_once()

        threading.Thread(target=loop, daemon=True).start()

    def close(self) -> None:
        self._stop_reaper.set()
        for proc in self.workers:
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait(10)
        import redis

        try:
            # the broker of this stack (a throwaway server in the outage tests may be gone)
            r = redis.Redis.from_url(self.settings.resolved_broker_url, socket_connect_timeout=2)
            for key in r.scan_iter(f"{self.prefix}*"):
                r.delete(key)
        except redis.exceptions.ConnectionError:
            pass
        self.engine.dispose()

    def logs(self) -> str:
        return "\n".join(Path(p.log_path).read_text()[-4000:] for p in self.workers)  # type: ignore[attr-defined]

    # -- jobs -------------------------------------------------------------------------
    def seed(self) -> dict[str, str]:
        from jobkit import seed_inputs

        with self.factory() as s:
            ids = seed_inputs(s, self.storage)
            s.commit()
        return ids

    def submit(self, ids: dict[str, str], **kw: Any) -> str:
        from jobkit import add_job

        with self.factory() as s:
            job_id = add_job(s, ids, **kw)
            s.commit()
            queue = kw.get("queue", "cpu")
        # commit, publish, then record published_at (what the API does)
        from tryon.records import jobs

        self.dispatcher.publish(job_id, queue)
        with self.factory() as s:
            jobs.mark_published(s, job_id)
            s.commit()
        return job_id

    def job(self, job_id: str) -> Any:
        from tryon.records.models import TryOnJob

        with self.factory() as s:
            return s.get(TryOnJob, job_id)

    def wait_status(self, job_id: str, statuses: set[str], timeout: float) -> Any:
        wait_for(lambda: self.job(job_id).status in statuses, timeout,
                 f"job {job_id} in {statuses}", self)
        return self.job(job_id)

    def wait_progress(self, job_id: str, timeout: float = 30) -> None:
        """Until the running attempt has reported progress (it is inside the engine)."""
        self.wait_until(lambda: self.job(job_id).progress > 0, timeout, f"progress of {job_id}")

    def wait_until(self, pred: Callable[[], bool], timeout: float, what: str) -> None:
        wait_for(pred, timeout, what, self)

    def outputs(self, ids: dict[str, str], job_id: str) -> list[str]:
        base = self.storage.root / "results" / ids["owner"] / job_id
        return sorted(str(p.relative_to(base)) for p in base.rglob("*.png"))

    def queue_len(self, logical: str = "cpu") -> int:
        import redis

        return int(redis.Redis.from_url(self.settings.resolved_broker_url)
                   .llen(f"{self.prefix}{logical}"))


def wait_for(pred: Callable[[], bool], timeout: float, what: str, stack: Stack | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}\n"
                         + (stack.logs() if stack else ""))


@pytest.fixture
def stack_factory(tmp_path: Path, pg_url: str) -> Iterator[Callable[..., Stack]]:
    made: list[Stack] = []

    def make(**env: str) -> Stack:
        s = Stack(tmp_path, pg_url, env)
        made.append(s)
        return s

    yield make
    for s in made:
        s.close()


# -- throwaway servers (outage tests stop and kill these, never the shared ones) ------------


@pytest.fixture(scope="module")
def pg_cluster() -> Iterator[Any]:
    """A PostgreSQL cluster of this test module only (``initdb`` + ``pg_ctl`` on a free port)."""
    from servers import PgCluster

    why = PgCluster.available()
    require_service(why)
    cluster = PgCluster()
    try:
        cluster.init()
        cluster.start()
        yield cluster
    finally:
        cluster.close()


@pytest.fixture
def cluster_db_url(pg_cluster: Any) -> str:
    """A fresh database with the schema on the module's throwaway cluster."""
    from tryon.records.db import make_engine
    from tryon.records.models import Base

    url = pg_cluster.create_database(f"tryon_{uuid.uuid4().hex[:10]}")
    engine = make_engine(url)
    Base.metadata.create_all(engine)
    engine.dispose()
    return url


@pytest.fixture
def redis_factory(tmp_path: Path) -> Iterator[Callable[..., Any]]:
    """``make(aof=True)`` -> a started throwaway ``redis-server`` (killed at teardown)."""
    from servers import RedisServer

    why = RedisServer.available()
    require_service(why)
    made: list[Any] = []

    def make(aof: bool = True, start: bool = True) -> Any:
        server = RedisServer(tmp_path / f"redis-{len(made)}", aof=aof)
        made.append(server)
        if start:
            server.start()
        return server

    yield make
    for server in made:
        server.close()


@pytest.fixture
def stack_on(tmp_path: Path) -> Iterator[Callable[..., Stack]]:
    """``make(db_url, **env)`` -> a :class:`Stack` on any database (e.g. a throwaway cluster's),
    with ``TRYON_BROKER_URL`` etc. from ``env``. Closed at teardown."""
    made: list[Stack] = []

    def make(db_url: str, **env: str) -> Stack:
        s = Stack(tmp_path, db_url, env)
        made.append(s)
        return s

    yield make
    for s in made:
        s.close()
