"""The caller's own account: ``DELETE /v1/me`` erases a shopper (P-1)."""

from __future__ import annotations

import logging

from apiflask import APIBlueprint

from tryon.types import Role
from web.api.common import AUTH_DOC
from web.auth import current_principal, roles
from web.services import db_session, services

log = logging.getLogger(__name__)
bp = APIBlueprint("me", __name__, tag="Account", url_prefix="/v1/me")


@bp.delete("")
@bp.doc(**AUTH_DOC, responses={204: "Erased", 503: "Storage unavailable: repeat the request"})
@roles(Role.SHOPPER)
@bp.output({}, status_code=204)
def erase_me() -> tuple[str, int]:
    """Erase yourself: open try-ons are canceled; every photo, result and try-on is deleted,
    every API key revoked (this one answers 401 afterwards) and the account closed."""
    from tryon.records.erasure import erase_account

    erase_account(db_session(), services().storage, current_principal().account_id)
    return "", 204
