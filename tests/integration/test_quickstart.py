"""The README's quick start, command by command, in a temporary copy of the project.

The copy holds the Makefile, pyproject.toml and serving_configs/ with `.venv` linked to this
checkout's (the install step is `make test`'s own first step, so it is not repeated: make runs
with `-o .venv/.installed`). One change to what a user types: the demo spec gets free ports
instead of 8500/8501, so the test never collides with a server already on this machine.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from orchestrator.runtime.base import free_port
from tests.helpers.launcher import without_launcher
from tests.helpers.requires import require_tool

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
VENV = Path(sys.executable).parent.parent


def run(copy: Path, *cmd: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(cmd), cwd=copy, capture_output=True, text=True, timeout=timeout,
                          env={**without_launcher(), "COLUMNS": "200"})


def make(copy: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run(copy, require_tool("make", "apt-get install -y make"), "-o", ".venv/.installed", *args)


def tfsctl(copy: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run(copy, str(copy / ".venv" / "bin" / "tfsctl"), *args)


@pytest.fixture(scope="module")
def copy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = tmp_path_factory.mktemp("quickstart")
    for name in ("Makefile", "pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, root / name)
    shutil.copytree(ROOT / "serving_configs", root / "serving_configs")
    (root / ".venv").symlink_to(VENV)
    yield root
    for state in (root / ".tfso" / "deployments").glob("*.json"):
        tfsctl(root, "stop", state.stem)


def test_quick_start(copy: Path) -> None:
    built = make(copy, "demo-model")
    assert built.returncode == 0, built.stdout + built.stderr
    assert {p.name for p in (copy / "models" / "demo").iterdir()} >= {"1", "2"}
    grpc, rest = free_port(), free_port()
    spec = copy / "serving_configs" / "demo.yaml"
    spec.write_text(spec.read_text() + f"ports: {{grpc: {grpc}, rest: {rest}}}\n")

    inspected = tfsctl(copy, "inspect", "models/demo", "-o", "json")
    assert inspected.returncode == 0, inspected.stderr
    assert "serving_default" in inspected.stdout

    # `tfsctl render` as a command: the dry run writes the files and the exact flags.
    out = copy / "rendered"
    rendered = tfsctl(copy, "render", "demo", "--out", str(out))
    assert rendered.returncode == 0, rendered.stderr
    assert {p.name for p in out.iterdir()} >= {"models.config", "monitoring.config", "args.txt"}
    args = (out / "args.txt").read_text().split()
    assert f"--port={grpc}" in args and f"--rest_api_port={rest}" in args
    assert f"--model_config_file={out / 'models.config'}" in args
    assert 'name: "demo"' in (out / "models.config").read_text()

    deployed = make(copy, "deploy", "MODEL=demo")
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr
    assert f"127.0.0.1:{rest}" in deployed.stdout
    answer = requests.post(f"http://127.0.0.1:{rest}/v1/models/demo:predict",
                           data='{"instances": [[1, 2, 3, 4]]}', timeout=30)
    assert answer.status_code == 200, answer.text
    (probs,) = answer.json()["predictions"]
    assert len(probs) == 3 and abs(sum(probs) - 1.0) < 1e-4

    status = tfsctl(copy, "status", "demo")
    assert status.returncode == 0 and "AVAILABLE" in status.stdout, status.stdout + status.stderr
    predicted = tfsctl(copy, "predict", "demo", "--data", '{"instances": [[1, 2, 3, 4]]}', "--grpc")
    assert predicted.returncode == 0, predicted.stderr
    stopped = tfsctl(copy, "stop", "demo")
    assert stopped.returncode == 0, stopped.stderr
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://127.0.0.1:{rest}/v1/models/demo", timeout=5)


def test_serve_your_own_model(copy: Path) -> None:
    """README's "To serve your own model": export a .keras file, one-line spec, deploy."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from tests.helpers.models import keras_classifier

    keras_classifier(seed=3).save(copy / "my_model.keras")
    exported = tfsctl(copy, "export", "my_model.keras", "--name", "mine")
    assert exported.returncode == 0, exported.stderr
    assert (copy / "models" / "mine" / "1" / "saved_model.pb").is_file()
    grpc, rest = free_port(), free_port()
    (copy / "serving_configs" / "mine.yaml").write_text(
        f"base_path: ../models/mine\nports: {{grpc: {grpc}, rest: {rest}}}\n")
    deployed = make(copy, "deploy", "MODEL=mine")
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr
    try:
        answer = requests.post(f"http://127.0.0.1:{rest}/v1/models/mine:predict",
                               json={"instances": [[0.1, 0.2, 0.3, 0.4]]}, timeout=30)
        assert answer.status_code == 200, answer.text
        assert len(answer.json()["predictions"][0]) == 3
    finally:
        assert make(copy, "stop", "MODEL=mine").returncode == 0
