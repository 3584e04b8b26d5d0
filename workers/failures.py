"""What a failed job stores for the shopper: a stable message per error code, never the text
of the exception (a database error's text holds SQL, parameters and the host; an OS error's,
paths). The detail goes to the worker's log with the job id and attempt.
"""

from __future__ import annotations

from tryon.errors import TryOnError

#: the stored message of each code a worker sets from an exception it did not raise itself
REDACTED_MESSAGES: dict[str, str] = {
    "service_unavailable": "A service this try-on needs was unavailable for too long; "
                           "retry the try-on.",
    "storage_unavailable": "The file storage was unavailable for too long; retry the try-on.",
    "inputs_missing": "A stored input of this try-on (photo, garment or mask) is missing; "
                      "upload it again.",
    "internal_error": "The try-on failed because of an internal error.",
    "timeout": "The job took longer than the time limit and was stopped.",
}


def unexpected_error_message(exc: BaseException) -> str:
    """The message of an ``internal_error`` from an unexpected exception: the exception type
    only (its text may carry paths, tensor shapes or other internals). An out-of-memory error
    (``torch.OutOfMemoryError``, recognised by name so torch is never imported here) says so,
    as it may work later or with fewer samples."""
    name = type(exc).__name__
    if name == "OutOfMemoryError" or "out of memory" in str(exc).lower():
        return f"The engine ran out of memory ({name}); try again later or with fewer samples."
    return f"The engine failed unexpectedly ({name})."


def stored_message(code: str, exc: BaseException) -> str:
    """The message stored on a job failed with ``code`` by ``exc``. A typed client error
    (:class:`TryOnError` under 500) keeps its own message, written for the user; every other
    error gets the fixed message of its code."""
    if isinstance(exc, TryOnError) and exc.http_status < 500 and code not in REDACTED_MESSAGES:
        return exc.message
    if isinstance(exc, TryOnError) and code not in REDACTED_MESSAGES:
        return exc.default_message
    return REDACTED_MESSAGES.get(code, REDACTED_MESSAGES["internal_error"])
