"""`tfsctl convert`: by spec name or path, table and JSON output, exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from orchestrator.cli import cli
from orchestrator.convert import ConvertError, VerificationError
from tests.integration.convert.conftest import need_module

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(autouse=True)
def _litert() -> None:
    need_module("ai_edge_litert")


def test_convert_by_spec_name(model_base: Path, samples_npz: Path, tmp_path: Path) -> None:
    configs = tmp_path / "serving_configs"
    configs.mkdir()
    (configs / "x.yaml").write_text(f"base_path: {model_base}\n")
    out = tmp_path / "exports"
    result = CliRunner().invoke(cli, [
        "convert", "x", "--to", "tflite", "--samples", str(samples_npz), "--configs-dir", str(configs),
        "--out-dir", str(out), "--latency-runs", "2",
    ])
    assert result.exit_code == 0, result.output
    assert "tflite" in result.stdout and "100.00%" in result.stdout
    assert "NO SAMPLES GIVEN" not in result.stderr
    assert (out / "x" / "1" / "tflite" / "model.tflite").is_file()


def test_json_output_and_version_folder(version_dir: Path, samples_npz: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, [
        "convert", str(version_dir), "--version", "1", "--to", "tflite,tflite-dynamic",
        "--samples", str(samples_npz), "--out-dir", str(tmp_path), "-o", "json", "--latency-runs", "1",
    ])
    assert result.exit_code == 0, result.output
    reports = json.loads(result.stdout)
    assert [r["format"] for r in reports] == ["tflite", "tflite-dynamic"]
    assert all(r["passed"] for r in reports)


def test_unknown_format_and_version(model_base: Path) -> None:
    result = CliRunner().invoke(cli, ["convert", str(model_base), "--to", "coreml"])
    assert isinstance(result.exception, ConvertError)
    assert "tflite-int8" in str(result.exception)  # the fix lists the known formats
    result = CliRunner().invoke(cli, ["convert", str(model_base), "--to", "tflite", "--version", "9"])
    assert "no version 9" in str(result.exception)


def test_opset_above_tf2onnx_maximum_is_refused(model_base: Path) -> None:
    result = CliRunner().invoke(cli, ["convert", str(model_base), "--to", "onnx", "--opset", "19"])
    assert isinstance(result.exception, ConvertError)
    assert "13 to 18" in str(result.exception)


def test_drift_exits_9_with_the_table_first(model_base: Path, samples_npz: Path, tmp_path: Path) -> None:
    """The real entry point: the table is printed, then the error, and the exit code is 9."""
    env = {**os.environ, "COLUMNS": "120"}
    done = subprocess.run(
        [sys.executable, "-m", "orchestrator", "convert", str(model_base), "--to", "tflite-int8",
         "--samples", str(samples_npz), "--out-dir", str(tmp_path), "--max-abs-diff", "1e-9",
         "--min-agreement", "0.5", "--latency-runs", "1"],
        capture_output=True, text=True, cwd=REPO, env=env, timeout=300, check=False,
    )
    assert done.returncode == VerificationError.exit_code, done.stderr
    assert "tflite-int8" in done.stdout and "drift" in done.stdout
    assert "max abs diff" in done.stderr and "allowed 1e-09" in done.stderr
    report = json.loads((tmp_path / "x" / "1" / "tflite-int8" / "report.json").read_text())
    assert report["status"] == "drift"
    assert report["thresholds"] == {"max_abs_diff": 1e-9, "min_agreement": 0.5}


def test_install_tflite_as_a_new_version_that_serves(
    model_base: Path, samples_npz: Path, samples_array, tmp_path: Path
) -> None:
    import shutil

    import numpy as np
    import requests

    from tests.helpers.server import ServerProcess

    base = tmp_path / "x"
    shutil.copytree(model_base, base)
    result = CliRunner().invoke(cli, [
        "convert", str(base), "--to", "tflite", "--install", "--samples", str(samples_npz),
        "--out-dir", str(tmp_path / "exports"), "--latency-runs", "2", "-o", "json",
    ])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)[0]["installed"] == {"version": 2, "path": str(base / "2")}
    assert sorted(p.name for p in base.iterdir()) == ["1", "2"]  # renamed into place, no leftovers
    assert (base / "2" / "model.tflite").is_file() and (base / "2" / "saved_model.pb").is_file()

    bad = CliRunner().invoke(cli, ["convert", str(base), "--to", "tflite,onnx", "--install"])
    assert bad.exit_code == 2 and "exactly one TFLite format" in bad.output

    # Served from the .tflite with --prefer_tflite_model (what `prefer_tflite_model: true` renders).
    rows = samples_array[:3].tolist()
    with ServerProcess(["--model_name=x", f"--model_base_path={base}",
                        "--prefer_tflite_model=true"]) as srv:
        srv.wait_until_available("x", versions=(2,))
        lite = requests.post(f"{srv.rest_url}/v1/models/x/versions/2:predict",
                             json={"instances": rows}, timeout=60).json()["predictions"]
        assert "Serving x version 2 from model.tflite with LiteRT" in srv.logs()
    import tensorflow as tf

    fn = tf.saved_model.load(str(base / "1")).signatures["serving_default"]
    ref = fn(x=tf.constant(samples_array[:3]))["output_0"].numpy()
    np.testing.assert_allclose(np.array(lite), ref, atol=1e-5)
