"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

import logging
from typing import Any

from apiflask import APIBlueprint
from flask import Response, current_app
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

from tryon.types import Role
from web.api.common import AUTH_DOC
from web.auth import roles
from web.schemas import HealthOut
from web.services import services

log = logging.getLogger(__name__)
bp = APIBlueprint("health", __name__, tag="Health")


@bp.get("/healthz")
@bp.output(HealthOut)
def healthz() -> dict[str, Any]:
    """Liveness: the process answers."""
    return {"status": "ok", "checks": {}}


def _check_database() -> str:
    try:
        with services().session_factory() as s:
            s.execute(text("SELECT 1"))
        return "ok"
    except Exception as exc:  # noqa: BLE001 - readiness reports, never raises
        log.warning("readyz: database unreachable: %s", type(exc).__name__)
        return "unreachable"


def _check_broker() -> str:
    probe = services().broker_probe
    try:
        if probe is not None:
            probe()
        else:
            from kombu import Connection

            with Connection(services().settings.resolved_broker_url, connect_timeout=2) as conn:
                conn.ensure_connection(max_retries=1, timeout=2)
        return "ok"
    except Exception as exc:  # noqa: BLE001
        log.warning("readyz: broker unreachable: %s", type(exc).__name__)
        return "unreachable"


_READYZ_DOC: dict[int | str, dict[str, Any]] = {503: {
    "description": "The database or the broker is unreachable (same body, with Retry-After)",
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/HealthOut"}}}}}
_METRICS_DOC: dict[int | str, dict[str, Any]] = {200: {
    "description": "Prometheus text format",
    "content": {"text/plain": {"schema": {"type": "string"}}}}}


@bp.get("/readyz")
@bp.output(HealthOut)
@bp.doc(responses=_READYZ_DOC)
def readyz() -> Any:
    """Readiness: the database and the broker are reachable (503 otherwise)."""
    checks = {"database": _check_database(), "broker": _check_broker()}
    ok = all(v == "ok" for v in checks.values())
    headers = {} if ok else {"Retry-After": "5"}
    return {"status": "ok" if ok else "unavailable", "checks": checks}, (200 if ok else 503), headers


@bp.get("/metrics")
@bp.doc(**AUTH_DOC, responses=_METRICS_DOC)
@roles(Role.OPS)
def metrics() -> Response:
    """Prometheus metrics (ops keys only)."""
    registry = current_app.extensions["tryon_metrics"].exposition
    return Response(generate_latest(registry), mimetype=CONTENT_TYPE_LATEST.split(";")[0])
