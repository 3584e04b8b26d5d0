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

    # --- storage and services
    #: where the embedded defaults keep their files (database, broker, storage, secret)
    data_dir: Path = Path("var")
    #: database URL; empty: a SQLite file under data_dir (production: postgresql+psycopg://...)
    database_url: str = ""
    #: broker URL; empty: the kombu SQLAlchemy transport on a SQLite file (production: redis://...)
    broker_url: str = ""
    #: object storage backend: "local" (files under storage_root) or "s3"
    storage: str = "local"
    #: root folder of local storage; empty: data_dir/storage
    storage_root: Path | None = None
    #: S3 bucket (needed when storage is s3)
    s3_bucket: str = ""
    #: S3 endpoint URL for S3-compatible services (MinIO...); empty: AWS
    s3_endpoint_url: str = ""
    #: S3 region; empty: the client's default
    s3_region: str = ""
    #: key prefix inside the bucket
    s3_prefix: str = ""
    # --- secrets
    #: master secret (generated into data_dir if empty); never used directly: per-purpose keys
    #: (result URLs, webhooks) are derived from it with HMAC
    secret_key: str = ""
    #: webhook signing secret(s), "whsec_<base64>", whitespace-separated during a rotation (all
    #: sign); empty: derived from secret_key (print it with `tryon keys webhook-secret`)
    webhook_secret: str = ""
    # --- engine and weights
    #: model weights: a directory in our save_pretrained format, or an official .ckpt/.safetensors
    weights: str = ""
    #: DINOv2 image-encoder weights, when not inside the weights folder
    dinov2_weights: str = ""
    device: str = "auto"  # torch device of the engine: auto | cpu | cuda | cuda:N
    dtype: str = "auto"  # weight dtype: auto | float32 | float16 | bfloat16
    #: keep the image-encoder (DINOv2) on the CPU between uses (less GPU memory, slower)
    cpu_offload: bool = False
    #: AnyDoor sampler: ddim (the reference's, exact) | dpmpp_2m (DPM-Solver++ 2M, close at
    #: 20-25 steps; a deviation from the reference, docs/anydoor-engine.md)
    sampler: str = "ddim"
    #: torch.compile the UNet and ControlNet (off: the first render pays minutes of compiling)
    compile: bool = False
    # --- image intake
    #: largest accepted upload, in bytes
    max_upload_bytes: int = 20 * 1024 * 1024
    #: largest decoded image, in pixels (decompression-bomb guard)
    max_image_pixels: int = 40_000_000
    #: longest accepted image side, in pixels
    max_image_side: int = 12_000
    #: shortest accepted image side, in pixels
    min_image_side: int = 256
    #: shopper photos are stored scaled down to this long side
    photo_long_side: int = 2048
    # --- jobs
    #: attempts per job (a lost worker or a transient error uses one) before it fails
    max_attempts: int = 3
    #: how often a running job's worker writes its heartbeat
    heartbeat_interval_s: float = 5.0
    #: a running job whose heartbeat is older than this is reaped, and a registered worker
    #: process whose heartbeat is older counts as gone (>= 3 x the interval)
    stale_after_s: float = 30.0
    #: seconds between reaper passes
    reaper_interval_s: float = 10.0
    #: a queued job whose publish is older than this is published again by the reaper (the
    #: delay doubles with each re-publish)
    republish_after_s: float = 30.0
    #: soft time limit of one attempt (the engine is asked to stop; the job fails with timeout)
    soft_time_limit_s: float = 600.0
    #: hard time limit of one attempt (the pool child is killed); above the soft limit
    hard_time_limit_s: float = 630.0
    #: longest backoff between two attempts
    max_retry_backoff_s: float = 60.0
    #: Redis visibility timeout; above hard_time_limit_s + max_retry_backoff_s
    visibility_timeout_s: float = 1800.0
    #: queued + running jobs one shopper may have (429 beyond)
    max_open_jobs_per_shopper: int = 3
    #: try-on or compose items in one batch (/v1/batches; 422 batch_too_large beyond)
    max_batch_items: int = 100
    #: open batch items one account may have at once (429 too_many_open_batch_jobs beyond)
    max_open_batch_jobs: int = 300
    #: lifetime of a signed result URL, in seconds
    result_url_ttl_s: int = 900
    #: how long an Idempotency-Key is remembered, in seconds
    idempotency_ttl_s: int = 86_400
    #: lifetime of a shopper API key made by `tryon keys`, in seconds
    shopper_key_ttl_s: int = 30 * 86_400
    #: delivery attempts per webhook event before it is dead-lettered
    webhook_max_attempts: int = 5
    # --- retention (P-2)
    #: photos older than this many seconds are purged by the reaper (0 = keep forever, the
    #: default for backward compatibility; see docs/api.md for advice)
    photo_ttl_s: int = 0
    #: results older than this many seconds are purged by the reaper (0 = keep forever)
    result_ttl_s: int = 0
    #: the reaper runs the retention purge at most this often
    purge_interval_s: float = 300.0
    # --- engine defaults
    #: engine when a request names none; empty: `tryon render` takes anydoor when weights are
    #: configured, else preview; the API takes anydoor when a live worker advertises it, else
    #: preview (tryon.engines.registry)
    default_engine: str = ""
    #: diffusion steps when a request names none
    default_steps: int = 50
    #: classifier-free guidance when a request names none
    default_guidance: float = 4.5
    #: extra engines to register, "name=module:Factory,name2=module:Factory" (plugins, test fakes)
    extra_engines: str = ""
    #: prefix of the broker queue names ("" -> queues "gpu" and "cpu"); lets deployments or
    #: test runs share one Redis
    queue_prefix: str = ""
    # --- webhooks and logging
    #: allow http:// and private/loopback webhook targets (loopback test receivers only); the
    #: one switch the API (when a try-on is created) and the worker (before each delivery) read
    webhook_allow_insecure: bool = False
    #: log line format of every process: "text" (key=value) or "json" (one object a line)
    log_format: str = "text"
    #: log level of every process (DEBUG, INFO, WARNING, ERROR)
    log_level: str = "INFO"
    # --- rate limits (S-13; web/ratelimit.py): "N/second|minute|hour|day", ";"-separated for
    # several, "" = off
    #: photo and garment uploads per API key
    rate_limit_uploads: str = "60/minute"
    #: try-on creations per API key
    rate_limit_tryons: str = "60/minute"
    #: uploads and try-on creations per client address (each)
    rate_limit_per_address: str = "300/minute"
    #: failed authentications (bad or revoked keys, failed page sign-ins) per client address
    rate_limit_auth_failures: str = "30/minute"
    #: where the counters live: "" = the broker when it is Redis (shared by every API
    #: process), else in-process memory ("memory://"; each gunicorn worker counts alone)
    rate_limit_storage_url: str = ""
    #: photo analyses per analyzer process (one per API worker) before it is replaced, which
    #: bounds its memory; 0 = never replaced
    analyzer_max_tasks: int = 200

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
        if self.sampler not in {"ddim", "dpmpp_2m"}:
            raise ConfigError(f"TRYON_SAMPLER must be ddim|dpmpp_2m, got {self.sampler!r}")
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
        if self.secret_key.startswith("CHANGE-ME"):
            raise ConfigError("TRYON_SECRET_KEY still holds the placeholder of .env.example: "
                              "generate a random value (see .env.example)")
        if self.photo_ttl_s < 0 or self.result_ttl_s < 0:
            raise ConfigError("TRYON_PHOTO_TTL_S and TRYON_RESULT_TTL_S must be >= 0 (0 = keep)")
        if self.min_image_side < 1 or self.max_image_side < self.min_image_side:
            raise ConfigError("image side limits are inconsistent")
        if self.log_format not in {"text", "json"}:
            raise ConfigError(f"TRYON_LOG_FORMAT must be text or json, got {self.log_format!r}")
        if self.log_level.upper() not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
            raise ConfigError(f"TRYON_LOG_LEVEL must be DEBUG|INFO|WARNING|ERROR, got "
                              f"{self.log_level!r}")

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




# --- the settings reference (docs/settings.md is generated from this) -----------------------


@dataclass(frozen=True)
class SettingDoc:
    env: str
    type: str
    default: str
    group: str
    doc: str


def settings_reference() -> list[SettingDoc]:
    """Every setting with its type, default, group and meaning, read from the ``#:`` comments
    (or the trailing comment) of its field in :class:`Settings`; ``# ---`` lines are groups."""
    import ast
    import inspect
    import io
    import tokenize

    source = inspect.getsource(Settings)
    comments: dict[int, str] = {}
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            comments[tok.start[0]] = tok.string
    lines = source.splitlines()
    cls = ast.parse(source).body[0]
    if not isinstance(cls, ast.ClassDef):
        raise TypeError("Settings source is not a class")
    by_name = {f.name: f for f in fields(Settings)}
    out: list[SettingDoc] = []
    group = ""
    prev_end = cls.body[0].lineno - 1
    for node in cls.body:
        if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
            continue
        name = node.target.id
        doc_lines: list[str] = []
        for lineno in range(prev_end + 1, node.lineno):
            text = lines[lineno - 1].strip()
            if text.startswith("# ---"):
                group, doc_lines = text[5:].strip(), []
            elif text.startswith("#:"):
                doc_lines.append(text[2:].strip())
        trailing = comments.get(node.lineno, "")
        if trailing and lines[node.lineno - 1].strip() != trailing:
            doc_lines.append(trailing.lstrip("#:").strip())
        prev_end = node.end_lineno or node.lineno
        f = by_name[name]
        default = f.default
        shown = "" if default in ("", None) else str(default)
        type_name = str(f.type).replace("Path | None", "path").replace("Path", "path")
        out.append(SettingDoc("TRYON_" + name.upper(), type_name, shown, group,
                              " ".join(doc_lines)))
    return out


def settings_markdown() -> str:
    """The generated table of docs/settings.md (``python -m tryon.config``)."""
    rows = ["| Setting | Type | Default | Meaning |", "|---|---|---|---|"]
    group = None
    for d in settings_reference():
        if d.group != group:
            group = d.group
            rows.append(f"| **{group}** | | | |")
        default = f"`{d.default}`" if d.default else "(empty)"
        meaning = d.doc.replace("|", "\\|")
        rows.append(f"| `{d.env}` | {d.type} | {default} | {meaning} |")
    return "\n".join(rows) + "\n"


#: the markers around the generated table in docs/settings.md
TABLE_BEGIN = "<!-- BEGIN GENERATED: python -m tryon.config --write docs/settings.md -->"
TABLE_END = "<!-- END GENERATED -->"


def with_settings_table(text: str) -> str:
    """``text`` with the block between :data:`TABLE_BEGIN` and :data:`TABLE_END` regenerated."""
    head, sep, rest = text.partition(TABLE_BEGIN)
    _, sep2, tail = rest.partition(TABLE_END)
    if not sep or not sep2:
        raise ValueError("the generated-table markers are missing")
    return f"{head}{TABLE_BEGIN}\n{settings_markdown()}{TABLE_END}{tail}"


if __name__ == "__main__":
    import sys

    if sys.argv[1:2] == ["--write"] and len(sys.argv) == 3:
        target = Path(sys.argv[2])
        target.write_text(with_settings_table(target.read_text(encoding="utf-8")), encoding="utf-8")
    else:
        print(settings_markdown(), end="")
