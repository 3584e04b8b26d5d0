"""Result images through signed, expiring URLs (local storage; S3 presigns its own)."""

from __future__ import annotations

import math

from apiflask import APIBlueprint
from flask import Response
from sqlalchemy import select

from tryon.errors import NotFoundError
from tryon.records.models import TryOnJob, TryOnResult
from web.api.common import png_responses
from web.api.tryons import image_response
from web.services import db_session, services
from web.signing import ResultSigner

bp = APIBlueprint("files", __name__, tag="Files")


@bp.get("/files/results/<token>")
@bp.doc(responses=png_responses(_403="Expired or altered URL", _404="Deleted"))
def signed_result(token: str) -> Response:
    """A result image through a signed URL (no API key; valid for at most 15 minutes)."""
    from flask import abort

    from tryon.storage import ObjectNotFoundError

    svc = services()
    signer = ResultSigner(svc.secret_key, svc.settings.result_url_ttl_s)
    verified = signer.verify(token)
    if verified is None:
        abort(403)
    payload, age = verified
    # the row must still exist and still point at this key (a deleted or re-run result is gone)
    r = db_session().scalars(
        select(TryOnResult).join(TryOnJob).where(
            TryOnResult.job_id == payload["j"], TryOnResult.index == payload["i"],
            TryOnResult.storage_key == payload["k"], TryOnJob.status == "succeeded")
    ).first()
    if r is None:
        raise NotFoundError("Result not found.", code="result_not_found")
    try:
        data = svc.storage.get(r.storage_key)
    except ObjectNotFoundError:
        raise NotFoundError("Result not found.", code="result_not_found") from None
    remaining = max(0, math.floor(signer.ttl_s - age))
    return image_response(data, cache=f"private, max-age={remaining}")
