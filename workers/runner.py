"""Running one try-on job, and delivering one webhook: the logic behind the thin Celery tasks.

No Celery import here, so the logic is testable in-process; the tasks in :mod:`workers.tasks`
pass in Celery's time-limit exception and publish callbacks.

A run (``JobRunner.run``), numbered like the reliability doc's section 1.4:

1. Claim the job (compare-and-set, ``attempt + 1`` is this run's fencing token). A finished,
   canceled or missing job is a no-op; a job running elsewhere with a fresh heartbeat raises
   :class:`BusyError` (the task retries after ``stale_after``); exhausted attempts fail the job.
2. Load the photo, garment, masks and placement box and build a :class:`RenderRequest`.
3. Load the engine (lazily, once per process) and render. A heartbeat thread writes the
   heartbeat and progress every ``heartbeat_interval_s``; when the heartbeat's CAS fails
   (canceled, re-queued, superseded) the engine's ``should_cancel`` turns True and it stops.
4. Store each sample under ``results/<owner>/<job>/a<attempt>/<i>.png``.
5. Finish with a CAS on (running, attempt). Zero rows: this run was fenced out and deletes its
   own outputs.
6. Publish the terminal webhook event (written to the outbox by the transition itself).

Transient errors (storage unavailable, DB ``OperationalError``) are retried in-process with
full-jitter exponential backoff, bounded by ``transient_retries`` and ``max_retry_backoff_s``;
a run keeps its claim and heartbeat while it waits. Permanent errors fail the job at once with
their stable code. Any other exception (an engine bug, an ``AssertionError``, CUDA out of memory)
fails the job at once with ``internal_error`` (traceback in the log, only the exception type in
the job's message); the task framework's own exceptions (``passthrough_exceptions``) and
``KeyboardInterrupt``/``SystemExit`` still propagate.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import io
import logging
import os
import random
import socket
import threading
import time
from collections.abc import Callable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, TypeVar

import numpy as np
from numpy.typing import NDArray
from PIL import Image
from sqlalchemy import select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from tryon import logs
from tryon.config import Settings
from tryon.engines.base import Engine, RenderParams, RenderRequest
from tryon.errors import (
    CanceledError,
    InvalidInputError,
    StorageUnavailableError,
    TryOnError,
)
from tryon.records import jobs
from tryon.records.db import session_scope
from tryon.records.models import Garment, Photo, TryOnJob, WebhookDelivery
from tryon.storage import ObjectNotFoundError
from tryon.types import Box, Category

log = logging.getLogger(__name__)

T = TypeVar("T")

#: errors worth retrying in-process: the same call may work a moment later
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (StorageUnavailableError, OperationalError)
#: first backoff delay (seconds); doubled per retry, full jitter, capped by max_retry_backoff_s
RETRY_BASE_S = 0.5


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


def unexpected_error_message(exc: BaseException) -> str:
    """The client-facing message of an ``internal_error`` from an unexpected exception: the
    exception type only (its text may carry paths, tensor shapes or other internals; the full
    traceback is in the worker's log). An out-of-memory error (``torch.OutOfMemoryError``,
    recognised by name so torch is never imported here) says so, as it may work later or with
    fewer samples."""
    name = type(exc).__name__
    if name == "OutOfMemoryError" or "out of memory" in str(exc).lower():
        return f"The engine ran out of memory ({name}); try again later or with fewer samples."
    return f"The engine failed unexpectedly ({name})."


def retry_transient(
    fn: Callable[[], T],
    *,
    retries: int,
    cap_s: float,
    sleep: Callable[[float], None] = time.sleep,
    rng: random.Random | None = None,
    what: str = "call",
) -> T:
    """Call ``fn``; on a transient error sleep ``uniform(0, min(cap_s, 0.5 * 2**i))`` and try
    again, at most ``retries`` more times, then re-raise the last error."""
    r = rng or random.Random()
    for i in range(retries + 1):
        try:
            return fn()
        except TRANSIENT_ERRORS as exc:
            if i >= retries:
                raise
            delay = r.uniform(0.0, min(cap_s, RETRY_BASE_S * 2**i))
            log.warning("transient error in %s (try %d/%d), retrying in %.2fs: %s",
                        what, i + 1, retries + 1, delay, exc)
            sleep(delay)
    raise AssertionError("unreachable")


# --------------------------------------------------------------------------------------
# inputs


#: stored objects are our own re-encoded PNG/JPEG; nothing else is ever decoded here
_STORED_FORMATS = ["PNG", "JPEG"]


def _decode_rgb(data: bytes) -> NDArray[np.uint8]:
    with Image.open(io.BytesIO(data), formats=_STORED_FORMATS) as im:
        return np.asarray(im.convert("RGB"), dtype=np.uint8)


def _decode_mask(data: bytes) -> NDArray[np.bool_]:
    with Image.open(io.BytesIO(data), formats=_STORED_FORMATS) as im:
        if "A" in im.getbands():
            plane = np.asarray(im.getchannel("A"))
        else:
            plane = np.asarray(im.convert("L"))
    return plane > 127


@dataclass(frozen=True)
class RenderInputs:
    """What :func:`build_render_inputs` built: the request, and the target mask actually used
    (``"box"`` or ``"shape"``; a ``shape`` request falls back to ``box`` when the photo has no
    usable person mask or the person does not reach into the box)."""

    request: RenderRequest
    mask_used: str


def shape_target_mask(
    box: Box, size: tuple[int, int], person_mask: NDArray[np.bool_]
) -> NDArray[np.bool_] | None:
    """The shape-aware target mask, bool ``(H, W)`` for ``size == (W, H)``: the person's pixels
    inside ``box``, dilated (``tryon.vision.masks.target_mask`` defaults), cut back to the box.
    None when ``person_mask`` has another shape or no person pixel lies in the box."""
    w, h = size
    if person_mask.shape != (h, w) or not person_mask[box.y1:box.y2, box.x1:box.x2].any():
        return None
    from tryon.vision.masks import target_mask  # OpenCV: only when asked for

    return target_mask(box, size, person_mask=person_mask)


def build_render_inputs(
    photo: Photo,
    garment: Garment,
    params: dict[str, Any],
    seeds: Sequence[int],
    get: Callable[[str], bytes],
) -> RenderInputs:
    """The :class:`RenderRequest` for a photo, a garment and job ``params``.

    ``params`` keys (all optional): ``category`` (default: the garment's), ``box``
    ``[x1, y1, x2, y2]`` overriding the stored placement, ``steps``, ``guidance``,
    ``control_strength``, ``num_samples``, ``mask`` (``"box"``, the default, or ``"shape"``:
    box ∩ the photo's stored person mask, dilated). ``get`` reads a storage key.

    Raises :class:`InvalidInputError` (code ``no_placement``) when the photo has no placement for
    the category and no box was given.
    """
    category = Category(params.get("category") or garment.category)
    person = _decode_rgb(get(photo.image_key))
    h, w = person.shape[:2]
    garment_rgb = _decode_rgb(get(garment.image_key))
    garment_mask = _decode_mask(get(garment.mask_key))
    if garment_mask.shape != garment_rgb.shape[:2]:
        raise InvalidInputError("The stored garment mask does not match the garment image.",
                                code="invalid_mask")
    placement = (photo.placements or {}).get(str(category)) or {}
    raw_box = params.get("box") or placement.get("box")
    if not raw_box:
        raise InvalidInputError(
            f"The photo has no placement for {category}: pass a box.", code="no_placement")
    box = Box(*(int(v) for v in raw_box)).clip(w, h)
    if box.is_empty():
        raise InvalidInputError(f"The box {list(raw_box)} is outside the photo.", code="invalid_box")
    target = np.zeros((h, w), dtype=bool)
    target[box.y1:box.y2, box.x1:box.x2] = True
    mask_used = "box"
    wants_shape = params.get("mask") == "shape"
    person_mask_key = photo.person_mask_key
    if wants_shape and person_mask_key:
        try:
            shaped = shape_target_mask(box, (w, h), _decode_mask(get(person_mask_key)))
        except (ObjectNotFoundError, OSError, ValueError) as exc:
            # the shape is an option: a lost or unreadable mask degrades to the box, it fails
            # nothing (transient storage errors still propagate and are retried as usual)
            log.warning("photo=%s person mask %s unusable (%s); using the box", photo.id,
                        person_mask_key, type(exc).__name__)
            shaped = None
        if shaped is not None:
            target, mask_used = shaped, "shape"
    landmarks = None
    if photo.pose and photo.pose.get("landmarks") is not None:
        landmarks = np.asarray(photo.pose["landmarks"], dtype=np.float32)
    n = int(params.get("num_samples", len(seeds)))
    render_params = RenderParams(
        num_inference_steps=int(params.get("steps", 50)),
        guidance_scale=float(params.get("guidance", 4.5)),
        control_strength=float(params.get("control_strength", 1.0)),
        num_samples=n,
        seeds=tuple(int(s) for s in seeds[:n]),
    )
    request = RenderRequest(
        person=person, garment=garment_rgb, garment_mask=garment_mask, box=box,
        target_mask=target, category=category, params=render_params, landmarks=landmarks,
    )
    return RenderInputs(request=request, mask_used=mask_used)


# --------------------------------------------------------------------------------------
# derived garment data


class StorageReferenceCache:
    """A :class:`~tryon.engines.base.ReferenceCache` on object storage, per garment: name ``n``
    lives at ``derived/<garment owner>/<garment>/<n>.npz`` (:func:`tryon.storage.derived_key`),
    so deleting the garment's ``derived`` prefix removes it all.

    Storage errors are retried through ``retry`` and then swallowed (a miss, or data not
    kept). ``present`` maps the names known to exist (read or written) to their keys;
    ``written`` lists the keys this run wrote.
    """

    def __init__(self, storage: Any, owner_id: str, garment_id: str,
                 retry: Callable[[Callable[[], Any], str], Any]) -> None:
        self.storage, self.owner_id, self.garment_id = storage, owner_id, garment_id
        self._retry = retry
        self.present: dict[str, str] = {}
        self.written: list[str] = []

    def key(self, name: str) -> str:
        from tryon.storage import derived_key

        return derived_key(self.owner_id, self.garment_id, name)

    def get(self, name: str) -> bytes | None:
        key = self.key(name)
        try:
            data: bytes = self._retry(lambda: self.storage.get(key), "derived.get")
        except ObjectNotFoundError:  # not cached yet
            return None
        except TRANSIENT_ERRORS as exc:
            log.warning("derived %s unreadable, recomputing: %s", key, exc)
            return None
        self.present[name] = key
        return data

    def put(self, name: str, data: bytes) -> None:
        key = self.key(name)
        try:
            self._retry(lambda: self.storage.put(key, data, "application/octet-stream"),
                        "derived.put")
        except TRANSIENT_ERRORS as exc:
            log.warning("derived %s not stored: %s", key, exc)
            return
        self.present[name] = key
        self.written.append(key)


# --------------------------------------------------------------------------------------
# heartbeat


class _Heartbeat:
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

    def __enter__(self) -> _Heartbeat:
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
            log.warning("heartbeat failed: %s", exc,
                        extra=logs.job_extra(self._job_id, self._attempt))
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
        hb = _Heartbeat(self.session_factory, job_id, attempt, self.settings.heartbeat_interval_s)
        try:
            with hb:
                outcome = self._work(job_id, attempt, hb, written, timings)
        except _Fenced:
            outcome = None
        except CanceledError:
            outcome = None
        except self.timeout_exceptions:
            self._delete(written)
            return self._fail(job_id, attempt, jobs.TIMEOUT,
                              "The job took longer than the time limit and was stopped.", timings)
        except self.passthrough_exceptions:
            raise
        except TryOnError as exc:
            self._delete(written)
            return self._fail(job_id, attempt, exc.code, exc.message, timings)
        except TRANSIENT_ERRORS as exc:
            self._delete(written)
            code = getattr(exc, "code", "service_unavailable")
            return self._fail(job_id, attempt, code, f"{type(exc).__name__}: {exc}"[:500], timings)
        except ObjectNotFoundError as exc:  # an input object is gone
            self._delete(written)
            return self._fail(job_id, attempt, "inputs_missing",
                              f"A stored input of this job is missing: {exc}"[:500], timings)
        except (ValueError, OSError) as exc:
            # undecodable stored inputs and the like: permanent for this job
            log.exception("failed")
            self._delete(written)
            return self._fail(job_id, attempt, "internal_error",
                              f"{type(exc).__name__}: {exc}"[:500], timings)
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

    def _work(self, job_id: str, attempt: int, hb: _Heartbeat, written: list[str],
              timings: dict[str, float]) -> RunOutcome | None:
        from tryon.storage import result_key

        t = time.monotonic()
        hb.stage = "preprocess"

        def load(s: Session) -> tuple[TryOnJob, Photo | None, Garment | None]:
            job = s.get(TryOnJob, job_id)
            if job is None:  # claimed a moment ago: deleted since (the delete fences us)
                raise CanceledError("The job was deleted while it ran.")
            return job, s.get(Photo, job.photo_id), s.get(Garment, job.garment_id)

        job, photo, garment = self._db(load, "load job")
        if photo is None or garment is None or photo.deleted_at or garment.deleted_at:
            raise InvalidInputError("The photo or garment of this job was deleted.",
                                    code="inputs_deleted")
        if job.created_at is not None and job.started_at is not None:
            timings["queued"] = round(
                (jobs._aware(job.started_at) - jobs._aware(job.created_at)).total_seconds(), 3)
        params = dict(job.params or {})
        seeds = jobs.job_seeds(job_id, int(params.get("num_samples", 1)), params.get("seed"))
        built = build_render_inputs(
            photo, garment, params, seeds,
            lambda key: self._retry(lambda: self.storage.get(key), "storage.get"))
        cache = StorageReferenceCache(self.storage, garment.owner_id, garment.id, self._retry)
        request = dataclasses.replace(built.request, reference_cache=cache)
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

        token = CURRENT_JOB.set(JobContext(job_id, attempt, params))
        output = None
        try:
            output = engine.render(request, callback=on_step, should_cancel=hb.should_cancel)
        finally:
            CURRENT_JOB.reset(token)
            self._record_derived(garment.id, cache, output.record if output else None)
        timings["sampling"] = round(time.monotonic() - t, 3)
        if hb.lost:
            raise _Fenced

        t = time.monotonic()
        hb.stage = "store"
        from tryon.images import encode_png

        specs: list[jobs.ResultSpec] = []
        # what went in, so a result can be traced to the exact photo, garment and box
        inputs = {
            "photo_id": photo.id, "photo_sha256": photo.image_sha256,
            "garment_id": garment.id, "garment_sha256": garment.image_sha256,
            "box": request.box.as_list(), "category": str(request.category),
            "mask": built.mask_used,
        }

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

    def _record_derived(self, garment_id: str, cache: StorageReferenceCache,
                        record: dict[str, Any] | None) -> None:
        """Note the engine's cached garment data in ``Garment.derived[version] =
        {"reference_key", "tokens_key"}`` (one short transaction). If the garment was deleted
        meanwhile, delete what this run wrote (its delete may have swept the prefix before).
        Never raises: the cache is an optimisation, the job's outcome does not depend on it."""
        info = (record or {}).get("reference_cache") or {}
        ref, tok, version = info.get("reference"), info.get("tokens"), info.get("version")
        entry = None
        if version and ref in cache.present and tok in cache.present:
            entry = {"reference_key": cache.present[ref], "tokens_key": cache.present[tok]}
        if entry is None and not cache.written:
            return

        def write(s: Session) -> bool:
            g = s.get(Garment, garment_id, populate_existing=True, with_for_update=True)
            if g is None or g.deleted_at is not None:
                return False
            derived = dict(g.derived or {})
            if entry is not None and derived.get(str(version)) != entry:
                derived[str(version)] = entry
                g.derived = derived  # a new object: SQLAlchemy sees the JSON change
            return True

        try:
            alive = self._db(write, "record derived")
        except TRANSIENT_ERRORS as exc:
            log.warning("garment=%s derived data not recorded: %s", garment_id, exc)
            return
        if not alive:
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


# --------------------------------------------------------------------------------------
# webhooks


@dataclass(frozen=True)
class DeliveryOutcome:
    """``status``: delivered | retry (after ``countdown_s``) | failed | skipped."""

    status: str
    countdown_s: float = 0.0


def deliver_webhook(
    settings: Settings,
    factory: sessionmaker[Session],
    delivery_id: str,
    *,
    secret: str,
    rng: random.Random | None = None,
    resolver: Any = None,
) -> DeliveryOutcome:
    """Attempt one delivery of outbox row ``delivery_id`` (idempotent per event id).

    The URL is checked again (DNS may have changed since registration); the signature and
    ``webhook-id`` follow Standard Webhooks. After ``webhook_max_attempts`` failures the row is
    ``failed`` (the dead-letter state ops can see).
    """
    import json

    from tryon import webhooks

    with session_scope(factory) as s:
        row = s.get(WebhookDelivery, delivery_id)
        if row is None or row.status != "pending":
            return DeliveryOutcome("skipped")
        url, event_id, payload, attempt = row.url, row.event_id, dict(row.payload), row.attempt
    body = json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()
    try:
        checked = webhooks.check_webhook_url(settings, url, resolver=resolver)
        headers = webhooks.sign(secret, event_id, int(time.time()), body)
        result = webhooks.deliver(checked, headers, body)
    except InvalidInputError as exc:
        result = webhooks.DeliveryResult(False, None, exc.message)
    attempt += 1
    if result.ok:
        status, countdown = "delivered", 0.0
    elif attempt >= settings.webhook_max_attempts:
        status, countdown = "failed", 0.0
    else:
        status = "pending"
        countdown = webhooks.backoff_s(attempt, cap=settings.max_retry_backoff_s, rng=rng)
    with session_scope(factory) as s:
        row = s.get(WebhookDelivery, delivery_id)
        if row is not None:
            row.attempt = attempt
            row.status = status
            # when the retry message is due; the reaper re-sends it if it is overdue (lost)
            row.next_attempt_at = (jobs.db_now(s) + timedelta(seconds=countdown)
                                   if status == "pending" else None)
            row.last_status_code = result.status_code
            row.last_error = result.error
            if result.ok:
                row.delivered_at = jobs.db_now(s)
    log.info("webhook delivery=%s event=%s attempt=%d status=%s code=%s", delivery_id, event_id,
             attempt, status, result.status_code)
    return DeliveryOutcome("retry" if status == "pending" else status, countdown)
