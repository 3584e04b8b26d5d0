"""A pool process's presence in the worker registry, and its engines loaded at start.

Like cog's ``setup()``: the engines a process will serve are loaded right after the fork (never
in the parent: CUDA does not survive a fork), on a thread, so the first job does not pay the
weight load inside its time limit and Celery's process start-up timeout never sees it. While
they load, the row says ``loading`` and already advertises them (a job that arrives meanwhile
waits for the load, it is not refused); then ``ready``, or ``failed`` with the error and only
the engines that did load. The same thread refreshes the row every ``heartbeat_interval_s``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from tryon.config import Settings
from tryon.errors import TryOnError
from tryon.records import workers as registry
from tryon.records.db import session_scope

log = logging.getLogger(__name__)


class WorkerPresence:
    """Register ``worker_id`` as serving ``engines`` on ``queues``; load each engine with
    ``load_engine(name)`` (then its ``load()`` when it has one); heartbeat until :meth:`stop`."""

    def __init__(self, settings: Settings, factory: sessionmaker[Session], worker_id: str,
                 queues: list[str], engines: list[str],
                 load_engine: Callable[[str], Any]) -> None:
        self.settings, self.factory, self.worker_id = settings, factory, worker_id
        self.queues, self.engines = list(queues), list(engines)
        self._load_engine = load_engine
        self.state = registry.LOADING
        self._stop = threading.Event()
        self._loaded = threading.Event()
        self._thread = threading.Thread(target=self._run, name="worker-presence", daemon=True)

    def start(self) -> WorkerPresence:
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the heartbeat and delete the row (a clean exit)."""
        self._stop.set()
        self._thread.join(timeout)
        self._write(lambda s: registry.forget(s, self.worker_id))

    def wait_loaded(self, timeout: float | None = None) -> bool:
        """Block until the engines are loaded (or failed); False on timeout (tests)."""
        return self._loaded.wait(timeout)

    def _write(self, fn: Callable[[Session], None]) -> bool:
        try:
            with session_scope(self.factory) as s:
                fn(s)
            return True
        except OperationalError as exc:
            # a DB blip: the next beat writes again; a stale row only delays admissions
            log.warning("worker=%s registry write failed: %s", self.worker_id,
                        type(exc).__name__)
            return False

    def _run(self) -> None:
        self._write(lambda s: registry.register(s, self.worker_id, queues=self.queues,
                                                engines=self.engines))
        loaded, errors = [], []
        for name in self.engines:
            try:
                engine = self._load_engine(name)
                load = getattr(engine, "load", None)
                if callable(load):
                    load()
                loaded.append(name)
            except (TryOnError, OSError, ValueError, RuntimeError, ImportError) as exc:
                # a broken engine must not take the process down: it stops advertising it
                log.exception("worker=%s engine %s failed to load", self.worker_id, name)
                errors.append(f"{name}: {type(exc).__name__}")
        self.state = registry.FAILED if errors else registry.READY
        self.engines = loaded
        error = "; ".join(errors) or None
        log.info("worker=%s %s engines=%s queues=%s", self.worker_id, self.state,
                 ",".join(loaded), ",".join(self.queues))
        self._loaded.set()
        self._write(lambda s: registry.beat(s, self.worker_id, state=self.state,
                                            engines=loaded, error=error))
        while not self._stop.wait(self.settings.heartbeat_interval_s):
            self._write(lambda s: registry.beat(s, self.worker_id))
