"""The router's Prometheus exporter frontend: only when this HAProxy has it, and valid config."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from orchestrator.router.haproxy import RouterConfig, Upstream, render_config, supports_prometheus

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def haproxy() -> str:
    path = shutil.which("haproxy")
    if path is None:
        pytest.fail("haproxy is not installed: `make system` installs it")
    return path


def config(metrics_port: int) -> RouterConfig:
    return RouterConfig(name="d", model="m", rest_port=18501, grpc_port=18500,
                        stable=(Upstream(grpc_port=18600, rest_port=18601),),
                        metrics_port=metrics_port)


def test_detects_the_exporter(haproxy: str) -> None:
    assert supports_prometheus(haproxy)  # Debian's build lists "prometheus-exporter"
    assert not supports_prometheus(shutil.which("true") or "/bin/true")
    assert not supports_prometheus("/nonexistent/haproxy")


def test_metrics_frontend_only_when_asked_and_accepted_by_haproxy(haproxy: str,
                                                                  tmp_path: Path) -> None:
    assert "frontend metrics" not in render_config(config(0), str(tmp_path / "admin.sock"))
    text = render_config(config(18700), str(tmp_path / "admin.sock"))
    assert "bind 127.0.0.1:18700" in text
    assert "http-request use-service prometheus-exporter if { path /metrics }" in text
    (tmp_path / "haproxy.cfg").write_text(text)
    check = subprocess.run([haproxy, "-c", "-f", str(tmp_path / "haproxy.cfg")],
                           capture_output=True, text=True, timeout=30)
    assert check.returncode == 0, check.stdout + check.stderr
