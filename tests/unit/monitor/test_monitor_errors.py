"""`tfsctl monitor up` refuses clearly: not installed, port busy, data folder unwritable.

No server is needed: the deployment's state file is written by hand, as `deploy` would.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.fixture
def project(tmp_path: Path) -> Path:
    config = tmp_path / ".tfso" / "deployments" / "m" / "config"
    config.mkdir(parents=True)
    (config / "monitoring.config").write_text(
        'prometheus_config {\n  enable: true\n  path: "/metrics/x"\n}\n')
    state = {"name": "m", "runtime": "local", "config_dir": str(config),
             "replicas": [{"index": 0, "rest_port": 1, "grpc_port": 2}], "router": None}
    (tmp_path / ".tfso" / "deployments" / "m.json").write_text(json.dumps(state))
    return tmp_path


def tfsctl(root: Path, *args: str, env: dict[str, str] | None = None):
    return subprocess.run([sys.executable, "-m", "orchestrator", "--log-format", "json", *args],
                          cwd=root, capture_output=True, text=True, timeout=60,
                          env={**os.environ, "COLUMNS": "200", **(env or {})})


def error_of(run: subprocess.CompletedProcess) -> dict:
    assert run.returncode != 0, run.stdout
    return json.loads(run.stderr.strip().splitlines()[-1])


def test_no_deployment(project: Path) -> None:
    err = error_of(tfsctl(project, "monitor", "up", "other"))
    assert "no deployment named 'other'" in err["message"] and "tfsctl deploy other" in err["fix"]


def test_prometheus_not_installed(project: Path) -> None:
    err = error_of(tfsctl(project, "monitor", "up", "m", env={"PATH": str(project)}))
    assert "Prometheus is not installed" in err["message"]
    assert "apt-get install -y prometheus" in err["fix"]


@pytest.mark.skipif(not os.path.exists("/usr/bin/prometheus"), reason="needs Debian's prometheus")
def test_port_busy(project: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        err = error_of(tfsctl(project, "monitor", "up", "m", "--port", str(port)))
    assert f"port {port} on 127.0.0.1 is already in use" in err["message"]
    assert "--port N" in err["fix"]


@pytest.mark.skipif(not os.path.exists("/usr/bin/prometheus"), reason="needs Debian's prometheus")
def test_data_folder_unwritable(project: Path) -> None:
    data = project / ".tfso" / "monitor" / "m" / "data"
    data.parent.mkdir(parents=True)
    data.write_text("a file where the data folder should be")
    err = error_of(tfsctl(project, "monitor", "up", "m", "--port", "1"))
    assert f"cannot write Prometheus data under {data}" in err["message"]
    assert "writable" in err["fix"]


def test_monitoring_off_and_unknown_runtime_refused(project: Path) -> None:
    config = project / ".tfso" / "deployments" / "m" / "config" / "monitoring.config"
    config.unlink()
    err = error_of(tfsctl(project, "monitor", "up", "m"))
    assert "does not export Prometheus metrics" in err["message"]
    assert "monitoring: {prometheus: true}" in err["fix"]
    state_file = project / ".tfso" / "deployments" / "m.json"
    state = json.loads(state_file.read_text())
    state_file.write_text(json.dumps({**state, "runtime": "kubernetes"}))
    err = error_of(tfsctl(project, "monitor", "up", "m"))
    assert "supports the local and docker runtimes" in err["message"]
    assert "your own Prometheus" in err["fix"]


def test_status_and_down_without_monitor(project: Path) -> None:
    for verb in ("status", "down"):
        err = error_of(tfsctl(project, "monitor", verb, "m"))
        assert "no monitor for 'm'" in err["message"] and "tfsctl monitor up m" in err["fix"]
