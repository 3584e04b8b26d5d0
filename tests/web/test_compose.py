"""docker-compose.yml: validated by `docker-compose config -q` when the binary exists (CI
installs it: `apt-get install -y docker-compose`), and always parsed and checked here."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import yaml
from service_checks import require_service

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"


def _services() -> dict:
    doc = yaml.safe_load(COMPOSE.read_text())
    return doc["services"]


def _cmd(svc: dict) -> str:
    cmd = svc.get("command", "")
    return " ".join(cmd) if isinstance(cmd, list) else str(cmd)


def test_compose_services_and_settings() -> None:
    s = _services()
    assert {"web", "worker-gpu", "worker-cpu", "beat", "redis", "postgres", "migrate"} <= s.keys()
    assert "gunicorn" in _cmd(s["web"]) and "web:create_app()" in _cmd(s["web"])
    gpu = _cmd(s["worker-gpu"])
    assert "-Q gpu" in gpu and "--concurrency 1" in gpu and s["worker-gpu"]["runtime"] == "nvidia"
    assert "-Q cpu" in _cmd(s["worker-cpu"])
    assert " beat" in _cmd(s["beat"])
    redis = _cmd(s["redis"])
    for flag in ("--appendonly yes", "--appendfsync everysec", "--maxmemory-policy noeviction"):
        assert flag in redis
    assert _cmd(s["migrate"]) == "tryon db upgrade" and s["migrate"]["restart"] == "no"
    for name in ("web", "worker-gpu", "worker-cpu", "beat"):
        dep = s[name]["depends_on"]
        assert dep["migrate"]["condition"] == "service_completed_successfully"
        env = s[name]["environment"]
        assert env["TRYON_DATABASE_URL"].startswith("postgresql+psycopg://")
        assert env["TRYON_BROKER_URL"].startswith("redis://")
        # migrations run only in the one-shot service
        assert "db upgrade" not in _cmd(s[name])


def test_docker_compose_config_validates() -> None:
    if shutil.which("docker-compose") is None:
        require_service("docker-compose is not installed")
    env = {**os.environ, "TRYON_SECRET_KEY": "ci-only"}
    proc = subprocess.run(["docker-compose", "-f", str(COMPOSE), "config", "-q"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60, env=env)
    assert proc.returncode == 0, proc.stderr
