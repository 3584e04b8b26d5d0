"""``tryon worker`` and ``tryon serve``.

``tryon worker`` runs a Celery worker (prefork pool) for the given queues. ``tryon serve`` runs
everything an embedded deployment needs in one command: the API, one worker for both queues
and the reaper, on SQLite, local storage and the SQLAlchemy broker (no servers).
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import click

from tryon.celeryconf import QUEUE_CPU, QUEUE_GPU

log = logging.getLogger(__name__)


def _queues(spec: str) -> list[str]:
    names = [q.strip() for q in spec.split(",") if q.strip()]
    bad = [q for q in names if q not in {QUEUE_GPU, QUEUE_CPU}]
    if not names or bad:
        raise click.BadParameter(f"expected a comma-separated subset of gpu,cpu; got {spec!r}")
    return names


@click.command()
@click.option("--queues", "-Q", default=f"{QUEUE_GPU},{QUEUE_CPU}", show_default=True,
              help="Logical queues to consume: gpu (anydoor), cpu (preview, webhooks, reaper).")
@click.option("--concurrency", "-c", type=int, default=None,
              help="Pool processes. Default: 1 when consuming gpu (one job per GPU), else CPUs.")
@click.option("--beat/--no-beat", default=False,
              help="Also run the beat scheduler (the periodic reaper) in this worker.")
@click.option("--loglevel", default="INFO", show_default=True)
@click.option("--hostname", "-n", default=None, help="Celery node name (default: celery@host).")
def worker(queues: str, concurrency: int | None, beat: bool, loglevel: str,
           hostname: str | None) -> None:
    """Run a Celery worker (prefork pool: time limits and child recycling need it)."""
    from tryon.celeryconf import queue_name
    from tryon.cli import fail
    from tryon.errors import ConfigError

    try:
        from workers.tasks import app, settings
    except ConfigError as exc:
        fail(exc)
        return
    logical = _queues(queues)
    if concurrency is None:
        concurrency = 1 if QUEUE_GPU in logical else (os.cpu_count() or 1)
    argv = ["worker", "--pool", "prefork", "--concurrency", str(concurrency),
            "--queues", ",".join(queue_name(settings, q) for q in logical),
            "--loglevel", loglevel, "--without-gossip", "--without-mingle"]
    if beat:
        argv += ["--beat", "--schedule", str(settings.data_dir / "celerybeat-schedule")]
    if hostname:
        argv += ["--hostname", hostname]
    app.worker_main(argv)


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@click.option("--concurrency", "-c", type=int, default=1, show_default=True,
              help="Worker pool processes (one model copy each).")
@click.option("--no-worker", is_flag=True, help="Run only the API and the reaper.")
def serve(host: str, port: int, concurrency: int, no_worker: bool) -> None:
    """Run the API, a worker (both queues) and the reaper; Ctrl-C stops them all.

    With no TRYON_* settings this is the embedded mode: SQLite, local storage and a broker in
    a SQLite file, all under ./var. Apply the database migrations first (`tryon db upgrade`).
    """
    from tryon.cli import fail
    from tryon.config import load_settings
    from tryon.errors import ConfigError

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        settings = load_settings()
    except ConfigError as exc:
        fail(exc)
        return
    children: list[subprocess.Popen[bytes]] = []
    py = sys.executable
    api = [py, "-m", "gunicorn", "--bind", f"{host}:{port}", "--workers", "2",
           "-c", "python:web.gunicorn_conf", "--access-logfile", "-", "web.app:create_app()"]
    # two API workers: Prometheus counters go to shared files so /metrics adds both up
    metrics_dir = settings.data_dir / "prometheus"
    shutil.rmtree(metrics_dir, ignore_errors=True)
    metrics_dir.mkdir(parents=True)
    api_env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir.resolve())}
    children.append(subprocess.Popen(api, start_new_session=True, env=api_env))
    if not no_worker:
        children.append(subprocess.Popen(
            [py, "-c", "from tryon.cli import main; main()", "worker", "--queues",
             f"{QUEUE_GPU},{QUEUE_CPU}", "--concurrency", str(concurrency)],
            start_new_session=True))
    click.echo(f"tryon: API on http://{host}:{port}/v1 (docs: http://{host}:{port}/docs); "
               f"{'no worker' if no_worker else 'worker on queues gpu,cpu'}; "
               f"{'embedded mode' if settings.embedded else 'broker ' + settings.resolved_broker_url}")

    stop = threading.Event()
    reaper_thread = threading.Thread(target=_reaper_loop, args=(settings, stop), daemon=True)
    reaper_thread.start()

    def _stop(*_: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    try:
        while not stop.is_set():
            for child in children:
                if child.poll() is not None:
                    log.error("child %s exited with %s; stopping", child.args, child.returncode)
                    stop.set()
            stop.wait(1.0)
    except KeyboardInterrupt:
        pass
    finally:
        stop.set()
        for child in children:
            if child.poll() is None:
                # the main process only: Celery's warm shutdown lets a running job finish
                child.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 40
        for child in children:
            try:
                child.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(child.pid, signal.SIGKILL)
    sys.exit(0)


def _reaper_loop(settings: object, stop: threading.Event) -> None:
    """The reaper inside ``serve`` (its own DB engine and publisher; no Celery beat needed)."""
    from tryon.config import Settings
    from tryon.records.db import make_engine, make_session_factory
    from workers.app import make_dispatcher
    from workers.reaper import Reaper

    assert isinstance(settings, Settings)
    dispatcher = make_dispatcher(settings)
    reaper = Reaper(settings, make_session_factory(make_engine(settings.resolved_database_url)),
                    dispatcher.publish, dispatcher.publish_webhooks)
    while not stop.wait(settings.reaper_interval_s):
        try:
            reaper.run_once()
        except Exception:  # noqa: BLE001 - keep the loop alive; the next pass retries
            log.exception("reaper pass failed")
