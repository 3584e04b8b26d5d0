"""Celery settings as a plain dict (no Celery import: ``tryon`` stays framework-free).

Why each value (see docs/workers.md and reliability.md section 1.2):

* ``task_acks_late`` + ``worker_prefetch_multiplier=1``: a message is acked only after the task
  returns, and each pool child holds at most one unacked message.
* ``task_reject_on_worker_lost``: a pool child killed mid-job (SIGKILL, OOM) requeues the message
  instead of acking it. The redelivery loop is bounded by the job's attempt counter in the DB.
* ``task_acks_on_failure`` / ``task_acks_on_timeout``: exceptions and hard timeouts are final for
  the *message*; the job row (written by the task or its ``on_failure`` hook) holds the outcome.
* the visibility timeout in all three places (broker and result-backend transport options and the
  top-level ``visibility_timeout`` the Redis docs name), so no shorter default wins.
* Redis socket timeouts, keepalive and health checks so a dead connection cannot block a worker
  forever; ``worker_cancel_long_running_tasks_on_connection_loss`` so a run whose late ack can no
  longer be sent does not keep running next to its redelivered copy.
* ``task_ignore_result``: the job row is the result; no result backend is needed.
"""

from __future__ import annotations

from typing import Any

from tryon.config import Settings

TASK_RUN_JOB = "tryon.run_job"
TASK_DELIVER_WEBHOOK = "tryon.deliver_webhook"
TASK_REAP = "tryon.reap"

QUEUE_GPU = "gpu"
QUEUE_CPU = "cpu"

#: engines that need the GPU queue; every other engine (preview, fakes) runs on the CPU queue
GPU_ENGINES = frozenset({"anydoor"})

#: Redis sockets: seconds
REDIS_SOCKET_TIMEOUT = 30
REDIS_SOCKET_CONNECT_TIMEOUT = 10
REDIS_HEALTH_CHECK_INTERVAL = 25
#: the unacked-restore sweep (kombu >= 5.7): every 10 s, scanning Redis on every call
UNACKED_RESTORE_INTERVAL = 10
UNACKED_RESTORE_THROTTLE = 1


def queue_for_engine(engine: str) -> str:
    """The logical queue (``gpu`` or ``cpu``) a job for ``engine`` goes to."""
    return QUEUE_GPU if engine in GPU_ENGINES else QUEUE_CPU


def queue_name(settings: Settings, logical: str) -> str:
    """The broker queue name of a logical queue: ``TRYON_QUEUE_PREFIX`` + ``gpu|cpu``.

    The prefix lets several deployments (or test runs) share one Redis without stealing each
    other's messages.
    """
    return f"{settings.queue_prefix}{logical}"


def is_redis(url: str) -> bool:
    return url.startswith(("redis://", "rediss://", "redis+socket://", "sentinel://"))


def broker_transport_options(settings: Settings) -> dict[str, Any]:
    """Transport options for the configured broker.

    Only the Redis transport understands these names; the SQLAlchemy transport passes its
    options straight to ``create_engine`` (which rejects unknown keywords), so it gets none.
    """
    url = settings.resolved_broker_url
    if not is_redis(url):
        return {}
    return {
        "visibility_timeout": int(settings.visibility_timeout_s),
        "socket_timeout": REDIS_SOCKET_TIMEOUT,
        "socket_connect_timeout": REDIS_SOCKET_CONNECT_TIMEOUT,
        "socket_keepalive": True,
        "health_check_interval": REDIS_HEALTH_CHECK_INTERVAL,
        "retry_on_timeout": True,
        "unacked_restore_interval": UNACKED_RESTORE_INTERVAL,
        "unacked_restore_throttle": UNACKED_RESTORE_THROTTLE,
    }


def celery_config(settings: Settings) -> dict[str, Any]:
    """The full Celery configuration for ``settings`` (validated first: R-3 order)."""
    settings.validate()
    vt = int(settings.visibility_timeout_s)
    cpu = queue_name(settings, QUEUE_CPU)
    conf: dict[str, Any] = {
        "broker_url": settings.resolved_broker_url,
        "broker_transport_options": broker_transport_options(settings),
        "broker_connection_retry_on_startup": True,
        "result_backend": None,
        "result_backend_transport_options": {"visibility_timeout": vt},
        "visibility_timeout": vt,
        "task_ignore_result": True,
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "task_acks_on_failure": True,
        "task_acks_on_timeout": True,
        "worker_prefetch_multiplier": 1,
        # GPU default: one job at a time per worker (the CPU worker raises it on its command line)
        "worker_concurrency": 1,
        "worker_max_tasks_per_child": 100,
        "worker_cancel_long_running_tasks_on_connection_loss": True,
        "worker_soft_shutdown_timeout": 30.0,
        "worker_enable_soft_shutdown_on_idle": True,
        "worker_hijack_root_logger": False,
        "worker_send_task_events": False,
        "task_soft_time_limit": settings.soft_time_limit_s,
        "task_time_limit": settings.hard_time_limit_s,
        "task_publish_retry": True,
        "task_publish_retry_policy": {
            "max_retries": 3, "interval_start": 0, "interval_step": 0.5, "interval_max": 2,
        },
        "task_serializer": "json",
        "accept_content": ["json"],
        "task_default_queue": cpu,
        "task_create_missing_queues": True,
        # run_job is routed per message (gpu or cpu by engine); the rest is CPU housekeeping
        "task_routes": {
            TASK_DELIVER_WEBHOOK: {"queue": cpu},
            TASK_REAP: {"queue": cpu},
        },
        "beat_schedule": {
            "reap": {
                "task": TASK_REAP,
                "schedule": settings.reaper_interval_s,
                # an old reap message is useless; never let a backlog of them pile up
                "options": {"queue": cpu, "expires": settings.reaper_interval_s},
            },
        },
        "timezone": "UTC",
        "enable_utc": True,
    }
    return conf
