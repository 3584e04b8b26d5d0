"""``tryon doctor``: is this machine ready for the configured mode?

Checks weights, device and dtype, the database and the broker (with short timeouts), storage,
and package versions. Imports neither Flask nor Celery.
"""

from __future__ import annotations

import json
import socket
import sys
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import click

from tryon.cli import EXIT_OK, EXIT_SERVICE, EXIT_UNAVAILABLE
from tryon.config import Settings, load_settings
from tryon.errors import TryOnError

TIMEOUT_S = 3.0
PACKAGES = (
    "tryon", "torch", "diffusers", "transformers", "mediapipe", "opencv-contrib-python-headless",
    "numpy", "Pillow", "SQLAlchemy", "alembic", "celery", "kombu", "redis", "flask",
)  # fmt: skip


@dataclass(frozen=True)
class Check:
    """One line of the report. ``status``: ``ok``, ``warn`` (works, but note it) or ``fail``;
    ``exit_code``: what a ``fail`` turns the command's exit status into."""

    name: str
    status: str
    detail: str
    exit_code: int = EXIT_OK


def _redact(url: str) -> str:
    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return parts._replace(netloc=netloc).geturl()
    return url


def check_weights(settings: Settings) -> Check:
    if not settings.weights:
        return Check("weights", "ok", "none configured (TRYON_WEIGHTS unset): preview engine only")
    path = Path(settings.weights)
    if not path.exists():
        return Check("weights", "fail", f"TRYON_WEIGHTS={path} does not exist", EXIT_UNAVAILABLE)
    try:
        if path.is_dir():
            from tryon.anydoor.weights import is_pretrained_dir, weights_checksum

            if not is_pretrained_dir(path):
                return Check("weights", "fail", f"{path} is not a saved AnyDoor directory",
                             EXIT_UNAVAILABLE)
            return Check("weights", "ok", f"{path} (checksum {weights_checksum(path)[:16]}...)")
        size_gb = path.stat().st_size / 1e9
        # hashing a multi-GB checkpoint takes a while; the engine does it once on first render
        return Check("weights", "ok",
                     f"{path} (checkpoint, {size_gb:.2f} GB; checksum computed on first render)")
    except TryOnError as exc:
        return Check("weights", "fail", f"{path}: {exc.message}", EXIT_UNAVAILABLE)


def check_device(settings: Settings) -> list[Check]:
    import torch

    from tryon.engines.anydoor import resolve_device_dtype

    cuda = torch.cuda.is_available()
    if cuda:
        names = ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
        cuda_line = Check("cuda", "ok", f"available: {names} (CUDA {torch.version.cuda})")
    else:
        cuda_line = Check("cuda", "warn" if settings.weights else "ok",
                          "not available: anydoor runs on the CPU (slow)" if settings.weights
                          else "not available (not needed for the preview engine)")
    try:
        device, dtype = resolve_device_dtype(settings.device, settings.dtype)
    except TryOnError as exc:
        code = EXIT_UNAVAILABLE if settings.weights else EXIT_OK
        return [cuda_line, Check("device", "fail" if settings.weights else "warn", exc.message,
                                 code)]
    return [cuda_line, Check("device", "ok", f"{device} / {dtype} (TRYON_DEVICE={settings.device}, "
                                             f"TRYON_DTYPE={settings.dtype})")]


def _sqlite_path(url: str) -> Path | None:
    # sqlite:///relative, sqlite:////absolute, sqla+sqlite:///...
    _, _, rest = url.partition(":///")
    return Path(rest) if rest and rest != ":memory:" else None


def _tcp(host: str, port: int) -> None:
    with socket.create_connection((host, port), timeout=TIMEOUT_S):
        pass


def check_database(settings: Settings) -> Check:
    url = settings.resolved_database_url
    if url.startswith("sqlite"):
        path = _sqlite_path(url)
        note = "" if path is None or path.exists() else " (created on first use)"
        return Check("database", "ok", f"embedded SQLite {path or url}{note}")
    try:
        import sqlalchemy as sa

        connect_args: dict[str, Any] = {}
        if url.startswith("postgresql"):
            connect_args["connect_timeout"] = int(TIMEOUT_S)
        engine = sa.create_engine(url, connect_args=connect_args, pool_pre_ping=False)
        try:
            with engine.connect() as conn:
                conn.execute(sa.text("SELECT 1"))
        finally:
            engine.dispose()
    except Exception as exc:  # noqa: BLE001 - any driver error means "unreachable" to the operator
        return Check("database", "fail", f"{_redact(url)} unreachable: {exc.__class__.__name__}: "
                     f"{str(exc).splitlines()[0] if str(exc) else ''}", EXIT_SERVICE)
    return Check("database", "ok", f"{_redact(url)} reachable")


def check_broker(settings: Settings) -> Check:
    url = settings.resolved_broker_url
    if url.startswith("sqla+sqlite") or url.startswith("memory"):
        return Check("broker", "ok", f"embedded ({url.split(':', 1)[0]}) {_sqlite_path(url) or ''}")
    parts = urlsplit(url)
    try:
        if parts.scheme in {"redis", "rediss"}:
            import redis

            client = redis.Redis.from_url(url, socket_connect_timeout=TIMEOUT_S,
                                          socket_timeout=TIMEOUT_S)
            try:
                client.ping()
            finally:
                client.close()
        else:
            default_ports = {"amqp": 5672, "amqps": 5671, "sqs": 443}
            port = parts.port or default_ports.get(parts.scheme)
            if not parts.hostname or port is None:
                return Check("broker", "warn", f"{_redact(url)}: cannot probe this scheme")
            _tcp(parts.hostname, port)
    except Exception as exc:  # noqa: BLE001 - any client error means "unreachable" to the operator
        return Check("broker", "fail", f"{_redact(url)} unreachable: {exc.__class__.__name__}: "
                     f"{exc}", EXIT_SERVICE)
    return Check("broker", "ok", f"{_redact(url)} reachable")


def check_storage(settings: Settings) -> Check:
    if settings.storage == "s3":
        return Check("storage", "ok", f"s3 bucket {settings.s3_bucket} (not probed)")
    root = settings.resolved_storage_root
    if root.exists() and not root.is_dir():
        return Check("storage", "fail", f"{root} exists and is not a folder", EXIT_SERVICE)
    return Check("storage", "ok", f"local {root}" + ("" if root.exists() else
                                                     " (created on first use)"))


def check_engines(settings: Settings) -> Check:
    from tryon.engines.registry import available_engines, default_engine_name

    try:
        names = available_engines(settings)
    except TryOnError as exc:
        return Check("engines", "fail", exc.message, EXIT_UNAVAILABLE)
    return Check("engines", "ok", f"{', '.join(names)} (default: {default_engine_name(settings)})")


def versions() -> dict[str, str]:
    out = {"python": sys.version.split()[0]}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def run_checks(settings: Settings) -> list[Check]:
    return [
        check_weights(settings),
        *check_device(settings),
        check_engines(settings),
        check_database(settings),
        check_broker(settings),
        check_storage(settings),
    ]


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def doctor(as_json: bool) -> None:
    """Check weights, device, database, broker, storage and versions for the configured mode.

    \b
    Exit codes: 0 all good, 4 configured weights missing or invalid,
    5 a configured service (database, broker, storage) unreachable.
    """
    try:
        settings = load_settings()
    except TryOnError as exc:
        from tryon.cli import fail

        fail(exc)
        return
    checks = run_checks(settings)
    vers = versions()
    mode = "embedded (SQLite, no servers)" if settings.embedded else "servers"
    if as_json:
        click.echo(json.dumps({"mode": mode, "checks": [asdict(c) for c in checks],
                               "versions": vers}, indent=2))
    else:
        click.echo(f"mode       {mode}")
        for c in checks:
            click.echo(f"{c.name:10s} {c.status:4s}  {c.detail}")
        click.echo("versions   " + ", ".join(f"{k} {v}" for k, v in vers.items()))
    failed = [c for c in checks if c.status == "fail"]
    # a service outage outranks a weights problem: it is the one an operator can fix now
    codes = {c.exit_code for c in failed}
    sys.exit(EXIT_SERVICE if EXIT_SERVICE in codes else (max(codes) if codes else EXIT_OK))
