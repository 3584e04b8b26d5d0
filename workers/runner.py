"""Running one try-on job: the logic behind the thin ``tryon.run_job`` Celery task.

No Celery import here, so the logic is testable in-process; the tasks in :mod:`workers.tasks`
pass in Celery's time-limit exception and publish callbacks. Neighbours: the job's heartbeat
(:mod:`workers.heartbeat`), its inputs (:mod:`workers.inputs`), the engine's garment cache
(:mod:`workers.refcache`), transient retries (:mod:`workers.retry`), stored failure messages
(:mod:`workers.failures`); webhook delivery is :mod:`workers.webhooks`.

A run (``JobRunner.run``), numbered like the reliability doc's section 1.4:

1. Claim the job (compare-and-set, ``attempt + 1`` is this run's fencing token). A finished,
   canceled or missing job is a no-op; a job running elsewhere with a fresh heartbeat raises
   :class:`BusyError` (the task retries after ``stale_after``); exhausted attempts fail the job.
2. Read the typed :class:`~tryon.engines.request.JobParams` back from the row and build the
   request with the core builder (placement from the stored pose and the garment's length, or
   the explicit box; target mask; render parameters).
3. Get the engine (loaded when the process started, see :mod:`workers.presence`) and render. A
   heartbeat thread writes the heartbeat and progress every ``heartbeat_interval_s``; when the
   heartbeat's CAS fails (canceled, re-queued, superseded) the engine's ``should_cancel`` turns
   True and it stops.
4. Store each sample under ``results/<owner>/<job>/a<attempt>/<i>.png``.
5. Finish with a CAS on (running, attempt). Zero rows: this run was fenced out and deletes its
   own outputs.
6. Publish the terminal webhook event (written to the outbox by the transition itself).

Transient errors (storage unavailable, DB ``OperationalError``) are retried in-process with
full-jitter exponential backoff, bounded by ``transient_retries`` and ``max_retry_backoff_s``;
a run keeps its claim and heartbeat while it waits. Permanent errors fail the job at once with
their stable code. Any other exception (an engine bug, an ``AssertionError``, CUDA out of
memory) fails the job at once with ``internal_error`` (traceback in the log); the task
framework's own exceptions (``passthrough_exceptions``) and ``KeyboardInterrupt``/``SystemExit``
still propagate. The job stores a fixed message per code (:mod:`workers.failures`), never an
exception's text; the detail is logged with the job id.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import logging
import os
import random
import socket
import time
from collections.abc import Callable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, TypeVar

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from tryon import logs
from tryon.config import Settings
from tryon.engines.base import Engine
from tryon.engines.request import JobParams
from tryon.errors import (
    CanceledError,
    InvalidInputError,
    TryOnError,
)
from tryon.records import jobs
from tryon.records.clock import aware
from tryon.records.db import session_scope
from tryon.records.models import Garment, Photo, TryOnJob
from tryon.storage import ObjectNotFoundError
from tryon.types import JobKind
from workers.failures import REDACTED_MESSAGES, stored_message, unexpected_error_message
from workers.heartbeat import JobHeartbeat
from workers.inputs import load_inputs
from workers.refcache import StorageReferenceCache
from workers.retry import TRANSIENT_ERRORS, retry_transient

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class JobContext:
    """The job the current task is running (for logging and for test engines)."""

    job_id: str
    attempt: int
    params: dict[str, Any]


#: set while an engine renders, so plugin/test engines can see their job's parameters
CURRENT_JOB: ContextVar[JobContext | None] = ContextVar("tryon_current_job", default=None)


class BusyError(Exception):
    """The job is running elsewhere with a fresh heartbeat: look again after ``stale_after_s``."""


class _Fenced(Exception):
    """This run no longer owns its job (canceled, re-queued or superseded)."""


@dataclass(frozen=True)
class RunOutcome:
    """What :meth:`JobRunner.run` did. ``status``: succeeded | failed | canceled | fenced |
    skipped (nothing to do) | exhausted (failed with worker_lost before starting)."""

    job_id: str
    status: str
    attempt: int | None = None
    error_code: str | None = None


def default_worker_id(pid: int | None = None) -> str:
    """``<hostname>:<pid>``, written to ``TryOnJob.worker_id`` at claim. The worker's main
    process rebuilds a killed pool child's id from the child's pid (``pid``) to fence
    :meth:`JobRunner.mark_timed_out`."""
    return f"{socket.gethostname()}:{os.getpid() if pid is None else pid}"


# --------------------------------------------------------------------------------------
# the runner


@dataclass
class JobRunner:
    """Runs jobs in one worker process. Build once per process; :meth:`run` per message."""

    settings: Settings
    session_factory: sessionmaker[Session]
    storage: Any  # tryon.storage.Storage
    engine_loader: Callable[[str, Settings], Engine] | None = None
    worker_id: str = field(default_factory=default_worker_id)
    #: exceptions that mean "the soft time limit fired" (Celery's SoftTimeLimitExceeded)
    timeout_exceptions: tuple[type[BaseException], ...] = ()
    #: the task framework's own control-flow exceptions (Celery's Retry, Ignore, Reject,
    #: Terminated...): re-raised untouched, never turned into internal_error
    passthrough_exceptions: tuple[type[BaseException], ...] = ()
    #: called with a job id after its terminal transition committed (publishes webhooks)
    on_terminal: Callable[[str], None] | None = None
    transient_retries: int = 3
    sleep: Callable[[float], None] = time.sleep
    rng: random.Random = field(default_factory=random.Random)

    # -- helpers ----------------------------------------------------------------------
    def _db(self, fn: Callable[[Session], T], what: str) -> T:
        def once() -> T:
            with session_scope(self.session_factory) as s:
                return fn(s)

        return self._retry(once, what)

    def _retry(self, fn: Callable[[], T], what: str) -> T:
        return retry_transient(fn, retries=self.transient_retries,
                               cap_s=self.settings.max_retry_backoff_s, sleep=self.sleep,
                               rng=self.rng, what=what)

    def _engine(self, name: str) -> Engine:
        loader = self.engine_loader
        if loader is None:
            from tryon.engines.registry import get_engine  # in the child, on first use

            loader = get_engine
        return loader(name, self.settings)

    def _delete(self, keys: Sequence[str]) -> None:
        for key in keys:
            try:
                self._retry(functools.partial(self.storage.delete, key), "storage.delete")
            except TRANSIENT_ERRORS as exc:
                # the orphan sweep removes what we could not; never mask the real outcome
                log.warning("could not delete %s: %s", key, exc)

    def _notify(self, job_id: str) -> None:
        if self.on_terminal is not None:
            try:
                self.on_terminal(job_id)
            except Exception:  # the reaper re-sends pending deliveries
                log.exception("publishing its webhook failed")

    # -- the run ----------------------------------------------------------------------
    def run(self, job_id: str) -> RunOutcome:
        """Run job ``job_id`` once (see the module docstring). Raises :class:`BusyError` when
        another run holds a fresh heartbeat, and transient errors that outlived the retries
        before the claim."""
        with logs.job_context(job_id):  # also when called outside the Celery task (tests, CLI)
            return self._run(job_id)

    def _run(self, job_id: str) -> RunOutcome:
        claim = jobs.Claim(jobs.ClaimOutcome.RACED)
        for _ in range(3):
            claim = self._db(lambda s: jobs.try_claim(
                s, job_id, self.worker_id, stale_after_s=self.settings.stale_after_s), "claim")
            if claim.outcome is not jobs.ClaimOutcome.RACED:
                break
        if claim.outcome is jobs.ClaimOutcome.BUSY:
            raise BusyError(job_id)
        if claim.outcome is jobs.ClaimOutcome.EXHAUSTED:
            log.warning("attempts exhausted: failed/worker_lost")
            self._notify(job_id)
            return RunOutcome(job_id, "exhausted", error_code=jobs.WORKER_LOST)
        if claim.outcome is not jobs.ClaimOutcome.CLAIMED or claim.attempt is None:
            log.info("nothing to do (%s)", claim.outcome)
            return RunOutcome(job_id, "skipped")
        attempt = claim.attempt
        logs.bind_attempt(attempt)
        log.info("claimed by %s", self.worker_id)
        written: list[str] = []
        timings: dict[str, float] = {}
        hb = JobHeartbeat(self.session_factory, job_id, attempt, self.settings.heartbeat_interval_s)
        try:
            with hb:
                outcome = self._work(job_id, attempt, hb, written, timings)
        except _Fenced:
            outcome = None
        except CanceledError:
            outcome = None
        except self.timeout_exceptions:
            self._delete(written)
            return self._fail(job_id, attempt, jobs.TIMEOUT, REDACTED_MESSAGES[jobs.TIMEOUT],
                              timings)
        except self.passthrough_exceptions:
            raise
        except TryOnError as exc:
            self._delete(written)
            log.warning("%s: %s", exc.code, exc)
            return self._fail(job_id, attempt, exc.code, stored_message(exc.code, exc), timings)
        except TRANSIENT_ERRORS as exc:
            # out of retries; the exception's text (SQL, parameters, hosts) goes to the log only
            self._delete(written)
            # (SQLAlchemy errors have a `code` of their own, e.g. "e3q8": not ours)
            code = exc.code if isinstance(exc, TryOnError) else "service_unavailable"
            log.warning("%s after retries: %s", code, exc)
            return self._fail(job_id, attempt, code, stored_message(code, exc), timings)
        except ObjectNotFoundError as exc:  # an input object is gone
            self._delete(written)
            log.warning("inputs_missing: %r", exc)
            return self._fail(job_id, attempt, "inputs_missing",
                              stored_message("inputs_missing", exc), timings)
        except (ValueError, OSError) as exc:
            # undecodable stored inputs and the like: permanent for this job
            log.exception("failed")
            self._delete(written)
            return self._fail(job_id, attempt, "internal_error",
                              stored_message("internal_error", exc), timings)
        except Exception as exc:  # the last resort; see unexpected_error_message
            # Left to propagate, the job would stay "running" with a dead heartbeat, be re-run
            # until max_attempts (repeating the same crash) and end as a misleading worker_lost.
            log.exception("unexpected error")
            self._delete(written)
            return self._fail(job_id, attempt, "internal_error",
                              unexpected_error_message(exc), timings)
        if outcome is None:
            # canceled or superseded: leave nothing behind under this attempt's keys
            self._delete(written)
            log.info("stopped: no longer the owner")
            return RunOutcome(job_id, "fenced", attempt)
        return outcome

    def _fail(self, job_id: str, attempt: int, code: str, message: str,
              timings: dict[str, float]) -> RunOutcome:
        ok = self._db(lambda s: jobs.finish_failure(s, job_id, attempt, code, message,
                                                    timings=timings), "finish_failure")
        log.warning("failed code=%s recorded=%s", code, ok)
        if ok:
            self._notify(job_id)
            return RunOutcome(job_id, "failed", attempt, code)
        return RunOutcome(job_id, "fenced", attempt, code)

    def _work(self, job_id: str, attempt: int, hb: JobHeartbeat, written: list[str],
              timings: dict[str, float]) -> RunOutcome | None:

        t = time.monotonic()
        hb.stage = "preprocess"

        def load(s: Session) -> tuple[TryOnJob, Photo | None, Garment | None]:
            job = s.get(TryOnJob, job_id)
            if job is None:  # claimed a moment ago: deleted since (the delete fences us)
                raise CanceledError("The job was deleted while it ran.")
            return (job, s.get(Photo, job.photo_id) if job.photo_id else None,
                    s.get(Garment, job.garment_id) if job.garment_id else None)

        job, photo, garment = self._db(load, "load job")
        if job.kind == JobKind.COMPOSE:
            return self._work_compose(job, photo, garment, attempt, hb, written, timings, t)
        if photo is None or garment is None or photo.deleted_at or garment.deleted_at:
            raise InvalidInputError("The photo or garment of this job was deleted.",
                                    code="inputs_deleted")
        if job.created_at is not None and job.started_at is not None:
            timings["queued"] = round(
                (aware(job.started_at) - aware(job.created_at)).total_seconds(), 3)
        params = dict(job.params or {})
        job_params = JobParams.from_dict(params, category=garment.category,
                                         length=garment.length)
        built = load_inputs(
            photo, garment, job_params, job_params.seeds(job_id),
            lambda key: self._retry(lambda: self.storage.get(key), "storage.get"))
        cache = StorageReferenceCache(self.storage, garment.owner_id, garment.id, self._retry)
        request = dataclasses.replace(built.request, reference_cache=cache)
        def run(engine: Any, on_step: Callable[[int, int], None]) -> Any:
            try:
                return engine.render(request, callback=on_step, should_cancel=hb.should_cancel)
            finally:
                self._drop_cache_if_garment_gone(garment.id, cache)

        output = self._sample(job, attempt, params, hb, timings, t, run)

        # what went in, so a result can be traced to the exact photo, garment and box
        inputs = {
            "photo_id": photo.id, "photo_sha256": photo.image_sha256,
            "garment_id": garment.id, "garment_sha256": garment.image_sha256,
            "box": request.box.as_list(), "category": str(request.category),
            "mask": str(built.mask_used), "length": str(job_params.length),
            "placement_rule": built.placement.rule,
        }
        return self._store_and_finish(job, attempt, output, params, inputs, hb, written, timings)

    def _work_compose(self, job: TryOnJob, photo: Photo | None, garment: Garment | None,
                      attempt: int, hb: JobHeartbeat, written: list[str],
                      timings: dict[str, float], t: float) -> RunOutcome | None:
        """A compose job: its plan (:mod:`tryon.compose`) from the stored inputs, then the
        engine once per pass and sample; stored and finished like a try-on."""
        from tryon.compose import ComposeParams, render_plan
        from workers.compose_inputs import load_compose

        if (job.photo_id and (photo is None or photo.deleted_at)) or \
                (job.garment_id and (garment is None or garment.deleted_at)):
            raise InvalidInputError("The photo or garment of this job was deleted.",
                                    code="inputs_deleted")
        params = dict(job.params or {})
        cparams = ComposeParams.from_dict(params)
        the_plan, inputs = load_compose(
            cparams, photo, garment,
            lambda key: self._retry(lambda: self.storage.get(key), "storage.get"))
        output = self._sample(
            job, attempt, params, hb, timings, t,
            lambda engine, on_step: render_plan(engine, the_plan, cparams, cparams.seeds(job.id),
                                                callback=on_step,
                                                should_cancel=hb.should_cancel))
        return self._store_and_finish(job, attempt, output, params, inputs, hb, written, timings)

    def _sample(self, job: TryOnJob, attempt: int, params: dict[str, Any], hb: JobHeartbeat,
                timings: dict[str, float], t: float,
                run: Callable[[Any, Callable[[int, int], None]], Any]) -> Any:
        """Close the preprocess stage (started at ``t``), load the job's engine, then
        ``run(engine, on_step)`` as the sampling stage: timed, progress up to 95 %, the job's
        context set for engines that read it, fenced before and after."""
        timings["preprocess"] = round(time.monotonic() - t, 3)
        t = time.monotonic()
        hb.stage = "loading"
        engine = self._engine(job.engine)
        timings["load"] = round(time.monotonic() - t, 3)
        if hb.lost:
            raise _Fenced
        t = time.monotonic()
        hb.stage = "sampling"

        def on_step(step: int, total: int) -> None:
            hb.progress = 0.95 * step / max(total, 1)

        token = CURRENT_JOB.set(JobContext(job.id, attempt, params))
        try:
            output = run(engine, on_step)
        finally:
            CURRENT_JOB.reset(token)
        timings["sampling"] = round(time.monotonic() - t, 3)
        if hb.lost:
            raise _Fenced
        return output

    def _store_and_finish(self, job: TryOnJob, attempt: int, output: Any,
                          params: dict[str, Any], inputs: dict[str, Any], hb: JobHeartbeat,
                          written: list[str], timings: dict[str, float]) -> RunOutcome | None:
        """Store each sample under the attempt's keys and finish with the fenced CAS (None:
        fenced out, the caller deletes what was written)."""
        from tryon.images import encode_png
        from tryon.storage import result_key

        job_id = job.id
        t = time.monotonic()
        hb.stage = "store"
        specs: list[jobs.ResultSpec] = []
        for i, (image, seed) in enumerate(zip(output.images, output.seeds, strict=True)):
            data = encode_png(image)
            key = result_key(job.owner_id, job_id, attempt, i)
            written.append(key)
            self._retry(functools.partial(self.storage.put, key, data, "image/png"), "storage.put")
            specs.append(jobs.ResultSpec(
                index=i, storage_key=key, seed=int(seed), width=int(image.shape[1]),
                height=int(image.shape[0]), sha256=hashlib.sha256(data).hexdigest(),
                record={**output.record, "job_params": params, "inputs": inputs},
            ))
        timings["store"] = round(time.monotonic() - t, 3)
        ok = self._db(lambda s: jobs.finish_success(s, job_id, attempt, specs, timings=timings),
                      "finish_success")
        if not ok:
            return None
        log.info("succeeded samples=%d", len(specs))
        self._notify(job_id)
        return RunOutcome(job_id, "succeeded", attempt)

    def _drop_cache_if_garment_gone(self, garment_id: str,
                                    cache: StorageReferenceCache) -> None:
        """If the garment was deleted while this run wrote its derived data, delete what the
        run wrote (the garment's delete may have swept the ``derived`` prefix before). Never
        raises: the cache is an optimisation, the job's outcome does not depend on it."""
        if not cache.written:
            return

        def alive(s: Session) -> bool:
            g = s.get(Garment, garment_id, populate_existing=True)
            return g is not None and g.deleted_at is None

        try:
            if self._db(alive, "garment alive"):
                return
        except TRANSIENT_ERRORS as exc:
            log.warning("garment=%s not checked after caching: %s", garment_id, exc)
            return
        self._delete(cache.written)

    # -- hard time limit ----------------------------------------------------------------
    def mark_timed_out(self, job_id: str, killed_worker_id: str) -> bool:
        """After a hard-limit kill (called in the worker's main process): fail the job with
        ``timeout`` only if the killed child still holds it, i.e. the row is ``running`` with
        ``worker_id == killed_worker_id`` (the child's :func:`default_worker_id`). The attempt
        read with it is the fence of the write. A child that was superseded meanwhile (its
        heartbeat went stale, e.g. a long DB outage, and attempt N+1 claimed the job on another
        worker) is not the owner: the healthy attempt is left alone. False when nothing
        was failed."""
        def do(s: Session) -> bool:
            row = s.execute(
                select(TryOnJob.status, TryOnJob.attempt, TryOnJob.worker_id)
                .where(TryOnJob.id == job_id)
            ).one_or_none()
            if row is None or row.status != jobs.RUNNING:
                return False
            if row.worker_id != killed_worker_id[:200]:
                log.warning("hard time limit of %s, but attempt %d belongs to %s now: left alone",
                            killed_worker_id, row.attempt, row.worker_id)
                return False
            return jobs.finish_failure(s, job_id, row.attempt, jobs.TIMEOUT,
                                       "The job exceeded the hard time limit and was killed.")

        ok = self._db(do, "mark_timed_out")
        if ok:
            self._notify(job_id)
        return ok


