"""The fenced heartbeat of a running job, on its own thread."""

from __future__ import annotations

import logging
import threading

from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from tryon.records import jobs
from tryon.records.db import session_scope

log = logging.getLogger(__name__)


class JobHeartbeat:
    """Writes the fenced heartbeat (with the latest progress and stage) every ``interval_s`` on
    its own thread, so a slow first step (a model load) still counts as alive. ``lost`` turns
    True once the CAS fails; the engine sees it through ``should_cancel``."""

    def __init__(self, factory: sessionmaker[Session], job_id: str, attempt: int,
                 interval_s: float) -> None:
        self._factory, self._job_id, self._attempt = factory, job_id, attempt
        self._interval = interval_s
        self.progress = 0.0
        self.stage = "starting"
        self.lost = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"heartbeat-{job_id}", daemon=True)

    def __enter__(self) -> JobHeartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=self._interval + 5)

    def beat(self) -> bool:
        try:
            with session_scope(self._factory) as s:
                ok = jobs.heartbeat(s, self._job_id, self._attempt, self.progress, self.stage)
        except OperationalError as exc:
            # a DB blip: keep going; the next beat retries and fencing protects the finish
            log.warning("job=%s heartbeat failed: %s", self._job_id, exc)
            return not self.lost
        if not ok:
            self.lost = True
        return ok

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            if not self.beat():
                return

    def should_cancel(self) -> bool:
        return self.lost
