"""Router-side payload capture with a real HAProxy, a real model server and the real agent.

HAProxy (a local process, the same config the docker runtime's router container runs) sits in
front of one `tfs-model-server` that does NOT log (as `tensorflow/serving` cannot); the capture
agent (`router.capture_agent`, a separate process started as the docker runtime starts it) gets
the sampled requests over SPOE and writes PredictionLog records, read back here with TF's own
TFRecord reader and upstream's protos. The docker runtime's end-to-end test is
tests/integration/docker/test_docker_capture.py.
"""

from __future__ import annotations

import contextlib
import glob
import math
import os
import re
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
import pytest
import requests
import tensorflow as tf
from tensorflow_serving.apis import prediction_log_pb2

from orchestrator.protocol.tensors import from_tensor_proto, to_tensor_proto
from orchestrator.protos import apis_pb2
from orchestrator.router import capture_agent
from orchestrator.router.capture import SPOE_FILE, CaptureConfig, CaptureModel
from orchestrator.router.haproxy import HAProxyRouter, RouterConfig, Upstream, wait_until_routed
from orchestrator.runtime.base import free_port
from tests.helpers.requires import require_haproxy
from tests.helpers.server import ServerProcess, export_half_plus_two_tf1, wait_until

pytestmark = pytest.mark.integration
MODEL = "hpt"
PREDICT = "/tensorflow.serving.PredictionService/Predict"


@pytest.fixture(autouse=True, scope="module")
def _needs_haproxy() -> None:
    require_haproxy()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, str]]:
    base = export_half_plus_two_tf1(tmp_path_factory.mktemp("capture-model") / MODEL, versions=(1,))
    with ServerProcess([f"--model_name={MODEL}", f"--model_base_path={base}"]) as srv:
        srv.wait_until_available(MODEL)
        yield srv, base


@dataclass
class Captured:
    router: HAProxyRouter
    rest_url: str
    grpc_target: str
    settings: capture_agent.Settings
    prefix: Path

    def metric(self, name: str, **labels: str) -> float:
        text = requests.get(f"http://127.0.0.1:{self.settings.metrics_port}/metrics", timeout=10).text
        want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
        m = re.search(rf"^{re.escape(name)}\{{{re.escape(want)}\}} (\S+)$", text, re.M)
        return float(m.group(1)) if m else 0.0

    def written(self) -> float:
        return self.metric("tfso_prediction_log_records_total", model=MODEL)


@contextlib.contextmanager
def captured(folder: Path, srv: ServerProcess, base: str, sample: float, logs: Path) -> Iterator[Captured]:
    router = HAProxyRouter(folder / "router")
    settings = capture_agent.Settings(
        deployment=MODEL, main=MODEL, spoa_port=free_port(), metrics_port=free_port(),
        admin_socket=router.socket_path, models_config=str(folder / "no-models.config"),
        grpc_rate=sample, models={MODEL: capture_agent.ModelSettings(
            name=MODEL, sample=sample, prefix=str(logs / MODEL), max_bytes=64 << 20, base_path=base)})
    rest, grpc_port = free_port(), free_port()
    config = RouterConfig(
        name=MODEL, model=MODEL, rest_port=rest, grpc_port=grpc_port,
        stable=(Upstream(grpc_port=srv.grpc_port, rest_port=srv.rest_port),), stable_version=1,
        capture=CaptureConfig(models=(CaptureModel(MODEL, sample),), agent_port=settings.spoa_port,
                              spoe_path=str(router.folder / SPOE_FILE)))
    router.folder.mkdir(parents=True, exist_ok=True)
    capture_agent.start_agent(router.folder, settings)
    try:
        router.start(config)
        wait_until_routed(router, 1, deadline_s=60)
        yield Captured(router, f"http://127.0.0.1:{rest}", f"127.0.0.1:{grpc_port}", settings, logs / MODEL)
    finally:
        router.stop()
        capture_agent.stop_agent(router.folder)


def records(prefix: Path) -> list[prediction_log_pb2.PredictionLog]:
    out = []
    for f in sorted(glob.glob(f"{prefix}-*.tfrecord")):
        for raw in tf.data.TFRecordDataset(f):  # checks both CRCs of every record
            out.append(prediction_log_pb2.PredictionLog.FromString(raw.numpy()))
    return out


def settle(cap: Captured, expected: int) -> None:
    wait_until(lambda: cap.written() >= expected, timeout_s=60,
               what=f"{expected} records written by the capture agent")


def test_rest_and_grpc_records_match_what_the_client_got(tmp_path: Path, server: tuple) -> None:
    srv, base = server
    with captured(tmp_path, srv, base, 1.0, tmp_path / "logs") as cap:
        got: dict[str, tuple[str, list, list]] = {}
        with requests.Session() as s:
            for i in range(20):  # half with our request ids, half with the router's
                headers = {"X-Request-Id": f"rest-{i}"} if i % 2 else {}
                body = {"instances": [[float(i)], [float(i) + 0.5]]}
                r = s.post(f"{cap.rest_url}/v1/models/{MODEL}:predict", json=body, headers=headers,
                           timeout=30)
                assert r.status_code == 200, r.text
                rid = r.headers["X-Request-Id"]
                assert rid == f"rest-{i}" if i % 2 else len(rid) >= 16
                got[rid] = ("predict", body["instances"], r.json()["predictions"])
            r = s.post(f"{cap.rest_url}/v1/models/{MODEL}/versions/1:predict",
                       json={"signature_name": "serving_default", "inputs": {"x": [[7.0]]}},
                       headers={"X-Request-Id": "columnar"}, timeout=30)
            assert r.status_code == 200, r.text
            got["columnar"] = ("predict", [[7.0]], r.json()["outputs"])
            r = s.post(f"{cap.rest_url}/v1/models/{MODEL}:regress",
                       json={"signature_name": "regress_x_to_y", "examples": [{"x": 3.0}]},
                       headers={"X-Request-Id": "regress"}, timeout=30)
            assert r.status_code == 200, r.text
            got["regress"] = ("regress", [3.0], r.json()["results"])
            r = s.post(f"{cap.rest_url}/v1/models/{MODEL}:predict", json={"instances": "bad"},
                       headers={"X-Request-Id": "error"}, timeout=30)
            assert r.status_code == 400  # errors are not logged, as by our server
        with grpc.insecure_channel(cap.grpc_target) as channel:
            call = channel.unary_unary(PREDICT)
            for i in range(5):
                req = apis_pb2.PredictRequest()
                req.model_spec.name = MODEL
                req.inputs["x"].CopyFrom(to_tensor_proto(np.array([[float(i)]], dtype=np.float32)))
                raw, info = call.with_call(req.SerializeToString(), timeout=30,
                                           metadata=[("x-request-id", f"grpc-{i}")])
                res = apis_pb2.PredictResponse.FromString(raw)
                got[f"grpc-{i}"] = ("predict", [[float(i)]],
                                    from_tensor_proto(res.outputs["y"]).tolist())
                assert dict(info.initial_metadata()).get("x-request-id") == f"grpc-{i}"
        settle(cap, len(got))
        assert cap.metric("tfso_prediction_log_dropped_total", model=MODEL, reason="not_delivered") == 0
        assert cap.router.capture_drops() == {}
    found = {rec.log_metadata.request_origin: rec for rec in records(cap.prefix)}
    assert sorted(found) == sorted(got)
    for rid, (kind, inputs, outputs) in got.items():
        rec = found[rid]
        md = rec.log_metadata
        assert md.model_spec.name == MODEL and md.model_spec.version.value == 1
        assert md.sampling_config.sampling_rate == 1.0 and md.timestamp_secs > 1_600_000_000
        if kind == "predict":
            assert md.model_spec.signature_name == "serving_default"
            x = from_tensor_proto(rec.predict_log.request.inputs["x"])
            y = from_tensor_proto(rec.predict_log.response.outputs["y"])
            assert x.dtype == np.float32 and x.tolist() == inputs
            assert y.dtype == np.float32 and y.tolist() == outputs
            assert rec.predict_log.response.model_spec.version.value == 1
        else:
            assert md.model_spec.signature_name == "regress_x_to_y"
            ex = rec.regress_log.request.input.example_list.examples[0]
            assert list(ex.features.feature["x"].float_list.value) == inputs
            assert [r.value for r in rec.regress_log.response.result.regressions] == \
                pytest.approx(outputs)


def test_sampling_rate_within_a_binomial_bound(tmp_path: Path, server: tuple) -> None:
    srv, base = server
    rate, n = 0.2, 1500
    with captured(tmp_path, srv, base, rate, tmp_path / "logs") as cap:
        with requests.Session() as s:
            for i in range(n):
                r = s.post(f"{cap.rest_url}/v1/models/{MODEL}:predict",
                           json={"instances": [[float(i)]]}, timeout=30)
                assert r.status_code == 200
        wait_until(lambda: cap.metric("tfso_capture_samples_total", deployment=MODEL)
                   == cap.written() > 0, timeout_s=60, what="every delivered sample written")
        assert cap.metric("tfso_prediction_log_dropped_total", model=MODEL, reason="not_delivered") == 0
        logged = records(cap.prefix)
    sigma = math.sqrt(n * rate * (1 - rate))  # 4.5 sigma: a false failure about once in 150,000 runs
    assert abs(len(logged) - n * rate) < 4.5 * sigma, (len(logged), n * rate)
    assert all(r.log_metadata.sampling_config.sampling_rate == pytest.approx(rate) for r in logged)


def test_dead_agent_drops_are_counted_and_predictions_succeed(tmp_path: Path, server: tuple) -> None:
    srv, base = server
    with captured(tmp_path, srv, base, 1.0, tmp_path / "logs") as cap:
        info = capture_agent.agent_info(cap.router.folder)
        assert info is not None and info["running"]
        os.kill(int(info["pid"]), signal.SIGKILL)
        wait_until(lambda: not capture_agent.agent_info(cap.router.folder)["running"], timeout_s=30,
                   what="the agent gone")
        with requests.Session() as s, grpc.insecure_channel(cap.grpc_target) as channel:
            for i in range(30):
                r = s.post(f"{cap.rest_url}/v1/models/{MODEL}:predict",
                           json={"instances": [[float(i)]]}, timeout=30)
                assert r.status_code == 200 and r.json() == {"predictions": [[0.5 * i + 2.0]]}
            req = apis_pb2.PredictRequest()
            req.model_spec.name = MODEL
            req.inputs["x"].CopyFrom(to_tensor_proto(np.array([[2.0]], dtype=np.float32)))
            res = apis_pb2.PredictResponse.FromString(
                channel.unary_unary(PREDICT)(req.SerializeToString(), timeout=30))
            assert from_tensor_proto(res.outputs["y"]).tolist() == [[3.0]]
        assert cap.router.capture_drops() == {MODEL: 31}  # the router counted every lost sample
        # A new agent (what the next `tfsctl deploy` starts) exports the router's count.
        capture_agent.start_agent(cap.router.folder, cap.settings)
        assert cap.metric("tfso_prediction_log_dropped_total", model=MODEL, reason="not_delivered") == 31
        r = requests.post(f"{cap.rest_url}/v1/models/{MODEL}:predict", json={"instances": [[9.0]]},
                          headers={"X-Request-Id": "after"}, timeout=30)
        assert r.status_code == 200
        settle(cap, 1)
    assert [rec.log_metadata.request_origin for rec in records(cap.prefix)] == ["after"]


def test_unwritable_log_folder_keeps_serving(tmp_path: Path, server: tuple) -> None:
    srv, base = server
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")  # (tests run as root: a file in the way, not chmod)
    with captured(tmp_path, srv, base, 1.0, blocker / "logs") as cap:
        with requests.Session() as s:
            for i in range(40):
                r = s.post(f"{cap.rest_url}/v1/models/{MODEL}:predict",
                           json={"instances": [[float(i)]]}, timeout=30)
                assert r.status_code == 200 and r.json() == {"predictions": [[0.5 * i + 2.0]]}
        wait_until(lambda: cap.metric("tfso_prediction_log_dropped_total", model=MODEL,
                                      reason="write_error") == 40,
                   timeout_s=60, what="40 samples counted as write errors")
        assert cap.metric("tfso_prediction_log_writable", model=MODEL) == 0
        log_text = (cap.router.folder / capture_agent.LOG_FILE).read_text()
        assert log_text.count("cannot be written") == 1  # one warning per failure streak
