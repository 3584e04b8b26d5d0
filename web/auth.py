"""Bearer-key authentication and role rules.

Every endpoint needs a key unless it is listed in :data:`PUBLIC_ENDPOINTS` (secure by default:
a new route is protected without anyone remembering to decorate it). Role checks answer 404,
never 403, so a caller cannot learn that a route or object exists.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from flask import g, request

from tryon.errors import NotFoundError, UnauthorizedError
from tryon.types import Role

F = TypeVar("F", bound=Callable[..., Any])

#: endpoints reachable without a key: liveness, readiness, the API docs, signed result files
PUBLIC_ENDPOINTS = frozenset(
    {"health.healthz", "health.readyz", "openapi.spec", "openapi.docs", "openapi.redoc",
     "openapi.swagger_ui_oauth_redirect", "files.signed_result"}
)

#: blueprints that authenticate with a signed session cookie instead of a bearer key (the
#: server-rendered pages); they keep the same Principal and the same 404-not-403 rule
SESSION_BLUEPRINTS = frozenset({"pages"})


@dataclass(frozen=True)
class Principal:
    """Who is calling: the account id and its role."""

    account_id: str
    role: Role
    name: str


def current_principal() -> Principal:
    principal: Principal | None = g.get("principal")
    if principal is None:  # only reachable if a public endpoint asks for a principal
        raise UnauthorizedError()
    return principal


def authenticate_request() -> None:
    """``before_request``: resolve ``Authorization: Bearer <key>`` into ``g.principal``."""
    if request.endpoint is None or request.endpoint in PUBLIC_ENDPOINTS:
        return
    if request.blueprint in SESSION_BLUEPRINTS:
        return  # the pages authenticate with a session cookie (web.pages._authenticate)
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise UnauthorizedError()
    from tryon.records.accounts import authenticate
    from web.services import db_session

    account = authenticate(db_session(), token.strip())
    if account is None:
        raise UnauthorizedError("The API key is invalid, expired or revoked.")
    g.principal = Principal(account.id, Role(account.role), account.name)


def roles(*allowed: Role) -> Callable[[F], F]:
    """Restrict a view to ``allowed`` roles; anyone else gets 404."""

    def deco(view: F) -> F:
        @functools.wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if current_principal().role not in allowed:
                raise NotFoundError()
            return view(*args, **kwargs)

        wrapper._tryon_roles = allowed  # type: ignore[attr-defined]
        return wrapper  # type: ignore[return-value]

    return deco
