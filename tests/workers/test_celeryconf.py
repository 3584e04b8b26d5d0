"""R-2 (Celery settings present and known to the pinned Celery/kombu), R-3 (timeout order),
R-16 (no model code in the Celery parent)."""

from __future__ import annotations

import subprocess
import sys

import pytest
from celery import Celery
from kombu.transport.redis import Channel as RedisChannel

from tryon.celeryconf import (
    QUEUE_CPU,
    TASK_DELIVER_WEBHOOK,
    TASK_REAP,
    celery_config,
    queue_for_engine,
)
from tryon.config import Settings
from tryon.errors import ConfigError

REDIS = Settings(broker_url="redis://127.0.0.1:6379/0", database_url="postgresql+psycopg://x/y")


def test_required_values() -> None:
    conf = celery_config(REDIS)
    assert conf["task_acks_late"] is True
    assert conf["task_reject_on_worker_lost"] is True
    assert conf["worker_prefetch_multiplier"] == 1
    assert conf["worker_concurrency"] == 1
    assert conf["worker_cancel_long_running_tasks_on_connection_loss"] is True
    assert conf["task_ignore_result"] is True
    assert conf["task_soft_time_limit"] < conf["task_time_limit"]
    opts = conf["broker_transport_options"]
    assert opts["socket_timeout"] > 0 and opts["socket_connect_timeout"] > 0
    assert opts["health_check_interval"] > 0 and opts["socket_keepalive"] is True
    vt = int(REDIS.visibility_timeout_s)
    assert opts["visibility_timeout"] == conf["result_backend_transport_options"][
        "visibility_timeout"] == conf["visibility_timeout"] == vt
    assert conf["task_time_limit"] + REDIS.max_retry_backoff_s < vt
    assert conf["task_routes"][TASK_DELIVER_WEBHOOK]["queue"] == QUEUE_CPU
    assert conf["beat_schedule"]["reap"]["task"] == TASK_REAP
    assert queue_for_engine("anydoor") == "gpu" and queue_for_engine("preview") == "cpu"


def test_every_setting_name_is_known_to_the_pinned_celery_and_kombu() -> None:
    conf = celery_config(REDIS)
    app = Celery(set_as_current=False)
    # ``visibility_timeout`` at top level is what Celery's Redis docs ask for, but it is not a
    # registered option name; the transport-option copies are the ones kombu reads.
    for name in sorted(set(conf) - {"visibility_timeout"}):
        app.conf.find_option(name)  # raises KeyError for a renamed/unknown setting
    with pytest.raises(KeyError):
        app.conf.find_option("task_acks_lately")  # the check itself can fail
    known = set(RedisChannel.from_transport_options)
    assert set(conf["broker_transport_options"]) <= known
    # the restore-sweep knobs of kombu PR #2558 exist in the pinned kombu
    assert {"unacked_restore_interval", "unacked_restore_throttle"} <= known


def test_app_picks_up_the_values() -> None:
    from workers.app import make_celery

    app = make_celery(REDIS)
    assert app.conf.task_acks_late is True
    assert app.conf.worker_prefetch_multiplier == 1
    assert app.conf.broker_transport_options["visibility_timeout"] == 1800


def test_embedded_broker_gets_no_redis_only_options(tmp_path) -> None:  # type: ignore[no-untyped-def]
    conf = celery_config(Settings(data_dir=tmp_path))
    assert conf["broker_url"].startswith("sqla+sqlite:///")
    # kombu's SQLAlchemy transport passes its options to create_engine, which rejects these
    assert conf["broker_transport_options"] == {}


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"heartbeat_interval_s": 20.0, "stale_after_s": 30.0}, "STALE_AFTER"),
        ({"soft_time_limit_s": 700.0, "hard_time_limit_s": 630.0}, "SOFT_TIME_LIMIT"),
        ({"visibility_timeout_s": 600.0}, "VISIBILITY_TIMEOUT"),
        ({"hard_time_limit_s": 1790.0, "soft_time_limit_s": 100.0}, "VISIBILITY_TIMEOUT"),
    ],
)
def test_invalid_timeout_order_is_refused(changes: dict[str, float], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        celery_config(Settings(**changes))  # type: ignore[arg-type]


def test_worker_parent_imports_no_model_code() -> None:
    """Importing the task module (what the prefork parent does) loads no torch/diffusers/engine."""
    code = (
        "import sys, workers.tasks, workers.cli;"
        "bad=[m for m in ('torch','diffusers','transformers','mediapipe','cv2',"
        "'tryon.anydoor.models','tryon.engines.preview','tryon.engines.anydoor') if m in sys.modules];"
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         env={"PATH": "", "TRYON_DATA_DIR": "/tmp/tryon-import-check"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ""
