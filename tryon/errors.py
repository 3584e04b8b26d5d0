"""One error hierarchy for the whole project.

Every error carries a stable ``code`` (part of the public API: clients switch on it, the
database stores it on failed jobs) and a message that tells the user what to fix. The web layer
maps them once to ``{"error": {"code", "message"}}`` using ``http_status``; workers store the
code on the job row.
"""

from __future__ import annotations

from typing import Any


class TryOnError(Exception):
    """Base class. Subclasses set ``code``, ``http_status`` and a default message."""

    code: str = "tryon_error"
    http_status: int = 500
    default_message: str = "Something went wrong."
    #: True for errors that may succeed when retried (broker or storage hiccups).
    transient: bool = False

    def __init__(
        self, message: str | None = None, *, code: str | None = None, **details: Any
    ) -> None:
        self.message = message or self.default_message
        if code is not None:
            self.code = code
        self.details = details
        super().__init__(self.message)

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.details:
            body["details"] = self.details
        return body


# --- input problems (4xx) ---------------------------------------------------------------


class InvalidInputError(TryOnError, ValueError):
    """An argument is malformed: wrong shape, dtype, range, size mismatch, box outside image."""

    code = "invalid_input"
    http_status = 422
    default_message = "The request is not valid."


class InvalidImageError(TryOnError, ValueError):
    """An uploaded image cannot be used. ``code`` says why (see subclasses)."""

    code = "invalid_image"
    http_status = 422
    default_message = "The file is not a usable image."


class UnsupportedFormatError(InvalidImageError):
    code = "unsupported_format"
    http_status = 415
    default_message = "Unsupported image format: upload a JPEG, PNG or WebP file."


class CorruptImageError(InvalidImageError):
    code = "corrupt_image"
    http_status = 422
    default_message = "The image file is truncated or corrupt: upload it again."


class ImageTooLargeError(InvalidImageError):
    code = "image_too_large"
    http_status = 413
    default_message = "The image is too large."


class ImageTooSmallError(InvalidImageError):
    code = "image_too_small"
    http_status = 422
    default_message = "The image is too small to use."


class InvalidMaskError(InvalidInputError):
    code = "invalid_mask"
    default_message = "The mask is empty or does not match the image."


# --- analysis verdicts (pre-flight) -----------------------------------------------------


class PreflightError(TryOnError):
    """A photo or garment failed a pre-flight check; nothing was spent on the GPU."""

    http_status = 422


class NoPersonError(PreflightError):
    code = "no_person"
    default_message = "No person was found in the photo: upload a photo of yourself facing the camera."


class PoseNotUsableError(PreflightError):
    code = "pose_not_usable"
    default_message = (
        "The body parts this garment needs are not clearly visible: "
        "stand facing the camera with shoulders and hips in view."
    )


class PersonTooSmallError(PreflightError):
    code = "person_too_small"
    default_message = "The person is too small in the photo: step closer or crop the photo."


class MultiplePeopleError(PreflightError):
    code = "multiple_people"
    default_message = "More than one person is in the photo: upload a photo with only you in it."


class GarmentNotSeparableError(PreflightError):
    code = "garment_not_separable"
    default_message = (
        "The garment could not be separated from its background: upload a product shot on a "
        "plain background, a PNG with transparency, or a mask."
    )


# --- compose: the region and the object (``/v1/compose``, :mod:`tryon.compose`) -----------


class EmptyRegionError(InvalidInputError):
    code = "empty_region"
    default_message = "The region is empty: give a box with x1 < x2 and y1 < y2 inside the " \
        "image, or a mask with white pixels."


class RegionTooSmallError(InvalidInputError):
    code = "region_too_small"
    default_message = "The region is too small to place an object in: make it larger."


class ObjectNotSeparableError(InvalidInputError):
    code = "object_not_separable"
    default_message = (
        "The object could not be separated from its background: upload a mask, a PNG with "
        "transparency, or an object on a plain background."
    )


class BatchTooLargeError(InvalidInputError):
    code = "batch_too_large"
    default_message = "The batch has too many items: split it."


# --- engine, weights, jobs ---------------------------------------------------------------


class WeightsError(TryOnError):
    code = "weights_invalid"
    http_status = 500
    default_message = "The model weights are missing or do not match the expected layout."


class WeightsNotFoundError(WeightsError):
    code = "weights_not_found"
    default_message = "No model weights are configured: set TRYON_WEIGHTS or run `tryon weights fetch`."


class NetworkUnavailableError(TryOnError):
    """A download could not reach its server (no network, timeout, connection dropped, 5xx).

    Its own code and exit status (6) so scripts can retry later; see :mod:`tryon.anydoor.fetch`.
    """

    code = "network_unavailable"
    http_status = 503
    transient = True
    default_message = "The network is not reachable: retry when it is back."


class EngineUnavailableError(TryOnError):
    code = "engine_unavailable"
    http_status = 422
    default_message = "That engine is not available on this deployment."


class NoWorkerForEngineError(EngineUnavailableError):
    """No live worker advertises the engine (none runs yet, or none has its weights): retry
    after ``Retry-After``, or pick an engine from ``details["available"]``."""

    http_status = 503
    default_message = "No running worker can serve that engine right now."


class NumericalError(TryOnError):
    code = "numerical_error"
    http_status = 500
    default_message = (
        "The model produced invalid values (NaN or infinity); retry, or run it in bfloat16 or "
        "float32 instead of float16."
    )


class CanceledError(TryOnError):
    code = "canceled"
    http_status = 409
    default_message = "The job was canceled."


class JobTimeoutError(TryOnError):
    code = "timeout"
    http_status = 500
    default_message = "The job took too long and was stopped."


class WorkerLostError(TryOnError):
    code = "worker_lost"
    http_status = 500
    default_message = "The worker running this job stopped repeatedly; the job was given up."


class StorageUnavailableError(TryOnError):
    code = "storage_unavailable"
    http_status = 503
    transient = True
    default_message = "Storage is temporarily unavailable."


class InvalidStorageKeyError(TryOnError, ValueError):
    code = "invalid_storage_key"
    http_status = 400
    default_message = "Invalid storage key."


class ConfigError(TryOnError):
    code = "config_invalid"
    http_status = 500
    default_message = "The configuration is not valid."


class TrainingDataError(ConfigError):
    """Training could not build samples: every pair it tried was rejected (filters or files)."""

    code = "training_data_rejected"
    default_message = "Every training pair tried was rejected; check the dataset and filters."


# --- API-level -----------------------------------------------------------------------------


class NotFoundError(TryOnError):
    code = "not_found"
    http_status = 404
    default_message = "Not found."


class ConflictError(TryOnError):
    code = "conflict"
    http_status = 409
    default_message = "The request conflicts with the current state."


class UnauthorizedError(TryOnError):
    code = "unauthorized"
    http_status = 401
    default_message = "Missing or invalid API key: send `Authorization: Bearer <key>`."


class ServiceUnavailableError(TryOnError):
    code = "service_unavailable"
    http_status = 503
    transient = True
    default_message = "The service is temporarily unavailable: retry shortly."



class DatabaseUnavailableError(ServiceUnavailableError):
    code = "database_unavailable"
    default_message = "The database is temporarily unavailable: retry shortly."


class PayloadTooLargeError(TryOnError):
    code = "payload_too_large"
    http_status = 413
    default_message = "The request body is too large."


class UnsupportedMediaTypeError(TryOnError):
    code = "unsupported_media_type"
    http_status = 415
    default_message = "Unsupported Content-Type for this endpoint."


class IdempotencyMismatchError(TryOnError):
    code = "idempotency_mismatch"
    http_status = 422
    default_message = "This Idempotency-Key was already used with a different request body."


class IdempotencyInFlightError(TryOnError):
    code = "idempotency_in_flight"
    http_status = 409
    default_message = "A request with this Idempotency-Key is still being processed: retry shortly."


class TooManyOpenJobsError(TryOnError):
    code = "too_many_open_jobs"
    http_status = 429
    default_message = "Too many try-ons are queued or running: wait for one to finish."

class TooManyOpenBatchJobsError(TooManyOpenJobsError):
    code = "too_many_open_batch_jobs"
    default_message = "Too many batch jobs are queued or running: wait for a batch to finish."


def all_error_classes() -> list[type[TryOnError]]:
    """Every concrete error class (for docs and the README error table)."""
    seen: list[type[TryOnError]] = []
    stack: list[type[TryOnError]] = [TryOnError]
    while stack:
        cls = stack.pop(0)
        seen.append(cls)
        stack.extend(cls.__subclasses__())
    return seen
