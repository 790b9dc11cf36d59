"""Compose files: the committed demo examples are what `tfsctl compose demo` writes, Compose
accepts them, and they say what the Docker runtime would create."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from orchestrator.compose import render_compose
from orchestrator.runtime.docker.api import ContainerRequest
from orchestrator.runtime.docker.templates import container_template, effective_specs
from orchestrator.spec import load_spec, parse_spec
from tests.helpers.requires import require, require_haproxy

ROOT = Path(__file__).resolve().parents[3]
EXAMPLE = ROOT / "compose" / "demo"


# The flags written out by hand (not computed by the code under test): what the official image's
# entrypoint appends to `tensorflow_model_server --port=8500 --rest_api_port=8501 ...`.
CPU_COMMAND = ["--port=8500", "--rest_api_port=8501", "--model_config_file=/config/models.config",
               "--file_system_poll_wait_seconds=1", "--rest_api_timeout_in_ms=30000",
               "--enable_model_warmup=true", "--monitoring_config_file=/config/monitoring.config"]


def demo_files() -> dict[str, str]:
    spec = load_spec("demo", configs_dir=ROOT / "serving_configs", check_files=False)
    return render_compose([spec], EXAMPLE)


def test_committed_examples_are_current() -> None:
    files = demo_files()
    assert sorted(files) == ["compose.gpu.yaml", "compose.yaml", "config/models.config",
                             "config/monitoring.config"]
    for name, text in files.items():
        assert (EXAMPLE / name).read_text() == text, f"compose/demo/{name} is stale: run `tfsctl compose demo`"


def test_services_match_the_runtime_request(tmp_path: Path) -> None:
    (tmp_path / "models" / "m" / "1").mkdir(parents=True)
    (tmp_path / "serving_configs").mkdir()
    path = tmp_path / "serving_configs" / "m.yaml"
    path.write_text("base_path: ../models/m\nreplicas: 2\nresources: {cpus: 2, memory: 1g}\n"
                    "ports: {grpc: 7000, rest: 7001}\n")
    spec = parse_spec(path.read_text(), file=path)
    out = tmp_path / "compose" / "m"
    files = render_compose([spec], out)
    cpu = yaml.safe_load(files["compose.yaml"])["services"]
    gpu = yaml.safe_load(files["compose.gpu.yaml"])["services"]
    request: ContainerRequest = container_template([spec], out / "config", manager="compose")
    assert sorted(cpu) == ["m-0", "m-1"]
    first = cpu["m-0"]
    assert first["image"] == request.image == "tensorflow/serving:2.19.0"
    assert first["command"] == CPU_COMMAND
    assert list(request.command) == CPU_COMMAND, "compose and the Docker runtime start the same server"
    assert first["ports"] == ["127.0.0.1:7000:8500", "127.0.0.1:7001:8501"]
    assert cpu["m-1"]["ports"] == ["127.0.0.1:7002:8500", "127.0.0.1:7003:8501"]
    assert first["volumes"] == [
        {"type": "bind", "source": "../../models/m", "target": "/models/m", "read_only": True},
        {"type": "bind", "source": "./config", "target": "/config", "read_only": True},
    ]
    assert first["restart"] == "unless-stopped" and first["init"] is True
    assert first["cpus"] == 2.0 and first["mem_limit"] == "1g"
    assert first["labels"]["io.tfso.managed-by"] == "compose"  # never mistaken for tfsctl's
    assert "deploy" not in first
    gpu_request = container_template(effective_specs([spec.model_copy(update={"device": "gpu"})]),
                                     out / "config", manager="compose")
    assert gpu["m-0"]["image"] == "tensorflow/serving:2.19.0-gpu"
    assert gpu["m-0"]["command"] == [*CPU_COMMAND, "--per_process_gpu_memory_fraction=0.45"]
    assert list(gpu_request.command) == gpu["m-0"]["command"]
    assert gpu["m-0"]["deploy"] == {"resources": {"reservations": {"devices": [
        {"capabilities": ["gpu"], "count": "all"}]}}}


def require_compose() -> list[str]:
    """`docker-compose` or `docker compose`: fails under CI, skips with what to install elsewhere."""
    command = _compose_command()
    require(command, "`docker compose` or `docker-compose`", "apt-get install -y docker-compose")
    assert command is not None
    return command


def _compose_command() -> list[str] | None:
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    if shutil.which("docker") and subprocess.run(["docker", "compose", "version"], capture_output=True,
                                                 timeout=30).returncode == 0:
        return ["docker", "compose"]
    return None


@pytest.mark.parametrize("file", ["compose.yaml", "compose.gpu.yaml"])
def test_compose_accepts_the_examples(file: str) -> None:
    command = require_compose()
    run = subprocess.run([*command, "-f", str(EXAMPLE / file), "config"], capture_output=True,
                         text=True, timeout=60, cwd=EXAMPLE)
    assert run.returncode == 0, run.stderr
    service = yaml.safe_load(run.stdout)["services"]["demo-0"]
    assert service["image"].startswith("tensorflow/serving:2.19.0")
    assert ("deploy" in service) == (file == "compose.gpu.yaml")


def test_router_spec_adds_an_haproxy_service(tmp_path: Path) -> None:
    """With `router: true` the replicas publish nothing; HAProxy publishes the spec's ports and
    reaches them by service name. Compose and `haproxy -c` both accept what is written."""
    (tmp_path / "models" / "m" / "1").mkdir(parents=True)
    (tmp_path / "serving_configs").mkdir()
    path = tmp_path / "serving_configs" / "m.yaml"
    path.write_text("base_path: ../models/m\nreplicas: 2\nrouter: true\nports: {grpc: 7100, rest: 7101}\n")
    out = tmp_path / "compose" / "m"
    files = render_compose([parse_spec(path.read_text(), file=path)], out)
    services = yaml.safe_load(files["compose.yaml"])["services"]
    assert sorted(services) == ["m-0", "m-1", "m-router"]
    assert "ports" not in services["m-0"] and services["m-0"]["cap_drop"] == ["ALL"]
    router = services["m-router"]
    assert router["image"] == "haproxy:2.6" and router["depends_on"] == ["m-0", "m-1"]
    assert router["ports"] == ["127.0.0.1:7100:8500", "127.0.0.1:7101:8501"]
    cfg = files["router/haproxy.cfg"]
    assert "server stable0 m-0:8501" in cfg and "server stable1 m-1:8500" in cfg and "resolvers docker" in cfg
    out.mkdir(parents=True)
    for name, text in files.items():
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_text(text)
    check = subprocess.run([require_haproxy(), "-c", "-f", str(out / "router" / "haproxy.cfg")],
                           capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr
    run = subprocess.run([*require_compose(), "-f", str(out / "compose.yaml"), "config"], capture_output=True,
                         text=True, timeout=60, cwd=out)
    assert run.returncode == 0, run.stderr


def test_logging_is_refused_not_dropped(tmp_path: Path) -> None:
    """Under Compose nothing would capture the payloads (the docker runtime's agent does), and
    tensorflow/serving cannot log them: refuse `logging:` rather than silently drop it."""
    from orchestrator.errors import SpecError

    (tmp_path / "models" / "m" / "1").mkdir(parents=True)
    (tmp_path / "serving_configs").mkdir()
    path = tmp_path / "serving_configs" / "m.yaml"
    path.write_text("base_path: ../models/m\nrouter: true\nlogging: {sample: 0.1, path: ../logs}\n")
    with pytest.raises(SpecError) as info:
        render_compose([parse_spec(path.read_text(), file=path)], tmp_path / "compose" / "m")
    assert "capture agent" in info.value.message and "--runtime docker" in (info.value.fix or "")
