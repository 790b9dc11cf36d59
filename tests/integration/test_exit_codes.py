"""Every exit code the README documents, as the real exit status of a `tfsctl` process.

| 0 ok | 1 failure | 2 bad spec or usage | 3 model problem | 4 runtime problem |
| 5 health deadline passed | 6 serving error | 7 rollout refused | 8 a conversion failed |
| 9 an artifact drifted past --max-abs-diff / --min-agreement |
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestrator.runtime.base import free_port
from tests.helpers.launcher import without_launcher
from tests.helpers.models import half_plus_two_tf1, keras_classifier
from tests.helpers.server import ServerProcess

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def tfsctl(root: Path, *args: str, timeout: float = 600,
           env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "orchestrator", *args], cwd=root, capture_output=True,
                          text=True, timeout=timeout, env={**(env or os.environ), "COLUMNS": "200"})


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = tmp_path_factory.mktemp("exit-codes")
    half_plus_two_tf1(root / "models" / "hpt" / "1")
    keras_classifier(root / "models" / "clf" / "1")
    (root / "models" / "corrupt" / "1").mkdir(parents=True)
    (root / "models" / "corrupt" / "1" / "saved_model.pb").write_bytes(b"garbage")
    configs = root / "serving_configs"
    configs.mkdir()
    (configs / "hpt.yaml").write_text(f"base_path: ../models/hpt\nports: {{grpc: {free_port()}, "
                                      f"rest: {free_port()}}}\n")
    (configs / "clf.yaml").write_text("base_path: ../models/clf\n")
    (configs / "corrupt.yaml").write_text("base_path: ../models/corrupt\n")
    (configs / "badfield.yaml").write_text("base_path: ../models/hpt\nreplicas: many\n")
    (configs / "impatient.yaml").write_text(f"base_path: ../models/hpt\nhealth: {{deadline_s: 0.2}}\n"
                                            f"ports: {{grpc: {free_port()}, rest: {free_port()}}}\n")
    yield root
    for state in (root / ".tfso" / "deployments").glob("*.json"):
        tfsctl(root, "stop", state.stem, timeout=60)


def check(run: subprocess.CompletedProcess[str], code: int, words: str) -> None:
    assert run.returncode == code, (code, run.returncode, run.stdout[-1000:], run.stderr[-2000:])
    text = run.stdout + run.stderr
    assert re.search(words, text), (words, text[-2000:])
    assert "Traceback" not in run.stderr
    if code not in (0, 1):
        assert "error:" in run.stderr


def test_0_ok_and_1_failure(project: Path) -> None:
    check(tfsctl(project, "render", "hpt", "--out", str(project / "rendered")), 0, "")
    check(tfsctl(project, "inspect", "models/corrupt"), 1, "corrupt")  # nothing servable


def test_2_bad_spec_or_usage(project: Path) -> None:
    check(tfsctl(project, "render", "badfield", "--out", str(project / "r2")), 2, "replicas")
    check(tfsctl(project, "render", "nope", "--out", str(project / "r3")), 2, "nope")


def test_3_model_problem(project: Path) -> None:
    check(tfsctl(project, "deploy", "corrupt", "--runtime", "local"), 3, "cannot be served")


def test_4_runtime_problem(project: Path) -> None:
    check(tfsctl(project, "status", "nothing"), 4, "no deployment named 'nothing'")


def test_5_health_deadline_passed(project: Path) -> None:
    # Executed, the server spends seconds importing TensorFlow before it can answer; a launcher's
    # fork can be AVAILABLE within the 0.2 s.
    run = tfsctl(project, "deploy", "impatient", "--runtime", "local", env=without_launcher())
    check(run, 5, "not AVAILABLE after 0.2 s")
    assert not (project / ".tfso" / "deployments" / "impatient.json").exists(), "nothing left running"


def test_6_serving_error(project: Path) -> None:
    base = project / "models" / "hpt"
    with ServerProcess(["--model_name=hpt", f"--model_base_path={base}"]) as srv:
        srv.wait_until_available("hpt")
        run = tfsctl(project, "predict", "hpt", "--url", srv.rest_url, "--version", "9", "--data",
                     '{"instances": [1.0]}')
    check(run, 6, "9")  # the server's NOT_FOUND for a version it does not have


def test_7_rollout_refused(project: Path) -> None:
    check(tfsctl(project, "rollout", "status", "nope"), 7, "no rollout of 'nope'")


def test_8_conversion_failed_and_9_drift(project: Path) -> None:
    out = str(project / "exports")
    check(tfsctl(project, "convert", "clf", "--to", "tftrt", "--out-dir", out), 8, "TensorRT")
    check(tfsctl(project, "convert", "clf", "--to", "tflite-int8", "--max-abs-diff", "1e-9",
                 "--latency-runs", "1", "--out-dir", out), 9, "max abs diff")
