"""Request ids (X-Request-Id / x-request-id) and `--log_format=json` on a real server."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
import requests
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from tests.helpers.server import ServerProcess, export_half_plus_two_tf1, wait_until

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root: Path = tmp_path_factory.mktemp("rid")
    base = export_half_plus_two_tf1(root / "hpt", versions=(1,))
    args = ["--model_name=hpt", f"--model_base_path={base}", "--log_format=json"]
    with ServerProcess(args, env={"TFS_LOG_LEVEL": "DEBUG"}) as srv:
        srv.wait_until_available("hpt")
        yield srv


def predict(srv: ServerProcess, headers: dict[str, str] | None = None,
            body: object = None) -> requests.Response:
    return requests.post(f"{srv.rest_url}/v1/models/hpt/versions/1:predict",
                         json=body or {"instances": [[1.0]]}, headers=headers, timeout=30)


def test_rest_request_id_echoed_or_generated(server: ServerProcess) -> None:
    r = predict(server, {"X-Request-Id": "req-abc-1"})
    assert r.status_code == 200 and r.headers["X-Request-Id"] == "req-abc-1"
    generated = predict(server).headers["X-Request-Id"]
    assert re.fullmatch(r"[0-9a-f]{16}", generated)
    assert predict(server).headers["X-Request-Id"] != generated
    hostile = predict(server, {"X-Request-Id": "x" * 500}).headers["X-Request-Id"]
    assert re.fullmatch(r"[0-9a-f]{16}", hostile)
    status = requests.get(f"{server.rest_url}/v1/models/hpt", timeout=10,
                          headers={"X-Request-Id": "status-1"})
    assert status.headers["X-Request-Id"] == "status-1"


def test_grpc_request_id_in_trailing_metadata(server: ServerProcess) -> None:
    req = predict_pb2.PredictRequest()
    req.model_spec.name = "hpt"
    req.inputs["x"].CopyFrom(tf.make_tensor_proto(np.asarray([[1.0]], np.float32)))
    with grpc.insecure_channel(server.grpc_target) as ch:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(ch)
        _, call = stub.Predict.with_call(req, metadata=(("x-request-id", "grpc-7"),), timeout=30)
        assert dict(call.trailing_metadata())["x-request-id"] == "grpc-7"
        _, call = stub.Predict.with_call(req, timeout=30)
        assert re.fullmatch(r"[0-9a-f]{16}", dict(call.trailing_metadata())["x-request-id"])
        req.model_spec.version.value = 9
        with pytest.raises(grpc.RpcError) as err:
            stub.Predict(req, metadata=(("x-request-id", "grpc-missing"),), timeout=30)
        assert dict(err.value.trailing_metadata())["x-request-id"] == "grpc-missing"


def test_json_log_lines_carry_model_version_and_request_id(server: ServerProcess) -> None:
    r = predict(server, {"X-Request-Id": "bad-input-1"}, body={"instances": [["text"]]})
    assert r.status_code == 400

    def logged() -> dict | None:
        for line in server.logs().splitlines():
            if line.startswith("{") and '"bad-input-1"' in line:
                return json.loads(line)
        return None

    line = wait_until(logged, timeout_s=10, what="a JSON log line for request bad-input-1")
    assert line["request_id"] == "bad-input-1"
    assert line["model"] == "hpt" and line["version"] == "1"
    assert line["level"] == "debug" and "INVALID_ARGUMENT" in line["message"]
    ours = [ln for ln in server.logs().splitlines() if ln.startswith("{")]
    assert any("Running gRPC ModelServer" in json.loads(ln)["message"] for ln in ours)
    for ln in ours:
        assert {"time", "level", "logger", "message"} <= set(json.loads(ln))


def test_bad_log_format_refused(tmp_path: Path) -> None:
    from tests.helpers.server import run_server_expect_exit

    out = run_server_expect_exit(["--model_base_path=/nope", "--log_format=xml"])
    # Every start-up failure ends as TF Serving's do: the reason on stdout, exit status 255.
    assert out.returncode == 255
    assert out.stdout == (
        "Failed to start server. Error: INVALID_ARGUMENT: "
        "--log_format=xml (or TFS_LOG_FORMAT): expected text or json\n"
    )
