"""`tfsctl tune NAME`: real servers with each batching setting, a table and the spec lines."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.server import export_half_plus_two_tf1, export_strings_tf1

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk (apt) is the load generator"),
]
TFSCTL = Path(sys.executable).with_name("tfsctl")


def tfsctl(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(TFSCTL), *args], cwd=cwd, capture_output=True, text=True, timeout=600
    )


def test_tune_measures_each_setting_and_prints_the_spec_lines(tmp_path):
    base = export_half_plus_two_tf1(tmp_path / "models" / "hpt", versions=(1,))
    (tmp_path / "serving_configs").mkdir()
    (tmp_path / "serving_configs" / "hpt.yaml").write_text(f"base_path: {base}\n")
    r = tfsctl(tmp_path, "tune", "hpt", "--duration", "1", "--clients", "2", "--p99-ms", "60000")
    assert r.returncode == 0, r.stderr
    for label in ("no batching", "2 rows, 0 µs, 1 thread", "2 rows, 1000 µs, 1 thread",
                  "2 rows, 5000 µs, 1 thread"):
        assert label in r.stdout, r.stdout
    assert "best" in r.stdout
    assert "oneDNN off" in r.stdout, r.stdout  # the second stage, on the best batching setting
    lines = r.stdout.split("In serving_configs/hpt.yaml:", 1)[1]
    assert lines.strip().startswith("batching:\n  enabled: "), r.stdout


def test_tune_batching_only_skips_tensorflows_settings(tmp_path):
    base = export_half_plus_two_tf1(tmp_path / "models" / "hpt", versions=(1,))
    (tmp_path / "serving_configs").mkdir()
    (tmp_path / "serving_configs" / "hpt.yaml").write_text(f"base_path: {base}\n")
    r = tfsctl(tmp_path, "tune", "hpt", "--duration", "1", "--clients", "2", "--p99-ms", "60000",
               "--batching-only", "-o", "json")
    assert r.returncode == 0, r.stderr
    import json

    doc = json.loads(r.stdout)
    assert len(doc["results"]) == 5 if (os.cpu_count() or 1) > 1 else 4
    assert all(x["setting"]["onednn"] is None and x["setting"]["intra_op"] == 0 for x in doc["results"])


def test_tune_refuses_a_model_it_cannot_make_a_request_for(tmp_path):
    base = tmp_path / "models" / "strings"
    export_strings_tf1(base)
    (tmp_path / "serving_configs").mkdir()
    (tmp_path / "serving_configs" / "strings.yaml").write_text(f"base_path: {base}\n")
    r = tfsctl(tmp_path, "tune", "strings", "--duration", "1")
    assert r.returncode != 0
    assert "error: input" in r.stderr and "DT_STRING" in r.stderr, r.stderr
    assert "fix: pass one request as TF Serving's REST JSON with --data FILE" in r.stderr


@pytest.mark.skipif(shutil.which("h2load") is None, reason="h2load (apt nghttp2-client) loads gRPC")
def test_tune_over_grpc_measures_predict_calls(tmp_path):
    """--protocol grpc: h2load posts a Predict body built from the signature (or from --data); every
    setting is measured with calls that succeed."""
    import json

    base = export_half_plus_two_tf1(tmp_path / "models" / "hpt", versions=(1,))
    (tmp_path / "serving_configs").mkdir()
    (tmp_path / "serving_configs" / "hpt.yaml").write_text(f"base_path: {base}\n")
    r = tfsctl(tmp_path, "tune", "hpt", "--duration", "1", "--clients", "2", "--p99-ms", "60000",
               "--protocol", "grpc", "--batching-only", "-o", "json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["protocol"] == "grpc" and doc["best"] is not None
    for x in doc["results"]:
        assert x["rows_per_s"] > 0 and x["errors"] == 0 and x["p50_ms"] <= x["p99_ms"], x
    (tmp_path / "three.json").write_text('{"instances": [[1.0], [2.0], [3.0]]}')
    r = tfsctl(tmp_path, "tune", "hpt", "--duration", "1", "--clients", "2", "--p99-ms", "60000",
               "--protocol", "grpc", "--data", str(tmp_path / "three.json"))
    assert r.returncode == 0, r.stderr
    assert "hpt: grpc, 2 clients" in r.stdout and "In serving_configs/hpt.yaml:" in r.stdout, r.stdout


def test_tune_over_grpc_refuses_a_model_it_cannot_build_tensors_for(tmp_path):
    base = tmp_path / "models" / "strings"
    export_strings_tf1(base)
    (tmp_path / "serving_configs").mkdir()
    (tmp_path / "serving_configs" / "strings.yaml").write_text(f"base_path: {base}\n")
    r = tfsctl(tmp_path, "tune", "strings", "--duration", "1", "--protocol", "grpc")
    assert r.returncode != 0
    assert "gRPC tuning builds numeric tensors only" in r.stderr, r.stderr


@pytest.mark.skipif(shutil.which("h2load") is None, reason="h2load (apt nghttp2-client) loads gRPC")
@pytest.mark.parametrize(("data", "message"), [
    ('{"signature_name": "regress_x_to_y", "instances": [1.0]}', "--data names signature 'regress_x_to_y'"),
    ('{"instances": [1.0', "--data is not JSON"),
    ('{"examples": []}', "--data is not a predict request"),
])  # fmt: skip
def test_tune_over_grpc_refuses_data_it_cannot_send(tmp_path, data: str, message: str):
    base = export_half_plus_two_tf1(tmp_path / "models" / "hpt", versions=(1,))
    (tmp_path / "serving_configs").mkdir()
    (tmp_path / "serving_configs" / "hpt.yaml").write_text(f"base_path: {base}\n")
    (tmp_path / "req.json").write_text(data)
    r = tfsctl(tmp_path, "tune", "hpt", "--duration", "1", "--protocol", "grpc", "--data",
               str(tmp_path / "req.json"))  # fmt: skip
    assert r.returncode != 0
    assert message in r.stderr and "fix:" in r.stderr, r.stderr
