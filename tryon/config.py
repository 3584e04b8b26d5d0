"""Settings, read from the environment in one place (prefix ``TRYON_``).

Everything else in the project receives a :class:`Settings` (or single values) as arguments.
With no environment at all the embedded defaults apply: SQLite, local storage and a broker
that needs no server, all under ``TRYON_DATA_DIR`` (default ``./var``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from tryon.errors import ConfigError


def _bool(value: str) -> bool:
    v = value.strip().lower()
    if v in {"1", "true", "yes", "on"}:
        return True
    if v in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError(f"expected a boolean, got {value!r}")


def _is_whsec(value: str) -> bool:
    """A Standard Webhooks secret: ``whsec_`` and the base64 of at least 16 bytes."""
    import base64
    import binascii

    if not value.startswith("whsec_"):
        return False
    try:
        return len(base64.b64decode(value[len("whsec_"):], validate=True)) >= 16
    except (binascii.Error, ValueError):
        return False


@dataclass(frozen=True)
class Settings:
    """All settings. Field ``foo_bar`` is read from ``TRYON_FOO_BAR``."""

    # where embedded defaults keep their files
    data_dir: Path = Path("var")
    # database: SQLite file under data_dir unless set (production: postgresql+psycopg://...)
    database_url: str = ""
    # broker: kombu SQLAlchemy transport on a SQLite file unless set (production: redis://...)
    broker_url: str = ""
    # storage: "local" (under data_dir/storage) or "s3"
    storage: str = "local"
    storage_root: Path | None = None
    s3_bucket: str = ""
    s3_endpoint_url: str = ""
    s3_region: str = ""
    s3_prefix: str = ""
    # master secret (generated into data_dir if empty); never used directly: per-purpose keys
    # (result URLs, webhooks) are derived from it with HMAC
    secret_key: str = ""
    # webhook signing secret(s), "whsec_<base64>", whitespace-separated during a rotation (all
    # sign); empty: derived from secret_key (print it with `tryon keys webhook-secret`)
    webhook_secret: str = ""
    # model weights: a directory in our save_pretrained format, or an official .ckpt/.safetensors
    weights: str = ""
    dinov2_weights: str = ""
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    dtype: str = "auto"  # auto | float32 | float16 | bfloat16
    cpu_offload: bool = False
    # image intake
    max_upload_bytes: int = 20 * 1024 * 1024
    max_image_pixels: int = 40_000_000
    max_image_side: int = 12_000
    min_image_side: int = 256
    photo_long_side: int = 2048
    # jobs
    max_attempts: int = 3
    heartbeat_interval_s: float = 5.0
    stale_after_s: float = 30.0
    reaper_interval_s: float = 10.0
    republish_after_s: float = 30.0
    soft_time_limit_s: float = 600.0
    hard_time_limit_s: float = 630.0
    max_retry_backoff_s: float = 60.0
    visibility_timeout_s: float = 1800.0
    max_open_jobs_per_shopper: int = 3
    # batches (/v1/batches): items per batch, and open batch items per account at once
    max_batch_items: int = 100
    max_open_batch_jobs: int = 300
    result_url_ttl_s: int = 900
    idempotency_ttl_s: int = 86_400
    shopper_key_ttl_s: int = 30 * 86_400
    webhook_max_attempts: int = 5
    # retention (P-2): photos / results older than this many seconds are purged by the reaper
    # (0 = keep forever, the default for backward compatibility; see docs/api.md for advice)
    photo_ttl_s: int = 0
    result_ttl_s: int = 0
    #: the reaper runs the retention purge at most this often
    purge_interval_s: float = 300.0
    # engine defaults
    # empty: `tryon render` takes anydoor when weights are configured, else preview; the API
    # takes anydoor when a live worker advertises it, else preview (tryon.engines.registry)
    default_engine: str = ""
    default_steps: int = 50
    default_guidance: float = 4.5
    #: extra engines to register, "name=module:Factory,name2=module:Factory" (plugins, test fakes)
    extra_engines: str = ""
    #: prefix of the broker queue names ("" -> queues "gpu" and "cpu"); lets deployments or
    #: test runs share one Redis
    queue_prefix: str = ""
    #: allow http:// and private/loopback webhook targets (loopback test receivers only)
    webhook_allow_insecure: bool = False

    # ----------------------------------------------------------------------------------
    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.data_dir / 'tryon.db').resolve()}"

    @property
    def resolved_broker_url(self) -> str:
        return self.broker_url or f"sqla+sqlite:///{(self.data_dir / 'broker.db').resolve()}"

    @property
    def resolved_storage_root(self) -> Path:
        return (self.storage_root or (self.data_dir / "storage")).resolve()

    @property
    def embedded(self) -> bool:
        """True when running on the no-server defaults (SQLite + SQLAlchemy broker)."""
        return not self.database_url and not self.broker_url

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the first inconsistent setting."""
        if self.storage not in {"local", "s3"}:
            raise ConfigError(f"TRYON_STORAGE must be 'local' or 's3', got {self.storage!r}")
        if self.storage == "s3" and not self.s3_bucket:
            raise ConfigError("TRYON_STORAGE=s3 needs TRYON_S3_BUCKET")
        if self.dtype not in {"auto", "float32", "float16", "bfloat16"}:
            raise ConfigError(f"TRYON_DTYPE must be auto|float32|float16|bfloat16, got {self.dtype!r}")
        if self.max_attempts < 1:
            raise ConfigError("TRYON_MAX_ATTEMPTS must be at least 1")
        if 3 * self.heartbeat_interval_s > self.stale_after_s:
            raise ConfigError(
                "TRYON_STALE_AFTER_S must be at least 3 x TRYON_HEARTBEAT_INTERVAL_S "
                f"({self.stale_after_s} < 3 x {self.heartbeat_interval_s})"
            )
        if not self.soft_time_limit_s < self.hard_time_limit_s:
            raise ConfigError("TRYON_SOFT_TIME_LIMIT_S must be below TRYON_HARD_TIME_LIMIT_S")
        if not self.hard_time_limit_s + self.max_retry_backoff_s < self.visibility_timeout_s:
            raise ConfigError(
                "TRYON_VISIBILITY_TIMEOUT_S must exceed TRYON_HARD_TIME_LIMIT_S + "
                "TRYON_MAX_RETRY_BACKOFF_S, or Redis redelivers running jobs"
            )
        for value in self.webhook_secret.split():
            if not _is_whsec(value):
                raise ConfigError("TRYON_WEBHOOK_SECRET must be whitespace-separated "
                                  "whsec_<base64> values (e.g. from `tryon keys webhook-secret`)")
        if self.photo_ttl_s < 0 or self.result_ttl_s < 0:
            raise ConfigError("TRYON_PHOTO_TTL_S and TRYON_RESULT_TTL_S must be >= 0 (0 = keep)")
        if self.min_image_side < 1 or self.max_image_side < self.min_image_side:
            raise ConfigError("image side limits are inconsistent")

    def replace(self, **changes: Any) -> Settings:
        from dataclasses import replace

        new = replace(self, **changes)
        new.validate()
        return new


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Build and validate :class:`Settings` from ``environ`` (default ``os.environ``)."""
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for f in fields(Settings):
        key = "TRYON_" + f.name.upper()
        if key not in env:
            continue
        raw = env[key]
        default = f.default
        try:
            if isinstance(default, bool):
                values[f.name] = _bool(raw)
            elif isinstance(default, int):
                values[f.name] = int(raw)
            elif isinstance(default, float):
                values[f.name] = float(raw)
            elif f.name in {"data_dir", "storage_root"}:
                values[f.name] = Path(raw) if raw else (None if f.name == "storage_root" else Path("var"))
            else:
                values[f.name] = raw
        except ValueError as exc:
            raise ConfigError(f"{key}: {exc}") from None
    settings = Settings(**values)
    settings.validate()
    return settings


