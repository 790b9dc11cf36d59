"""`tfsctl logs NAME --predictions` and `tfsctl warmup NAME --from-log` on a real server's logs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import requests
import tensorflow as tf

from orchestrator.convert.warmup import read_records
from orchestrator.plan import model_config, models_config_text
from orchestrator.spec import load_spec
from tests.helpers.server import ServerProcess, export_half_plus_two_tf1, wait_until

pytestmark = pytest.mark.integration
TFSCTL = Path(sys.executable).with_name("tfsctl")


def tfsctl(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(TFSCTL), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120)


def test_logs_predictions_and_warmup_from_log(tmp_path: Path) -> None:
    export_half_plus_two_tf1(tmp_path / "models" / "plc", versions=(1,))
    configs = tmp_path / "serving_configs"
    configs.mkdir()
    (configs / "plc.yaml").write_text(
        "base_path: ../models/plc\nlogging: {sample: 1.0, path: ../logs, max_mb: 4}\n")
    spec = load_spec("plc", configs_dir=configs)
    (tmp_path / "models.config").write_text(models_config_text([model_config(spec)]))
    with ServerProcess([f"--model_config_file={tmp_path / 'models.config'}"]) as srv:
        srv.wait_until_available("plc")
        for i in range(12):
            r = requests.post(f"{srv.rest_url}/v1/models/plc:predict",
                              json={"instances": [[float(i)]]},
                              headers={"X-Request-Id": f"cli-{i}"}, timeout=30)
            assert r.ok

        def all_logged() -> list | None:
            out = tfsctl(tmp_path, "logs", "plc", "--predictions", "-o", "json")
            assert out.returncode == 0, out.stderr
            rows = json.loads(out.stdout)
            return rows if len(rows) == 12 else None

        rows = wait_until(all_logged, timeout_s=60, what="12 logged predictions")
    assert [r["request_id"] for r in rows] == [f"cli-{i}" for i in range(12)]
    assert rows[3]["inputs"] == {"x": [[3.0]]} and rows[3]["outputs"] == {"y": [[3.5]]}
    assert {r["version"] for r in rows} == {1} and rows[0]["signature"] == "serving_default"

    tail = json.loads(tfsctl(tmp_path, "logs", "plc", "--predictions", "-n", "2", "-o",
                             "json").stdout)
    assert [r["request_id"] for r in tail] == ["cli-10", "cli-11"]
    assert json.loads(tfsctl(tmp_path, "logs", "plc", "--predictions", "--version", "2", "-o",
                             "json").stdout) == []
    assert len(json.loads(tfsctl(tmp_path, "logs", "plc", "--predictions", "--since", "10m",
                                 "-o", "json").stdout)) == 12
    table = tfsctl(tmp_path, "logs", "plc", "--predictions")
    assert table.returncode == 0 and "cli-11" in table.stdout

    out = tfsctl(tmp_path, "warmup", "plc", "--from-log", "--count", "5", "-o", "json")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["records"] == 5
    recs = read_records(Path(result["path"]))
    xs = [tf.make_ndarray(r.predict_log.request.inputs["x"]).ravel().tolist() for r in recs]
    assert xs == [[7.0], [8.0], [9.0], [10.0], [11.0]]
    assert all(not r.predict_log.HasField("response") for r in recs)
    # The server replays them when it loads the version (warmup on by default).
    with ServerProcess([f"--model_config_file={tmp_path / 'models.config'}"]) as srv:
        srv.wait_until_available("plc")


def test_logs_predictions_without_logging_is_an_error_with_a_fix(tmp_path: Path) -> None:
    export_half_plus_two_tf1(tmp_path / "models" / "nolog", versions=(1,))
    (tmp_path / "serving_configs").mkdir()
    (tmp_path / "serving_configs" / "nolog.yaml").write_text("base_path: ../models/nolog\n")
    r = tfsctl(tmp_path, "logs", "nolog", "--predictions")
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert "error: nolog has no payload logging configured" in r.stderr
    assert "fix:" in r.stderr
