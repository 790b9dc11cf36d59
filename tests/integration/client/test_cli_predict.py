"""`tfsctl predict` against a real server, by endpoint and through deployment state."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from orchestrator.cli.predict import parse_data, predict

pytestmark = pytest.mark.integration
TFSCTL = Path(sys.executable).with_name("tfsctl")


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(predict, list(args), catch_exceptions=False)
    return result.exit_code, result.output


@pytest.mark.parametrize("use_grpc", [False, True])
@pytest.mark.parametrize(
    "data",
    [
        '{"instances": [[1.0, 2.0, 3.0]]}',
        '{"inputs": {"x": [[1, 2, 3]]}}',
        '{"x": [[1, 2, 3]]}',
        "[[1, 2, 3]]",
        '{"instances": [{"x": [1, 2, 3]}]}',
    ],
)
def test_predict_forms(server, data, use_grpc) -> None:
    endpoint = ["--address", server.grpc_address] if use_grpc else ["--url", server.rest_url]
    code, out = run("scale", "--data", data, "--version", "1", "-o", "json", *endpoint)
    assert code == 0, out
    assert json.loads(out) == {"outputs": {"y": [[2.0, 4.0, 6.0]]}}


def test_label_signature_file_and_table(server, tmp_path) -> None:
    request = tmp_path / "req.json"
    request.write_text('{"signature_name": "two", "inputs": {"a": [1.0], "b": [2.0]}}')
    code, out = run("scale", "-f", str(request), "--grpc", "--address", server.grpc_address,
                    "--label", "canary")  # fmt: skip
    assert code == 0, out
    assert "sum" in out and "diff" in out and "float32" in out


def test_state_file_resolves_the_endpoint_and_missing_state_says_so(server, tmp_path) -> None:
    state = tmp_path / ".tfso" / "deployments"
    state.mkdir(parents=True)
    (state / "scale.json").write_text(
        json.dumps({"rest_url": server.rest_url, "grpc_address": server.grpc_address})
    )
    env = {**os.environ, "TFSO_STATE_DIR": str(tmp_path / ".tfso")}
    ok = subprocess.run(
        [str(TFSCTL), "predict", "scale", "--data", "[[1, 1, 1]]", "--grpc", "-o", "json"],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60,
    )  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["outputs"]["y"] == [[3.0, 3.0, 3.0]]
    missing = subprocess.run(
        [str(TFSCTL), "predict", "nothere", "--data", "[1]"],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60,
    )  # fmt: skip
    assert missing.returncode != 0
    assert "no deployment named 'nothere'" in missing.stderr
    assert "tfsctl deploy nothere" in missing.stderr


def test_server_errors_exit_non_zero(server) -> None:
    proc = subprocess.run(
        [str(TFSCTL), "predict", "scale", "--data", "[[1, 2, 3]]", "--url", server.rest_url,
         "--label", "nope"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 6  # ServingError
    assert "Unrecognized servable version label: nope" in proc.stderr


def test_parse_data_forms() -> None:
    assert parse_data({"instances": [{"a": 1, "b": {"b64": "aGk="}}]}) == (
        {"a": [1], "b": [b"hi"]},
        None,
    )
    assert parse_data({"signature_name": "s", "inputs": [1]}) == ([1], "s")
    assert parse_data([{"b64": "aGk="}]) == ([b"hi"], None)
